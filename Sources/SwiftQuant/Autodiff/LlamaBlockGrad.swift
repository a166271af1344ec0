/// Shape of one Llama decoder block.
public struct LlamaBlockConfig: Sendable, Equatable {
    public var hidden: Int, heads: Int, kvHeads: Int, headDim: Int, ffn: Int
    public var rmsEps: Float, ropeTheta: Double

    public init(hidden: Int, heads: Int, kvHeads: Int, headDim: Int, ffn: Int, rmsEps: Float = 1e-5,
                ropeTheta: Double = 10_000) {
        self.hidden = hidden; self.heads = heads; self.kvHeads = kvHeads; self.headDim = headDim; self.ffn = ffn
        self.rmsEps = rmsEps; self.ropeTheta = ropeTheta
    }
}

/// The seven linears of a Llama block, in the order `LlamaBlockGrad` keeps them.
public enum LlamaLinear: Int, CaseIterable, Sendable {
    case q, k, v, o, gate, up, down
}

/// Frozen full-precision weights of a Llama block (PyTorch layouts: linears `[out, in]`, norms `[hidden]`).
public struct LlamaBlockWeights {
    public var inputNorm: Tensor, postNorm: Tensor
    public var q: Tensor, k: Tensor, v: Tensor, o: Tensor, gate: Tensor, up: Tensor, down: Tensor

    public init(inputNorm: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, postNorm: Tensor, gate: Tensor,
                up: Tensor, down: Tensor) {
        self.inputNorm = inputNorm; self.postNorm = postNorm
        self.q = q; self.k = k; self.v = v; self.o = o; self.gate = gate; self.up = up; self.down = down
    }

    public subscript(_ linear: LlamaLinear) -> Tensor {
        switch linear {
        case .q: return q
        case .k: return k
        case .v: return v
        case .o: return o
        case .gate: return gate
        case .up: return up
        case .down: return down
        }
    }
}

/// Forward and backward of one Llama block whose seven linears are LWC fake-quantized (weight-only):
/// `x → RMSNorm → q,k,v → RoPE(q,k) → causal GQA attention → o → +x → RMSNorm → gate, up → SiLU(gate)·up →
/// down → +`. The block-level tape (activations, probabilities, fake-quantized weights, quantizer state) and all
/// scratch are allocated once for `maxRows` tokens.
///
/// The learnable parameters are `u[i]`, `l[i]` (`[rows, groupsPerRow]` of linear `i`, initialised to 4);
/// `backward` adds their gradients into `gradU[i]`, `gradL[i]` (call `zeroGradients()` between steps, or use
/// `trainStep`). Pass them to `AdamW(parameters: u + l)` with gradients `gradU + gradL`.
///
/// Not thread-safe (one tape per object). Input widths need not be multiples of `groupSize`: the last group of a
/// row is then shorter (SmolLM2's 576 = 4·128 + 64). Norm weights and FP weights are frozen: their gradients are
/// not produced here (the ops can produce them).
public final class LlamaBlockGrad {
    public let config: LlamaBlockConfig
    public let weights: LlamaBlockWeights
    public let quantizers: [Autodiff.FakeQuantLWC]
    public let u: [Tensor], l: [Tensor]
    public let gradU: [Tensor], gradL: [Tensor]
    public let maxRows: Int

    private let states: [Autodiff.FakeQuantLWC.State]
    private let wq: [Tensor]     // fake-quantized weights of the last forward
    private let dwq: [Tensor]    // their gradients
    private var ropeCos: Tensor, ropeSin: Tensor
    private let attention: Autodiff.CausalAttention
    // tape
    private let xIn, n1, rstd1, q, k, v, attn, h1, n2, rstd2, gate, up, m, out: Tensor
    // backward scratch
    private let dh1, dm, dGate, dUp, dn2, da, dq, dk, dv, dn1, dx, dLoss: Tensor
    private var rows = 0
    private var usedQuantized = true

