import CSQSupport
import Foundation

/// WikiText-style perplexity (ALGORITHMS.md §7): the text tokenized once with the tokenizer's default special
/// tokens, non-overlapping windows of `seqLen` tokens (`numel / seqLen` of them, the tail dropped), mean
/// next-token NLL over every predicted token of every window, ppl = exp(mean). With equal windows this is the
/// papers' `exp(Σ loss_w · seqlen / (n · seqlen))`.
public struct PerplexityReport: Sendable, Codable {
    public var perplexity: Double
    public var meanNLL: Double
    public var windows: Int
    public var seqLen: Int
    public var tokensInText: Int
    public var predictedTokens: Int
    public var seconds: Double
    public var tokensPerSecond: Double { Double(windows * seqLen) / max(seconds, 1e-9) }
}

public enum Perplexity {
    public static func readText(_ path: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SwiftQuantError.io("\(path): cannot read the text file")
        }
        guard let s = String(data: data, encoding: .utf8) else {
            throw SwiftQuantError.format("\(path): not valid UTF-8 text")
        }
        return s
    }

    /// Perplexity of `model` over `tokens`.
    public static func evaluate(model: TransformerModel, tokens: [Int32], seqLen: Int = 2048, limit: Int? = nil,
                                progress: Bool = true, label: String = "perplexity") throws -> PerplexityReport {
        try require(seqLen >= 2, "seqlen must be at least 2, got \(seqLen)")
        try require(seqLen <= model.maxSequenceLength,
                    "seqlen \(seqLen) is longer than the model's \(model.maxSequenceLength) positions")
        if let l = limit { try require(l > 0, "limit must be positive, got \(l)") }
        var n = tokens.count / seqLen
        try require(n > 0, "the text has \(tokens.count) tokens, fewer than one window of \(seqLen)")
        if let l = limit { n = min(n, l) }
        let bar = ProgressBar(total: n, label: label, unit: "tok", unitsPerStep: Double(seqLen), enabled: progress)
        let start = sqs_now()
        var sum = 0.0, count = 0
        for w in 0..<n {
            let loss = try model.windowLoss(ids: Array(tokens[(w * seqLen)..<((w + 1) * seqLen)]))
            sum += loss.nllSum
            count += loss.count
            bar.advance(note: String(format: "ppl %.4f", Foundation.exp(sum / Double(count))))
        }
        let mean = sum / Double(count)
        return PerplexityReport(perplexity: Foundation.exp(mean), meanNLL: mean, windows: n, seqLen: seqLen,
                                tokensInText: tokens.count, predictedTokens: count, seconds: sqs_now() - start)
    }

    /// Tokenizes `text` with the model's tokenizer and evaluates.
    public static func evaluate(_ loaded: LoadedModel, text: String, seqLen: Int = 2048, limit: Int? = nil,
                                progress: Bool = true, label: String = "perplexity") throws -> PerplexityReport {
        guard let tok = loaded.tokenizer else {
            throw SwiftQuantError.invalidArgument("\(loaded.path): the model has no tokenizer (tokenizer.json or GGUF tokenizer metadata)")
        }
        return try evaluate(model: loaded.model, tokens: tok.encode(text), seqLen: seqLen, limit: limit,
                            progress: progress, label: label)
    }
}
