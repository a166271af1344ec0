import XCTest
import SwiftQuant

/// The LWC fake-quantizer: straight-through gradients against the analytic formula in Float64 (finite differences
/// are meaningless through rounding), and the invariants of ALGORITHMS.md §1.
final class AutodiffLWCTests: XCTestCase {
    typealias FQ = Autodiff.FakeQuantLWC
    var rng = TestRNG(seed: 0x4C57_4321)

    func run(_ fq: FQ, w: [Float], u: [Float], l: [Float], dy: [Float])
        -> (y: [Float], dw: [Float], du: [Float], dl: [Float], state: FQ.State) {
        let st = fq.makeState()
        let W = tensor(w), y = zeros([w.count]), du = zeros([u.count]), dl = zeros([l.count]), dw = zeros([w.count])
        let U = tensor(u), L = tensor(l)
        fq.forward(weight: W.pointer, u: U.pointer, l: L.pointer, out: y.pointer, state: st)
        fq.backward(dOut: tensor(dy).pointer, weight: W.pointer, state: st, dU: du.pointer, dL: dl.pointer,
                    dWeight: dw.pointer)
        return (y.array, dw.array, du.array, dl.array, st)
    }

    /// Weights with the awkward cases: an all-zero row, a constant row, an all-positive row, a ragged last group.
    func weights(rows: Int, cols: Int) -> [Float] {
        var w = rng.floats(rows * cols, scale: 0.05)
        for c in 0..<cols { w[1 * cols + c] = 0; w[2 * cols + c] = 0.03; w[3 * cols + c] = abs(w[3 * cols + c]) + 0.01 }
        return w
    }

    func testSTEGradientsMatchFloat64Formula() throws {
        let (rows, cols) = (6, 72)
        for (bits, group, sym) in [(3, 32, false), (4, 0, false), (4, 16, true), (2, 24, false), (8, 0, true)] {
            for mode in [FQ.ClampGradient.inclusive, .exclusive] {
                let fq = try FQ(rows: rows, columns: cols, bits: bits, groupSize: group, symmetric: sym, clampGradient: mode)
                let w = weights(rows: rows, cols: cols)
                let n = rows * fq.groupsPerRow
                let u = rng.floats(n, scale: 1.5, shift: 2), l = rng.floats(n, scale: 1.5, shift: 2)
                let dy = rng.floats(rows * cols)
                let got = run(fq, w: w, u: u, l: l, dy: dy)
                let ref = Ref.lwc(w: w.map(Double.init), u: u.map(Double.init), l: l.map(Double.init), dy: dy.map(Double.init),
                                  rows: rows, cols: cols, bits: bits, group: group, symmetric: sym, inclusive: mode == .inclusive)
                let tag = "W\(bits) g\(group) \(sym ? "sym" : "asym") \(mode)"
                XCTAssertLessThanOrEqual(relativeError(got.y, ref.y), 1e-5, "\(tag): Ŵ")
                XCTAssertLessThanOrEqual(relativeError(got.du, ref.du), 1e-4, "\(tag): du")
                XCTAssertLessThanOrEqual(relativeError(got.dl, ref.dl), 1e-4, "\(tag): dl")
                XCTAssertLessThanOrEqual(relativeError(got.dw, ref.dw), 1e-4, "\(tag): dW")
                // All-zero and constant rows give finite scales; the all-zero row gets no u/l gradient.
                XCTAssertTrue(got.state.scales.array.allSatisfy { $0.isFinite && $0 >= 1e-5 }, tag)
                for g in 0..<fq.groupsPerRow { XCTAssertEqual(got.du[1 * fq.groupsPerRow + g], 0, tag) }
            }
        }
    }

