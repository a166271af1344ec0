import Foundation

/// SmoothQuant (Xiao et al. 2023) as a calibration algorithm: per-channel scales `s` move activation outliers of
/// the norm → linear pairs into the weights (`norm₁ → q/k/v`, `norm₂ → gate/up` or `fc1`; SmoothQuant's own
/// pairs), are folded away (`g' = g/s`, `b' = b/s`, `W' = W·diag(s)`: exact in FP), and the transformed weights are
/// quantized by round-to-nearest. No training, no shifts.
///
/// `s_j = max(a_j^α / w_j^(1−α), 1e-5)`, with `a_j` the largest `|x_j|` at the pair's input over the calibration
/// windows (the block run in FP on its quantized-path inputs) and `w_j` the largest `|W_ij|` over every consumer
/// of the pair (SmoothQuant's choice; OmniQuant's LET initialisation takes the first consumer only).
public struct SmoothQuant: BlockAlgorithm {
    public init() {}
    public var needsCalibrationData: Bool { true }

    public func quantize(_ job: BlockJob) throws -> BlockOutcome {
        let spec = job.model.blockSpec
        let pairs = EquivalentTransform.normPairs(spec)
        let stats = try EquivalentTransform.inputAbsMax(job, linears: pairs.map { $0.targets[0] })
        var block = job.weights
        for (p, a) in zip(pairs, stats) {
            let w = EquivalentTransform.weightAbsMax(block, p.targets.map { spec.linears[$0].name })
            let s = EquivalentTransform.smoothingScales(activation: a, weight: w, alpha: job.recipe.alpha)
            block = try EquivalentTransform.foldNormScale(block, norm: p.norm, targets: p.targets.map { spec.linears[$0].name },
                                                         scale: s)
        }
        let rtn = try RTN().quantize(BlockJob(model: job.model, index: job.index, weights: block, inputs: [],
                                              targets: [], recipe: job.recipe, log: job.log))
        var out = BlockOutcome(quantized: rtn.quantized)
        out.transformed = block
        return out
    }
}

/// The algebra of equivalent transformations (ALGORITHMS.md §2) on a block's weights, shared by SmoothQuant and
/// LET: fold scales into the norm that feeds a group of linears and into those linears' input columns.
public enum EquivalentTransform {
    /// A norm and the linears (indices in the spec) reading its output.
    public struct NormPair {
        public var norm: String
        public var targets: [Int]
    }

    /// The spec's LET pairs whose source is a norm, with their targets as linear indices.
    public static func normPairs(_ spec: BlockSpec) -> [NormPair] {
        spec.letPairs.compactMap { p in
            guard case .norm(let n) = p.source else { return nil }
            let idx = p.targets.compactMap { t in spec.linears.firstIndex { $0.name == t } }
            return idx.isEmpty ? nil : NormPair(norm: n, targets: idx)
        }
    }

    /// Per input channel, the largest `|x_j|` each of `linears` (indices) consumes, over the job's inputs run
    /// through the FP block.
    static func inputAbsMax(_ job: BlockJob, linears: [Int]) throws -> [[Float]] {
        let spec = job.model.blockSpec
        var stats = linears.map { [Float](repeating: 0, count: spec.linears[$0].inFeatures) }
        var hooks = Array(repeating: LinearHooks(), count: spec.linears.count)
        for (k, i) in linears.enumerated() {
            hooks[i].observer = { x, rows, features in
                stats[k].withUnsafeMutableBufferPointer { m in
                    for r in 0..<rows {
                        let row = x + r * features
                        for j in 0..<features { m[j] = max(m[j], abs(row[j])) }
                    }
                }
            }
        }
        let ws = Workspace()
        for x in job.inputs {
            try job.model.forward(block: job.weights, hidden: x.copy(), workspace: ws, hooks: hooks)
        }
        return stats
    }

    /// Per input column, `max_i |W_ij|` over the linears `names` of `block`.
    static func weightAbsMax(_ block: TransformerBlock, _ names: [String]) -> [Float] {
        let cols = block.linear(names[0]).inFeatures
        var m = [Float](repeating: 0, count: cols)
        for n in names {
            let w = block.linear(n).weight
            for i in 0..<w.shape[0] {
                let row = w.pointer + i * cols
                for j in 0..<cols { m[j] = max(m[j], abs(row[j])) }
            }
        }
        return m
    }

    /// `s_j = max(a_j^α / w_j^(1−α), 1e-5)` (a channel with `w_j = 0` gets 1: nothing to move).
    public static func smoothingScales(activation a: [Float], weight w: [Float], alpha: Float) -> [Float] {
        zip(a, w).map { a, w in
            guard w > 0 else { return 1 }
            let s = Foundation.pow(Double(a), Double(alpha)) / Foundation.pow(Double(w), Double(1 - alpha))
            return Float(max(s, 1e-5))
        }
    }

    /// `norm`'s `g' = g/s`, `b' = b/s` and every target's `W' = W·diag(s)`: the block computes the same function.
    public static func foldNormScale(_ block: TransformerBlock, norm: String, targets: [String], scale s: [Float]) throws
        -> TransformerBlock
    {
        guard let nw = block.norms[norm], let g = nw.weight else {
            throw SwiftQuantError.unsupported("block \(block.index): norm '\(norm)' has no weight to fold a scale into")
        }
        try require(g.count == s.count, "block \(block.index): \(s.count) scales for norm '\(norm)' of \(g.count)")
        let g2 = Tensor(zeros: [g.count])
        for j in 0..<g.count { g2.pointer[j] = g.pointer[j] / s[j] }
        var b2: Tensor?
        if let b = nw.bias {
            let t = Tensor(zeros: [b.count])
            for j in 0..<b.count { t.pointer[j] = b.pointer[j] / s[j] }
            b2 = t
        }
        var norms = block.norms
        norms[norm] = NormWeights(weight: g2, bias: b2)
        var linears = block.linears
        for name in targets {
            let l = block.linear(name)
            let cols = l.inFeatures
            try require(cols == s.count, "block \(block.index): \(name) has \(cols) inputs, \(s.count) scales")
            let w = Tensor(zeros: l.weight.shape)
            for i in 0..<l.outFeatures {
                let src = l.weight.pointer + i * cols, dst = w.pointer + i * cols
                for j in 0..<cols { dst[j] = src[j] * s[j] }
            }
            linears[name] = Linear(weight: w, bias: l.bias, lowRank: l.lowRank)
        }
        return TransformerBlock(index: block.index, linearNames: block.linearNames, linears: linears, norms: norms)
    }
}
