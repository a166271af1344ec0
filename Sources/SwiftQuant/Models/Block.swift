import CSQSupport
import Foundation

// The block, once: one forward over a `BlockSpec` for inference, evaluation, input capture and calibration, and
// the backward pass of that same forward. Every linear goes through one operation (`linear(_:…)` below) with
// three hooks: a weight transform, an input-activation quantizer and an input observer.

/// Replaces a linear's weight by a function of it (fake-quantization, LWC, LET) and back-propagates into the
/// transform's own parameters.
public protocol WeightTransform: AnyObject {
    /// Writes the effective weight (`weight`'s shape) into `out`.
    func apply(weight: Tensor, into out: Tensor) throws
    /// Given `∂L/∂Ŵ` of the effective weight, adds the gradients of the transform's parameters.
    func backward(dWeight: Tensor, weight: Tensor)
}

/// Simulated quantization of a linear's input `[rows, features]`, dynamic (parameters from the values
/// themselves).
public protocol ActivationQuantizer: AnyObject {
    func quantize(_ x: UnsafeMutablePointer<Float>, rows: Int, features: Int)
    /// Turns `gradient` (`∂L/∂x̂` of the quantized values, `[rows, features]`) into `∂L/∂x` in place, given the
    /// unquantized `input` the forward saw. The default is straight-through (the gradient passes unchanged);
    /// `DynamicActivationQuantizer` also back-propagates through its scale (ALGORITHMS.md §1: `h` is not detached).
    func backward(input: UnsafePointer<Float>, gradient: UnsafeMutablePointer<Float>, rows: Int, features: Int)
}

extension ActivationQuantizer {
    public func backward(input: UnsafePointer<Float>, gradient: UnsafeMutablePointer<Float>, rows: Int, features: Int) {}
}

/// Sees what a linear consumes (after its input quantizer): `(input [rows, features], rows, features)`.
public typealias InputObserver = (UnsafePointer<Float>, Int, Int) -> Void

/// The three hooks of one linear. Linears that share an input (q/k/v, gate/up) see it once per linear.
public struct LinearHooks {
    public var weight: WeightTransform?
    public var input: ActivationQuantizer?
    public var observer: InputObserver?
    public init(weight: WeightTransform? = nil, input: ActivationQuantizer? = nil, observer: InputObserver? = nil) {
        self.weight = weight; self.input = input; self.observer = observer
    }
    var isEmpty: Bool { weight == nil && input == nil && observer == nil }
}

/// Rotary tables for positions `0..<rows`: `cos`, `sin` are `[rows, headDim/2]` (channel j of a head pairs with
/// j + headDim/2, Hugging Face `rotate_half`).
public struct RopeTables: @unchecked Sendable {
    public let cos: Tensor, sin: Tensor
    public init(cos: Tensor, sin: Tensor) { self.cos = cos; self.sin = sin }
    public var rows: Int { cos.shape[0] }
}

/// A block made runnable: its description, weights, hooks and (for RoPE) position tables.
///
/// `forward` with `recording: true` keeps a tape (activations, norm statistics, attention probabilities, effective
/// weights) for `maxRows` tokens, allocated once; `backward` walks it in reverse and hands `∂L/∂Ŵ` of every
/// linear to its weight transform. Without recording, buffers come from a `Workspace` and nothing is kept
/// (`TransformerModel.forward(block:hidden:workspace:)`). Not thread-safe: one tape per object.
public final class BlockGraph {
    public let spec: BlockSpec
    public let weights: TransformerBlock
    public var hooks: [LinearHooks]
    /// Quantizes Q and K (after RoPE) and V in place, per head per token (the KV cache); its `backward` runs on
    /// their gradients (the tape keeps Q, K, V before quantization).
    public var kvQuantizer: ActivationQuantizer?
    public let maxRows: Int
    let rope: RopeTables?
    private var linears: [Linear]
    private var norm1: (weight: Tensor, bias: Tensor?), norm2: (weight: Tensor, bias: Tensor?)
    private let attention: Autodiff.CausalAttention
    /// With `parameterGradients`, `backward` also writes (overwrites) the gradients of the norms' weights and
    /// biases (`normGradients`: attention norm, MLP norm) and of every linear's bias (`biasGradients`, zeros for a
    /// linear without one): what an equivalent transformation (LET) back-propagates into its scales and shifts.
    public var parameterGradients = false
    /// The arithmetic of the block's matrix products, forward and backward (`--precision bf16`: bf16 operands, fp32
    /// accumulation). Norms, RoPE, softmax, activation quantizers, the loss and every parameter stay fp32.
    public var precision: GEMMPrecision = .fp32
    /// What `trainStep` minimises: the paper's MSE, or MSE with every token rescaled to the window's mean token
    /// energy (`CalibrationLoss`).
    public var loss: CalibrationLoss = .mse
    /// How `backward` passes the activation and KV quantizers: through their own backward (`.scale`, the paper's
    /// code), or unchanged (`.ste`).
    public var activationGradient: ActivationGradient = .scale
    public let normGradients: [(weight: Tensor, bias: Tensor)]
    public let biasGradients: [Tensor]
    private let tape: Tape
    private var rows = 0

