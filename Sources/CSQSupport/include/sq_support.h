// Support code in C for the SwiftQuant core: run-time BLAS loading and CPU feature detection.
// Not part of the public C ABI (that is CSwiftQuant/include/swiftquant.h).
#ifndef SQ_SUPPORT_H
#define SQ_SUPPORT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// CPU features that decide kernels (x86-64; all false elsewhere).
typedef struct {
    int avx2, fma, f16c, avx512f, avx512bw, avx512vl, avx512dq, avx512cd, avx512bf16, amxbf16;
    char vendor[13];
    char brand[49];
} sqs_cpu_features;

void sqs_cpu_detect(sqs_cpu_features *out);

/// Kernel levels, in order: each fast kernel has a scalar reference twin (level 0) with the same signature.
enum { SQS_KERNELS_REFERENCE = 0, SQS_KERNELS_AVX2 = 1 };

/// The kernel level every dispatched kernel uses, chosen once (thread safe) from the CPU's features:
/// AVX2 + FMA when the CPU and the OS support them, the reference otherwise. $SWIFTQUANT_KERNELS=reference forces
/// the scalar twins everywhere (C and Swift); `avx2` asks for AVX2 (granted only when available); anything else is
/// the automatic choice.
int sqs_kernels_level(void);

/// Whether this CPU can run kernels of `level` (independent of $SWIFTQUANT_KERNELS).
int sqs_kernels_available(int level);

/// Name of the level in use: "reference" or "avx2".
const char *sqs_kernels_name(void);

/// Loads a CBLAS library once (thread safe). Before loading OpenBLAS it chooses OPENBLAS_CORETYPE from the
/// CPU's features unless the user has set it (Debian's OpenBLAS 0.3.21 falls back to a generic kernel on
/// processors newer than it knows). Search order: $SWIFTQUANT_BLAS, libopenblas.so.0, libopenblas.so,
/// libblas.so.3. Returns 1 when a BLAS with cblas_sgemm is available, 0 otherwise.
int sqs_blas_load(void);

/// The GEMM backend in use and why it was chosen (never NULL), e.g. "SwiftQuant AVX-512 GEMM (...); chosen:
/// fastest when measured (cblas 255 GFLOP/s, builtin 410 GFLOP/s)".
const char *sqs_blas_description(void);
/// The loaded CBLAS alone: "OpenBLAS 0.3.21 ... (core: SkylakeX; OPENBLAS_CORETYPE chosen by SwiftQuant ...)".
const char *sqs_cblas_description(void);

/// GEMM backends. CBLAS: the library sqs_blas_load found (threads itself). MKL: libmkl_rt from $SWIFTQUANT_MKL,
/// $VIRTUAL_ENV/lib or the loader path, run sequentially. BUILTIN: SwiftQuant's AVX-512 kernel (gemm.c).
/// REFERENCE: none (callers use their scalar GEMM).
enum { SQS_GEMM_REFERENCE = 0, SQS_GEMM_CBLAS = 1, SQS_GEMM_MKL = 2, SQS_GEMM_BUILTIN = 3 };
/// The backend every sqs_sgemm call uses, chosen once per process: $SWIFTQUANT_GEMM (cblas|openblas, mkl, builtin,
/// reference, auto; `measure` re-measures and re-caches) when set and available; the CBLAS when $SWIFTQUANT_BLAS names one; otherwise the fastest of
/// the available backends on a block's shapes (about 0.1 s), the result cached per machine configuration in
/// $XDG_CACHE_HOME/swiftquant/gemm-backend-v2 (~/.cache/...).
int sqs_gemm_backend(void);
const char *sqs_gemm_backend_name(void);
/// How many pieces callers should split one product into (the thread count for MKL and BUILTIN, 1 for a CBLAS
/// that threads itself).
int sqs_gemm_splits(void);

/// SwiftQuant's own GEMM kernels (gemm.c), single-threaded, row-major, C = alpha op(A) op(B) + beta C.
/// Whether this CPU runs them (AVX-512F + FMA; with `bf16`, AVX512-BF16 too).
int sqs_gemm_builtin_available(int bf16);
/// fp32 AVX-512. Returns 0 when done, -1 when the CPU cannot run it or packing memory is missing.
int sqs_gemm_f32_avx512(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda, const float *b,
                        int ldb, float beta, float *c, int ldc);
