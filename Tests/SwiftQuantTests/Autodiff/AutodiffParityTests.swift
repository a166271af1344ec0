import XCTest
import SwiftQuant

/// Parity with PyTorch autograd (fixtures from Fixtures/make_autodiff_fixtures.py): max|diff|/max|ref| ≤ 1e-4.
final class AutodiffParityTests: XCTestCase {
    let fx = AutodiffFixtures.shared
    typealias A = Autodiff

    func testLinear() {
        let x = fx.tensor("linear.x"), w = fx.tensor("linear.w"), b = fx.tensor("linear.b"), dy = fx.tensor("linear.dy")
        let (rows, inF, outF) = (x.shape[0], x.shape[1], w.shape[0])
        let y = zeros([rows, outF]), dx = zeros(x.shape), dw = zeros(w.shape), db = zeros([outF])
        A.Linear.forward(x: x.pointer, weight: w.pointer, bias: b.pointer, y: y.pointer, rows: rows, inFeatures: inF, outFeatures: outF)
        A.Linear.backward(dY: dy.pointer, x: x.pointer, weight: w.pointer, dX: dx.pointer, dWeight: dw.pointer,
                          dBias: db.pointer, rows: rows, inFeatures: inF, outFeatures: outF)
        assertClose(y.array, fx.array("linear.y"), 1e-4, "y")
        assertClose(dx.array, fx.array("linear.dx"), 1e-4, "dx")
        assertClose(dw.array, fx.array("linear.dw"), 1e-4, "dw")
        assertClose(db.array, fx.array("linear.db"), 1e-4, "db")
    }

    func testRMSNorm() {
        let x = fx.tensor("rmsnorm.x"), w = fx.tensor("rmsnorm.w"), dy = fx.tensor("rmsnorm.dy")
        let (rows, dim) = (x.shape[0], x.shape[1])
        let y = zeros(x.shape), r = zeros([rows]), dx = zeros(x.shape), dw = zeros([dim])
        A.RMSNorm.forward(x: x.pointer, weight: w.pointer, y: y.pointer, rstd: r.pointer, rows: rows, dim: dim, eps: 1e-5)
        A.RMSNorm.backward(dY: dy.pointer, x: x.pointer, weight: w.pointer, rstd: r.pointer, dX: dx.pointer,
                           dWeight: dw.pointer, rows: rows, dim: dim)
        assertClose(y.array, fx.array("rmsnorm.y"), 1e-4, "y")
        assertClose(dx.array, fx.array("rmsnorm.dx"), 1e-4, "dx")
        assertClose(dw.array, fx.array("rmsnorm.dw"), 1e-4, "dw")
    }

    func testLayerNorm() {
        let x = fx.tensor("layernorm.x"), w = fx.tensor("layernorm.w"), b = fx.tensor("layernorm.b")
        let dy = fx.tensor("layernorm.dy")
        let (rows, dim) = (x.shape[0], x.shape[1])
        let y = zeros(x.shape), mu = zeros([rows]), r = zeros([rows])
        let dx = zeros(x.shape), dw = zeros([dim]), db = zeros([dim])
        A.LayerNorm.forward(x: x.pointer, weight: w.pointer, bias: b.pointer, y: y.pointer, mean: mu.pointer,
                            rstd: r.pointer, rows: rows, dim: dim, eps: 1e-5)
        A.LayerNorm.backward(dY: dy.pointer, x: x.pointer, weight: w.pointer, mean: mu.pointer, rstd: r.pointer,
                             dX: dx.pointer, dWeight: dw.pointer, dBias: db.pointer, rows: rows, dim: dim)
        assertClose(y.array, fx.array("layernorm.y"), 1e-4, "y")
        assertClose(dx.array, fx.array("layernorm.dx"), 1e-4, "dx")
        assertClose(dw.array, fx.array("layernorm.dw"), 1e-4, "dw")
        assertClose(db.array, fx.array("layernorm.db"), 1e-4, "db")
    }

    func testRope() {
        let x = fx.tensor("rope.x"), c = fx.tensor("rope.cos"), s = fx.tensor("rope.sin"), dy = fx.tensor("rope.dy")
        let rows = x.shape[0], d = c.shape[1], heads = x.shape[1] / d
        let y = zeros(x.shape), dx = zeros(x.shape)
        let (c2, s2) = (halfRopeTable(c), halfRopeTable(s))  // PyTorch's tables have two equal halves
        A.Rope.forward(x: x.pointer, y: y.pointer, cos: c2.pointer, sin: s2.pointer, rows: rows, heads: heads, headDim: d)
        A.Rope.backward(dY: dy.pointer, dX: dx.pointer, cos: c2.pointer, sin: s2.pointer, rows: rows, heads: heads, headDim: d)
        assertClose(y.array, fx.array("rope.y"), 1e-4, "y")
        assertClose(dx.array, fx.array("rope.dx"), 1e-4, "dx")
        // Our own tables agree with PyTorch's float32 ones.
        let own = A.Rope.tables(rows: rows, inverseFrequencies: A.Rope.inverseFrequencies(headDim: d, theta: 10_000))
        assertClose(own.cos.array, c2.array, 1e-5, "cos table")
        assertClose(own.sin.array, s2.array, 1e-5, "sin table")
    }

