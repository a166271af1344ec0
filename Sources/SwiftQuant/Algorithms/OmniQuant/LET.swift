import Foundation

/// OmniQuant's Learnable Equivalent Transformation of one block (ALGORITHMS.md §2): per-channel scales and
/// shifts that move activation outliers into the weights, exact in FP. Shifts fold into biases: on RMSNorm
/// families (Llama, Qwen2) the norms and the linears that had none gain them (`b' = −δ/s`, `c' = W·δ`).
///
/// | pair | parameters | transform |
/// |---|---|---|
/// | attention norm → q, k, v | `qkv_scale` s₁, `qkv_shift` δ₁ `[hidden]` | `g' = g/s₁`, `b' = (b − δ₁)/s₁`, `W' = W·diag(s₁)`, `c' = c + W·δ₁` |
/// | MLP norm → gate, up (fc1) | `fc1_scale` s₂, `fc1_shift` δ₂ | as above |
/// | v rows → o columns | `out_scale` s₃, `out_shift` δ₃ `[kv_dim]` | `W_v' = diag(1/s₃)·W_v`, `c_v' = (c_v − δ₃)/s₃`, `W_o' = W_o·diag(s₃)`, `c_o' = c_o + W_o·δ₃` |
/// | q rows ÷, k rows × | `qkt_scale` s₄ `[kv_dim]` | `W_q' = diag(1/s₄)·W_q`, `c_q' = c_q/s₄`, `W_k' = diag(s₄)·W_k`, `c_k' = c_k·s₄` |
///
/// Grouped-query attention (our fix of the original, which crashes): `out_scale`, `out_shift` and `qkt_scale`
/// have `kv_dim` entries, repeated over each query group for the o_proj columns and the q rows. RoPE rotates
/// channel pairs (j, j + head_dim/2): `qkt_scale` is one parameter per pair (`kv_dim/2` of them), so the
/// transform commutes with the rotation and stays exact. Before every use a scale with `|s| < 1e-2` becomes
/// `±1e-2` (identity backward). The paper gives the down projection no pair (weight-quantized only); with
/// `downPair` (an extension, off by default: AWQ's up → down pair, exact for gated MLPs because
/// `silu(gate·x) ⊙ (diag(1/s₅)·up·x) = diag(1/s₅)·(silu(gate·x) ⊙ up·x)`):
///
/// | up rows → down columns | `down_scale` s₅ `[intermediate]` | `W_up' = diag(1/s₅)·W_up`, `c_up' = c_up/s₅`, `W_down' = W_down·diag(s₅)` |
public final class LETParameters {
    public let spec: BlockSpec
    public let shifts: Bool
    public let qkvScale: Tensor, qkvShift: Tensor, fc1Scale: Tensor, fc1Shift: Tensor
    public let outScale: Tensor, outShift: Tensor, qktScale: Tensor
    public let qkvScaleGrad: Tensor, qkvShiftGrad: Tensor, fc1ScaleGrad: Tensor, fc1ShiftGrad: Tensor
    public let outScaleGrad: Tensor, outShiftGrad: Tensor, qktScaleGrad: Tensor
    /// The up → down pair (`downPair`; empty otherwise).
    public let downPair: Bool
    public let downScale: Tensor, downScaleGrad: Tensor
    public static let minScale: Float = 1e-2

    let iq: Int, ik: Int, iv: Int, io: Int, iup: Int, igate: Int?, idown: Int
    let attentionNorm: String, mlpNorm: String