    public init(config c: LlamaBlockConfig, weights: LlamaBlockWeights, bits: Int, groupSize: Int,
                symmetric: Bool = false,
                clampGradient: Autodiff.FakeQuantLWC.ClampGradient = .inclusive,
                lwcParameters: [LlamaLinear: (u: Tensor, l: Tensor)]? = nil, maxRows: Int) throws {
        try require(c.hidden > 0 && c.ffn > 0 && c.headDim > 0 && c.headDim % 2 == 0,
                    "Llama block: hidden, ffn must be positive and headDim positive and even")
        let qd = c.heads * c.headDim, kd = c.kvHeads * c.headDim
        let shapes: [LlamaLinear: [Int]] = [.q: [qd, c.hidden], .k: [kd, c.hidden], .v: [kd, c.hidden],
                                            .o: [c.hidden, qd], .gate: [c.ffn, c.hidden], .up: [c.ffn, c.hidden],
                                            .down: [c.hidden, c.ffn]]
        for lin in LlamaLinear.allCases {
            try require(weights[lin].shape == shapes[lin]!,
                        "Llama block: \(lin) weight has shape \(weights[lin].shape), expected \(shapes[lin]!)")
        }
        try require(weights.inputNorm.shape == [c.hidden] && weights.postNorm.shape == [c.hidden],
                    "Llama block: norm weights must have shape [\(c.hidden)]")
        config = c
        self.weights = weights
        self.maxRows = maxRows
        attention = try Autodiff.CausalAttention(heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim,
                                                 maxRows: maxRows)
        quantizers = try LlamaLinear.allCases.map {
            try Autodiff.FakeQuantLWC(rows: shapes[$0]![0], columns: shapes[$0]![1], bits: bits,
                                      groupSize: groupSize, symmetric: symmetric,
                                      clampGradient: clampGradient)
        }
        states = quantizers.map { $0.makeState() }
        if let given = lwcParameters {
            var us: [Tensor] = [], ls: [Tensor] = []
            for lin in LlamaLinear.allCases {
                let q = quantizers[lin.rawValue], want = [q.rows, q.groupsPerRow]
                guard let p = given[lin] else { throw SwiftQuantError.invalidArgument("Llama block: no LWC parameters for \(lin)") }
                try require(p.u.count == want[0] * want[1] && p.l.count == want[0] * want[1],
                            "Llama block: LWC parameters of \(lin) must have shape \(want), got \(p.u.shape) and \(p.l.shape)")
                us.append(p.u); ls.append(p.l)
            }
            u = us; l = ls
        } else {
            u = quantizers.map { q in
                let t = Tensor(zeros: [q.rows, q.groupsPerRow])
                t.buffer.update(repeating: Autodiff.FakeQuantLWC.initialValue)
                return t
            }
            l = u.map { $0.copy() }
        }
        gradU = u.map { Tensor(zeros: $0.shape) }
        gradL = u.map { Tensor(zeros: $0.shape) }
        wq = LlamaLinear.allCases.map { Tensor(zeros: shapes[$0]!) }
        dwq = LlamaLinear.allCases.map { Tensor(zeros: shapes[$0]!) }
        (ropeCos, ropeSin) = Autodiff.Rope.tables(rows: maxRows, headDim: c.headDim, theta: c.ropeTheta)
        let T = maxRows, H = c.hidden, F = c.ffn
        func z(_ s: [Int]) -> Tensor { Tensor(zeros: s) }
        xIn = z([T, H]); n1 = z([T, H]); rstd1 = z([T]); q = z([T, qd]); k = z([T, kd]); v = z([T, kd])
        attn = z([T, qd]); h1 = z([T, H]); n2 = z([T, H]); rstd2 = z([T]); gate = z([T, F]); up = z([T, F])
        m = z([T, F]); out = z([T, H])
        dh1 = z([T, H]); dm = z([T, F]); dGate = z([T, F]); dUp = z([T, F]); dn2 = z([T, H]); da = z([T, qd])
        dq = z([T, qd]); dk = z([T, kd]); dv = z([T, kd]); dn1 = z([T, H]); dx = z([T, H]); dLoss = z([T, H])
    }

    /// Replaces the RoPE tables (`[≥ rows, headDim]`, row t = position t), e.g. with a model's own.
    public func setRopeTables(cos: Tensor, sin: Tensor) throws {
        try require(cos.shape == sin.shape && cos.rank == 2 && cos.shape[1] == config.headDim && cos.shape[0] >= 1,
                    "Llama block: RoPE tables must both be [rows, \(config.headDim)]")
        ropeCos = cos; ropeSin = sin
    }

    public func zeroGradients() {
        for g in gradU + gradL { g.buffer.update(repeating: 0) }
    }

    /// The fake-quantized weight of `linear` from the last quantized forward.
    public func fakeQuantizedWeight(_ linear: LlamaLinear) -> Tensor { wq[linear.rawValue] }

