import XCTest
import SwiftQuant

/// Every op's analytic float32 backward against central finite differences of its Float64 reference
/// (`Ref`), with `L = Σ dY·f(inputs)`: relative error (max|a − n| / max|n|) ≤ 1e-4.
final class AutodiffGradCheckTests: XCTestCase {
    typealias A = Autodiff
    var rng = TestRNG(seed: 0x5157_4144)

    /// `analytic[i]` is the float32 gradient of input `i`; inputs not in `analytic` are held constant.
    func check(_ name: String, inputs: [[Float]], dY: [Float], analytic: [Int: [Float]], step: Double = 1e-4,
               tolerance: Double = 1e-4, _ f: ([[Double]]) -> [Double],
               file: StaticString = #filePath, line: UInt = #line) {
        let x64 = inputs.map { $0.map(Double.init) }, g64 = dY.map(Double.init)
        func loss(_ xs: [[Double]]) -> Double {
            let y = f(xs)
            precondition(y.count == g64.count, "\(name): output \(y.count) vs dY \(g64.count)")
            var acc = 0.0
            for i in y.indices { acc += y[i] * g64[i] }
            return acc
        }
        for (i, a) in analytic.sorted(by: { $0.key < $1.key }) {
            var numeric = [Double](repeating: 0, count: x64[i].count)
            var xs = x64
            for j in numeric.indices {
                let v = x64[i][j]
                xs[i][j] = v + step
                let lp = loss(xs)
                xs[i][j] = v - step
                let lm = loss(xs)
                xs[i][j] = v
                numeric[j] = (lp - lm) / (2 * step)
            }
            let e = relativeError(a, numeric)
            XCTAssertLessThanOrEqual(e, tolerance, "\(name) input \(i): relative error \(e)", file: file, line: line)
        }
    }

    func testLinear() {
        let (rows, inF, outF) = (5, 7, 6)
        let x = rng.floats(rows * inF), w = rng.floats(outF * inF), b = rng.floats(outF), dy = rng.floats(rows * outF)
        let X = tensor(x), W = tensor(w), B = tensor(b), DY = tensor(dy)
        let dx = zeros([rows * inF]), dw = zeros([outF * inF]), db = zeros([outF])
        A.Linear.backward(dY: DY.pointer, x: X.pointer, weight: W.pointer, dX: dx.pointer, dWeight: dw.pointer,
                          dBias: db.pointer, rows: rows, inFeatures: inF, outFeatures: outF)
        check("linear", inputs: [x, w, b], dY: dy, analytic: [0: dx.array, 1: dw.array, 2: db.array]) {
            Ref.linear($0[0], $0[1], $0[2], rows: rows, inF: inF, outF: outF)
        }
        // The forward agrees with the reference too.
        let y = zeros([rows * outF])
        A.Linear.forward(x: X.pointer, weight: W.pointer, bias: B.pointer, y: y.pointer, rows: rows, inFeatures: inF, outFeatures: outF)
        XCTAssertLessThanOrEqual(relativeError(y.array, Ref.linear(x.map(Double.init), w.map(Double.init), b.map(Double.init), rows: rows, inF: inF, outF: outF)), 1e-6)
    }

    func testRMSNorm() {
        let (rows, dim) = (4, 24)
        let x = rng.floats(rows * dim, shift: 0.3), w = rng.floats(dim, scale: 0.3, shift: 1), dy = rng.floats(rows * dim)
        let X = tensor(x), W = tensor(w), r = zeros([rows]), y = zeros([rows * dim])
        let dx = zeros([rows * dim]), dw = zeros([dim])
        A.RMSNorm.forward(x: X.pointer, weight: W.pointer, y: y.pointer, rstd: r.pointer, rows: rows, dim: dim, eps: 1e-5)
        A.RMSNorm.backward(dY: tensor(dy).pointer, x: X.pointer, weight: W.pointer, rstd: r.pointer, dX: dx.pointer,
                           dWeight: dw.pointer, rows: rows, dim: dim)
        check("rmsnorm", inputs: [x, w], dY: dy, analytic: [0: dx.array, 1: dw.array]) {
            Ref.rmsNorm($0[0], $0[1], rows: rows, dim: dim, eps: 1e-5)
        }
    }

