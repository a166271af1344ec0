import CSQSupport

/// The matrix-product façade. Products go to the CBLAS library loaded at run time (OpenBLAS by default, with
/// its kernel chosen from the CPU's features; see `sqs_blas_load`), or to `Reference.sgemm` when none exists.
public enum BLAS {
    /// "OpenBLAS 0.3.21 … (core: SkylakeX; …)" or "none: built-in reference GEMM …".
    public static var description: String { String(cString: sqs_blas_description()) }
    /// The OpenBLAS kernel name, "" when unknown.
    public static var core: String { String(cString: sqs_blas_core()) }
    public static var isAvailable: Bool { sqs_blas_load() != 0 }
    public static var threads: Int { Int(sqs_blas_threads()) }

    /// Row-major `C = alpha · op(A) · op(B) + beta · C`, with `op(A)` of shape m×k and `op(B)` k×n.
    @inlinable
    public static func sgemm(
        transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        if m == 0 || n == 0 { return }
        let done = sqs_sgemm(transA ? 1 : 0, transB ? 1 : 0, Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda),
                             b, Int32(ldb), beta, c, Int32(ldc))
        if done != 0 {
            Reference.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                            b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
        }
    }
}

/// Scalar reference kernels: the specification every fast kernel is tested against.
public enum Reference {
    /// Row-major GEMM by the definition (float32 accumulation in k order).
    public static func sgemm(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float, a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        for i in 0..<m {
            for j in 0..<n {
                var acc: Float = 0
                for p in 0..<k {
                    let av = transA ? a[p * lda + i] : a[i * lda + p]
                    let bv = transB ? b[j * ldb + p] : b[p * ldb + j]
                    acc += av * bv
                }
                c[i * ldc + j] = alpha * acc + (beta == 0 ? 0 : beta * c[i * ldc + j])
            }
        }
    }
}
