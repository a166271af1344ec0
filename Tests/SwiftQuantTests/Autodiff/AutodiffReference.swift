import Foundation

/// Float64 scalar references of every op's forward pass, written from the definitions; the gradient checks
/// differentiate them numerically.
enum Ref {
    static func linear(_ x: [Double], _ w: [Double], _ b: [Double]?, rows: Int, inF: Int, outF: Int) -> [Double] {
        var y = [Double](repeating: 0, count: rows * outF)
        for r in 0..<rows {
            for o in 0..<outF {
                var acc = b?[o] ?? 0
                for i in 0..<inF { acc += x[r * inF + i] * w[o * inF + i] }
                y[r * outF + o] = acc
            }
        }
        return y
    }

    static func rmsNorm(_ x: [Double], _ w: [Double], rows: Int, dim: Int, eps: Double) -> [Double] {
        var y = x
        for r in 0..<rows {
            var ss = 0.0
            for j in 0..<dim { ss += x[r * dim + j] * x[r * dim + j] }
            let s = 1 / (ss / Double(dim) + eps).squareRoot()
            for j in 0..<dim { y[r * dim + j] = w[j] * x[r * dim + j] * s }
        }
        return y
    }

    static func layerNorm(_ x: [Double], _ w: [Double], _ b: [Double], rows: Int, dim: Int, eps: Double) -> [Double] {
        var y = x
        for r in 0..<rows {
            let row = x[(r * dim)..<((r + 1) * dim)]
            let mu = row.reduce(0, +) / Double(dim)
            let v = row.reduce(0) { $0 + ($1 - mu) * ($1 - mu) } / Double(dim)
            let s = 1 / (v + eps).squareRoot()
            for j in 0..<dim { y[r * dim + j] = (x[r * dim + j] - mu) * s * w[j] + b[j] }
        }
        return y
    }

    static func rope(_ x: [Double], cos: [Double], sin: [Double], rows: Int, heads: Int, d: Int) -> [Double] {
        var y = x
        let half = d / 2
        for t in 0..<rows {
            for h in 0..<heads {
                let base = t * heads * d + h * d
                for j in 0..<d {
                    // rotate_half(x)[j] = −x[j+half] for j < half, x[j−half] otherwise
                    let rot = j < half ? -x[base + j + half] : x[base + j - half]
                    y[base + j] = x[base + j] * cos[t * d + j] + rot * sin[t * d + j]
                }
            }
        }
        return y
    }

    static func attention(_ q: [Double], _ k: [Double], _ v: [Double], rows T: Int, heads: Int, kvHeads: Int,
                          d: Int) -> [Double] {
        var out = [Double](repeating: 0, count: T * heads * d)
        let rep = heads / kvHeads, scale = 1 / Double(d).squareRoot()
        for h in 0..<heads {
            let g = h / rep
            for t in 0..<T {
                var s = [Double](repeating: 0, count: t + 1)
                for j in 0...t {
                    var acc = 0.0
                    for c in 0..<d { acc += q[t * heads * d + h * d + c] * k[j * kvHeads * d + g * d + c] }
                    s[j] = acc * scale
                }
                let m = s.max()!
                let e = s.map { Foundation.exp($0 - m) }
                let z = e.reduce(0, +)
                for c in 0..<d {
                    var acc = 0.0
                    for j in 0...t { acc += e[j] / z * v[j * kvHeads * d + g * d + c] }
                    out[t * heads * d + h * d + c] = acc
                }
            }
        }
        return out
    }

    static func sigmoid(_ x: Double) -> Double { 1 / (1 + Foundation.exp(-x)) }
    static func siluMul(_ g: [Double], _ u: [Double]) -> [Double] { g.indices.map { g[$0] * sigmoid(g[$0]) * u[$0] } }
    static func geluTanh(_ x: [Double]) -> [Double] {
        x.map { 0.5 * $0 * (1 + Foundation.tanh((2 / Double.pi).squareRoot() * ($0 + 0.044715 * $0 * $0 * $0))) }
    }
    static func geluErf(_ x: [Double]) -> [Double] { x.map { 0.5 * $0 * (1 + Foundation.erf($0 / 2.0.squareRoot())) } }
    static func relu(_ x: [Double]) -> [Double] { x.map { max($0, 0) } }
    static func mse(_ p: [Double], _ t: [Double]) -> Double {
        p.indices.reduce(0) { $0 + ($1 < 0 ? 0 : (p[$1] - t[$1]) * (p[$1] - t[$1])) } / Double(p.count)
    }

    /// A Llama block with fixed (already fake-quantized) linear weights, as a function of its input.
    struct Block {
        var hidden: Int, heads: Int, kvHeads: Int, d: Int, ffn: Int, eps: Double
        var g1: [Double], g2: [Double], w: [[Double]]   // w in LlamaLinear order
        var cos: [Double], sin: [Double]