    func testLayerNorm() {
        let (rows, dim) = (4, 24)
        let x = rng.floats(rows * dim, shift: 0.5), w = rng.floats(dim, scale: 0.3, shift: 1), b = rng.floats(dim, scale: 0.2)
        let dy = rng.floats(rows * dim)
        let X = tensor(x), W = tensor(w), y = zeros([rows * dim]), mu = zeros([rows]), r = zeros([rows])
        let dx = zeros([rows * dim]), dw = zeros([dim]), db = zeros([dim])
        A.LayerNorm.forward(x: X.pointer, weight: W.pointer, bias: tensor(b).pointer, y: y.pointer, mean: mu.pointer,
                            rstd: r.pointer, rows: rows, dim: dim, eps: 1e-5)
        A.LayerNorm.backward(dY: tensor(dy).pointer, x: X.pointer, weight: W.pointer, mean: mu.pointer, rstd: r.pointer,
                             dX: dx.pointer, dWeight: dw.pointer, dBias: db.pointer, rows: rows, dim: dim)
        check("layernorm", inputs: [x, w, b], dY: dy, analytic: [0: dx.array, 1: dw.array, 2: db.array]) {
            Ref.layerNorm($0[0], $0[1], $0[2], rows: rows, dim: dim, eps: 1e-5)
        }
    }

    func testRope() {
        let (rows, heads, d) = (5, 3, 8)
        let t = A.Rope.tables(rows: rows, inverseFrequencies: A.Rope.inverseFrequencies(headDim: d, theta: 10_000))
        let (c, s) = (t.cos, t.sin)
        let x = rng.floats(rows * heads * d), dy = rng.floats(rows * heads * d)
        let dx = tensor(dy)  // in place
        A.Rope.backward(dY: dx.pointer, dX: dx.pointer, cos: c.pointer, sin: s.pointer, rows: rows, heads: heads, headDim: d)
        let cd = fullRopeTable(c), sd = fullRopeTable(s)
        check("rope", inputs: [x], dY: dy, analytic: [0: dx.array]) {
            Ref.rope($0[0], cos: cd, sin: sd, rows: rows, heads: heads, d: d)
        }
        let y = tensor(x)
        A.Rope.forward(x: y.pointer, y: y.pointer, cos: c.pointer, sin: s.pointer, rows: rows, heads: heads, headDim: d)
        XCTAssertLessThanOrEqual(relativeError(y.array, Ref.rope(x.map(Double.init), cos: cd, sin: sd, rows: rows, heads: heads, d: d)), 1e-6)
    }

    func testAttentionGQA() throws {
        let (T, H, KV, d) = (6, 4, 2, 4)
        let q = rng.floats(T * H * d), k = rng.floats(T * KV * d), v = rng.floats(T * KV * d), dy = rng.floats(T * H * d)
        for blockRows in [64, 4, 1] {  // one block; blocks with a ragged last one; one row per block
        let att = try A.CausalAttention(heads: H, kvHeads: KV, headDim: d, maxRows: 8, blockRows: blockRows)
        let Q = tensor(q), K = tensor(k), V = tensor(v), out = zeros([T * H * d])
        let dq = zeros([T * H * d]), dk = zeros([T * KV * d]), dv = zeros([T * KV * d])
        att.forward(q: Q.pointer, k: K.pointer, v: V.pointer, out: out.pointer, rows: T)
        att.backward(dOut: tensor(dy).pointer, q: Q.pointer, k: K.pointer, v: V.pointer, dQ: dq.pointer, dK: dk.pointer,
                     dV: dv.pointer, rows: T)
        check("attention", inputs: [q, k, v], dY: dy, analytic: [0: dq.array, 1: dk.array, 2: dv.array]) {
            Ref.attention($0[0], $0[1], $0[2], rows: T, heads: H, kvHeads: KV, d: d)
        }
        XCTAssertLessThanOrEqual(relativeError(out.array, Ref.attention(q.map(Double.init), k.map(Double.init), v.map(Double.init), rows: T, heads: H, kvHeads: KV, d: d)), 1e-6)
        }
    }

