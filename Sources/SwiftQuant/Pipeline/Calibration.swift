import Foundation

/// Calibration windows (ALGORITHMS.md §3 and §7): `nsamples` windows of `seqlen` tokens at seeded random
/// offsets of a tokenized text.
public enum Calibration {
    /// The text of a WikiText file of one row per line, rebuilt as the Hugging Face split is joined: a blank
    /// line is the row "", any other line is the row `line + "\n"`; rows are joined with "\n\n"
    /// (../shared/data/wikitext-2-raw/SOURCE.md).
    public static func wikitextRows(_ text: String) -> String {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }  // the file's final newline ends the last row
        return lines.map { $0.trimmingCharacters(in: .whitespaces).isEmpty ? "" : $0 + "\n" }.joined(separator: "\n\n")
    }

    /// Whether `text` is a WikiText line file (one Hugging Face row per line, as `wiki.*.tokens` and
    /// `tokenized-v1/*.txt`): it has lines, and every line is blank or starts with a space (WikiText rows do).
    public static func isWikitextLines(_ text: String) -> Bool {
        var lines = 0
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.allSatisfy({ $0 == " " || $0 == "\r" }) { continue }
            guard line.first == " " else { return false }
            lines += 1
        }
        return lines > 0
    }

    /// The calibration text of the file at `path`, by one rule whoever names the file: a WikiText line file
    /// (`isWikitextLines`) has its rows rebuilt (`wikitextRows`), any other file is used as it is.
    public static func text(path: String) throws -> String {
        let raw = try Perplexity.readText(path)
        return isWikitextLines(raw) ? wikitextRows(raw) : raw
    }

    /// `count` windows of `length` tokens starting at offsets drawn uniformly from `0...(tokens − length − 1)`
    /// by a SplitMix64 generator seeded with `seed` (the same seed gives the same windows on every machine).
    public static func windows(tokens: [Int32], count: Int, length: Int, seed: UInt64) throws -> [[Int32]] {
        try require(count > 0, "nsamples must be positive, got \(count)")
        try require(length >= 2, "seqlen must be at least 2, got \(length)")
        try require(tokens.count > length,
                    "the calibration text has \(tokens.count) tokens, fewer than one window of \(length) + 1")
        var rng = SplitMix64(seed: seed)
        let span = UInt64(tokens.count - length)
        return (0..<count).map { _ in
            let start = Int(rng.next() % span)
            return Array(tokens[start..<(start + length)])
        }
    }
}