/// bf16 products with fp32 accumulation (vdpbf16ps): op(A) and op(B) rounded to bf16 (nearest even) while
/// packing. Returns 0 when done, -1 when the CPU has no AVX512-BF16.
int sqs_gemm_bf16_avx512(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                         const float *b, int ldb, float beta, float *c, int ldc);
/// Scalar twins: the definitions, accumulating in k order.
void sqs_gemm_f32_reference(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                            const float *b, int ldb, float beta, float *c, int ldc);
void sqs_gemm_bf16_reference(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                             const float *b, int ldb, float beta, float *c, int ldc);
/// `rows` rows of `cols` floats (row stride `ld`) rounded to bf16 as sqs_bf16_from_float, stored compact
/// (row stride `cols`). AVX-512 when available.
void sqs_bf16_convert(const float *src, long ld, long rows, long cols, uint16_t *dst);
/// The bf16 GEMM backend (chosen once per process like sqs_gemm_backend, among BUILTIN: the AVX512-BF16 kernel,
/// and MKL: `cblas_gemm_bf16bf16f32` on operands converted to bf16 first, AMX where the CPU has it):
/// $SWIFTQUANT_GEMM_BF16 (builtin, mkl, reference, auto, measure) or a cached measurement. REFERENCE: none.
int sqs_gemm_bf16_backend(void);
const char *sqs_gemm_bf16_backend_name(void);
/// Which bf16 backend and why, e.g. "SwiftQuant AVX512-BF16 GEMM ...; chosen: fastest when measured (...)".
const char *sqs_gemm_bf16_description(void);
/// bf16 products with fp32 accumulation on the chosen bf16 backend (single-threaded: callers split): 0 when done,
/// -1 when no backend can run it (the caller runs sqs_gemm_bf16_reference).
int sqs_gemm_bf16(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
                  float beta, float *c, int ldc);
/// MKL's bf16 GEMM on operands rounded as sqs_bf16_from_float: 0 when done, -1 without MKL (for the parity tests).
int sqs_gemm_bf16_mkl(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda, const float *b,
                      int ldb, float beta, float *c, int ldc);
/// Whether the CPU has AMX tiles with bf16 (Sapphire Rapids and later), usable by the OS.
int sqs_cpu_amx_bf16(void);
/// bf16 rounding (nearest even; NaN stays NaN): the bits, and the value back as a float.
uint16_t sqs_bf16_from_float(float f);
float sqs_bf16_round(float f);

/// The OpenBLAS kernel name ("Haswell", "SkylakeX", ...), or "" when unknown.
const char *sqs_blas_core(void);

/// Number of threads the BLAS uses (1 when unknown).
int sqs_blas_threads(void);
void sqs_blas_set_threads(int n);

/// Row-major single-precision GEMM: C = alpha * op(A) * op(B) + beta * C.
/// Returns 0 when a BLAS did the work, -1 when no BLAS is loaded (the caller uses its own kernel).
/// Whether the loaded BLAS also exports LAPACK's spotrf_ / strtri_ (OpenBLAS does).
int sqs_lapack_available(void);
/// Row-major lower Cholesky factor in place (LAPACK spotrf): 0 on success, > 0 when not positive definite,
/// -1000 when no LAPACK is loaded. Only the lower triangle is read and written.
int sqs_spotrf_lower(int n, float *a, int lda);
/// Row-major inverse of a lower triangular matrix in place (LAPACK strtri): 0 on success, -1000 without LAPACK.
int sqs_strtri_lower(int n, float *a, int lda);
int sqs_sgemm(int transA, int transB, int m, int n, int k, float alpha, const float *a, int lda,
              const float *b, int ldb, float beta, float *c, int ldc);

/// 4-bit min/max quantization (asymmetric, or symmetric when `symmetric` != 0) of rows [r0, r1) of the
/// row-major `w` ([rows, cols]) in groups of `width` consecutive columns (even; the last group may be
/// shorter), fused with packing: row r's codes go to `packed + r * stride` as one little-endian nibble stream,
/// scales and zero-points to `[r * groups + g]`. Returns -1 when done, the first row holding NaN/Inf (rows
/// before it are done), or -2 for an odd `width`. Dispatched (`sqs_kernels_level`).
int64_t sqs_quant_int4_packed(const float *w, int64_t r0, int64_t r1, int64_t cols, int64_t width, int symmetric,
                              uint8_t *packed, int64_t stride, float *scales, int32_t *zeros);
/// The scalar twin of `sqs_quant_int4_packed` (always available).
int64_t sqs_quant_int4_packed_reference(const float *w, int64_t r0, int64_t r1, int64_t cols, int64_t width,
                                        int symmetric, uint8_t *packed, int64_t stride, float *scales,
                                        int32_t *zeros);
/// The AVX2 + FMA version, or -3 when this CPU cannot run it (for the parity tests).
int64_t sqs_quant_int4_packed_avx2(const float *w, int64_t r0, int64_t r1, int64_t cols, int64_t width,
                                   int symmetric, uint8_t *packed, int64_t stride, float *scales, int32_t *zeros);

/// Thread-local last-error message of the C ABI (copied; "" when none).
void sqs_set_last_error(const char *message);
const char *sqs_last_error(void);

/// Monotonic clock in seconds.
double sqs_now(void);

#ifdef __cplusplus
}
#endif
#endif