    /// Runs the block on `x` (`[rows, hidden]`, rows ≤ maxRows) with fake-quantized weights (or the FP ones when
    /// `quantized` is false). The result is a view of an internal buffer, valid until the next `forward`.
    public func forward(_ x: Tensor, quantized: Bool = true) throws -> Tensor {
        let c = config, H = c.hidden, F = c.ffn, qd = c.heads * c.headDim, kd = c.kvHeads * c.headDim
        try require(x.rank == 2 && x.shape[1] == H && x.shape[0] >= 1 && x.shape[0] <= maxRows,
                    "Llama block: input \(x.shape), expected [1...\(maxRows), \(H)]")
        let T = x.shape[0]
        try require(ropeCos.shape[0] >= T, "Llama block: RoPE tables hold \(ropeCos.shape[0]) rows, need \(T)")
        rows = T
        usedQuantized = quantized
        xIn.pointer.update(from: x.pointer, count: T * H)
        var w = [UnsafePointer<Float>]()
        for lin in LlamaLinear.allCases {
            let i = lin.rawValue
            if quantized {
                quantizers[i].forward(weight: weights[lin].pointer, u: u[i].pointer, l: l[i].pointer,
                                      out: wq[i].pointer, state: states[i])
                w.append(UnsafePointer(wq[i].pointer))
            } else {
                w.append(UnsafePointer(weights[lin].pointer))
            }
        }
        typealias A = Autodiff
        A.RMSNorm.forward(x: xIn.pointer, weight: weights.inputNorm.pointer, y: n1.pointer, rstd: rstd1.pointer,
                          rows: T, dim: H, eps: c.rmsEps)
        A.Linear.forward(x: n1.pointer, weight: w[0], bias: nil, y: q.pointer, rows: T, inFeatures: H, outFeatures: qd)
        A.Linear.forward(x: n1.pointer, weight: w[1], bias: nil, y: k.pointer, rows: T, inFeatures: H, outFeatures: kd)
        A.Linear.forward(x: n1.pointer, weight: w[2], bias: nil, y: v.pointer, rows: T, inFeatures: H, outFeatures: kd)
        A.Rope.forward(x: q.pointer, y: q.pointer, cos: ropeCos.pointer, sin: ropeSin.pointer, rows: T,
                       heads: c.heads, headDim: c.headDim)
        A.Rope.forward(x: k.pointer, y: k.pointer, cos: ropeCos.pointer, sin: ropeSin.pointer, rows: T,
                       heads: c.kvHeads, headDim: c.headDim)
        attention.forward(q: q.pointer, k: k.pointer, v: v.pointer, out: attn.pointer, rows: T)
        A.Linear.forward(x: attn.pointer, weight: w[3], bias: nil, y: h1.pointer, rows: T, inFeatures: qd, outFeatures: H)
        A.Residual.forward(a: h1.pointer, b: xIn.pointer, y: h1.pointer, count: T * H)
        A.RMSNorm.forward(x: h1.pointer, weight: weights.postNorm.pointer, y: n2.pointer, rstd: rstd2.pointer,
                          rows: T, dim: H, eps: c.rmsEps)
        A.Linear.forward(x: n2.pointer, weight: w[4], bias: nil, y: gate.pointer, rows: T, inFeatures: H, outFeatures: F)
        A.Linear.forward(x: n2.pointer, weight: w[5], bias: nil, y: up.pointer, rows: T, inFeatures: H, outFeatures: F)
        A.SiLUMul.forward(gate: gate.pointer, up: up.pointer, y: m.pointer, count: T * F)
        A.Linear.forward(x: m.pointer, weight: w[6], bias: nil, y: out.pointer, rows: T, inFeatures: F, outFeatures: H)
        A.Residual.forward(a: out.pointer, b: h1.pointer, y: out.pointer, count: T * H)
        return Tensor(shape: [T, H], storage: out.storage, byteOffset: out.byteOffset)
    }