    /// The clamp-boundary convention, on a case built to land exactly on the end codes.
    func testClampBoundaryConvention() throws {
        // One group, 3 bits, u = l = 6: h = σ(6)·0.7/7, z = 0; 0 and 0.7 land exactly on codes 0 and 7.
        let w: [Float] = [0, 0.7, 0.3, 0.5], u: [Float] = [6], l: [Float] = [6], dy: [Float] = [1, 0.5, -1, 2]
        let inc = run(try FQ(rows: 1, columns: 4, bits: 3, clampGradient: .inclusive), w: w, u: u, l: l, dy: dy)
        let exc = run(try FQ(rows: 1, columns: 4, bits: 3, clampGradient: .exclusive), w: w, u: u, l: l, dy: dy)
        XCTAssertEqual(inc.y, exc.y)
        // STE part only differs at the two end codes: inclusive passes 1 there, exclusive 0.
        let refI = Ref.lwc(w: w.map(Double.init), u: [6], l: [6], dy: dy.map(Double.init), rows: 1, cols: 4, bits: 3,
                           group: 0, symmetric: false, inclusive: true)
        let refE = Ref.lwc(w: w.map(Double.init), u: [6], l: [6], dy: dy.map(Double.init), rows: 1, cols: 4, bits: 3,
                           group: 0, symmetric: false, inclusive: false)
        XCTAssertEqual(inc.y.map { ($0 / inc.state.scales.array[0]).rounded() }, [0, 7, 3, 5])
        XCTAssertLessThanOrEqual(relativeError(inc.dw, refI.dw), 1e-5)
        XCTAssertLessThanOrEqual(relativeError(exc.dw, refE.dw), 1e-5)
        XCTAssertLessThanOrEqual(relativeError(inc.du, refI.du), 1e-4)
        XCTAssertLessThanOrEqual(relativeError(exc.du, refE.du), 1e-4)
        XCTAssertEqual(Double(exc.dw[2]), -1, accuracy: 1e-6)    // interior element: pure STE
        // With the end codes outside, they add q − z (0 and 7) to ∂Ŵ/∂h instead of round(t) − t ≈ 0.
        XCTAssertGreaterThan(abs(exc.du[0] - inc.du[0]), 1e-4)
    }

    /// u = l = +large (σ → 1 exactly in float32) gives plain round-to-nearest min/max quantization, bit for bit.
    func testLargeULEqualsRoundToNearest() throws {
        let (rows, cols) = (5, 64)
        for (bits, group, sym) in [(3, 32, false), (4, 0, false), (4, 16, true), (2, 20, false)] {
            let fq = try FQ(rows: rows, columns: cols, bits: bits, groupSize: group, symmetric: sym)
            let w = weights(rows: rows, cols: cols)
            let n = rows * fq.groupsPerRow
            let got = run(fq, w: w, u: [Float](repeating: 40, count: n), l: [Float](repeating: 40, count: n),
                          dy: [Float](repeating: 0, count: w.count))
            // Round-to-nearest, written independently.
            let G = fq.groupSize, qmax = Float((1 << bits) - 1), half = Float((1 << (bits - 1)) - 1)
            var rtn = w
            for r in 0..<rows {
                for g0 in stride(from: 0, to: cols, by: G) {
                    let idx = (r * cols + g0)..<(r * cols + min(g0 + G, cols))
                    let mx = w[idx].max()!, mn = w[idx].min()!
                    let h = min(max(sym ? max(abs(mx), abs(mn)) / half : (mx - mn) / qmax, 1e-5), 1e4)
                    let z = sym ? half : min(max(-mn / h, -1e4), 1e4).rounded(.toNearestOrEven)
                    for i in idx { rtn[i] = (min(max((w[i] / h).rounded(.toNearestOrEven) + z, 0), qmax) - z) * h }
                }
            }
            XCTAssertEqual(got.y, rtn, "W\(bits) g\(group) \(sym ? "sym" : "asym")")
        }
    }

    /// Every fake-quantized value is (q − z)·h with q an integer code in [0, 2^N − 1].
    func testOutputLiesOnTheGrid() throws {
        let (rows, cols) = (8, 96)
        for (bits, group, sym) in [(3, 32, false), (4, 128, false), (4, 32, true), (2, 0, false)] {
            let fq = try FQ(rows: rows, columns: cols, bits: bits, groupSize: group, symmetric: sym)
            let w = weights(rows: rows, cols: cols)
            let n = rows * fq.groupsPerRow
            let got = run(fq, w: w, u: rng.floats(n, shift: 2), l: rng.floats(n, shift: 2), dy: [Float](repeating: 0, count: w.count))
            let hs = got.state.scales.array, zs = got.state.zeros.array, qmax = Float((1 << bits) - 1)
            for r in 0..<rows {
                for c in 0..<cols {
                    let gi = r * fq.groupsPerRow + c / fq.groupSize
                    XCTAssertEqual(zs[gi], zs[gi].rounded(), "zero point is an integer")
                    let q = got.y[r * cols + c] / hs[gi] + zs[gi]
                    XCTAssertEqual(q, q.rounded(), accuracy: 1e-3, "code at [\(r), \(c)]")
                    XCTAssertTrue(q.rounded() >= 0 && q.rounded() <= qmax, "code \(q) in range")
                }
            }
        }
    }

