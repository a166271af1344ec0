import CSQSupport
import Foundation
import SwiftQuant
import XCTest

/// SwiftQuant's own GEMM kernels (Sources/CSQSupport/gemm.c) against their scalar twins, and `BLAS.sgemm` (whatever
/// backend this machine chose, split over threads) against the reference. The twins sum in k order and the
/// kernels in blocks, so the bound is the float32 summation bound: |Δ| ≤ 4·k·ε·Σ|a||b| per entry.
final class GEMMKernelTests: XCTestCase {
    struct Case {
        let m, n, k: Int
        let ta, tb: Bool
        let alpha, beta: Float
    }

    /// Odd sizes cross every edge: partial micro-tiles (m % 12, n % 32), several k slices (k > 320, odd k for the
    /// bf16 pairs), several MC blocks (m > 96), and every transpose combination.
    let cases: [Case] = [
        Case(m: 1, n: 1, k: 1, ta: false, tb: false, alpha: 1, beta: 0),
        Case(m: 13, n: 33, k: 7, ta: false, tb: true, alpha: 0.5, beta: 0),
        Case(m: 12, n: 32, k: 288, ta: false, tb: true, alpha: 1, beta: 1),
        Case(m: 97, n: 65, k: 641, ta: true, tb: false, alpha: -1.25, beta: 0.5),
        Case(m: 25, n: 31, k: 600, ta: true, tb: true, alpha: 1, beta: 2),
        Case(m: 200, n: 70, k: 64, ta: false, tb: false, alpha: 0.125, beta: 0),
        Case(m: 5, n: 300, k: 33, ta: false, tb: true, alpha: 1, beta: -1),
    ]

    typealias Kernel = (Int32, Int32, Int32, Int32, Int32, Float, UnsafePointer<Float>?, Int32, UnsafePointer<Float>?,
                        Int32, Float, UnsafeMutablePointer<Float>?, Int32) -> Void

    /// Runs `fast` and `reference` on the same random operands (with padded leading dimensions) and checks the
    /// summation bound. Returns the worst |Δ| / bound seen.
    @discardableResult
    func compare(_ c: Case, seed: UInt64, fast: Kernel, reference: Kernel, roundInputs: Bool) -> Float {
        var rng = SplitMix64(seed: seed)
        let (aRows, aCols) = c.ta ? (c.k, c.m) : (c.m, c.k)
        let (bRows, bCols) = c.tb ? (c.n, c.k) : (c.k, c.n)
        let lda = aCols + 3, ldb = bCols + 5, ldc = c.n + 2
        let a = (0..<(aRows * lda)).map { _ in rng.gaussian() }
        let b = (0..<(bRows * ldb)).map { _ in rng.gaussian() }
        let c0 = (0..<(c.m * ldc)).map { _ in rng.gaussian() }
        var got = c0, want = c0
        fast(c.ta ? 1 : 0, c.tb ? 1 : 0, Int32(c.m), Int32(c.n), Int32(c.k), c.alpha, a, Int32(lda), b, Int32(ldb),
             c.beta, &got, Int32(ldc))
        reference(c.ta ? 1 : 0, c.tb ? 1 : 0, Int32(c.m), Int32(c.n), Int32(c.k), c.alpha, a, Int32(lda), b,
                  Int32(ldb), c.beta, &want, Int32(ldc))
        func r(_ x: Float) -> Float { roundInputs ? sqs_bf16_round(x) : x }
        var worst: Float = 0
        for i in 0..<c.m {
            for j in 0..<c.n {
                var mass: Float = 0
                for p in 0..<c.k {
                    let av = c.ta ? a[p * lda + i] : a[i * lda + p]
                    let bv = c.tb ? b[j * ldb + p] : b[p * ldb + j]
                    mass += abs(r(av) * r(bv))
                }
                let bound = 4 * Float(c.k + 2) * Float.ulpOfOne * (abs(c.alpha) * mass + abs(c.beta * c0[i * ldc + j]))
                    + Float.leastNormalMagnitude
                let err = abs(got[i * ldc + j] - want[i * ldc + j])
                XCTAssertLessThanOrEqual(err, bound, "\(c) at (\(i), \(j)): \(got[i * ldc + j]) vs \(want[i * ldc + j])")
                worst = max(worst, err / bound)
            }
            // Padding columns of C are never written.
            for j in c.n..<ldc { XCTAssertEqual(got[i * ldc + j], c0[i * ldc + j], "\(c): wrote C's padding") }
        }
        return worst
    }