    /// Linear indices by role.
    private let iq: Int, ik: Int, iv: Int, io: Int, igate: Int?, iup: Int, idown: Int

    public init(spec: BlockSpec, weights: TransformerBlock, hooks: [LinearHooks]? = nil, kv: ActivationQuantizer? = nil,
                rope: RopeTables?, maxRows: Int) throws {
        try spec.validate()
        try require(maxRows > 0, "block: maxRows must be positive")
        try require(!spec.rope || (rope != nil && rope!.rows >= maxRows && rope!.cos.shape[1] == spec.headDim / 2),
                    "block: RoPE tables for \(maxRows) positions of head_dim \(spec.headDim) are needed")
        self.spec = spec
        self.weights = weights
        self.hooks = hooks ?? Array(repeating: LinearHooks(), count: spec.linears.count)
        try require(self.hooks.count == spec.linears.count, "block: \(self.hooks.count) hooks for \(spec.linears.count) linears")
        self.kvQuantizer = kv
        self.maxRows = maxRows
        self.rope = rope
        linears = try Self.checkedLinears(spec, weights)
        try require(linears.allSatisfy { $0.lowRank == nil },
                    "block \(weights.index): a recording graph (calibration) takes no low-rank (LoRC) terms")
        (norm1, norm2) = try Self.checkedNorms(spec, weights)
        iq = spec.index(of: .q)!; ik = spec.index(of: .k)!; iv = spec.index(of: .v)!; io = spec.index(of: .o)!
        igate = spec.index(of: .gate); iup = spec.index(of: .up)!; idown = spec.index(of: .down)!
        attention = try Autodiff.CausalAttention(heads: spec.heads, kvHeads: spec.kvHeads, headDim: spec.headDim,
                                                 maxRows: maxRows)
        tape = Tape(spec: spec, rows: maxRows)
        normGradients = (0..<2).map { _ in (Tensor(zeros: [spec.hidden]), Tensor(zeros: [spec.hidden])) }
        biasGradients = spec.linears.map { Tensor(zeros: [$0.outFeatures]) }
    }

    /// Replaces linear `i`'s weight (the input of its weight transform) and bias for the next forward (an
    /// equivalent transformation recomputes them at every step). Shapes are checked.
    public func setLinear(_ i: Int, weight: Tensor, bias: Tensor?) throws {
        let l = spec.linears[i]
        try require(weight.shape == [l.outFeatures, l.inFeatures], "block: \(l.name) weight \(weight.shape)")
        try require(bias.map { $0.count == l.outFeatures } ?? true, "block: \(l.name) bias of \(bias?.count ?? 0) values")
        linears[i] = Linear(weight: weight, bias: bias)
    }

    /// Replaces the two norms' weights and biases for the next forward. An RMSNorm may carry a bias too (added
    /// after the scaling): where LET shifts fold on RMSNorm families (`let_shifts`).
    public func setNorms(attention: (weight: Tensor, bias: Tensor?), mlp: (weight: Tensor, bias: Tensor?)) throws {
        for (p, n) in [(attention, spec.attentionNorm), (mlp, spec.mlpNorm)] {
            try require(p.weight.count == spec.hidden && (p.bias?.count ?? spec.hidden) == spec.hidden,
                        "block: norm '\(n.name)' must have \(spec.hidden) values")
        }
        norm1 = attention
        norm2 = mlp
    }

    /// Installs `block`'s linears (weights and biases) and norms for the next forward: what an equivalent
    /// transformation does with its transformed block at every step. A norm without weights runs as ones.
    public func install(_ block: TransformerBlock) throws {
        for (i, l) in spec.linears.enumerated() {
            guard let lin = block.linears[l.name] else {
                throw SwiftQuantError.format("block \(block.index): no linear '\(l.name)'")
            }
            try setLinear(i, weight: lin.weight, bias: lin.bias)
        }
        func norm(_ n: BlockSpec.NormSpec) -> (weight: Tensor, bias: Tensor?) {
            guard n.affine, let w = block.norms[n.name]?.weight else {
                let ones = Tensor(zeros: [spec.hidden]); ones.buffer.update(repeating: 1); return (ones, nil)
            }
            return (w, block.norms[n.name]?.bias)
        }
        try setNorms(attention: norm(spec.attentionNorm), mlp: norm(spec.mlpNorm))
    }

    /// The linear `i` as the graph runs it (its weight before the weight transform, its bias).
    public func linear(_ i: Int) -> Linear { linears[i] }