    /// The SIMD kernels against their scalar definitions: forward bit for bit (codes, scales, zero-points and
    /// Ŵ), backward to float64 summation order. Groups shorter than a vector, ragged last groups, all-zero and
    /// constant rows, values far outside the grid (|W/h| ≥ 2^22, where the SIMD rounding trick stops being exact),
    /// and a row with ±Inf and NaN.
    func testSIMDKernelsMatchScalarReference() throws {
        for (rows, cols, bits, group, sym) in [(7, 100, 3, 32, false), (6, 72, 4, 0, false), (5, 45, 2, 5, false),
                                               (6, 130, 4, 16, true), (5, 576, 3, 128, false), (6, 33, 8, 0, true)] {
            for mode in [FQ.ClampGradient.inclusive, .exclusive] {
                let fq = try FQ(rows: rows, columns: cols, bits: bits, groupSize: group, symmetric: sym, clampGradient: mode)
                var w = weights(rows: rows, cols: cols)
                w[4 * cols] = 9e4; w[4 * cols + 1] = -3e5            // row 4: |W/h| far beyond 2^22 in its first group
                if rows > 5 { w[5 * cols + 2] = .infinity; w[5 * cols + 3] = -.infinity; w[5 * cols + cols - 1] = .nan }
                let n = rows * fq.groupsPerRow
                var u = rng.floats(n, scale: 1.5, shift: 2), l = rng.floats(n, scale: 1.5, shift: 2)
                u[0] = -30; l[0] = -30                                   // σ ≈ 0: the scale clamps at 1e-5
                let dy = rng.floats(rows * cols)
                let W = tensor(w), U = tensor(u), L = tensor(l), DY = tensor(dy)
                let st1 = fq.makeState(), st2 = fq.makeState()
                let y1 = zeros([w.count]), y2 = zeros([w.count])
                fq.forward(weight: W.pointer, u: U.pointer, l: L.pointer, out: y1.pointer, state: st1)
                fq.forwardReference(weight: W.pointer, u: U.pointer, l: L.pointer, out: y2.pointer, state: st2)
                let tag = "[\(rows), \(cols)] W\(bits) g\(group) \(sym ? "sym" : "asym") \(mode)"
                XCTAssertEqual(y1.array.map(\.bitPattern), y2.array.map(\.bitPattern), "\(tag): Ŵ")
                XCTAssertEqual(st1.scales.array, st2.scales.array, "\(tag): scales")
                XCTAssertEqual(st1.zeros.array, st2.zeros.array, "\(tag): zero-points")
                let du1 = zeros([n]), dl1 = zeros([n]), dw1 = zeros([w.count])
                let du2 = zeros([n]), dl2 = zeros([n]), dw2 = zeros([w.count])
                fq.backward(dOut: DY.pointer, weight: W.pointer, state: st1, dU: du1.pointer, dL: dl1.pointer, dWeight: dw1.pointer)
                fq.backwardReference(dOut: DY.pointer, weight: W.pointer, state: st2, dU: du2.pointer, dL: dl2.pointer,
                                     dWeight: dw2.pointer)
                for (a, b, what) in [(du1.array, du2.array, "du"), (dl1.array, dl2.array, "dl"), (dw1.array, dw2.array, "dW")] {
                    for i in a.indices where !(a[i].isNaN && b[i].isNaN) {
                        XCTAssertEqual(a[i], b[i], accuracy: 1e-6 * max(1, abs(b[i])), "\(tag): \(what)[\(i)]")
                    }
                }
            }
        }
    }

    func testRejectsBadSettings() {
        XCTAssertThrowsError(try FQ(rows: 2, columns: 8, bits: 0))
        XCTAssertThrowsError(try FQ(rows: 2, columns: 8, bits: 1, symmetric: true))
        XCTAssertThrowsError(try FQ(rows: 0, columns: 8, bits: 4))
        XCTAssertThrowsError(try FQ(rows: 2, columns: 8, bits: 4, groupSize: -1))
    }

    /// A few AdamW steps on the LWC parameters lower the block-output MSE against the FP block.
    func testCalibrationLossFalls() throws {
        let b = try SyntheticLlamaBlock(hidden: 32, heads: 4, kvHeads: 2, headDim: 8, ffn: 48, bits: 3, group: 16,
                                        maxRows: 16, rng: &rng)
        let x = tensor(rng.floats(16 * 32), [16, 32])
        let target = try b.fpForward(x)
        let opt = try AdamW(parameters: b.parameters, learningRate: 5e-2)
        var losses: [Float] = []
        for _ in 0..<40 {
            b.zeroGradients()
            losses.append(try b.graph.trainStep(input: x, target: target))
            try opt.step(gradients: b.gradients)
        }
        XCTAssertTrue(losses.allSatisfy { $0.isFinite })
        XCTAssertLessThan(losses.suffix(5).max()!, 0.9 * losses.first!, "losses \(losses)")
    }
}