        func callAsFunction(_ x: [Double], rows T: Int) -> [Double] {
            let H = hidden, qd = heads * d, kd = kvHeads * d
            let n1 = Ref.rmsNorm(x, g1, rows: T, dim: H, eps: eps)
            let q = Ref.rope(Ref.linear(n1, w[0], nil, rows: T, inF: H, outF: qd), cos: cos, sin: sin, rows: T, heads: heads, d: d)
            let k = Ref.rope(Ref.linear(n1, w[1], nil, rows: T, inF: H, outF: kd), cos: cos, sin: sin, rows: T, heads: kvHeads, d: d)
            let v = Ref.linear(n1, w[2], nil, rows: T, inF: H, outF: kd)
            let a = Ref.attention(q, k, v, rows: T, heads: heads, kvHeads: kvHeads, d: d)
            let o = Ref.linear(a, w[3], nil, rows: T, inF: qd, outF: H)
            let h1 = x.indices.map { x[$0] + o[$0] }
            let n2 = Ref.rmsNorm(h1, g2, rows: T, dim: H, eps: eps)
            let gt = Ref.linear(n2, w[4], nil, rows: T, inF: H, outF: ffn)
            let up = Ref.linear(n2, w[5], nil, rows: T, inF: H, outF: ffn)
            let dn = Ref.linear(Ref.siluMul(gt, up), w[6], nil, rows: T, inF: ffn, outF: H)
            return h1.indices.map { h1[$0] + dn[$0] }
        }
    }

    /// LWC fake-quant forward and its straight-through gradients in Float64 (ALGORITHMS.md §1; see
    /// `Autodiff.FakeQuantLWC` for the derivation). Returns (Ŵ, ∂L/∂W, ∂L/∂u, ∂L/∂l) for upstream `dy`.
    static func lwc(w: [Double], u: [Double], l: [Double], dy: [Double], rows: Int, cols: Int, bits: Int,
                    group: Int, symmetric: Bool, inclusive: Bool)
        -> (y: [Double], dw: [Double], du: [Double], dl: [Double]) {
        let G = (group == 0 || group > cols) ? cols : group, nG = (cols + G - 1) / G
        let qmax = Double((1 << bits) - 1), symDen = Double((1 << (bits - 1)) - 1)
        func within(_ x: Double, _ lo: Double, _ hi: Double) -> Bool { inclusive ? (x >= lo && x <= hi) : (x > lo && x < hi) }
        var y = w, dw = [Double](repeating: 0, count: w.count)
        var du = [Double](repeating: 0, count: rows * nG), dl = du
        for r in 0..<rows {
            for g in 0..<nG {
                let idx = r * nG + g, cs = (g * G)..<min((g + 1) * G, cols)
                let vals = cs.map { w[r * cols + $0] }
                let mx = vals.max()!, mn = vals.min()!
                let su = sigmoid(u[idx]), sl = sigmoid(l[idx])
                let xmaxp = su * mx, xminp = sl * mn
                let hRaw = symmetric ? max(abs(xmaxp), abs(xminp)) / symDen : (xmaxp - xminp) / qmax
                let h = min(max(hRaw, 1e-5), 1e4)
                let z = symmetric ? symDen : min(max(-xminp / h, -1e4), 1e4).rounded(.toNearestOrEven)
                var dh = 0.0
                for c in cs {
                    let t = w[r * cols + c] / h
                    let p = t.rounded(.toNearestOrEven) + z
                    let q = min(max(p, 0), qmax)
                    y[r * cols + c] = (q - z) * h
                    let inside = within(p, 0, qmax)
                    if inside { dw[r * cols + c] += dy[r * cols + c] }
                    dh += dy[r * cols + c] * ((q - z) - (inside ? t : 0))
                }
                guard within(hRaw, 1e-5, 1e4) else { continue }
                var dxmaxp: Double, dxminp: Double
                if symmetric {
                    let a = abs(xmaxp), b = abs(xminp)
                    let wa = a > b ? 1.0 : (a == b ? 0.5 : 0)
                    dxmaxp = dh / symDen * wa * (xmaxp > 0 ? 1 : (xmaxp < 0 ? -1 : 0))
                    dxminp = dh / symDen * (1 - wa) * (xminp > 0 ? 1 : (xminp < 0 ? -1 : 0))
                } else {
                    dxmaxp = dh / qmax
                    dxminp = -dh / qmax
                }
                du[idx] = dxmaxp * mx * su * (1 - su)
                dl[idx] = dxminp * mn * sl * (1 - sl)
                let nmx = Double(vals.filter { $0 == mx }.count), nmn = Double(vals.filter { $0 == mn }.count)
                for c in cs {
                    if w[r * cols + c] == mx { dw[r * cols + c] += dxmaxp * su / nmx }
                    if w[r * cols + c] == mn { dw[r * cols + c] += dxminp * sl / nmn }
                }
            }
        }
        return (y, dw, du, dl)
    }
}