    // MARK: weights and norms, checked once

    static func checkedLinears(_ spec: BlockSpec, _ w: TransformerBlock) throws -> [Linear] {
        try spec.linears.map { s in
            guard let l = w.linears[s.name] else { throw SwiftQuantError.format("block \(w.index): no linear '\(s.name)'") }
            try require(l.weight.shape == [s.outFeatures, s.inFeatures],
                        "block \(w.index): \(s.name) weight has shape \(l.weight.shape), expected [\(s.outFeatures), \(s.inFeatures)]")
            try require(l.bias.map { $0.count == s.outFeatures } ?? true,
                        "block \(w.index): \(s.name) bias has \(l.bias?.count ?? 0) values, expected \(s.outFeatures)")
            return l
        }
    }

    static func checkedNorms(_ spec: BlockSpec, _ w: TransformerBlock) throws
        -> ((weight: Tensor, bias: Tensor?), (weight: Tensor, bias: Tensor?))
    {
        func one(_ n: BlockSpec.NormSpec) throws -> (weight: Tensor, bias: Tensor?) {
            let nw = w.norms[n.name]
            if !n.affine {  // LayerNorm without elementwise affine: weight 1, no bias
                let ones = Tensor(zeros: [spec.hidden])
                ones.buffer.update(repeating: 1)
                return (ones, nil)
            }
            guard let weight = nw?.weight else { throw SwiftQuantError.format("block \(w.index): no norm '\(n.name)'") }
            try require(weight.count == spec.hidden && (nw?.bias?.count ?? spec.hidden) == spec.hidden,
                        "block \(w.index): norm '\(n.name)' must have \(spec.hidden) values")
            return (weight, nw?.bias)
        }
        return (try one(spec.attentionNorm), try one(spec.mlpNorm))
    }

    // MARK: forward

    /// Runs the block on `x` (`[rows, hidden]`, rows ≤ maxRows), recording the tape. The result is a view of an
    /// internal buffer, valid until the next `forward`.
    public func forward(_ x: Tensor) throws -> Tensor {
        let H = spec.hidden
        try require(x.rank == 2 && x.shape[1] == H && x.shape[0] >= 1 && x.shape[0] <= maxRows,
                    "block: input \(x.shape), expected [1...\(maxRows), \(H)]")
        let T = x.shape[0]
        rows = T
        tape.xIn.pointer.update(from: x.pointer, count: T * H)
        for i in linears.indices {
            if let t = hooks[i].weight { try t.apply(weight: linears[i].weight, into: tape.weights[i]) }
        }
        let w = linears.indices.map { hooks[$0].weight == nil ? linears[$0].weight.pointer : tape.weights[$0].pointer }
        attention.precision = precision
        BlockForward(spec: spec, linears: linears, hooks: hooks, kv: kvQuantizer, norm1: norm1, norm2: norm2, rope: rope,
                     precision: precision)
            .run(T: T, x: tape.xIn.pointer, buffers: tape.buffers, weights: w, ws: nil, attention: attention)
        return Tensor(shape: [T, H], storage: tape.out.storage, byteOffset: tape.out.byteOffset)
    }

    /// Runs the block in place on `hidden` (`[T, hidden]`) with scratch from `ws`, recording nothing. Weight
    /// transforms are applied on each call.
    static func infer(spec: BlockSpec, weights block: TransformerBlock, hooks: [LinearHooks]?, kv: ActivationQuantizer? = nil,
                      rope: RopeTables?, hidden: Tensor, ws: Workspace, stopAt: Int? = nil) throws {
        let T = hidden.shape[0], H = spec.hidden
        try require(hidden.rank == 2 && hidden.shape[1] == H, "block: hidden state \(hidden.shape), expected [T, \(H)]")
        try require(!spec.rope || (rope != nil && rope!.rows >= T), "block: RoPE tables for \(T) positions are needed")
        let lin = try checkedLinears(spec, block)
        let (n1, n2) = try checkedNorms(spec, block)
        var w = lin.map { $0.weight.pointer }
        if let hooks {
            for (i, h) in hooks.enumerated() {
                guard let t = h.weight else { continue }
                let out = Tensor(zeros: lin[i].weight.shape)
                try t.apply(weight: lin[i].weight, into: out)
                w[i] = out.pointer
            }
        }
        let x = hidden.pointer
        let ffnWidth = spec.ffn
        var b = Buffers()
        b.n1 = ws.buffer(0, T * H); b.n2 = b.n1
        b.q = ws.buffer(1, T * spec.qDim); b.k = ws.buffer(2, T * spec.kvDim); b.v = ws.buffer(3, T * spec.kvDim)
        b.attn = ws.buffer(4, T * spec.qDim)
        b.h1 = x; b.out = x
        b.a = ws.buffer(6, T * ffnWidth); b.b = ws.buffer(7, T * ffnWidth); b.m = b.a
        if hooks?.contains(where: { $0.input != nil }) == true {
            for s in 0..<4 { b.sites[s] = ws.buffer(12 + s, T * max(spec.qDim, ffnWidth, H)) }
        }
        let maxRank = lin.map { $0.lowRank?.rank ?? 0 }.max() ?? 0
        BlockForward(spec: spec, linears: lin, hooks: hooks, kv: kv, norm1: n1, norm2: n2, rope: rope, stopAt: stopAt,
                     lowRankScratch: maxRank > 0 ? ws.buffer(16, T * maxRank) : nullFloat)
            .run(T: T, x: x, buffers: b, weights: w, ws: ws)
    }