    /// Back-propagates `dOut` (`[rows, hidden]`) through the last quantized forward: adds the LWC gradients into
    /// `gradU`/`gradL` and returns `∂L/∂x` (a view of an internal buffer, valid until the next `backward`).
    /// With `inputGradient: false` the gradient of the block's input is not computed (calibration does not need
    /// it: three matrix products and a norm backward fewer); the returned tensor is then meaningless.
    public func backward(_ dOut: Tensor, inputGradient: Bool = true) throws -> Tensor {
        let c = config, H = c.hidden, F = c.ffn, qd = c.heads * c.headDim, kd = c.kvHeads * c.headDim, T = rows
        try require(T > 0 && usedQuantized, "Llama block: backward needs a quantized forward first")
        try require(dOut.shape == [T, H], "Llama block: dOut \(dOut.shape), expected [\(T), \(H)]")
        typealias A = Autodiff
        let w = wq.map { UnsafePointer($0.pointer) }, dw = dwq.map { $0.pointer }
        let g = dOut.pointer
        // down, SiLU·up, gate/up
        A.Linear.backward(dY: g, x: m.pointer, weight: w[6], dX: dm.pointer, dWeight: dw[6], overwriteWeightGradient: true, rows: T,
                          inFeatures: F, outFeatures: H)
        A.SiLUMul.backward(dY: dm.pointer, gate: gate.pointer, up: up.pointer, dGate: dGate.pointer,
                           dUp: dUp.pointer, count: T * F)
        A.Linear.backward(dY: dGate.pointer, x: n2.pointer, weight: w[4], dX: dn2.pointer, dWeight: dw[4], overwriteWeightGradient: true,
                          rows: T, inFeatures: H, outFeatures: F)
        A.Linear.backward(dY: dUp.pointer, x: n2.pointer, weight: w[5], dX: dn2.pointer, accumulate: true,
                          dWeight: dw[5], overwriteWeightGradient: true, rows: T, inFeatures: H, outFeatures: F)
        // second residual + post-attention norm
        dh1.pointer.update(from: g, count: T * H)
        A.RMSNorm.backward(dY: dn2.pointer, x: h1.pointer, weight: weights.postNorm.pointer, rstd: rstd2.pointer,
                           dX: dh1.pointer, accumulate: true, dWeight: nil, rows: T, dim: H)
        // o, attention, RoPE, q/k/v
        A.Linear.backward(dY: dh1.pointer, x: attn.pointer, weight: w[3], dX: da.pointer, dWeight: dw[3], overwriteWeightGradient: true,
                          rows: T, inFeatures: qd, outFeatures: H)
        attention.backward(dOut: da.pointer, q: q.pointer, k: k.pointer, v: v.pointer, dQ: dq.pointer,
                           dK: dk.pointer, dV: dv.pointer, rows: T)
        A.Rope.backward(dY: dq.pointer, dX: dq.pointer, cos: ropeCos.pointer, sin: ropeSin.pointer, rows: T,
                        heads: c.heads, headDim: c.headDim)
        A.Rope.backward(dY: dk.pointer, dX: dk.pointer, cos: ropeCos.pointer, sin: ropeSin.pointer, rows: T,
                        heads: c.kvHeads, headDim: c.headDim)
        let dn1p: UnsafeMutablePointer<Float>? = inputGradient ? dn1.pointer : nil
        A.Linear.backward(dY: dq.pointer, x: n1.pointer, weight: w[0], dX: dn1p, dWeight: dw[0], overwriteWeightGradient: true,
                          rows: T, inFeatures: H, outFeatures: qd)
        A.Linear.backward(dY: dk.pointer, x: n1.pointer, weight: w[1], dX: dn1p, accumulate: true,
                          dWeight: dw[1], overwriteWeightGradient: true, rows: T, inFeatures: H, outFeatures: kd)
        A.Linear.backward(dY: dv.pointer, x: n1.pointer, weight: w[2], dX: dn1p, accumulate: true,
                          dWeight: dw[2], overwriteWeightGradient: true, rows: T, inFeatures: H, outFeatures: kd)
        // first residual + input norm
        if inputGradient {
            dx.pointer.update(from: dh1.pointer, count: T * H)
            A.RMSNorm.backward(dY: dn1.pointer, x: xIn.pointer, weight: weights.inputNorm.pointer, rstd: rstd1.pointer,
                               dX: dx.pointer, accumulate: true, dWeight: nil, rows: T, dim: H)
        }
        // LWC parameters
        for lin in LlamaLinear.allCases {
            let i = lin.rawValue
            quantizers[i].backward(dOut: dw[i], weight: weights[lin].pointer, state: states[i],
                                   dU: gradU[i].pointer, dL: gradL[i].pointer)
        }
        return Tensor(shape: [T, H], storage: dx.storage, byteOffset: dx.byteOffset)
    }

    /// Zeroes the gradients, runs the quantized forward on `input`, the loss `MSE(out, target)` and the backward
    /// pass; returns the loss. The LWC gradients are then in `gradU`/`gradL`.
    public func trainStep(input: Tensor, target: Tensor) throws -> Float {
        zeroGradients()
        let y = try forward(input)
        try require(target.shape == y.shape, "Llama block: target \(target.shape), output \(y.shape)")
        let n = y.count
        let loss = Autodiff.MSELoss.forward(pred: y.pointer, target: target.pointer, count: n)
        Autodiff.MSELoss.backward(pred: y.pointer, target: target.pointer, dPred: dLoss.pointer, count: n)
        _ = try backward(Tensor(shape: y.shape, storage: dLoss.storage, byteOffset: dLoss.byteOffset), inputGradient: false)
        return loss
    }
}
