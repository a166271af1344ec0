import Foundation

/// GPTQ as a calibration algorithm (ALGORITHMS.md §5): within a block, linears are quantized in execution
/// order by the groups that share an input — q/k/v, then o, then gate/up (fc1), then down (fc2). Before each group
/// the block runs on the quantized-path inputs with the groups before it already quantized, and the input
/// observer hook accumulates `H = 2/n·Σ XᵀX` (a running mean in float32 through BLAS) of what the group's linears
/// consume; each linear of the group is then quantized by `GPTQ.quantize` on that Hessian.
///
/// With activation quantization (W4A8, W8A8) the observer sees the quantized inputs, as the layer consumes them
/// at inference. With `act_order` the columns are visited by decreasing Hessian diagonal and `g_idx` records
/// each column's group.
///
/// Cost: the block runs once per group and window, each time only up to the group's input (`stopAt`).
public struct GPTQAlgorithm: BlockAlgorithm {
    public init() {}
    public var needsCalibrationData: Bool { true }

    /// Linear indices grouped by shared input, in execution order.
    static func inputGroups(_ spec: BlockSpec) -> [[Int]] {
        let order: [[LinearRole]] = [[.q, .k, .v], [.o], [.gate, .up], [.down]]
        return order.map { roles in roles.compactMap { spec.index(of: $0) } }.filter { !$0.isEmpty }
    }

    /// `‖(W − Ŵ)·Xᵀ‖²_F` over the `tokens` rows behind `h = (2/n)·XᵀX`: `(n/2)·Σ_r e_r·H·e_rᵀ`.
    static func outputError(_ w: Tensor, _ q: Tensor, _ h: Tensor, tokens: Int) -> Double {
        let rows = w.shape[0], cols = w.shape[1]
        let e = Tensor(zeros: [rows, cols]), eh = Tensor(zeros: [rows, cols])
        for k in 0..<e.count { e.pointer[k] = w.pointer[k] - q.pointer[k] }
        BLAS.sgemm(m: rows, n: cols, k: cols, a: e.pointer, lda: cols, b: h.pointer, ldb: cols, c: eh.pointer, ldc: cols)
        var s = 0.0
        for k in 0..<e.count { s += Double(e.pointer[k]) * Double(eh.pointer[k]) }
        return s * Double(tokens) / 2
    }

    public func quantize(_ job: BlockJob) throws -> BlockOutcome {
        try Self.round(job.weights, job: job, actOrder: job.recipe.actOrder)
    }

    /// GPTQ over every linear of `block` (the job's FP block, or its equivalent transform), group by group on the
    /// job's quantized-path inputs. `clipping` (by linear name; [out · groups] multipliers of each group's max and
    /// min) puts GPTQ on a learned clipping grid. Each linear's reference error is that of `plain[name]`, the same
    /// grid's round-to-nearest the caller already has (what the inner algorithm wrote), or else RTN's.
    static func round(_ block: TransformerBlock, job: BlockJob, actOrder: Bool,
                      clipping: [String: (up: [Float], low: [Float])] = [:],
                      plain rounded: [String: QuantizedTensor] = [:]) throws -> BlockOutcome {
        let spec = job.model.blockSpec, cfg = try job.recipe.quantizerConfig
        var linears = block.linears
        var out = BlockOutcome(quantized: [:])
        let ws = Workspace()
        // Hessians of what the linears consume at inference: with activation quantization, the quantized inputs.
        let scheme = try job.recipe.activationScheme
        for group in Self.inputGroups(spec) {
            let f = spec.linears[group[0]].inFeatures
            let h = Tensor(zeros: [f, f])
            var tokens = 0
            var hooks = Array(repeating: LinearHooks(), count: spec.linears.count)
            hooks[group[0]].observer = { x, rows, features in
                // H ← H·n/(n+m) + (2/(n+m))·XᵀX
                let n = Float(tokens), m = Float(rows)
                BLAS.sgemm(transA: true, m: features, n: features, k: rows, alpha: 2 / (n + m), a: x, lda: features,
                           b: x, ldb: features, beta: n / (n + m), c: h.pointer, ldc: features)
                tokens += rows
            }
            let current = TransformerBlock(index: job.index, linearNames: block.linearNames, linears: linears,
                                           norms: block.norms)
            for x in job.inputs {
                let y = x.copy()
                try job.model.forward(block: current, hidden: y, workspace: ws, hooks: hooks, stopAt: group[0],
                                      activations: scheme)
            }
            for i in group {
                let name = spec.linears[i].name
                let w = block.linear(name).weight
                let clip = clipping[name]
                let r = try GPTQ.quantize(weight: w, hessian: h, config: cfg, actOrder: actOrder, clipUp: clip?.up,
                                          clipLow: clip?.low)
                if r.dampingRetries > 0 {
                    job.log("block \(job.index + 1) \(name): Cholesky needed \(r.dampingRetries) damping retries")
                }
                out.quantized[name] = r.quantized
                // ‖(W − Ŵ)X‖² on the captured inputs (as tr(E·H·Eᵀ)·n/2), GPTQ's and plain rounding's on the same grid.
                let plain = try rounded[name]?.dequantized() ?? RTN.quantizeWeight(w, config: cfg, name: name).1
                out.linearErrors[name] = (Self.outputError(w, r.dequantized, h, tokens: tokens),
                                          Self.outputError(w, plain, h, tokens: tokens))
                linears[name] = Linear(weight: r.dequantized, bias: block.linear(name).bias)
            }
        }
        return out
    }
}

/// GPTQ as the last step of another algorithm (`weight_rounding: gptq`): the inner algorithm (SmoothQuant,
/// OmniQuant LWC or LWC + LET) chooses the transform and, for OmniQuant, the clipping; instead of rounding each
/// weight to nearest on that grid, GPTQ rounds the transformed weights column by column with its error feedback,
/// on the Hessians of the transformed block's quantized-path inputs — llm-compressor's SmoothQuant → GPTQ recipe,
/// and the same composition for OmniQuant. Everything else of the inner outcome (transform, learned parameters,
/// losses) is kept.
public struct GPTQRounding: BlockAlgorithm {
    public let inner: BlockAlgorithm
    public init(_ inner: BlockAlgorithm) { self.inner = inner }
    public var needsCalibrationData: Bool { true }

    public func quantize(_ job: BlockJob) throws -> BlockOutcome {
        var out = try inner.quantize(job)
        let rounded = try GPTQAlgorithm.round(out.transformed ?? job.weights, job: job, actOrder: false,
                                              clipping: out.clipping, plain: out.quantized)
        out.quantized = rounded.quantized
        out.linearErrors = rounded.linearErrors
        return out
    }
}