    /// Pointers to the activations of one forward. In inference `h1` and `out` alias the input (the residual
    /// stream is updated in place) and `m` aliases `a`.
    struct Buffers {
        var n1 = nullFloat, q = nullFloat, k = nullFloat, v = nullFloat, attn = nullFloat, h1 = nullFloat
        var n2 = nullFloat, a = nullFloat, b = nullFloat, m = nullFloat, out = nullFloat
        var mean1 = nullFloat, rstd1 = nullFloat, mean2 = nullFloat, rstd2 = nullFloat
        /// Quantized copies of the four linear inputs (q/k/v, o, gate/up, down) when an input quantizer is set.
        var sites = [UnsafeMutablePointer<Float>](repeating: nullFloat, count: 4)
        /// Recording only: Q, K (after RoPE) and V before the KV quantizer (null in inference).
        var qPre = nullFloat, kPre = nullFloat, vPre = nullFloat
    }

    // MARK: backward

    /// Back-propagates `dOut` (`[rows, hidden]`) through the last `forward`: hands `∂L/∂Ŵ` of every linear with a
    /// weight transform to it, and returns `∂L/∂x` (a view of an internal buffer, valid until the next
    /// `backward`). With `inputGradient: false` the block input's gradient is not computed (calibration does not
    /// need it: three matrix products and a norm backward fewer); the returned tensor is then meaningless.
    @discardableResult
    public func backward(_ dOut: Tensor, inputGradient: Bool = true) throws -> Tensor {
        let s = spec, H = s.hidden, F = s.ffn, T = rows
        try require(T > 0, "block: backward needs a forward first")
        try require(dOut.shape == [T, H], "block: dOut \(dOut.shape), expected [\(T), \(H)]")
        typealias A = Autodiff
        let t = tape, b = t.buffers, d = t.grads
        let w = linears.indices.map { UnsafePointer(hooks[$0].weight == nil ? linears[$0].weight.pointer : t.weights[$0].pointer) }
        let g = dOut.pointer
        func input(_ i: Int, site: Int, _ plain: UnsafeMutablePointer<Float>) -> UnsafePointer<Float> {
            UnsafePointer(hooks[i].input == nil ? plain : b.sites[site])
        }
        func dW(_ i: Int) -> UnsafeMutablePointer<Float>? { hooks[i].weight == nil ? nil : t.weightGrads[i].pointer }
        func linearBack(_ i: Int, dY: UnsafePointer<Float>, x: UnsafePointer<Float>, dX: UnsafeMutablePointer<Float>?,
                        accumulate: Bool) {
            let l = s.linears[i]
            A.Linear.backward(dY: dY, x: x, weight: w[i], dX: dX, accumulate: accumulate, dWeight: dW(i),
                              overwriteWeightGradient: true, rows: T, inFeatures: l.inFeatures, outFeatures: l.outFeatures,
                              precision: precision)
        }
        // An input quantizer's own backward (through its scale) on the gradient of the input it quantized.
        func quantizerBack(_ i: Int, _ more: [Int] = [], pre: UnsafePointer<Float>, grad: UnsafeMutablePointer<Float>,
                           features: Int) throws {
            guard activationGradient == .scale else { return }
            guard let q = hooks[i].input else {
                try require(more.allSatisfy { hooks[$0].input == nil }, "block: linears sharing an input must share its quantizer")
                return
            }
            try require(more.allSatisfy { hooks[$0].input === q }, "block: linears sharing an input must share its quantizer")
            q.backward(input: pre, gradient: grad, rows: T, features: features)
        }
        // MLP
        linearBack(idown, dY: g, x: input(idown, site: 3, b.m), dX: d.dm, accumulate: false)
        try quantizerBack(idown, pre: b.m, grad: d.dm, features: F)
        if let ig = igate {
            A.SiLUMul.backward(dY: d.dm, gate: b.a, up: b.b, dGate: d.da, dUp: d.db, count: T * F)
            linearBack(ig, dY: d.da, x: input(ig, site: 2, b.n2), dX: d.dn2, accumulate: false)
            linearBack(iup, dY: d.db, x: input(iup, site: 2, b.n2), dX: d.dn2, accumulate: true)
            try quantizerBack(iup, [ig], pre: b.n2, grad: d.dn2, features: H)
        } else {
            A.ReLU.backward(dY: d.dm, x: b.a, dX: d.da, count: T * F)
            linearBack(iup, dY: d.da, x: input(iup, site: 2, b.n2), dX: d.dn2, accumulate: false)
            try quantizerBack(iup, pre: b.n2, grad: d.dn2, features: H)
        }
        // second residual + MLP norm
        d.dh1.update(from: g, count: T * H)
        normBackward(s.mlpNorm, norm2, dY: d.dn2, x: b.h1, mean: b.mean2, rstd: b.rstd2, dX: d.dh1, T: T,
                     grads: parameterGradients ? normGradients[1] : nil)
        // o, attention, RoPE, q/k/v
        linearBack(io, dY: d.dh1, x: input(io, site: 1, b.attn), dX: d.dattn, accumulate: false)
        try quantizerBack(io, pre: b.attn, grad: d.dattn, features: s.qDim)
        attention.backward(dOut: d.dattn, q: b.q, k: b.k, v: b.v, dQ: d.dq, dK: d.dk, dV: d.dv, rows: T)
        // Q, K, V were quantized in place after RoPE; the tape kept them unquantized for the KV quantizer's backward.
        if activationGradient == .scale, let kv = kvQuantizer {
            kv.backward(input: t.qPre.pointer, gradient: d.dq, rows: T, features: s.qDim)
            kv.backward(input: t.kPre.pointer, gradient: d.dk, rows: T, features: s.kvDim)
            kv.backward(input: t.vPre.pointer, gradient: d.dv, rows: T, features: s.kvDim)
        }
        if s.rope, let r = rope {
            A.Rope.backward(dY: d.dq, dX: d.dq, cos: r.cos.pointer, sin: r.sin.pointer, rows: T, heads: s.heads,
                            headDim: s.headDim)
            A.Rope.backward(dY: d.dk, dX: d.dk, cos: r.cos.pointer, sin: r.sin.pointer, rows: T, heads: s.kvHeads,
                            headDim: s.headDim)
        }
        let wantsDn1 = inputGradient || parameterGradients
        let dn1: UnsafeMutablePointer<Float>? = wantsDn1 ? d.dn1 : nil
        linearBack(iq, dY: d.dq, x: input(iq, site: 0, b.n1), dX: dn1, accumulate: false)
        linearBack(ik, dY: d.dk, x: input(ik, site: 0, b.n1), dX: dn1, accumulate: true)
        linearBack(iv, dY: d.dv, x: input(iv, site: 0, b.n1), dX: dn1, accumulate: true)
        if wantsDn1 {
            try quantizerBack(iq, [ik, iv], pre: b.n1, grad: d.dn1, features: H)
            d.dx.update(from: d.dh1, count: T * H)
            normBackward(s.attentionNorm, norm1, dY: d.dn1, x: t.xIn.pointer, mean: b.mean1, rstd: b.rstd1, dX: d.dx, T: T,
                         grads: parameterGradients ? normGradients[0] : nil)
        }
        if parameterGradients {
            // ∂L/∂b of each linear: the column sums of its output gradient.
            var dY = [UnsafePointer<Float>](repeating: UnsafePointer(d.dq), count: s.linears.count)
            dY[iq] = UnsafePointer(d.dq); dY[ik] = UnsafePointer(d.dk); dY[iv] = UnsafePointer(d.dv)
            dY[io] = UnsafePointer(d.dh1); dY[idown] = UnsafePointer(g)
            if let ig = igate { dY[ig] = UnsafePointer(d.da); dY[iup] = UnsafePointer(d.db) } else { dY[iup] = UnsafePointer(d.da) }
            for i in s.linears.indices {
                let n = s.linears[i].outFeatures, out = biasGradients[i].pointer, src = dY[i]
                out.update(repeating: 0, count: n)
                for r in 0..<T { let row = src + r * n; for j in 0..<n { out[j] += row[j] } }
            }
        }
        for i in linears.indices {
            hooks[i].weight?.backward(dWeight: t.weightGrads[i], weight: linears[i].weight)
        }
        return Tensor(shape: [T, H], storage: t.dxStorage, byteOffset: 0)
    }

