import Foundation

/// Learnable Weight Clipping as a weight transform: `Ŵ = fakequant(W; σ(u)·max, σ(l)·min)` with one `u`, `l`
/// per row and group (ALGORITHMS.md §1), gradients into `gradU`, `gradL` (added; zero them between steps).
public final class LWCTransform: WeightTransform {
    public let quantizer: Autodiff.FakeQuantLWC
    public let u: Tensor, l: Tensor
    public let gradU: Tensor, gradL: Tensor
    /// When set, `backward` also adds `∂L/∂W` of the transform's input weight here (LET needs it; LWC alone keeps
    /// `W` frozen).
    public var gradWeight: Tensor?
    private let state: Autodiff.FakeQuantLWC.State

    /// `u`, `l`: `[rows, groupsPerRow]` (nil: OmniQuant's initial value 4, σ(4) ≈ 0.982).
    public init(rows: Int, columns: Int, bits: Int, group: GroupSize, symmetric: Bool,
                clampGradient: Autodiff.FakeQuantLWC.ClampGradient = .inclusive, u: Tensor? = nil, l: Tensor? = nil) throws {
        quantizer = try Autodiff.FakeQuantLWC(rows: rows, columns: columns, bits: bits, group: group,
                                              symmetric: symmetric, clampGradient: clampGradient)
        let shape = [quantizer.rows, quantizer.groupsPerRow]
        func initial(_ t: Tensor?, _ name: String) throws -> Tensor {
            if let t {
                try require(t.count == shape[0] * shape[1], "LWC: \(name) must have shape \(shape), got \(t.shape)")
                return t
            }
            let v = Tensor(zeros: shape)
            v.buffer.update(repeating: Autodiff.FakeQuantLWC.initialValue)
            return v
        }
        self.u = try initial(u, "u")
        self.l = try initial(l, "l")
        gradU = Tensor(zeros: shape)
        gradL = Tensor(zeros: shape)
        state = quantizer.makeState()
    }

    public func apply(weight: Tensor, into out: Tensor) throws {
        quantizer.forward(weight: weight.pointer, u: u.pointer, l: l.pointer, out: out.pointer, state: state)
    }

    public func backward(dWeight: Tensor, weight: Tensor) {
        quantizer.backward(dOut: dWeight.pointer, weight: weight.pointer, state: state, dU: gradU.pointer,
                           dL: gradL.pointer, dWeight: gradWeight?.pointer)
    }

    public func zeroGradients() {
        gradU.buffer.update(repeating: 0)
        gradL.buffer.update(repeating: 0)
        gradWeight?.buffer.update(repeating: 0)
    }

    /// σ(u), σ(l): the clipping multipliers of the max and the min.
    public var clip: (up: [Float], low: [Float]) {
        (u.buffer.map { 1 / (1 + Foundation.exp(-$0)) }, l.buffer.map { 1 / (1 + Foundation.exp(-$0)) })
    }
}

/// OmniQuant weight-only calibration of one block (ALGORITHMS.md §3): LWC parameters of every linear trained
/// with AdamW (constant learning rate, no weight decay) on `MSE(block_q(x), target)`, batch 1, fixed order;
/// then every weight is quantized with its learned clipping. A non-finite loss or gradient skips the step and
/// halves the learning rate (reported), instead of hanging or poisoning the parameters.
public struct OmniQuantLWC: BlockAlgorithm {
    public init() {}
    public var needsCalibrationData: Bool { true }

    /// Every linear of `block` quantized with its learned clipping (`lwc`, in `spec.linears` order), and the
    /// clipping parameters kept as learned tensors: the end of an LWC (or LWC + LET) calibration.
    static func quantize(_ block: TransformerBlock, spec: BlockSpec, clipping lwc: [LWCTransform],
                         config cfg: QuantizerConfig) throws -> BlockOutcome {
        var out = BlockOutcome(quantized: [:])
        for (k, l) in spec.linears.enumerated() {
            let w = block.linear(l.name).weight
            let (up, low) = lwc[k].clip
            out.quantized[l.name] = try up.withUnsafeBufferPointer { u in
                try low.withUnsafeBufferPointer { lo in
                    try Quantizer.quantize(UnsafeBufferPointer(w.buffer), rows: l.outFeatures, cols: l.inFeatures,
                                           config: cfg, clipUp: u, clipLow: lo)
                }
            }
            out.learned[l.name + ".lwc_u"] = lwc[k].u
            out.learned[l.name + ".lwc_l"] = lwc[k].l
            out.clipping[l.name] = (up, low)
        }
        return out
    }

    public func quantize(_ job: BlockJob) throws -> BlockOutcome {
        let r = job.recipe, spec = job.model.blockSpec
        guard case .int(let bits) = try r.weightFormat else {
            throw SwiftQuantError.invalidArgument("omniquant needs an integer format, got \(r.wformat)")
        }
        let lwc = try spec.linears.map {
            try LWCTransform(rows: $0.outFeatures, columns: $0.inFeatures, bits: bits, group: r.groupSize,
                             symmetric: r.symmetric)
        }
        let graph = try job.model.blockGraph(job.weights, hooks: lwc.map { LinearHooks(weight: $0) }, maxRows: r.seqlen,
                                             activations: try r.activationScheme)
        graph.precision = r.precision
        graph.loss = r.loss
        graph.activationGradient = r.activationGradient
        let adam = try AdamW(parameters: lwc.map(\.u) + lwc.map(\.l), learningRate: r.lr)
        let gradients = lwc.map(\.gradU) + lwc.map(\.gradL)
        var best = BestEpoch(lwc.map(\.u) + lwc.map(\.l), enabled: r.keepBest)
        var first = 0.0, last = 0.0, skipped = 0
        for epoch in 0..<r.epochs {
            var sum = 0.0, counted = 0
            for (j, (x, target)) in zip(job.inputs, job.targets).enumerated() {
                for t in lwc { t.zeroGradients() }
                let loss = try graph.trainStep(input: x, target: target)
                let finite = gradients.allSatisfy { g in g.buffer.allSatisfy(\.isFinite) }
                if !loss.isFinite || !finite {
                    skipped += 1
                    adam.learningRate *= 0.5
                    job.log("block \(job.index + 1): non-finite loss at epoch \(epoch + 1), window \(j + 1): step skipped, lr halved to \(adam.learningRate)")
                    continue
                }
                try adam.step(gradients: gradients)
                sum += Double(loss); counted += 1
            }
            let mean = counted > 0 ? sum / Double(counted) : .nan
            if epoch == 0 { first = mean }
            last = mean
            best.record(epoch: epoch, meanLoss: mean)
        }
        best.restore()
        var out = try Self.quantize(job.weights, spec: spec, clipping: lwc, config: try r.quantizerConfig)
        out.lossFirstEpoch = first
        out.lossLastEpoch = last
        out.keptEpoch = best.epoch
        out.skippedSteps = skipped
        out.finalLearningRate = adam.learningRate
        return out
    }
}