    func testBuiltinF32KernelMatchesScalarTwin() throws {
        try XCTSkipUnless(sqs_gemm_builtin_available(0) != 0, "this CPU has no AVX-512F: the builtin GEMM is not used here")
        for (i, c) in cases.enumerated() {
            compare(c, seed: UInt64(10 + i), fast: { _ = sqs_gemm_f32_avx512($0, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) },
                    reference: { sqs_gemm_f32_reference($0, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) },
                    roundInputs: false)
        }
    }

    func testBuiltinBF16KernelMatchesScalarTwin() throws {
        try XCTSkipUnless(sqs_gemm_builtin_available(1) != 0, "this CPU has no AVX512-BF16")
        for (i, c) in cases.enumerated() {
            compare(c, seed: UInt64(40 + i), fast: { _ = sqs_gemm_bf16_avx512($0, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) },
                    reference: { sqs_gemm_bf16_reference($0, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) },
                    roundInputs: true)
        }
    }

    /// MKL's bf16 GEMM (`cblas_gemm_bf16bf16f32`, AMX where present) on operands rounded by `sqs_bf16_convert`:
    /// the same product as the twin. Runs where MKL is found (`make mkl`, or $SWIFTQUANT_MKL).
    func testMKLBF16GEMMMatchesScalarTwin() throws {
        var probe: Float = 0
        let one: [Float] = [1]
        try XCTSkipUnless(sqs_gemm_bf16_mkl(0, 0, 1, 1, 1, 1, one, 1, one, 1, 0, &probe, 1) == 0,
                          "MKL is not installed here (make mkl, or SWIFTQUANT_MKL=.../libmkl_rt.so.2)")
        XCTAssertEqual(probe, 1)
        for (i, c) in cases.enumerated() {
            compare(c, seed: UInt64(60 + i), fast: { _ = sqs_gemm_bf16_mkl($0, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) },
                    reference: { sqs_gemm_bf16_reference($0, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) },
                    roundInputs: true)
        }
    }

    /// The bulk conversion (AVX-512 where available) is `sqs_bf16_from_float` on every element: ties, NaN,
    /// infinities, subnormals, overflow, rows of odd length with a padded stride.
    func testBF16ConvertMatchesScalarRounding() {
        var rng = SplitMix64(seed: 11)
        let specials: [Float] = [0, -0, 1 + 0x1p-8, 1 + 3 * 0x1p-8, .infinity, -.infinity, .nan,
                                 Float(bitPattern: 0x7fff_ffff), Float(bitPattern: 0xff80_0001), .greatestFiniteMagnitude,
                                 .leastNonzeroMagnitude, Float.leastNormalMagnitude.nextDown, -0x1p-140]
        let rows = 5, cols = 37, ld = 41
        var src = (0..<(rows * ld)).map { _ in rng.gaussian() * 100 }
        for (i, v) in specials.enumerated() { src[i * 3] = v }
        var out = [UInt16](repeating: 0xdead, count: rows * cols)
        sqs_bf16_convert(src, ld, rows, cols, &out)
        for r in 0..<rows {
            for j in 0..<cols {
                XCTAssertEqual(out[r * cols + j], sqs_bf16_from_float(src[r * ld + j]), "row \(r) column \(j): \(src[r * ld + j])")
            }
        }
    }

    /// The bf16 façade path (`BLAS.sgemm(precision: .bf16)`, the chosen bf16 backend split over threads) against
    /// the bf16 twin.
    func testBF16FacadeMatchesTwinOnTheChosenBackend() throws {
        try XCTSkipUnless(GEMMPrecision.bf16.isSupported, "this CPU has no bf16 arithmetic")
        print("bf16 GEMM backend: \(BLAS.bf16Description)")
        XCTAssertTrue(["builtin", "mkl", "reference"].contains(BLAS.bf16Backend), BLAS.bf16Backend)
        let shapes = [Case(m: 300, n: 96, k: 130, ta: false, tb: true, alpha: 1, beta: 0),
                      Case(m: 40, n: 700, k: 90, ta: true, tb: false, alpha: 0.5, beta: 1)]
        for (i, c) in shapes.enumerated() {
            compare(c, seed: UInt64(120 + i), fast: { ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc in
                BLAS.sgemm(transA: ta != 0, transB: tb != 0, m: Int(m), n: Int(n), k: Int(k), alpha: alpha, a: a!,
                           lda: Int(lda), b: b!, ldb: Int(ldb), beta: beta, c: c!, ldc: Int(ldc), precision: .bf16)
            }, reference: { sqs_gemm_bf16_reference($0, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) },
                    roundInputs: true)
        }
    }