    private func normBackward(_ n: BlockSpec.NormSpec, _ p: (weight: Tensor, bias: Tensor?), dY: UnsafePointer<Float>,
                              x: UnsafePointer<Float>, mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
                              dX: UnsafeMutablePointer<Float>, T: Int, grads: (weight: Tensor, bias: Tensor)? = nil) {
        if let grads {
            grads.weight.buffer.update(repeating: 0)
            grads.bias.buffer.update(repeating: 0)
        }
        switch n.kind {
        case .rms:
            Autodiff.RMSNorm.backward(dY: dY, x: x, weight: p.weight.pointer, rstd: rstd, dX: dX, accumulate: true,
                                      dWeight: grads?.weight.pointer, rows: T, dim: spec.hidden)
            if let grads, p.bias != nil {  // ∂L/∂b: the column sums of dY
                let H = spec.hidden, db = grads.bias.pointer
                for r in 0..<T { let row = dY + r * H; for j in 0..<H { db[j] += row[j] } }
            }
        case .layer:
            Autodiff.LayerNorm.backward(dY: dY, x: x, weight: p.weight.pointer, mean: mean, rstd: rstd, dX: dX,
                                        accumulate: true, dWeight: grads?.weight.pointer, dBias: grads?.bias.pointer,
                                        rows: T, dim: spec.hidden)
        }
    }

