import Foundation

/// Calibration windows (ALGORITHMS.md §3 and §7): `nsamples` windows of `seqlen` tokens at seeded random
/// offsets of a tokenized text.
public enum Calibration {
    /// `../shared/data/wikitext-2-raw/tokenized-v1/valid.txt` found from the current directory or the
    /// executable's location upwards (`SharedData.find`), or nil.
    public static func defaultTextPath() -> String? {
        SharedData.find("wikitext-2-raw/tokenized-v1/valid.txt")
    }

    /// The text of a WikiText file of one row per line, rebuilt as the Hugging Face split is joined: a blank
    /// line is the row "", any other line is the row `line + "\n"`; rows are joined with "\n\n"
    /// (../shared/data/wikitext-2-raw/SOURCE.md).
    public static func wikitextRows(_ text: String) -> String {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }  // the file's final newline ends the last row
        return lines.map { $0.trimmingCharacters(in: .whitespaces).isEmpty ? "" : $0 + "\n" }.joined(separator: "\n\n")
    }

    /// The calibration text of `path` (nil: the default WikiText-2 validation file, rows rebuilt). Any other
    /// file is used as it is.
    public static func text(path: String?) throws -> (text: String, path: String) {
        if let p = path { return (try Perplexity.readText(p), p) }
        guard let p = defaultTextPath() else {
            throw SwiftQuantError.invalidArgument(
                "no calibration file given and ../shared/data/wikitext-2-raw/tokenized-v1/valid.txt was not found; pass one")
        }
        return (wikitextRows(try Perplexity.readText(p)), p)
    }

    /// `count` windows of `length` tokens starting at offsets drawn uniformly from `0...(tokens − length − 1)`
    /// by a SplitMix64 generator seeded with `seed` (the same seed gives the same windows on every machine).
    public static func windows(tokens: [Int32], count: Int, length: Int, seed: UInt64) throws -> [[Int32]] {
        try require(count > 0, "nsamples must be positive, got \(count)")
        try require(length >= 2, "seqlen must be at least 2, got \(length)")
        try require(tokens.count > length,
                    "the calibration text has \(tokens.count) tokens, fewer than one window of \(length) + 1")
        var state = seed
        func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        let span = UInt64(tokens.count - length)
        return (0..<count).map { _ in
            let start = Int(next() % span)
            return Array(tokens[start..<(start + length)])
        }
    }
}
