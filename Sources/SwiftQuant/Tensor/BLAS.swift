import CSQSupport
import Dispatch

/// The arithmetic of a matrix product. `bf16`: both operands rounded to bfloat16 (nearest even), products
/// accumulated in fp32 (AVX512-BF16 `vdpbf16ps`), output fp32: what `torch.autocast(dtype=torch.bfloat16)` does
/// to a matmul on the CPU.
public enum GEMMPrecision: String, Sendable, CaseIterable {
    case fp32, bf16

    /// Whether this CPU has bf16 arithmetic for the precision (bf16: AVX512-BF16 or AMX-BF16).
    public var isSupported: Bool { self == .fp32 || sqs_gemm_builtin_available(1) != 0 || sqs_cpu_amx_bf16() != 0 }
}

/// The matrix-product façade. Products go to the GEMM backend chosen once per process (`sqs_gemm_backend`):
/// the CBLAS loaded at run time (OpenBLAS by default, its kernel chosen from the CPU's features), MKL, or
/// SwiftQuant's own AVX-512 kernel, whichever measured fastest on this machine ($SWIFTQUANT_GEMM overrides);
/// `Reference.sgemm` when none exists.
public enum BLAS {
    /// The backend in use and why: "SwiftQuant AVX-512 GEMM (...); chosen: fastest when measured (...)".
    public static var description: String { String(cString: sqs_blas_description()) }
    /// The backend's short name: "cblas", "mkl", "builtin" or "reference".
    public static var backend: String { String(cString: sqs_gemm_backend_name()) }
    /// The loaded CBLAS library alone (OpenBLAS's version, kernel and how it was chosen).
    public static var cblasDescription: String { String(cString: sqs_cblas_description()) }
    /// The OpenBLAS kernel name, "" when unknown.
    public static var core: String { String(cString: sqs_blas_core()) }
    public static var isAvailable: Bool { sqs_gemm_backend() != Int32(SQS_GEMM_REFERENCE) }
    /// The bf16 backend (`--precision bf16`) and why: SwiftQuant's AVX512-BF16 kernel or MKL's bf16 GEMM.
    public static var bf16Description: String { String(cString: sqs_gemm_bf16_description()) }
    /// "builtin", "mkl" or "reference".
    public static var bf16Backend: String { String(cString: sqs_gemm_bf16_backend_name()) }
    public static var threads: Int { Int(sqs_blas_threads()) }

    /// Row-major `C = alpha · op(A) · op(B) + beta · C`, with `op(A)` of shape m×k and `op(B)` k×n.
    /// Backends that do not thread themselves get the output split into row (or column) blocks, one a thread.
    public static func sgemm(
        transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int, precision: GEMMPrecision = .fp32
    ) {
        if m == 0 || n == 0 { return }
        // Both bf16 backends (SwiftQuant's kernel, MKL's) run sequentially: split like the builtin fp32.
        let splits = precision == .bf16 ? Int(sqs_blas_threads()) : Int(sqs_gemm_splits())
        let work = m * n * max(k, 1)
        if splits > 1 && work >= 1 << 21 {
            // Each piece packs all of the operand it does not split: split the longer side (rows in multiples of
            // the micro-kernel's 12, columns in multiples of its 32), so the smaller operand is the one packed twice.
            let byRows = m >= 96 && (m >= n || n < 64)
            let unit = byRows ? 12 : 32
            let extent = byRows ? m : n
            let pieces = min(splits, extent / unit)
            if pieces > 1 {
                let per = (extent / pieces + unit - 1) / unit * unit
                DispatchQueue.concurrentPerform(iterations: pieces) { piece in
                    let start = piece * per, end = min(extent, start + per)
                    guard start < end else { return }
                    if byRows {
                        one(transA: transA, transB: transB, m: end - start, n: n, k: k, alpha: alpha,
                            a: transA ? a + start : a + start * lda, lda: lda, b: b, ldb: ldb, beta: beta,
                            c: c + start * ldc, ldc: ldc, precision: precision)
                    } else {
                        one(transA: transA, transB: transB, m: m, n: end - start, k: k, alpha: alpha, a: a, lda: lda,
                            b: transB ? b + start * ldb : b + start, ldb: ldb, beta: beta, c: c + start, ldc: ldc,
                            precision: precision)
                    }
                }
                return
            }
        }
        one(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
            beta: beta, c: c, ldc: ldc, precision: precision)
    }

    @inline(__always)
    static func one(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float, a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int,
        precision: GEMMPrecision
    ) {
        if precision == .bf16 {
            let ta: Int32 = transA ? 1 : 0, tb: Int32 = transB ? 1 : 0
            // The bf16 backend is "reference" (-1 here) under SWIFTQUANT_KERNELS=reference.
            if sqs_gemm_bf16(ta, tb, Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c,
                             Int32(ldc)) != 0 {
                sqs_gemm_bf16_reference(ta, tb, Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta,
                                        c, Int32(ldc))
            }
            return
        }
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