    /// Scales 1, shifts 0, or the given initial values (`[hidden]`, `[hidden]`, `[kv_dim]`, `[intermediate]`;
    /// shifts only with `shifts`, `downScale` only with `downPair`).
    public init(spec: BlockSpec, shifts: Bool, qkvScale: [Float]? = nil, qkvShift: [Float]? = nil,
                fc1Scale: [Float]? = nil, fc1Shift: [Float]? = nil, outScale: [Float]? = nil,
                outShift: [Float]? = nil, downPair: Bool = false, downScale: [Float]? = nil) throws {
        try spec.validate()
        self.spec = spec
        self.shifts = shifts
        guard let iq = spec.index(of: .q), let ik = spec.index(of: .k), let iv = spec.index(of: .v),
              let io = spec.index(of: .o), let iup = spec.index(of: .up) else {
            throw SwiftQuantError.unsupported("let: the block has no q/k/v/o/up linears")
        }
        self.iq = iq; self.ik = ik; self.iv = iv; self.io = io; self.iup = iup; igate = spec.index(of: .gate)
        idown = spec.index(of: .down) ?? -1
        self.downPair = downPair
        if downPair {
            try require(igate != nil && idown >= 0,
                        "let_down: the up → down pair is exact only for gated MLPs (silu(gate) ⊙ up → down); this "
                            + "block has no gate projection")
        }
        attentionNorm = spec.attentionNorm.name
        mlpNorm = spec.mlpNorm.name
        let H = spec.hidden, K = spec.kvDim
        func vec(_ v: [Float]?, _ n: Int, _ fill: Float, _ name: String) throws -> Tensor {
            if let v {
                try require(v.count == n, "let: \(name) needs \(n) values, got \(v.count)")
                return Tensor(shape: [n], values: v)
            }
            let t = Tensor(zeros: [n]); t.buffer.update(repeating: fill); return t
        }
        self.qkvScale = try vec(qkvScale, H, 1, "qkv_scale"); self.qkvShift = try vec(qkvShift, H, 0, "qkv_shift")
        self.fc1Scale = try vec(fc1Scale, H, 1, "fc1_scale"); self.fc1Shift = try vec(fc1Shift, H, 0, "fc1_shift")
        self.outScale = try vec(outScale, K, 1, "out_scale"); self.outShift = try vec(outShift, K, 0, "out_shift")
        self.qktScale = try vec(nil, spec.rope ? K / 2 : K, 1, "qkt_scale")
        qkvScaleGrad = Tensor(zeros: [H]); qkvShiftGrad = Tensor(zeros: [H])
        fc1ScaleGrad = Tensor(zeros: [H]); fc1ShiftGrad = Tensor(zeros: [H])
        outScaleGrad = Tensor(zeros: [K]); outShiftGrad = Tensor(zeros: [K])
        qktScaleGrad = Tensor(zeros: [qktScale.count])
        let I = downPair ? spec.linears[idown].inFeatures : 0
        self.downScale = try vec(downPair ? downScale : nil, I, 1, "down_scale")
        downScaleGrad = Tensor(zeros: [I])
    }

    /// The trained tensors (shifts only when used), and their gradients in the same order.
    public var parameters: [Tensor] {
        (shifts ? [qkvScale, qkvShift, fc1Scale, fc1Shift, outScale, outShift, qktScale]
            : [qkvScale, fc1Scale, outScale, qktScale]) + (downPair ? [downScale] : [])
    }
    public var gradients: [Tensor] {
        (shifts ? [qkvScaleGrad, qkvShiftGrad, fc1ScaleGrad, fc1ShiftGrad, outScaleGrad, outShiftGrad, qktScaleGrad]
            : [qkvScaleGrad, fc1ScaleGrad, outScaleGrad, qktScaleGrad]) + (downPair ? [downScaleGrad] : [])
    }
    /// By the names the work directory keeps them under.
    public var named: [String: Tensor] {
        var d = ["let.qkv_scale": qkvScale, "let.fc1_scale": fc1Scale, "let.out_scale": outScale, "let.qkt_scale": qktScale]
        if shifts { d["let.qkv_shift"] = qkvShift; d["let.fc1_shift"] = fc1Shift; d["let.out_shift"] = outShift }
        if downPair { d["let.down_scale"] = downScale }
        return d
    }