    func testActivations() {
        let n = 64
        let g = rng.floats(n, scale: 2), u = rng.floats(n), dy = rng.floats(n)
        let dg = zeros([n]), du = zeros([n])
        A.SiLUMul.backward(dY: tensor(dy).pointer, gate: tensor(g).pointer, up: tensor(u).pointer, dGate: dg.pointer,
                           dUp: du.pointer, count: n)
        check("silu·up", inputs: [g, u], dY: dy, analytic: [0: dg.array, 1: du.array]) { Ref.siluMul($0[0], $0[1]) }

        // Keep ReLU's inputs away from its kink so the finite difference is meaningful.
        let x = rng.floats(n, scale: 2).map { abs($0) < 0.01 ? $0 + 0.05 : $0 }
        let X = tensor(x), DY = tensor(dy), dx = zeros([n])
        A.GELUTanh.backward(dY: DY.pointer, x: X.pointer, dX: dx.pointer, count: n)
        check("gelu tanh", inputs: [x], dY: dy, analytic: [0: dx.array]) { Ref.geluTanh($0[0]) }
        A.GELUErf.backward(dY: DY.pointer, x: X.pointer, dX: dx.pointer, count: n)
        check("gelu erf", inputs: [x], dY: dy, analytic: [0: dx.array]) { Ref.geluErf($0[0]) }
        A.ReLU.backward(dY: DY.pointer, x: X.pointer, dX: dx.pointer, count: n)
        check("relu", inputs: [x], dY: dy, analytic: [0: dx.array]) { Ref.relu($0[0]) }

        let y = zeros([n])
        A.GELUTanh.forward(x: X.pointer, y: y.pointer, count: n)
        XCTAssertLessThanOrEqual(relativeError(y.array, Ref.geluTanh(x.map(Double.init))), 1e-6)
        A.GELUErf.forward(x: X.pointer, y: y.pointer, count: n)
        XCTAssertLessThanOrEqual(relativeError(y.array, Ref.geluErf(x.map(Double.init))), 1e-6)
    }

    func testResidualAndMSE() {
        let n = 30
        let a = rng.floats(n), b = rng.floats(n), dy = rng.floats(n)
        let da = zeros([n]), db = zeros([n])
        A.Residual.backward(dY: tensor(dy).pointer, dA: da.pointer, dB: db.pointer, count: n)
        check("residual", inputs: [a, b], dY: dy, analytic: [0: da.array, 1: db.array]) { xs in
            xs[0].indices.map { xs[0][$0] + xs[1][$0] }
        }
        let p = rng.floats(n), t = rng.floats(n), dp = zeros([n])
        A.MSELoss.backward(pred: tensor(p).pointer, target: tensor(t).pointer, dPred: dp.pointer, count: n)
        check("mse", inputs: [p, t], dY: [1], analytic: [0: dp.array]) { [Ref.mse($0[0], $0[1])] }
    }

