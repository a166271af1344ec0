import Foundation

/// OmniQuant with LWC and LET trained together (ALGORITHMS.md §2–§3): at every step the transformed weights,
/// norms and biases are recomputed from the frozen FP block and the current scales and shifts, LWC fake-quantizes
/// the transformed weights, the block runs with the recipe's activation quantizers (whose gradients go through
/// their scales too, as in the paper's code), and AdamW updates the LWC parameters (lr `lr`) and the LET
/// parameters (lr `let_lr`) from `MSE(block_q(x), target)`.
/// At the end the learned transformation is folded into the block (the pipeline's `transformed`), whose weights
/// are quantized with the learned clipping. A non-finite loss or gradient skips the step and halves both rates.
///
/// Initialisation (SmoothQuant style, from the FP block run on the quantized-path inputs): `s_j = max(a_j^α /
/// w_j^(1−α), 1e-5)` with `a_j` the largest `|x_j|` at the pair's input and `w_j` the largest `|W_ij|` of its first
/// consumer (q, gate / fc1, o — the o input's channels reduced over each query group to kv channels); shifts
/// (LayerNorm families) start at the channel midpoints `(max + min)/2`, an EMA (0.99) over the windows;
/// `qkt_scale` starts at 1.
public struct OmniQuantLET: BlockAlgorithm {
    public init() {}
    public var needsCalibrationData: Bool { true }

    /// Per channel of the inputs of linears `idx` (FP block on the job's inputs): largest |x|, and the EMA of the
    /// per-window midpoints `(max + min)/2`.
    static func statistics(_ job: BlockJob, _ idx: [Int]) throws -> (absMax: [[Float]], midpoint: [[Float]]) {
        let spec = job.model.blockSpec
        var absMax = idx.map { [Float](repeating: 0, count: spec.linears[$0].inFeatures) }
        var mid = absMax, seen = [Bool](repeating: false, count: idx.count)
        var hooks = Array(repeating: LinearHooks(), count: spec.linears.count)
        for (k, i) in idx.enumerated() {
            hooks[i].observer = { x, rows, f in
                var mx = [Float](repeating: -.infinity, count: f), mn = [Float](repeating: .infinity, count: f)
                for r in 0..<rows {
                    let row = x + r * f
                    for j in 0..<f { mx[j] = max(mx[j], row[j]); mn[j] = min(mn[j], row[j]) }
                }
                for j in 0..<f {
                    absMax[k][j] = max(absMax[k][j], abs(mx[j]), abs(mn[j]))
                    let m = (mx[j] + mn[j]) / 2
                    mid[k][j] = seen[k] ? 0.99 * mid[k][j] + 0.01 * m : m
                }
                seen[k] = true
            }
        }
        let ws = Workspace()
        for x in job.inputs { try job.model.forward(block: job.weights, hidden: x.copy(), workspace: ws, hooks: hooks) }
        return (absMax, mid)
    }

    /// The initial LET parameters of `job`'s block.
    static func initialParameters(_ job: BlockJob) throws -> LETParameters {
        let spec = job.model.blockSpec, r = job.recipe
        let shifts = r.usesShifts(job.model)
        let iq = spec.index(of: .q)!, io = spec.index(of: .o)!, ifc = spec.index(of: .gate) ?? spec.index(of: .up)!
        let idown = r.letDown ? spec.index(of: .down) : nil
        let (a, mid) = try statistics(job, [iq, ifc, io] + (idown.map { [$0] } ?? []))
        func colMax(_ i: Int) -> [Float] { EquivalentTransform.weightAbsMax(job.weights, [spec.linears[i].name]) }
        let alpha = r.alpha
        let s1 = EquivalentTransform.smoothingScales(activation: a[0], weight: colMax(iq), alpha: alpha)
        let s2 = EquivalentTransform.smoothingScales(activation: a[1], weight: colMax(ifc), alpha: alpha)
        // o input channels (q_dim) → kv channels: the largest over each query group.
        let K = spec.kvDim, d = spec.headDim, group = spec.heads / spec.kvHeads
        let wo = colMax(io)
        var a3 = [Float](repeating: 0, count: K), w3 = a3, m3 = a3
        for c in 0..<spec.qDim {
            let kv = (c / d / group) * d + c % d
            a3[kv] = max(a3[kv], a[2][c]); w3[kv] = max(w3[kv], wo[c]); m3[kv] += mid[2][c] / Float(group)
        }
        let s3 = EquivalentTransform.smoothingScales(activation: a3, weight: w3, alpha: alpha)
        // up → down (the extension): the down projection's input channels against its columns.
        let s5 = idown.map { EquivalentTransform.smoothingScales(activation: a[3], weight: colMax($0), alpha: alpha) }
        return try LETParameters(spec: spec, shifts: shifts, qkvScale: s1, qkvShift: shifts ? mid[0] : nil,
                                 fc1Scale: s2, fc1Shift: shifts ? mid[1] : nil, outScale: s3, outShift: shifts ? m3 : nil,
                                 downPair: r.letDown, downScale: s5)
    }