    public func zeroGradients() { for g in gradients { g.buffer.update(repeating: 0) } }

    // MARK: index maps

    /// The kv channel (`[kv_dim]`) of q row / o column `c` (head h, dim d → kv head h / group, dim d).
    @inline(__always) func kvChannel(ofQuery c: Int) -> Int {
        let d = spec.headDim, h = c / d
        return (h / (spec.heads / spec.kvHeads)) * d + c % d
    }

    /// The `qkt_scale` parameter of kv channel `c` (RoPE: one per channel pair).
    @inline(__always) func qktParameter(_ c: Int) -> Int {
        guard spec.rope else { return c }
        let d = spec.headDim, half = d / 2
        return (c / d) * half + (c % d) % half
    }

    @inline(__always) static func truncate(_ s: Float) -> Float {
        abs(s) >= minScale ? s : (s < 0 ? -minScale : minScale)
    }

    typealias Scales = (s1: [Float], s2: [Float], s3: [Float], s4: [Float], s5: [Float])

    /// Effective (truncated) scales: s₁, s₂ `[hidden]`, s₃, s₄ `[kv_dim]`, s₅ `[intermediate]` (empty without the
    /// down pair).
    func effective() -> Scales {
        (qkvScale.buffer.map(Self.truncate), fc1Scale.buffer.map(Self.truncate), outScale.buffer.map(Self.truncate),
         (0..<spec.kvDim).map { Self.truncate(qktScale.pointer[qktParameter($0)]) }, downScale.buffer.map(Self.truncate))
    }

    /// How one linear is transformed: `W'[i,j] = W[i,j]·col[j]·row[i]`,
    /// `c'[i] = (c[i] + Σ_j W[i,j]·colShift[j] − rowShift[i])·row[i]`.
    struct LinearMap {
        var col: [Float]?, colShift: [Float]?, row: [Float]?, rowShift: [Float]?
    }

    func maps(_ e: Scales) -> [Int: LinearMap] {
        let qRows = (0..<spec.qDim).map { 1 / e.s4[kvChannel(ofQuery: $0)] }
        let oCols = (0..<spec.qDim).map { e.s3[kvChannel(ofQuery: $0)] }
        let oShift = shifts ? (0..<spec.qDim).map { outShift.pointer[kvChannel(ofQuery: $0)] } : nil
        let d1 = shifts ? qkvShift.array : nil, d2 = shifts ? fc1Shift.array : nil
        var m: [Int: LinearMap] = [
            iq: LinearMap(col: e.s1, colShift: d1, row: qRows, rowShift: nil),
            ik: LinearMap(col: e.s1, colShift: d1, row: e.s4, rowShift: nil),
            iv: LinearMap(col: e.s1, colShift: d1, row: e.s3.map { 1 / $0 }, rowShift: shifts ? outShift.array : nil),
            io: LinearMap(col: oCols, colShift: oShift, row: nil, rowShift: nil),
            iup: LinearMap(col: e.s2, colShift: d2, row: downPair ? e.s5.map { 1 / $0 } : nil, rowShift: nil),
        ]
        if let g = igate { m[g] = LinearMap(col: e.s2, colShift: d2, row: nil, rowShift: nil) }
        if downPair { m[idown] = LinearMap(col: e.s5, colShift: nil, row: nil, rowShift: nil) }
        return m
    }

    // MARK: forward

