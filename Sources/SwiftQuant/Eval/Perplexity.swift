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
        try model.loadWeights(progress: progress)   // converted weights: before the first window, with a bar
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

// MARK: - Window losses and perplexity of a model

/// Summed next-token NLL over one window and the number of predicted tokens (T − 1).
public struct WindowLoss: Equatable, Sendable {
    public var nllSum: Double
    public var count: Int
    public var mean: Double { count > 0 ? nllSum / Double(count) : 0 }
}

/// Perplexity per ALGORITHMS §7: non-overlapping windows, mean NLL over every predicted token of every window.
public struct PerplexityResult: Equatable, Sendable {
    public var windows: Int
    public var tokens: Int
    public var meanNLL: Double
    public var perplexity: Double { Foundation.exp(meanNLL) }
}

extension TransformerModel {
    /// Summed NLL of next-token prediction over the window (T − 1 predictions, as transformers' loss with
    /// `labels = input_ids`, times T − 1). The LM head runs over blocks of vocabulary columns for all rows at once,
    /// with a running log-sum-exp per row: the head's weight is packed once per window, and no `[T, vocab]`
    /// logits tensor exists (one `[T, 4096]` block at a time).
    public func windowLoss(ids: [Int32]) throws -> WindowLoss {
        try require(ids.count >= 2, "a window needs at least 2 tokens to predict one")
        let h = try finalHidden(ids: ids)
        let w = try lmHeadWeight()
        let predicted = ids.count - 1
        let block = min(vocabSize, 4096)
        let buf = Tensor(zeros: [predicted, block])
        let targets = Array(ids.dropFirst())
        var acc = Kernels.NLLAccumulator(rows: predicted)
        targets.withUnsafeBufferPointer { tp in
            var v0 = 0
            while v0 < vocabSize {
                let cols = min(block, vocabSize - v0)
                BLAS.sgemm(transB: true, m: predicted, n: cols, k: hiddenSize, a: h.pointer, lda: hiddenSize,
                           b: w.pointer + v0 * hiddenSize, ldb: hiddenSize, c: buf.pointer, ldc: block)
                acc.add(buf.pointer, cols: cols, ld: block, col0: v0, targets: tp.baseAddress!)
                v0 += cols
            }
        }
        let total = acc.total
        guard total.isFinite else { throw SwiftQuantError.nonFinite("NLL is not finite in this window") }
        return WindowLoss(nllSum: total, count: predicted)
    }

    /// Summed next-token NLL over the window.
    public func nll(ids: [Int32]) throws -> Double { try windowLoss(ids: ids).nllSum }

    /// Perplexity over non-overlapping windows of `windowLength` tokens (a shorter tail is dropped).
    public func perplexity(tokens: [Int32], windowLength: Int, maxWindows: Int? = nil) throws -> PerplexityResult {
        try require(windowLength >= 2, "window length must be at least 2")
        var n = tokens.count / windowLength
        if let m = maxWindows { n = min(n, m) }
        try require(n > 0, "\(tokens.count) tokens do not fill one window of \(windowLength)")
        var sum: Double = 0, count = 0
        for w in 0..<n {
            let l = try windowLoss(ids: Array(tokens[(w * windowLength)..<((w + 1) * windowLength)]))
            sum += l.nllSum
            count += l.count
        }
        return PerplexityResult(windows: n, tokens: count, meanNLL: sum / Double(count))
    }
}