    public func quantize(_ job: BlockJob) throws -> BlockOutcome {
        let r = job.recipe, spec = job.model.blockSpec
        guard case .int(let bits) = try r.weightFormat else {
            throw SwiftQuantError.invalidArgument("omniquant needs an integer format, got \(r.wformat)")
        }
        let letp = try Self.initialParameters(job)
        let lwc = try spec.linears.map { l -> LWCTransform in
            let t = try LWCTransform(rows: l.outFeatures, columns: l.inFeatures, bits: bits, group: r.groupSize,
                                     symmetric: r.symmetric)
            t.gradWeight = Tensor(zeros: [l.outFeatures, l.inFeatures])
            return t
        }
        let graph = try job.model.blockGraph(job.weights, hooks: lwc.map { LinearHooks(weight: $0) }, maxRows: r.seqlen,
                                             activations: try r.activationScheme)
        graph.precision = r.precision
        graph.loss = r.loss
        graph.activationGradient = r.activationGradient
        graph.parameterGradients = true
        let adamLWC = try AdamW(parameters: lwc.map(\.u) + lwc.map(\.l), learningRate: r.lr)
        let adamLET = try AdamW(parameters: letp.parameters, learningRate: r.letLr)
        let lwcGrads = lwc.map(\.gradU) + lwc.map(\.gradL)

        var best = BestEpoch(lwc.map(\.u) + lwc.map(\.l) + letp.parameters, enabled: r.keepBest)
        var first = 0.0, last = 0.0, skipped = 0
        for epoch in 0..<r.epochs {
            var sum = 0.0, counted = 0
            for (j, (x, target)) in zip(job.inputs, job.targets).enumerated() {
                for t in lwc { t.zeroGradients() }
                letp.zeroGradients()
                try graph.install(try letp.apply(to: job.weights))
                let loss = try graph.trainStep(input: x, target: target)
                letp.backward(block: job.weights, dWeights: lwc.map(\.gradWeight), dBiases: graph.biasGradients,
                              dNorms: graph.normGradients)
                let finite = (lwcGrads + letp.gradients).allSatisfy { g in g.buffer.allSatisfy(\.isFinite) }
                if !loss.isFinite || !finite {
                    skipped += 1
                    adamLWC.learningRate *= 0.5
                    adamLET.learningRate *= 0.5
                    job.log("block \(job.index + 1): non-finite loss at epoch \(epoch + 1), window \(j + 1): step skipped, "
                            + "learning rates halved to \(adamLWC.learningRate) (LWC) and \(adamLET.learningRate) (LET)")
                    continue
                }
                try adamLWC.step(gradients: lwcGrads)
                try adamLET.step(gradients: letp.gradients)
                sum += Double(loss); counted += 1
            }
            let mean = counted > 0 ? sum / Double(counted) : .nan
            if epoch == 0 { first = mean }
            last = mean
            best.record(epoch: epoch, meanLoss: mean)
        }
        best.restore()
        // Fold: the transformed block, its weights quantized with the learned clipping.
        let transformed = try letp.apply(to: job.weights)
        var out = try OmniQuantLWC.quantize(transformed, spec: spec, clipping: lwc, config: try r.quantizerConfig)
        for (name, t) in letp.named { out.learned[name] = t }
        out.transformed = transformed
        out.lossFirstEpoch = first
        out.lossLastEpoch = last
        out.keptEpoch = best.epoch
        out.skippedSteps = skipped
        out.finalLearningRate = adamLWC.learningRate
        return out
    }
}