    /// The transformed block: norms, linear weights and biases as the scales and shifts make them. With every
    /// quantizer off it computes the same function as `block` (up to float rounding).
    public func apply(to block: TransformerBlock) throws -> TransformerBlock {
        let e = effective()
        var linears = block.linears
        for (i, map) in maps(e) {
            let name = spec.linears[i].name, l = block.linear(name)
            let rows = l.outFeatures, cols = l.inFeatures
            let w = Tensor(zeros: [rows, cols])
            for r in 0..<rows {
                let src = l.weight.pointer + r * cols, dst = w.pointer + r * cols
                let rm = map.row?[r] ?? 1
                if let col = map.col { for j in 0..<cols { dst[j] = src[j] * col[j] * rm } } else {
                    for j in 0..<cols { dst[j] = src[j] * rm }
                }
            }
            var bias: Tensor?
            if l.bias != nil || map.colShift != nil || map.rowShift != nil {
                // A linear without a bias (Llama, Qwen2's o/gate/up) gains one where a shift folds into it.
                let b = Tensor(zeros: [rows])
                for r in 0..<rows {
                    var u = l.bias.map { Double($0.pointer[r]) } ?? 0
                    if let cs = map.colShift {
                        let src = l.weight.pointer + r * cols
                        for j in 0..<cols { u += Double(src[j]) * Double(cs[j]) }
                    }
                    if let rs = map.rowShift { u -= Double(rs[r]) }
                    b.pointer[r] = Float(u) * (map.row?[r] ?? 1)
                }
                bias = b
            }
            linears[name] = Linear(weight: w, bias: bias)
        }
        var norms = block.norms
        for (name, s, shift) in [(attentionNorm, e.s1, qkvShift), (mlpNorm, e.s2, fc1Shift)] {
            guard let nw = block.norms[name], let g = nw.weight else {
                throw SwiftQuantError.unsupported("let: norm '\(name)' has no weight to fold a scale into")
            }
            let g2 = Tensor(zeros: [g.count])
            for j in 0..<g.count { g2.pointer[j] = g.pointer[j] / s[j] }
            var b2: Tensor?
            if nw.bias != nil || shifts {  // an RMSNorm gains a bias −δ/s where the shift folds
                let t = Tensor(zeros: [g.count])
                for j in 0..<g.count {
                    let b = nw.bias?.pointer[j] ?? 0
                    t.pointer[j] = (b - (shifts ? shift.pointer[j] : 0)) / s[j]
                }
                b2 = t
            }
            norms[name] = NormWeights(weight: g2, bias: b2)
        }
        return TransformerBlock(index: block.index, linearNames: block.linearNames, linears: linears, norms: norms)
    }

    // MARK: backward

