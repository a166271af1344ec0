import CSQSupport
import Foundation

/// The dense linear algebra GPTQ and LoRC need: GPTQ's Cholesky factorization and triangular inverse go to LAPACK
/// (`spotrf` / `strtri` of the BLAS library loaded at run time; OpenBLAS ships them) and fall back
/// to the recursive versions here (big updates as `BLAS.sgemm`) without one, under `SWIFTQUANT_KERNELS=reference`,
/// and for the parity tests' fixed summation order; a cyclic Jacobi eigensolver for small symmetric matrices.
/// Row-major, float32 storage with float64 accumulation in the unblocked base cases.
enum DenseLinearAlgebra {
    /// Matrices up to this size are factored/inverted without recursion.
    static let baseSize = 64

    /// One product through the façade, or through `Reference.sgemm` (a fixed summation order) when `exact`.
    @inline(__always)
    static func gemm(_ exact: Bool, transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                     alpha: Float = 1, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                     beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
        if m == 0 || n == 0 { return }
        if exact {
            Reference.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b,
                            ldb: ldb, beta: beta, c: c, ldc: ldc)
        } else {
            BLAS.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
                       beta: beta, c: c, ldc: ldc)
        }
    }

    // MARK: Cholesky

    /// In-place lower Cholesky factor `A = L·Lᵀ` of the n×n matrix at `a` (leading dimension `ld`): the lower
    /// triangle becomes `L`, the strict upper triangle is zeroed. Only the lower triangle of `A` is read. Returns
    /// false on a pivot that is not positive and finite (A not numerically positive definite).
    static func choleskyLower(_ a: UnsafeMutablePointer<Float>, n: Int, ld: Int, exact: Bool = false) -> Bool {
        if n <= baseSize { return choleskyUnblocked(a, n: n, ld: ld) }
        let n1 = n / 2, n2 = n - n1
        guard choleskyLower(a, n: n1, ld: ld, exact: exact) else { return false }
        // L21 = A21 · L11⁻ᵀ, through the explicit inverse of the n1×n1 triangle.
        let inv = UnsafeMutablePointer<Float>.allocate(capacity: n1 * n1)
        let a21 = UnsafeMutablePointer<Float>.allocate(capacity: n2 * n1)
        defer { inv.deallocate(); a21.deallocate() }
        for i in 0..<n1 { (inv + i * n1).update(from: a + i * ld, count: n1) }
        invertLower(inv, n: n1, ld: n1, exact: exact)
        for i in 0..<n2 { (a21 + i * n1).update(from: a + (n1 + i) * ld, count: n1) }
        gemm(exact, transB: true, m: n2, n: n1, k: n1, a: a21, lda: n1, b: inv, ldb: n1, c: a + n1 * ld, ldc: ld)
        // A22 −= L21·L21ᵀ, then factor A22.
        gemm(exact, transB: true, m: n2, n: n2, k: n1, alpha: -1, a: a + n1 * ld, lda: ld, b: a + n1 * ld, ldb: ld,
             beta: 1, c: a + n1 * ld + n1, ldc: ld)
        guard choleskyLower(a + n1 * ld + n1, n: n2, ld: ld, exact: exact) else { return false }
        for i in 0..<n1 { (a + i * ld + n1).update(repeating: 0, count: n2) }
        return true
    }

    static func choleskyUnblocked(_ a: UnsafeMutablePointer<Float>, n: Int, ld: Int) -> Bool {
        for j in 0..<n {
            let rj = a + j * ld
            var s = Double(rj[j])
            for k in 0..<j { s -= Double(rj[k]) * Double(rj[k]) }
            guard s > 0, s.isFinite else { return false }
            let d = s.squareRoot()
            rj[j] = Float(d)
            for i in (j + 1)..<max(n, j + 1) {
                let ri = a + i * ld
                var t = Double(ri[j])
                for k in 0..<j { t -= Double(ri[k]) * Double(rj[k]) }
                ri[j] = Float(t / d)
            }
            (rj + j + 1).update(repeating: 0, count: n - j - 1)
        }
        return true
    }

    // MARK: triangular inverse

    /// In-place inverse of the lower-triangular n×n matrix at `a` (non-zero diagonal); the strict upper triangle
    /// must be zero and stays zero. `[[A, 0], [B, C]]⁻¹ = [[A⁻¹, 0], [−C⁻¹·B·A⁻¹, C⁻¹]]`.
    static func invertLower(_ a: UnsafeMutablePointer<Float>, n: Int, ld: Int, exact: Bool = false) {
        if n <= baseSize { invertLowerUnblocked(a, n: n, ld: ld); return }
        let n1 = n / 2, n2 = n - n1
        invertLower(a, n: n1, ld: ld, exact: exact)
        invertLower(a + n1 * ld + n1, n: n2, ld: ld, exact: exact)
        let t = UnsafeMutablePointer<Float>.allocate(capacity: n2 * n1)
        defer { t.deallocate() }
        gemm(exact, m: n2, n: n1, k: n1, a: a + n1 * ld, lda: ld, b: a, ldb: ld, c: t, ldc: n1)  // B·A⁻¹
        gemm(exact, m: n2, n: n1, k: n2, alpha: -1, a: a + n1 * ld + n1, lda: ld, b: t, ldb: n1, c: a + n1 * ld, ldc: ld)
    }

    static func invertLowerUnblocked(_ a: UnsafeMutablePointer<Float>, n: Int, ld: Int) {
        var l = [Double](repeating: 0, count: n * n), x = [Double](repeating: 0, count: n * n)
        for i in 0..<n { for j in 0...i { l[i * n + j] = Double(a[i * ld + j]) } }
        for j in 0..<n {
            x[j * n + j] = 1 / l[j * n + j]
            for i in (j + 1)..<max(n, j + 1) {
                var s = 0.0
                for k in j..<i { s += l[i * n + k] * x[k * n + j] }
                x[i * n + j] = -s / l[i * n + i]
            }
        }
        for i in 0..<n { for j in 0...i { a[i * ld + j] = Float(x[i * n + j]) } }
    }

    /// The upper Cholesky factor `U` of `H⁻¹` (`H⁻¹ = Uᵀ·U`) of a symmetric positive definite n×n `h`, or nil when
    /// `H` is not numerically positive definite. With `J` the order reversal, `J·H·J = M·Mᵀ` (lower `M`) gives
    /// `H = R·Rᵀ` with `R = J·M·J` upper, so `H⁻¹ = (R⁻¹)ᵀ·R⁻¹` and `U = R⁻¹ = J·M⁻¹·J`: one Cholesky and one triangular
    /// inverse. Only the upper triangle of `h` is read.
    static func inverseCholeskyUpper(_ h: UnsafePointer<Float>, n: Int, exact: Bool = false) -> [Float]? {
        var p = [Float](repeating: 0, count: n * n)
        let ok: Bool = p.withUnsafeMutableBufferPointer { pb in
            let pp = pb.baseAddress!
            for i in 0..<n { for j in 0...i { pp[i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)] } }
            // LAPACK (the BLAS library's LAPACKE) when loaded; the recursive factorization here otherwise, and
            // for `exact` (a fixed summation order for parity tests).
            if !exact && !KernelDispatch.reference && sqs_lapack_available() != 0 {
                guard sqs_spotrf_lower(Int32(n), pp, Int32(n)) == 0 else { return false }
                return sqs_strtri_lower(Int32(n), pp, Int32(n)) == 0
            }
            guard choleskyLower(pp, n: n, ld: n, exact: exact) else { return false }
            invertLower(pp, n: n, ld: n, exact: exact)
            return true
        }
        guard ok else { return nil }
        var u = [Float](repeating: 0, count: n * n)
        for i in 0..<n { for j in i..<n { u[i * n + j] = p[(n - 1 - i) * n + (n - 1 - j)] } }
        guard u.allSatisfy({ $0.isFinite }) else { return nil }
        return u
    }

    // MARK: symmetric eigenproblem

    /// Eigenvalues (descending) and eigenvectors (`vectors[i·n + k]`: component i of the k-th vector) of the
    /// symmetric n×n `a`, by cyclic Jacobi rotations in float64. For small n (its cost is about 2n³ per sweep).
    static func symmetricEigen(_ a: [Double], n: Int, maxSweeps: Int = 60) -> (values: [Double], vectors: [Double]) {
        var a = a
        var v = [Double](repeating: 0, count: n * n)
        for i in 0..<n { v[i * n + i] = 1 }
        var total = 0.0
        for x in a { total += x * x }
        for _ in 0..<maxSweeps {
            var off = 0.0
            for p in 0..<n { for q in (p + 1)..<max(n, p + 1) { off += a[p * n + q] * a[p * n + q] } }
            if off <= 1e-30 * total || off == 0 { break }
            for p in 0..<n {
                for q in (p + 1)..<max(n, p + 1) {
                    let apq = a[p * n + q]
                    if apq == 0 { continue }
                    let app = a[p * n + p], aqq = a[q * n + q]
                    if abs(apq) < 1e-300 || abs(apq) <= 1e-18 * (abs(app) + abs(aqq)) {
                        a[p * n + q] = 0; a[q * n + p] = 0; continue
                    }
                    let theta = (aqq - app) / (2 * apq)
                    let t = abs(theta) > 1e150 ? 1 / (2 * theta)
                        : (theta >= 0 ? 1 : -1) / (abs(theta) + (theta * theta + 1).squareRoot())
                    let c = 1 / (t * t + 1).squareRoot(), s = t * c
                    for k in 0..<n where k != p && k != q {
                        let akp = a[k * n + p], akq = a[k * n + q]
                        let np = c * akp - s * akq, nq = s * akp + c * akq
                        a[k * n + p] = np; a[p * n + k] = np
                        a[k * n + q] = nq; a[q * n + k] = nq
                    }
                    a[p * n + p] = app - t * apq
                    a[q * n + q] = aqq + t * apq
                    a[p * n + q] = 0; a[q * n + p] = 0
                    for k in 0..<n {
                        let vkp = v[k * n + p], vkq = v[k * n + q]
                        v[k * n + p] = c * vkp - s * vkq
                        v[k * n + q] = s * vkp + c * vkq
                    }
                }
            }
        }
        let order = (0..<n).sorted { a[$0 * n + $0] > a[$1 * n + $1] || (a[$0 * n + $0] == a[$1 * n + $1] && $0 < $1) }
        var values = [Double](repeating: 0, count: n), vectors = [Double](repeating: 0, count: n * n)
        for (k, src) in order.enumerated() {
            values[k] = a[src * n + src]
            for i in 0..<n { vectors[i * n + k] = v[i * n + src] }
        }
        return (values, vectors)
    }
}
