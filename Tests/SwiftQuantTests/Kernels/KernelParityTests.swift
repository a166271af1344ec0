import CSQSupport
import Foundation
import SwiftQuant
import XCTest

/// Every fast kernel against its scalar twin: exact where bit-exactness is the contract, a stated tolerance where
/// the twin sums in another order. `make test` runs this class twice: as built (fast kernels chosen from the CPU)
/// and with SWIFTQUANT_KERNELS=reference (every dispatched kernel is its twin, so the fast side is the twin too,
/// except the entry points called by name: the AVX2 C kernel and `simdExp`).
final class KernelParityTests: XCTestCase {
    func randoms(_ n: Int, seed: UInt64, scale: Float = 1) -> [Float] {
        var rng = SplitMix64(seed: seed)
        return (0..<n).map { _ in rng.gaussian() * scale }
    }

    /// Units in the last place between two positive floats.
    func ulps(_ a: Float, _ b: Float) -> Int {
        abs(Int(Int32(bitPattern: a.bitPattern)) - Int(Int32(bitPattern: b.bitPattern)))
    }

    func assertClose(_ a: [Float], _ b: [Float], rel: Float, abs absTol: Float = 0, _ what: String,
                     file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, what, file: file, line: line)
        var worst: Float = 0, at = 0
        for i in 0..<min(a.count, b.count) {
            let e = abs(a[i] - b[i]) / max(abs(b[i]), 1e-30)
            if abs(a[i] - b[i]) > absTol && e > worst { worst = e; at = i }
        }
        XCTAssertLessThanOrEqual(worst, rel, "\(what): worst relative error \(worst) at \(at) (\(a[at]) vs \(b[at]))",
                                 file: file, line: line)
    }

    func testDispatchIsReportedAndFollowsTheEnvironment() {
        let wanted = ProcessInfo.processInfo.environment["SWIFTQUANT_KERNELS"] == "reference"
        XCTAssertEqual(KernelDispatch.reference, wanted)
        XCTAssertEqual(KernelDispatch.cKernels, wanted || !KernelDispatch.avx2Available ? "reference" : "avx2")
        print("kernel dispatch: \(KernelDispatch.description); AVX2 available: \(KernelDispatch.avx2Available)")
    }

    // MARK: exp

    func expBoth(_ x: [Float]) -> (simd: [Float], scalar: [Float]) {
        var simd = [Float]()
        var i = 0
        while i < x.count {
            var v = SIMD8<Float>(repeating: 0)
            for j in 0..<8 where i + j < x.count { v[j] = x[i + j] }
            let e = simdExp(v)
            for j in 0..<8 where i + j < x.count { simd.append(e[j]) }
            i += 8
        }
        return (simd, x.map(scalarExp))
    }

    /// `simdExp` equals `scalarExp` lane for lane (bit-exact contract), and both are within 2 ulp of float64 `exp`
    /// over the whole clamped range [-87.3, 88] (the claim in Tensor/Kernels.swift).
    func testExpTwinsAgreeAndMeetTheirAccuracyClaim() {
        var worst = 0, worstX: Float = 0
        var x: Float = -87.3
        var batch = [Float]()
        while x <= 88 {
            batch.append(x)
            x += 0.000731
        }
        batch += [0, -0.0, 1e-8, -1e-8, 88, -87.3, 0.5, -0.5, 0.6931472, -0.6931472]
        let fast = expBoth(batch)
        for (i, v) in batch.enumerated() {
            XCTAssertEqual(fast.simd[i].bitPattern, fast.scalar[i].bitPattern, "exp(\(v)): SIMD and scalar differ")
            let exact = Float(Foundation.exp(Double(v)))
            let u = ulps(fast.scalar[i], exact)
            if u > worst { worst = u; worstX = v }
        }
        XCTAssertLessThanOrEqual(worst, 2, "worst exp error \(worst) ulp at x = \(worstX)")
        // Clamped outside the range, as documented; NaN passes through.
        let edge = expBoth([-1000, 1000, .nan])
        XCTAssertEqual(edge.scalar[0], scalarExp(-87.3))
        XCTAssertEqual(edge.scalar[1], scalarExp(88))
        XCTAssertTrue(edge.scalar[2].isNaN && edge.simd[2].isNaN)
    }

    // MARK: row kernels

    func testRMSNormMatchesScalarTwin() {
        for (rows, dim) in [(3, 576), (5, 13), (1, 8), (2, 1)] {
            let x = randoms(rows * dim, seed: 1, scale: 3), w = randoms(dim, seed: 2)
            var fast = [Float](repeating: 0, count: rows * dim), ref = fast
            Kernels.rmsNorm(x, rows: rows, dim: dim, weight: w, eps: 1e-5, &fast)
            Kernels.Reference.rmsNorm(x, rows: rows, dim: dim, weight: w, eps: 1e-5, &ref)
            assertClose(fast, ref, rel: 1e-5, abs: 1e-6, "rmsNorm [\(rows), \(dim)]")
        }
    }

    func testLayerNormMatchesScalarTwin() {
        for (rows, dim) in [(3, 768), (4, 19), (2, 8)] {
            let x = randoms(rows * dim, seed: 3, scale: 2), w = randoms(dim, seed: 4), b = randoms(dim, seed: 5)
            for affine in [true, false] {
                var fast = [Float](repeating: 0, count: rows * dim), ref = fast
                Kernels.layerNorm(x, rows: rows, dim: dim, weight: affine ? w : nil, bias: affine ? b : nil, eps: 1e-5,
                                  &fast)
                Kernels.Reference.layerNorm(x, rows: rows, dim: dim, weight: affine ? w : nil, bias: affine ? b : nil,
                                            eps: 1e-5, &ref)
                assertClose(fast, ref, rel: 1e-4, abs: 1e-5, "layerNorm [\(rows), \(dim)] affine \(affine)")
            }
        }
    }

    func testSoftmaxRowMatchesScalarTwin() {
        for (valid, total) in [(1, 1), (7, 9), (8, 8), (100, 128), (2048, 2048)] {
            let x = randoms(total, seed: UInt64(valid), scale: 4)
            var fast = x, ref = x
            fast.withUnsafeMutableBufferPointer { Kernels.softmaxRow($0.baseAddress!, valid: valid, total: total) }
            ref.withUnsafeMutableBufferPointer { Kernels.Reference.softmaxRow($0.baseAddress!, valid: valid, total: total) }
            assertClose(fast, ref, rel: 1e-5, abs: 1e-9, "softmax valid \(valid) of \(total)")
            XCTAssertTrue(fast[valid...].allSatisfy { $0 == 0 })
        }
    }

    /// SiLU·mul: the same formula on the same `exp` values, so bit-exact.
    func testSiLUMulMatchesScalarTwinExactly() {
        for n in [1, 7, 8, 100, 40_000] {
            let g = randoms(n, seed: 7, scale: 5), u = randoms(n, seed: 8)
            var fast = g, ref = g
            fast.withUnsafeMutableBufferPointer { Kernels.siluMul($0.baseAddress!, u, count: n) }
            ref.withUnsafeMutableBufferPointer { Kernels.Reference.siluMul($0.baseAddress!, u, count: n) }
            XCTAssertEqual(fast.map(\.bitPattern), ref.map(\.bitPattern), "siluMul n \(n)")
        }
    }

    func testCausalAttentionMatchesScalarTwin() {
        for (T, heads, kvHeads, d) in [(5, 2, 1, 8), (130, 3, 1, 16), (257, 4, 2, 8)] {
            let q = randoms(T * heads * d, seed: 11), k = randoms(T * kvHeads * d, seed: 12)
            let v = randoms(T * kvHeads * d, seed: 13)
            var fast = [Float](repeating: 0, count: T * heads * d), ref = fast
            let scale = 1 / Float(d).squareRoot()
            Kernels.causalAttention(q: q, k: k, v: v, out: &fast, T: T, heads: heads, kvHeads: kvHeads, headDim: d,
                                    scale: scale, workspace: Workspace(), slot: 0)
            Kernels.Reference.causalAttention(q: q, k: k, v: v, out: &ref, T: T, heads: heads, kvHeads: kvHeads,
                                              headDim: d, scale: scale)
            assertClose(fast, ref, rel: 1e-3, abs: 2e-5, "attention T \(T) heads \(heads)/\(kvHeads) d \(d)")
        }
    }

    func testNLLRowsMatchesScalarTwin() {
        for (rows, vocab) in [(3, 49152), (4, 1000), (2, 7)] {
            let logits = randoms(rows * vocab, seed: 21, scale: 6)
            let targets = (0..<rows).map { Int32(($0 * 7919) % vocab) }
            let fast = Kernels.nllRows(logits, rows: rows, vocab: vocab, targets: targets)
            let ref = Kernels.Reference.nllRows(logits, rows: rows, vocab: vocab, targets: targets)
            XCTAssertEqual(fast, ref, accuracy: 1e-5 * abs(ref) + 1e-6, "nllRows [\(rows), \(vocab)]")
        }
    }

    /// The LM head's column-block accumulation (`NLLAccumulator`, what `windowLoss` uses) gives `nllRows`'s
    /// result on the whole rows, with blocks that do not divide the vocabulary and targets in every block.
    func testNLLAccumulatorOverColumnBlocksMatchesWholeRows() {
        for (rows, vocab, block) in [(3, 49152, 4096), (5, 1000, 96), (2, 7, 3), (4, 50, 50)] {
            let logits = randoms(rows * vocab, seed: 23, scale: 6)
            let targets = (0..<rows).map { Int32(($0 * 7919 + 13) % vocab) }
            let ref = Kernels.Reference.nllRows(logits, rows: rows, vocab: vocab, targets: targets)
            var acc = Kernels.NLLAccumulator(rows: rows)
            var v0 = 0
            while v0 < vocab {
                let cols = min(block, vocab - v0)
                var slab = [Float](repeating: 0, count: rows * cols)
                for r in 0..<rows { for c in 0..<cols { slab[r * cols + c] = logits[r * vocab + v0 + c] } }
                acc.add(slab, cols: cols, ld: cols, col0: v0, targets: targets)
                v0 += cols
            }
            XCTAssertEqual(acc.total, ref, accuracy: 1e-5 * abs(ref) + 1e-6, "[\(rows), \(vocab)] in blocks of \(block)")
        }
    }

    // MARK: quantizers

    /// `QuantKernels.minMax` / `intCodes` (SIMD) against `QuantKernels.Reference` (exact).
    func testQuantKernelsMatchScalarTwinsExactly() {
        var rng = SplitMix64(seed: 31)
        for n in [1, 7, 8, 9, 16, 63, 128, 131] {
            let x = (0..<n).map { _ in rng.gaussian() * 3 }
            x.withUnsafeBufferPointer { p in
                let a = QuantKernels.minMax(p.baseAddress!, n), b = QuantKernels.Reference.minMax(p.baseAddress!, n)
                XCTAssertEqual(a?.0, b?.0); XCTAssertEqual(a?.1, b?.1)
                var codes = [UInt8](repeating: 0, count: n)
                codes.withUnsafeMutableBufferPointer {
                    QuantKernels.intCodes(p.baseAddress!, n, h: 0.37, z: 3, qmax: 7, into: $0.baseAddress!)
                }
                XCTAssertEqual(codes, x.map { QuantKernels.Reference.intCode($0, h: 0.37, z: 3, qmax: 7) })
            }
        }
    }

    /// The fused int4 quantize + pack kernel: its AVX2 version and its scalar C twin, bit for bit, against each
    /// other and against the Swift definition (`IntGrid` codes, then the reference packer). Skipped — and says
    /// so — when this CPU has no AVX2 (the scalar twin is still compared with the Swift definition).
    func testInt4PackedKernelTwinsAreBitExact() throws {
        var rng = SplitMix64(seed: 404)
        var comparedAVX2 = false
        for (rows, cols) in [(6, 256), (5, 300), (4, 37), (3, 2), (7, 4096)] {
            var w = (0..<(rows * cols)).map { _ in rng.gaussian() * 0.02 }
            for c in 0..<cols {
                w[c] = Float(c % 16) + 0.5                       // ties
                w[cols + c] = c % 7 == 0 ? 3e6 : -2e-7 * Float(c) // huge and tiny
                w[2 * cols + c] = 0.25                           // constant
            }
            for sym in [false, true] {
                for width in [2, 32, 64, 128, 100, 36, cols].filter({ $0 <= cols && $0 % 2 == 0 }) {
                    let groups = (cols + width - 1) / width, stride = (cols + 1) / 2
                    func run(_ f: (UnsafePointer<Float>, Int64, Int64, Int64, Int64, Int32, UnsafeMutablePointer<UInt8>,
                                   Int64, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Int32>) -> Int64)
                        -> (Int64, [UInt8], [Float], [Int32])
                    {
                        var p = [UInt8](repeating: 0xEE, count: rows * stride)
                        var s = [Float](repeating: 0, count: rows * groups), z = [Int32](repeating: 99, count: rows * groups)
                        let rc = f(w, 0, Int64(rows), Int64(cols), Int64(width), sym ? 1 : 0, &p, Int64(stride), &s, &z)
                        return (rc, p, s, z)
                    }
                    let ref = run(sqs_quant_int4_packed_reference)
                    XCTAssertEqual(ref.0, -1)
                    // The Swift definition.
                    let grid = IntGrid(bits: 4, symmetric: sym)
                    var expected = [UInt8](repeating: 0, count: rows * stride)
                    var codes = [UInt8](repeating: 0, count: cols)
                    for r in 0..<rows {
                        for g in 0..<groups {
                            let lo = g * width, n = min(cols, lo + width) - lo
                            let (mn, mx) = w.withUnsafeBufferPointer { QuantKernels.Reference.minMax($0.baseAddress! + r * cols + lo, n)! }
                            let (h, z, _) = grid.params(xmin: mn, xmax: mx)
                            XCTAssertEqual(ref.2[r * groups + g].bitPattern, h.bitPattern)
                            XCTAssertEqual(ref.3[r * groups + g], Int32(z))
                            for i in lo..<(lo + n) { codes[i] = UInt8(IntGrid.code(w[r * cols + i], h: h, z: z, qmax: 15)) }
                        }
                        codes.withUnsafeBufferPointer { c in
                            expected.withUnsafeMutableBufferPointer {
                                BitPacking.Reference.pack(c.baseAddress!, count: cols, bits: 4, into: $0.baseAddress! + r * stride)
                            }
                        }
                    }
                    XCTAssertEqual(ref.1, expected, "C scalar twin vs IntGrid, [\(rows), \(cols)] g\(width) sym \(sym)")
                    let fast = run(sqs_quant_int4_packed_avx2)
                    if fast.0 == -3 { continue }
                    comparedAVX2 = true
                    XCTAssertEqual(fast.0, -1)
                    XCTAssertEqual(fast.1, ref.1, "AVX2 vs scalar twin, [\(rows), \(cols)] g\(width) sym \(sym)")
                    XCTAssertEqual(fast.2.map(\.bitPattern), ref.2.map(\.bitPattern))
                    XCTAssertEqual(fast.3, ref.3)
                }
            }
        }
        // NaN: both report the row.
        var w = [Float](repeating: 0.5, count: 4 * 64)
        w[2 * 64 + 5] = .nan
        var p = [UInt8](repeating: 0, count: 4 * 32), s = [Float](repeating: 0, count: 8), z = [Int32](repeating: 0, count: 8)
        XCTAssertEqual(sqs_quant_int4_packed_reference(w, 0, 4, 64, 32, 0, &p, 32, &s, &z), 2)
        if comparedAVX2 { XCTAssertEqual(sqs_quant_int4_packed_avx2(w, 0, 4, 64, 32, 0, &p, 32, &s, &z), 2) }
        if !comparedAVX2 {
            throw XCTSkip("this CPU has no AVX2 + FMA: the AVX2 int4 kernel was not compared (its scalar twin was)")
        }
    }

    /// LWC fake-quant forward (bit-exact) and backward (float64 sums in another order) against their scalar twins.
    func testLWCForwardBackwardMatchScalarTwins() throws {
        for (rows, cols, group, sym) in [(6, 576, 128, false), (5, 100, 0, true), (3, 37, 8, false)] {
            let lwc = try Autodiff.FakeQuantLWC(rows: rows, columns: cols, bits: 3, groupSize: group, symmetric: sym)
            let w = randoms(rows * cols, seed: 41, scale: 0.05), dy = randoms(rows * cols, seed: 42)
            let n = rows * lwc.groupsPerRow
            let u = randoms(n, seed: 43).map { $0 + 3 }, l = randoms(n, seed: 44).map { $0 + 3 }
            var o1 = [Float](repeating: 0, count: rows * cols), o2 = o1
            let s1 = lwc.makeState(), s2 = lwc.makeState()
            lwc.forward(weight: w, u: u, l: l, out: &o1, state: s1)
            lwc.forwardReference(weight: w, u: u, l: l, out: &o2, state: s2)
            XCTAssertEqual(o1.map(\.bitPattern), o2.map(\.bitPattern), "LWC forward [\(rows), \(cols)] g\(group)")
            var du1 = [Float](repeating: 0, count: n), dl1 = du1, du2 = du1, dl2 = du1
            var dw1 = [Float](repeating: 0, count: rows * cols), dw2 = dw1
            lwc.backward(dOut: dy, weight: w, state: s1, dU: &du1, dL: &dl1, dWeight: &dw1)
            lwc.backwardReference(dOut: dy, weight: w, state: s2, dU: &du2, dL: &dl2, dWeight: &dw2)
            assertClose(du1, du2, rel: 1e-5, abs: 1e-7, "LWC dU")
            assertClose(dl1, dl2, rel: 1e-5, abs: 1e-7, "LWC dL")
            assertClose(dw1, dw2, rel: 1e-5, abs: 1e-7, "LWC dW")
        }
    }
}