    /// Adds the gradients of the scales and shifts, given the gradients of the transformed block's linear
    /// weights `dWeights[i]` (nil: none), biases `dBiases[i]` and norms `dNorms` (attention, MLP), and the FP
    /// block the transform was applied to.
    public func backward(block: TransformerBlock, dWeights: [Tensor?], dBiases: [Tensor],
                         dNorms: [(weight: Tensor, bias: Tensor)]) {
        let e = effective()
        let H = spec.hidden, K = spec.kvDim
        var ds1 = [Double](repeating: 0, count: H), dd1 = [Double](repeating: 0, count: H)
        var ds2 = [Double](repeating: 0, count: H), dd2 = [Double](repeating: 0, count: H)
        var ds3 = [Double](repeating: 0, count: K), dd3 = [Double](repeating: 0, count: K)
        var ds4 = [Double](repeating: 0, count: K), ds5 = [Double](repeating: 0, count: e.s5.count)
        for (i, map) in maps(e) {
            let l = block.linear(spec.linears[i].name)
            let rows = l.outFeatures, cols = l.inFeatures
            var dcol = [Double](repeating: 0, count: cols), drow = [Double](repeating: 0, count: rows)
            var dcolShift = [Double](repeating: 0, count: cols), drowShift = [Double](repeating: 0, count: rows)
            if let dW = dWeights[i] {
                for r in 0..<rows {
                    let w = l.weight.pointer + r * cols, g = dW.pointer + r * cols
                    let rm = Double(map.row?[r] ?? 1)
                    var acc = 0.0
                    for j in 0..<cols {
                        let p = Double(g[j]) * Double(w[j])
                        dcol[j] += p * rm
                        acc += p * Double(map.col?[j] ?? 1)
                    }
                    drow[r] += acc
                }
            }
            if l.bias != nil || map.colShift != nil || map.rowShift != nil {
                let dc = dBiases[i]
                for r in 0..<rows {
                    let gr = Double(dc.pointer[r]), rm = Double(map.row?[r] ?? 1)
                    var u = l.bias.map { Double($0.pointer[r]) } ?? 0
                    if let cs = map.colShift {
                        let w = l.weight.pointer + r * cols
                        for j in 0..<cols {
                            u += Double(w[j]) * Double(cs[j])
                            dcolShift[j] += gr * rm * Double(w[j])
                        }
                    }
                    if let rs = map.rowShift { u -= Double(rs[r]); drowShift[r] -= gr * rm }
                    drow[r] += gr * u
                }
            }
            // Route to the parameters.
            switch i {
            case iq:
                for j in 0..<cols { ds1[j] += dcol[j]; dd1[j] += dcolShift[j] }
                for r in 0..<rows {  // row = 1/s₄: d/ds₄ = −drow/s₄²
                    let c = kvChannel(ofQuery: r), s = Double(e.s4[c])
                    ds4[c] -= drow[r] / (s * s)
                }
            case ik:
                for j in 0..<cols { ds1[j] += dcol[j]; dd1[j] += dcolShift[j] }
                for r in 0..<rows { ds4[r] += drow[r] }
            case iv:
                for j in 0..<cols { ds1[j] += dcol[j]; dd1[j] += dcolShift[j] }
                for r in 0..<rows {
                    let s = Double(e.s3[r])
                    ds3[r] -= drow[r] / (s * s)
                    dd3[r] += drowShift[r]
                }
            case io:
                for j in 0..<cols { let c = kvChannel(ofQuery: j); ds3[c] += dcol[j]; dd3[c] += dcolShift[j] }
            case idown:
                for j in 0..<cols { ds5[j] += dcol[j] }
            default:  // gate, up (fc1)
                for j in 0..<cols { ds2[j] += dcol[j]; dd2[j] += dcolShift[j] }
                if i == iup && downPair {  // up's rows: 1/s₅
                    for r in 0..<rows { let s = Double(e.s5[r]); ds5[r] -= drow[r] / (s * s) }
                }
            }
        }
        // Norms: g' = g/s, b' = (b − δ)/s.
        for (k, name) in [attentionNorm, mlpNorm].enumerated() {
            guard let nw = block.norms[name], let g = nw.weight else { continue }
            let s = k == 0 ? e.s1 : e.s2, shift = k == 0 ? qkvShift : fc1Shift
            let dg = dNorms[k].weight, db = dNorms[k].bias
            for j in 0..<H {
                let sj = Double(s[j])
                var d = -Double(dg.pointer[j]) * Double(g.pointer[j]) / (sj * sj)
                if nw.bias != nil || shifts {
                    let u = Double(nw.bias?.pointer[j] ?? 0) - (shifts ? Double(shift.pointer[j]) : 0)
                    d -= Double(db.pointer[j]) * u / (sj * sj)
                    if shifts {
                        if k == 0 { dd1[j] -= Double(db.pointer[j]) / sj } else { dd2[j] -= Double(db.pointer[j]) / sj }
                    }
                }
                if k == 0 { ds1[j] += d } else { ds2[j] += d }
            }
        }
        func add(_ t: Tensor, _ v: [Double]) { for j in 0..<v.count { t.pointer[j] += Float(v[j]) } }
        add(qkvScaleGrad, ds1); add(fc1ScaleGrad, ds2); add(outScaleGrad, ds3); add(downScaleGrad, ds5)
        if shifts { add(qkvShiftGrad, dd1); add(fc1ShiftGrad, dd2); add(outShiftGrad, dd3) }
        for c in 0..<K { qktScaleGrad.pointer[qktParameter(c)] += Float(ds4[c]) }
    }
}