    /// Zeroes nothing itself: weight transforms own their gradients. Runs forward, the loss against `target`
    /// (`loss`: MSE, or `RelativeMSELoss`) and backward (no input gradient); returns the loss.
    public func trainStep(input: Tensor, target: Tensor) throws -> Float {
        let y = try forward(input)
        try require(target.shape == y.shape, "block: target \(target.shape), output \(y.shape)")
        let n = y.count, T = y.shape[0], H = y.shape[1]
        let loss: Float
        switch self.loss {
        case .mse:
            loss = Autodiff.MSELoss.forward(pred: y.pointer, target: target.pointer, count: n)
            Autodiff.MSELoss.backward(pred: y.pointer, target: target.pointer, dPred: tape.dLoss.pointer, count: n)
        case .relative:
            loss = Autodiff.RelativeMSELoss.forward(pred: y.pointer, target: target.pointer, rows: T, cols: H)
            Autodiff.RelativeMSELoss.backward(pred: y.pointer, target: target.pointer, dPred: tape.dLoss.pointer,
                                              rows: T, cols: H)
        }
        try backward(Tensor(shape: y.shape, storage: tape.dLoss.storage, byteOffset: 0), inputGradient: false)
        return loss
    }

    /// The effective (transformed) weight of linear `i` from the last forward, or its stored weight.
    public func effectiveWeight(_ i: Int) -> Tensor { hooks[i].weight == nil ? linears[i].weight : tape.weights[i] }
}

let nullFloat = UnsafeMutablePointer<Float>(bitPattern: 16)!

/// The forward itself, shared by recording and plain runs.
private struct BlockForward {
    let spec: BlockSpec
    let linears: [Linear]
    let hooks: [LinearHooks]?
    let kv: ActivationQuantizer?
    let norm1: (weight: Tensor, bias: Tensor?), norm2: (weight: Tensor, bias: Tensor?)
    let rope: RopeTables?
    var precision: GEMMPrecision = .fp32
    /// Capture only: stop as soon as this linear's input hooks have run (the rest of the block is not computed).
    var stopAt: Int? = nil
    /// `x·Vᵀ` of a low-rank term, `[rows, rank]` (inference only: a recording graph has no low-rank terms).
    var lowRankScratch = nullFloat