    /// The token-rescaled loss (`loss="relative"`): its forward against a Float64 sum written out here, its
    /// backward against finite differences, and the properties it exists for: scaling one token's prediction and
    /// target together leaves it unchanged (plain MSE grows with the square of the scale), and with every token of
    /// the same norm it is MSE.
    func testRelativeMSE() {
        let (T, H) = (6, 5)
        // Token 0: relative error ~1 and massive (300×); the others: relative error ~0.01.
        let t = rng.floats(T * H), noise = rng.floats(T * H)
        var p = (0..<(T * H)).map { $0 < H ? noise[$0] : t[$0] + 0.1 * noise[$0] }
        var t0 = t
        for j in 0..<H { p[j] *= 300; t0[j] *= 300 }
        func reference(_ p: [Double], _ t0: [Double]) -> Double {
            var norms = [Double](repeating: 0, count: T), errors = norms
            for r in 0..<T {
                for j in 0..<H {
                    errors[r] += (p[r * H + j] - t0[r * H + j]) * (p[r * H + j] - t0[r * H + j]); norms[r] += t0[r * H + j] * t0[r * H + j]
                }
            }
            let mean = norms.reduce(0, +) / Double(T)
            return (0..<T).map { mean / norms[$0] * errors[$0] }.reduce(0, +) / Double(T * H)
        }
        let loss = A.RelativeMSELoss.forward(pred: tensor(p).pointer, target: tensor(t0).pointer, rows: T, cols: H)
        let want = reference(p.map(Double.init), t0.map(Double.init))
        XCTAssertEqual(Double(loss), want, accuracy: 1e-6 * want)
        let dp = zeros([T * H])
        A.RelativeMSELoss.backward(pred: tensor(p).pointer, target: tensor(t0).pointer, dPred: dp.pointer, rows: T, cols: H)
        check("relative mse", inputs: [p], dY: [1], analytic: [0: dp.array]) { [reference($0[0], t0.map(Double.init))] }
        // Token 0 scaled down 300×: divided by the window's mean square, the loss is the same; MSE is not.
        var p2 = p, t2 = t0
        for j in 0..<H { p2[j] /= 300; t2[j] /= 300 }
        func meanSquare(_ v: [Float]) -> Float { v.map { $0 * $0 }.reduce(0, +) / Float(v.count) }
        let loss2 = A.RelativeMSELoss.forward(pred: tensor(p2).pointer, target: tensor(t2).pointer, rows: T, cols: H)
        XCTAssertEqual(loss2 / meanSquare(t2), loss / meanSquare(t0), accuracy: 1e-5 * loss / meanSquare(t0))
        let mse = A.MSELoss.forward(pred: tensor(p).pointer, target: tensor(t0).pointer, count: T * H)
        let mse2 = A.MSELoss.forward(pred: tensor(p2).pointer, target: tensor(t2).pointer, count: T * H)
        XCTAssertGreaterThan((mse / meanSquare(t0)) / (mse2 / meanSquare(t2)), 2)
        // Every token of the same norm: MSE.
        var tn = t0
        for r in 0..<T {
            let norm = (0..<H).map { tn[r * H + $0] * tn[r * H + $0] }.reduce(0, +).squareRoot()
            for j in 0..<H { tn[r * H + j] /= norm }
        }
        let same = A.RelativeMSELoss.forward(pred: tensor(p).pointer, target: tensor(tn).pointer, rows: T, cols: H)
        XCTAssertEqual(same, A.MSELoss.forward(pred: tensor(p).pointer, target: tensor(tn).pointer, count: T * H),
                       accuracy: 1e-5 * same)
        // A zero target row is floored, not divided by zero.
        let zero = [Float](repeating: 0, count: H) + t0[H...]
        XCTAssertTrue(A.RelativeMSELoss.forward(pred: tensor(p).pointer, target: tensor(zero).pointer, rows: T, cols: H).isFinite)
    }

    /// The whole block as a function of its input (weights fixed after fake-quantization, so it is smooth in x).
    func testLlamaBlockInputGradient() throws {
        let T = 5
        let b = try SyntheticLlamaBlock(hidden: 16, heads: 4, kvHeads: 2, headDim: 4, ffn: 24, bits: 4, group: 8, maxRows: 8,
                                        rng: &rng)
        let x = rng.floats(T * 16), dy = rng.floats(T * 16)
        _ = try b.graph.forward(tensor(x, [T, 16]))
        let dx = try b.graph.backward(tensor(dy, [T, 16])).array
        let ref = Ref.Block(hidden: 16, heads: 4, kvHeads: 2, d: 4, ffn: 24, eps: 1e-5,
                            g1: b.weights.norms["input_layernorm"]!.weight!.array.map(Double.init),
                            g2: b.weights.norms["post_attention_layernorm"]!.weight!.array.map(Double.init),
                            w: (0..<7).map { b.graph.effectiveWeight($0).array.map(Double.init) },
                            cos: fullRopeTable(b.rope.cos), sin: fullRopeTable(b.rope.sin))
        check("llama block dx", inputs: [x], dY: dy, analytic: [0: dx]) { ref($0[0], rows: T) }
        let out = try b.graph.forward(tensor(x, [T, 16])).array
        XCTAssertLessThanOrEqual(relativeError(out, ref(x.map(Double.init), rows: T)), 1e-5)
    }
}