    /// The bf16 twin is a different product from fp32: its error against fp32 is the inputs' rounding (2⁻⁸
    /// relative each), far above the summation bound, so the comparison above would catch a kernel that forgot
    /// to round (or rounded one operand only).
    func testBF16TwinDiffersFromF32ByTheInputRounding() {
        let c = Case(m: 4, n: 8, k: 64, ta: false, tb: true, alpha: 1, beta: 0)
        var rng = SplitMix64(seed: 7)
        let a = (0..<(c.m * c.k)).map { _ in rng.gaussian() }, b = (0..<(c.n * c.k)).map { _ in rng.gaussian() }
        var f32 = [Float](repeating: 0, count: c.m * c.n), bf = f32
        sqs_gemm_f32_reference(0, 1, 4, 8, 64, 1, a, 64, b, 64, 0, &f32, 8)
        sqs_gemm_bf16_reference(0, 1, 4, 8, 64, 1, a, 64, b, 64, 0, &bf, 8)
        let worst = zip(f32, bf).map { abs($0 - $1) }.max()!
        XCTAssertGreaterThan(worst, 1e-3)
        XCTAssertLessThan(worst, 0.5)
    }

    /// Round to nearest even on the 16 dropped bits; NaN stays NaN, overflow goes to infinity.
    func testBF16RoundingIsNearestEven() {
        XCTAssertEqual(sqs_bf16_round(1 + 0x1p-8), 1)  // halfway, even neighbour below
        XCTAssertEqual(sqs_bf16_round(1 + 3 * 0x1p-8), 1 + 0x1p-6)  // halfway, even neighbour above
        XCTAssertEqual(sqs_bf16_round(1 + 0x1p-8 + 0x1p-20), 1 + 0x1p-7)  // above halfway
        XCTAssertEqual(sqs_bf16_round(-2.5), -2.5)
        XCTAssertEqual(sqs_bf16_round(.greatestFiniteMagnitude), .infinity)
        XCTAssertEqual(sqs_bf16_round(.infinity), .infinity)
        XCTAssertTrue(sqs_bf16_round(.nan).isNaN)
        XCTAssertTrue(sqs_bf16_round(Float(bitPattern: 0x7fff_ffff)).isNaN)
        XCTAssertEqual(sqs_bf16_from_float(1), 0x3f80)
        // Every bf16 value is a fixed point, and its float neighbours at ±1 ulp round back to it.
        for bits in stride(from: UInt32(0), to: 0x7f80, by: 37) {
            let v = Float(bitPattern: bits << 16)
            XCTAssertEqual(sqs_bf16_round(v), v)
            XCTAssertEqual(sqs_bf16_round(v.nextUp), v)
            if v > 0 { XCTAssertEqual(sqs_bf16_round(v.nextDown), v) }
        }
    }

    /// `BLAS.sgemm` on the chosen backend (split into row or column blocks when the backend does not thread
    /// itself) against the reference, on shapes that take both split directions.
    func testBLASFacadeMatchesReferenceOnTheChosenBackend() {
        print("GEMM backend: \(BLAS.description)")
        let shapes = [Case(m: 300, n: 96, k: 130, ta: false, tb: true, alpha: 1, beta: 0),
                      Case(m: 40, n: 700, k: 90, ta: false, tb: false, alpha: 0.5, beta: 1),
                      Case(m: 130, n: 77, k: 300, ta: true, tb: false, alpha: 1, beta: 0),
                      Case(m: 20, n: 400, k: 300, ta: true, tb: true, alpha: 2, beta: 0)]
        for (i, c) in shapes.enumerated() {
            compare(c, seed: UInt64(90 + i), fast: { ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc in
                BLAS.sgemm(transA: ta != 0, transB: tb != 0, m: Int(m), n: Int(n), k: Int(k), alpha: alpha, a: a!,
                           lda: Int(lda), b: b!, ldb: Int(ldb), beta: beta, c: c!, ldc: Int(ldc))
            }, reference: { sqs_gemm_f32_reference($0, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) },
                    roundInputs: false)
        }
    }

    func testBackendIsReportedWithItsReason() {
        let name = BLAS.backend
        XCTAssertTrue(["cblas", "mkl", "builtin", "reference"].contains(name), name)
        XCTAssertTrue(BLAS.description.contains("chosen:"), BLAS.description)
        if ProcessInfo.processInfo.environment["SWIFTQUANT_KERNELS"] == "reference" {
            XCTAssertNotEqual(name, "builtin", "SWIFTQUANT_KERNELS=reference must not pick SwiftQuant's AVX-512 GEMM")
        }
        if let want = ProcessInfo.processInfo.environment["SWIFTQUANT_GEMM"], ["cblas", "builtin"].contains(want),
           want != "builtin" || sqs_gemm_builtin_available(0) != 0 {
            XCTAssertEqual(name, want)
        }
    }
}