    /// `attention` given: record (norm statistics, probabilities) with the autodiff ops; nil: the plain kernels.
    func run(T: Int, x: UnsafeMutablePointer<Float>, buffers b: BlockGraph.Buffers, weights w: [UnsafeMutablePointer<Float>],
             ws: Workspace?, attention: Autodiff.CausalAttention? = nil) {
        let s = spec
        let recording = attention != nil
        let iq = s.index(of: .q)!, ik = s.index(of: .k)!, iv = s.index(of: .v)!, io = s.index(of: .o)!
        let iup = s.index(of: .up)!, idown = s.index(of: .down)!, igate = s.index(of: .gate)

        // attention half
        norm(s.attentionNorm, norm1, x: x, y: b.n1, mean: b.mean1, rstd: b.rstd1, T: T, recording: recording)
        if linear(iq, b.n1, site: b.sites[0], b.q, T: T, w: w, accumulate: false) { return }
        if linear(ik, b.n1, site: b.sites[0], b.k, T: T, w: w, accumulate: false, quantized: sameQuantizer(iq, ik)) { return }
        if linear(iv, b.n1, site: b.sites[0], b.v, T: T, w: w, accumulate: false, quantized: sameQuantizer(iq, iv)) { return }
        if s.rope, let r = rope {
            Autodiff.Rope.forward(x: b.q, y: b.q, cos: r.cos.pointer, sin: r.sin.pointer, rows: T, heads: s.heads,
                                  headDim: s.headDim)
            Autodiff.Rope.forward(x: b.k, y: b.k, cos: r.cos.pointer, sin: r.sin.pointer, rows: T, heads: s.kvHeads,
                                  headDim: s.headDim)
        }
        if let kv {  // the KV cache (and Q): per head per token, after RoPE
            if b.qPre != nullFloat {  // recording: keep them unquantized for the quantizer's backward
                b.qPre.update(from: b.q, count: T * s.qDim)
                b.kPre.update(from: b.k, count: T * s.kvDim)
                b.vPre.update(from: b.v, count: T * s.kvDim)
            }
            kv.quantize(b.q, rows: T, features: s.qDim)
            kv.quantize(b.k, rows: T, features: s.kvDim)
            kv.quantize(b.v, rows: T, features: s.kvDim)
        }
        if let attention {
            attention.forward(q: b.q, k: b.k, v: b.v, out: b.attn, rows: T)
        } else {
            Kernels.causalAttention(q: b.q, k: b.k, v: b.v, out: b.attn, T: T, heads: s.heads, kvHeads: s.kvHeads,
                                    headDim: s.headDim, scale: 1 / Float(s.headDim).squareRoot(), workspace: ws!,
                                    slot: 40)
        }
        if residual(io, b.attn, site: b.sites[1], into: b.h1, from: x, T: T, w: w) { return }

        // MLP half
        norm(s.mlpNorm, norm2, x: b.h1, y: b.n2, mean: b.mean2, rstd: b.rstd2, T: T, recording: recording)
        let F = s.ffn
        if let ig = igate {
            if linear(ig, b.n2, site: b.sites[2], b.a, T: T, w: w, accumulate: false) { return }
            if linear(iup, b.n2, site: b.sites[2], b.b, T: T, w: w, accumulate: false, quantized: sameQuantizer(ig, iup)) {
                return
            }
            Autodiff.SiLUMul.forward(gate: b.a, up: b.b, y: b.m, count: T * F)
        } else {
            if linear(iup, b.n2, site: b.sites[2], b.a, T: T, w: w, accumulate: false) { return }
            Autodiff.ReLU.forward(x: b.a, y: b.m, count: T * F)
        }
        _ = residual(idown, b.m, site: b.sites[3], into: b.out, from: b.h1, T: T, w: w)
    }

    /// Whether linears `a` and `b` (sharing an input) have the same input quantizer, so `b` reuses `a`'s result.
    private func sameQuantizer(_ a: Int, _ b: Int) -> Bool {
        guard let qa = hooks?[a].input else { return false }
        return qa === hooks?[b].input
    }

    /// `y = r + linear(x)`. In place (`y` is `r`, inference) the product accumulates into the residual stream;
    /// otherwise (recording) the product is written first and the residual added after, so a recorded forward
    /// rounds exactly as the plain sum of the two.
    private func residual(_ i: Int, _ x: UnsafeMutablePointer<Float>, site: UnsafeMutablePointer<Float>,
                          into y: UnsafeMutablePointer<Float>, from r: UnsafeMutablePointer<Float>, T: Int,
                          w: [UnsafeMutablePointer<Float>]) -> Bool {
        if y == r { return linear(i, x, site: site, y, T: T, w: w, accumulate: true) }
        if linear(i, x, site: site, y, T: T, w: w, accumulate: false) { return true }
        Autodiff.Residual.forward(a: y, b: r, y: y, count: T * spec.hidden)
        return false
    }

    private func norm(_ n: BlockSpec.NormSpec, _ p: (weight: Tensor, bias: Tensor?), x: UnsafePointer<Float>,
                      y: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
                      T: Int, recording: Bool) {
        let H = spec.hidden
        switch (n.kind, recording) {
        case (.rms, true):
            Autodiff.RMSNorm.forward(x: x, weight: p.weight.pointer, y: y, rstd: rstd, rows: T, dim: H, eps: n.eps)
            if let b = p.bias { Kernels.addBias(y, rows: T, b.pointer, H) }
        case (.rms, false):
            Kernels.rmsNorm(x, rows: T, dim: H, weight: p.weight.pointer, eps: n.eps, y)
            if let b = p.bias { Kernels.addBias(y, rows: T, b.pointer, H) }
        case (.layer, true):
            Autodiff.LayerNorm.forward(x: x, weight: p.weight.pointer, bias: p.bias?.pointer, y: y, mean: mean,
                                       rstd: rstd, rows: T, dim: H, eps: n.eps)
        case (.layer, false):
            Kernels.layerNorm(x, rows: T, dim: H, weight: n.affine ? p.weight.pointer : nil, bias: p.bias?.pointer,
                              eps: n.eps, y)
        }
    }