    func testAttentionGQA() throws {
        let q = fx.tensor("attention.q"), k = fx.tensor("attention.k"), v = fx.tensor("attention.v")
        let dy = fx.tensor("attention.dy")
        let (T, H, KV, d) = (7, 4, 2, 8)
        let att = try A.CausalAttention(heads: H, kvHeads: KV, headDim: d, maxRows: 10)
        let y = zeros(q.shape), dq = zeros(q.shape), dk = zeros(k.shape), dv = zeros(v.shape)
        att.forward(q: q.pointer, k: k.pointer, v: v.pointer, out: y.pointer, rows: T)
        att.backward(dOut: dy.pointer, q: q.pointer, k: k.pointer, v: v.pointer, dQ: dq.pointer, dK: dk.pointer,
                     dV: dv.pointer, rows: T)
        assertClose(y.array, fx.array("attention.y"), 1e-4, "y")
        assertClose(dq.array, fx.array("attention.dq"), 1e-4, "dq")
        assertClose(dk.array, fx.array("attention.dk"), 1e-4, "dk")
        assertClose(dv.array, fx.array("attention.dv"), 1e-4, "dv")
    }

    func testActivations() {
        let g = fx.tensor("silu_mul.gate"), u = fx.tensor("silu_mul.up"), dy = fx.tensor("silu_mul.dy")
        let n = g.count
        let y = zeros([n]), dg = zeros([n]), du = zeros([n])
        A.SiLUMul.forward(gate: g.pointer, up: u.pointer, y: y.pointer, count: n)
        A.SiLUMul.backward(dY: dy.pointer, gate: g.pointer, up: u.pointer, dGate: dg.pointer, dUp: du.pointer, count: n)
        assertClose(y.array, fx.array("silu_mul.y"), 1e-4, "silu·up y")
        assertClose(dg.array, fx.array("silu_mul.dgate"), 1e-4, "silu·up dgate")
        assertClose(du.array, fx.array("silu_mul.dup"), 1e-4, "silu·up dup")

        typealias Fwd = (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void
        typealias Bwd = (UnsafePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void
        let cases: [(String, Fwd, Bwd)] = [
            ("gelu_tanh", { A.GELUTanh.forward(x: $0, y: $1, count: $2) }, { A.GELUTanh.backward(dY: $0, x: $1, dX: $2, count: $3) }),
            ("gelu_erf", { A.GELUErf.forward(x: $0, y: $1, count: $2) }, { A.GELUErf.backward(dY: $0, x: $1, dX: $2, count: $3) }),
            ("relu", { A.ReLU.forward(x: $0, y: $1, count: $2) }, { A.ReLU.backward(dY: $0, x: $1, dX: $2, count: $3) }),
        ]
        for (name, f, b) in cases {
            let x = fx.tensor("\(name).x"), dy = fx.tensor("\(name).dy")
            let y = zeros(x.shape), dx = zeros(x.shape)
            f(x.pointer, y.pointer, x.count)
            b(dy.pointer, x.pointer, dx.pointer, x.count)
            assertClose(y.array, fx.array("\(name).y"), 1e-4, "\(name) y")
            assertClose(dx.array, fx.array("\(name).dx"), 1e-4, "\(name) dx")
        }
    }

    func testMSE() {
        let p = fx.tensor("mse.pred"), t = fx.tensor("mse.target")
        let loss = A.MSELoss.forward(pred: p.pointer, target: t.pointer, count: p.count)
        let dp = zeros(p.shape)
        A.MSELoss.backward(pred: p.pointer, target: t.pointer, dPred: dp.pointer, count: p.count)
        assertClose([loss], fx.array("mse.loss"), 1e-5, "loss")
        assertClose(dp.array, fx.array("mse.dpred"), 1e-5, "dpred")
    }

    func testLWCFakeQuant() throws {
        for name in ["lwc_asym", "lwc_sym"] {
          for mode in [A.FakeQuantLWC.ClampGradient.inclusive, .exclusive] {
            let ref = mode == .inclusive ? name : "\(name).excl"
            let w = fx.tensor("\(name).w"), u = fx.tensor("\(name).u"), l = fx.tensor("\(name).l")
            let dy = fx.tensor("\(name).dy")
            let fq = try A.FakeQuantLWC(rows: fx.int(name, "rows"), columns: fx.int(name, "cols"),
                                        bits: fx.int(name, "bits"), groupSize: fx.int(name, "group"),
                                        symmetric: fx.bool(name, "symmetric"), clampGradient: mode)
            XCTAssertEqual([fq.rows, fq.groupsPerRow], u.shape)
            let st = fq.makeState()
            let y = zeros(w.shape), du = zeros(u.shape), dl = zeros(l.shape), dw = zeros(w.shape)
            fq.forward(weight: w.pointer, u: u.pointer, l: l.pointer, out: y.pointer, state: st)
            fq.backward(dOut: dy.pointer, weight: w.pointer, state: st, dU: du.pointer, dL: dl.pointer, dWeight: dw.pointer)
            XCTAssertEqual(y.array, fx.array("\(name).y"), "\(name): fake-quantized weights are bit-exact")
            assertClose(du.array, fx.array("\(ref).du"), 1e-4, "\(ref) du")
            assertClose(dl.array, fx.array("\(ref).dl"), 1e-4, "\(ref) dl")
            assertClose(dw.array, fx.array("\(ref).dw"), 1e-4, "\(ref) dW")
          }
        }
    }

    func testAdamW() throws {
        for tag in ["adamw", "adamw_wd"] {
            let p = fx.tensor("\(tag).p0"), grads = fx.array("\(tag).grads"), traj = fx.array("\(tag).traj")
            let n = p.count
            let opt = try AdamW(parameters: [p], learningRate: Float(fx.double(tag, "lr")),
                                weightDecay: fx.double(tag, "weight_decay"))
            for s in 0..<5 {
                try opt.step(gradients: [tensor(Array(grads[(s * n)..<((s + 1) * n)]))])
                assertClose(p.array, Array(traj[(s * n)..<((s + 1) * n)]), 1e-6, "\(tag) step \(s + 1)")
            }
        }
    }

    func testLlamaBlockWithGQAAndLWC() throws {
        try checkLlamaBlock(.inclusive, prefix: "block.")
        try checkLlamaBlock(.exclusive, prefix: "block.excl.")
    }

    func checkLlamaBlock(_ mode: A.FakeQuantLWC.ClampGradient, prefix: String) throws {
        let m = "block"
        let names = ["q", "k", "v", "o", "gate", "up", "down"]
        var rng = TestRNG(seed: 1)
        let hf = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                  "mlp.up_proj", "mlp.down_proj"]
        var given: [String: Tensor] = [:]
        for (n, h) in zip(names, hf) { given[h] = fx.tensor("block.w.\(n)") }
        let b = try SyntheticLlamaBlock(
            hidden: fx.int(m, "hidden"), heads: fx.int(m, "heads"), kvHeads: fx.int(m, "kv_heads"),
            headDim: fx.int(m, "head_dim"), ffn: fx.int(m, "ffn"), bits: fx.int(m, "bits"), group: fx.int(m, "group"),
            maxRows: fx.int(m, "rows"), eps: fx.double(m, "eps"), theta: fx.double(m, "theta"), rng: &rng,
            weights: given, norms: (fx.tensor("block.g1"), fx.tensor("block.g2")),
            lwcParameters: names.map { (fx.tensor("block.u.\($0)"), fx.tensor("block.l.\($0)")) }, clamp: mode,
            rope: RopeTables(cos: halfRopeTable(fx.tensor("block.cos")), sin: halfRopeTable(fx.tensor("block.sin"))))
        let out = try b.graph.forward(fx.tensor("block.x"))
        for (i, n) in names.enumerated() {
            XCTAssertEqual(b.graph.effectiveWeight(i).array, fx.array("block.what.\(n)"), "fake-quantized \(n) weight")
        }
        assertClose(out.array, fx.array("block.out"), 1e-4, "block out")
        b.zeroGradients()
        let dx = try b.graph.backward(fx.tensor("block.dout"))
        assertClose(dx.array, fx.array("block.dx"), 1e-4, "block dx")
        for (i, n) in names.enumerated() {
            assertClose(b.lwc[i].gradU.array, fx.array("\(prefix)du.\(n)"), 1e-4, "\(mode) du \(n)")
            assertClose(b.lwc[i].gradL.array, fx.array("\(prefix)dl.\(n)"), 1e-4, "\(mode) dl \(n)")
        }
    }
}