    /// The one linear operation: input quantizer (into `site`, unless `quantized` says the site already holds
    /// this input quantized by the same quantizer), observer, `y = x·Ŵᵀ (+ y when accumulate) + b`. Returns true
    /// (and computes no product) when this is the `stopAt` linear.
    private func linear(_ i: Int, _ x: UnsafeMutablePointer<Float>, site: UnsafeMutablePointer<Float>,
                        _ y: UnsafeMutablePointer<Float>, T: Int, w: [UnsafeMutablePointer<Float>], accumulate: Bool,
                        quantized: Bool = false) -> Bool {
        let l = spec.linears[i]
        var input = UnsafePointer(x)
        if let h = hooks?[i] {
            if let q = h.input {
                if !quantized {
                    site.update(from: x, count: T * l.inFeatures)
                    q.quantize(site, rows: T, features: l.inFeatures)
                }
                input = UnsafePointer(site)
            }
            h.observer?(input, T, l.inFeatures)
        }
        if i == stopAt { return true }
        BLAS.sgemm(transB: true, m: T, n: l.outFeatures, k: l.inFeatures, a: input, lda: l.inFeatures, b: w[i],
                   ldb: l.inFeatures, beta: accumulate ? 1 : 0, c: y, ldc: l.outFeatures, precision: precision)
        if let lr = linears[i].lowRank {  // + (x·Vᵀ)·Uᵀ
            BLAS.sgemm(transB: true, m: T, n: lr.rank, k: l.inFeatures, a: input, lda: l.inFeatures, b: lr.v.pointer,
                       ldb: l.inFeatures, c: lowRankScratch, ldc: lr.rank)
            BLAS.sgemm(transB: true, m: T, n: l.outFeatures, k: lr.rank, a: lowRankScratch, lda: lr.rank,
                       b: lr.u.pointer, ldb: lr.rank, beta: 1, c: y, ldc: l.outFeatures)
        }
        if let bias = linears[i].bias { Kernels.addBias(y, rows: T, bias.pointer, l.outFeatures) }
        return false
    }
}

/// Everything a recording forward and its backward keep, for `rows` tokens.
private final class Tape {
    let xIn: Tensor, out: Tensor, dLoss: Tensor
    /// Q, K (after RoPE) and V before the KV quantizer.
    let qPre: Tensor, kPre: Tensor, vPre: Tensor
    let weights: [Tensor], weightGrads: [Tensor]
    private let store: [Tensor]
    let buffers: BlockGraph.Buffers
    let grads: Grads
    let dxStorage: Storage

    struct Grads {
        var dm = nullFloat, da = nullFloat, db = nullFloat, dn2 = nullFloat, dh1 = nullFloat, dattn = nullFloat
        var dq = nullFloat, dk = nullFloat, dv = nullFloat, dn1 = nullFloat, dx = nullFloat
    }

    init(spec s: BlockSpec, rows T: Int) {
        let H = s.hidden, F = s.ffn, qd = s.qDim, kd = s.kvDim
        var keep: [Tensor] = []
        func z(_ n: Int) -> UnsafeMutablePointer<Float> {
            let t = Tensor(zeros: [n]); keep.append(t); return t.pointer
        }
        xIn = Tensor(zeros: [T, H]); out = Tensor(zeros: [T, H]); dLoss = Tensor(zeros: [T, H])
        qPre = Tensor(zeros: [T, qd]); kPre = Tensor(zeros: [T, kd]); vPre = Tensor(zeros: [T, kd])
        weights = s.linears.map { Tensor(zeros: [$0.outFeatures, $0.inFeatures]) }
        weightGrads = s.linears.map { Tensor(zeros: [$0.outFeatures, $0.inFeatures]) }
        var b = BlockGraph.Buffers()
        b.n1 = z(T * H); b.q = z(T * qd); b.k = z(T * kd); b.v = z(T * kd); b.attn = z(T * qd); b.h1 = z(T * H)
        b.n2 = z(T * H); b.a = z(T * F); b.b = s.mlp == .gatedSiLU ? z(T * F) : nullFloat; b.m = z(T * F)
        b.out = out.pointer
        b.mean1 = z(T); b.rstd1 = z(T); b.mean2 = z(T); b.rstd2 = z(T)
        b.sites = [z(T * H), z(T * qd), z(T * H), z(T * F)]
        b.qPre = qPre.pointer; b.kPre = kPre.pointer; b.vPre = vPre.pointer
        var g = Grads()
        g.dm = z(T * F); g.da = z(T * F); g.db = s.mlp == .gatedSiLU ? z(T * F) : nullFloat; g.dn2 = z(T * H)
        g.dh1 = z(T * H); g.dattn = z(T * qd); g.dq = z(T * qd); g.dk = z(T * kd); g.dv = z(T * kd)
        g.dn1 = z(T * H)
        let dx = Tensor(zeros: [T * H]); keep.append(dx); g.dx = dx.pointer
        dxStorage = dx.storage
        buffers = b
        grads = g
        store = keep
    }
}
