// SwiftQuant's own GEMM: a packed, cache-blocked product with AVX-512 micro-kernels, fp32 and bf16 (AVX512-BF16
// `vdpbf16ps`, fp32 accumulation), each beside a scalar reference. Single-threaded: callers split the output
// across threads (BLAS.sgemm in Swift does, see sqs_gemm_splits). Row-major, C = alpha * op(A) * op(B) + beta * C.
//
// Blocking (Goto / BLIS order): for each NC-wide column panel of op(B), for each KC-deep slice of k, pack the
// slice of op(B) into NR-wide strips; for each MC-high row block of op(A), pack it into MR-high strips; then the
// MR x NR micro-kernel runs over every (strip of A, strip of B) pair, its B strip (KC x NR) staying in L1 and the
// packed A block in L2. MR = 12, NR = 32: 24 zmm accumulators, two B loads and twelve broadcasts per k step.
// The bf16 kernel packs pairs of k (so one `vdpbf16ps` does two multiply-adds a lane) and rounds op(A) and op(B)
// to bf16 (round to nearest even) while packing: its inputs are fp32 like every other product in SwiftQuant.
#include "sq_support.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define SQS_X86 1
#else
#define SQS_X86 0
#endif

enum { MR = 12, NR = 32, MC = 96, NC = 512, KC_MAX = 320 };

// k split into equal slices of at most KC_MAX (576 -> 2 x 288, 1536 -> 5 x 308): no thin last slice.
static int k_slice(int k) {
    int slices = (k + KC_MAX - 1) / KC_MAX;
    int kc = (k + slices - 1) / slices;
    return (kc + 1) & ~1;  // even, for the bf16 pairs
}

// Per-thread packing buffers, grown on demand and kept (no page faults per call).
static __thread void *pack_a = NULL, *pack_b = NULL;
static __thread size_t pack_a_size = 0, pack_b_size = 0;

static void *grow(void **buffer, size_t *size, size_t need) {
    if (need <= *size) return *buffer;
    free(*buffer);
    size_t bytes = (need + 63) & ~(size_t)63;
    *buffer = aligned_alloc(64, bytes);
    *size = *buffer ? bytes : 0;
    return *buffer;
}

static inline float at(const float *x, long ld, int trans, long row, long col) {
    return trans ? x[col * ld + row] : x[row * ld + col];
}

uint16_t sqs_bf16_from_float(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  // NaN stays a quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float sqs_bf16_round(float f) {
    uint32_t u = (uint32_t)sqs_bf16_from_float(f) << 16;
    float r;
    memcpy(&r, &u, 4);
    return r;
}

// ---------------------------------------------------------------------------------------------------------
// Scalar references: the definition, in k order.

void sqs_gemm_f32_reference(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                            const float *b, int ldb, float beta, float *c, int ldc) {
    for (long i = 0; i < m; i++)
        for (long j = 0; j < n; j++) {
            float acc = 0;
            for (long p = 0; p < k; p++) acc += at(a, lda, ta, i, p) * at(b, ldb, tb, p, j);
            float *out = c + i * ldc + j;
            *out = alpha * acc + (beta == 0 ? 0 : beta * *out);
        }
}

void sqs_gemm_bf16_reference(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                             const float *b, int ldb, float beta, float *c, int ldc) {
    for (long i = 0; i < m; i++)
        for (long j = 0; j < n; j++) {
            float acc = 0;  // bf16 x bf16 products are exact in fp32
            for (long p = 0; p < k; p++)
                acc += sqs_bf16_round(at(a, lda, ta, i, p)) * sqs_bf16_round(at(b, ldb, tb, p, j));
            float *out = c + i * ldc + j;
            *out = alpha * acc + (beta == 0 ? 0 : beta * *out);
        }
}

// ---------------------------------------------------------------------------------------------------------
// Packing. fp32: A strips hold MR rows interleaved per k ([p][MR]), B strips NR columns per k ([p][NR]).
// bf16: the same with k in pairs ([q][MR][2], [q][NR][2]). Rows, columns and k beyond the matrix are zero.

// `rows` (≤ `lanes`) rows of a matrix contiguous along k, as a strip [k][lanes] (rows beyond `rows` zero): 4 × 4
// SSE transposes where rows and k come in fours (4 loads and 4 stores of 16 bytes for 16 elements), scalar edges.
static void pack_rows_f32(const float *src, long ld, int rows, int lanes, int kc, float *strip) {
    int r = 0;
#if SQS_X86
    for (; r + 4 <= rows; r += 4) {
        const float *s0 = src + r * ld, *s1 = s0 + ld, *s2 = s1 + ld, *s3 = s2 + ld;
        int p = 0;
        for (; p + 4 <= kc; p += 4) {
            __m128 a = _mm_loadu_ps(s0 + p), b = _mm_loadu_ps(s1 + p), c = _mm_loadu_ps(s2 + p), d = _mm_loadu_ps(s3 + p);
            _MM_TRANSPOSE4_PS(a, b, c, d);
            float *o = strip + (long)p * lanes + r;
            _mm_storeu_ps(o, a);
            _mm_storeu_ps(o + lanes, b);
            _mm_storeu_ps(o + 2 * lanes, c);
            _mm_storeu_ps(o + 3 * lanes, d);
        }
        for (; p < kc; p++) {
            float *o = strip + (long)p * lanes + r;
            memcpy(o, s0 + p, 4), memcpy(o + 1, s1 + p, 4), memcpy(o + 2, s2 + p, 4), memcpy(o + 3, s3 + p, 4);
        }
    }
#endif
    // Scalar edges copy bytes (memcpy): the bf16 packer passes pair words through here as floats.
    for (; r < rows; r++)
        for (int p = 0; p < kc; p++) memcpy(strip + (long)p * lanes + r, src + r * ld + p, 4);
    for (; r < lanes; r++)
        for (int p = 0; p < kc; p++) memset(strip + (long)p * lanes + r, 0, 4);
}

static void pack_b_f32(int kc, int nc, const float *b, long ldb, int tb, long p0, long j0, float *out) {
    for (int jr = 0; jr < nc; jr += NR) {
        int w = nc - jr < NR ? nc - jr : NR;
        float *strip = out + (long)jr * kc;
        if (!tb) {
            for (int p = 0; p < kc; p++) {
                float *o = strip + (long)p * NR;
                memcpy(o, b + (p0 + p) * ldb + j0 + jr, sizeof(float) * (size_t)w);
                for (int j = w; j < NR; j++) o[j] = 0;
            }
        } else {
            pack_rows_f32(b + (j0 + jr) * ldb + p0, ldb, w, NR, kc, strip);
        }
    }
}

static void pack_a_f32(int mc, int kc, const float *a, long lda, int ta, long i0, long p0, float *out) {
    for (int ir = 0; ir < mc; ir += MR) {
        int h = mc - ir < MR ? mc - ir : MR;
        float *strip = out + (long)ir * kc;
        if (!ta) {
            pack_rows_f32(a + (i0 + ir) * lda + p0, lda, h, MR, kc, strip);
        } else {
            for (int p = 0; p < kc; p++) {
                const float *src = a + (p0 + p) * lda + i0 + ir;
                for (int i = 0; i < h; i++) strip[(long)p * MR + i] = src[i];
            }
            for (int i = h; i < MR; i++)
                for (int p = 0; p < kc; p++) strip[(long)p * MR + i] = 0;
        }
    }
}

#if SQS_X86
// bf16 rounding of 16 floats, as sqs_bf16_from_float: the bf16 bits in the high half of each 32-bit lane.
__attribute__((target("avx512f"))) static inline __m512i bf16_high(__m512 x) {
    __m512i u = _mm512_castps_si512(x);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                            _mm512_set1_epi32(0x7f800000));
    return _mm512_mask_or_epi32(r, nan, u, _mm512_set1_epi32(0x00400000));
}

// Pairs (even k in the low half, odd k in the high half) from two rows of 16 values.
__attribute__((target("avx512f"))) static inline __m512i bf16_pairs(__m512 even, __m512 odd) {
    return _mm512_or_si512(_mm512_and_si512(bf16_high(odd), _mm512_set1_epi32((int)0xffff0000u)),
                           _mm512_srli_epi32(bf16_high(even), 16));
}

// Rows of a strip converted to bf16 (each padded to an even length), then interleaved into the strip: the
// conversion runs along the contiguous rows, the interleave writes the strip in order (reads stay in L1).
enum { ROW_PAD = KC_MAX + 2 };
static __thread uint16_t rows_bf16[NR * ROW_PAD];

// n floats rounded to bf16 (as sqs_bf16_from_float), 16 at a time.
__attribute__((target("avx512f"))) static void floats_to_bf16(const float *src, long n, uint16_t *dst) {
    long i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i),
                            _mm512_cvtepi32_epi16(_mm512_srli_epi32(bf16_high(_mm512_loadu_ps(src + i)), 16)));
    for (; i < n; i++) dst[i] = sqs_bf16_from_float(src[i]);
}

// A row padded with a zero to an even length (the pair words of the strip).
__attribute__((target("avx512f"))) static void row_to_bf16(const float *src, int n, uint16_t *dst) {
    floats_to_bf16(src, n, dst);
    dst[n] = 0;
}

// A strip of `lanes` (NR or MR) matrix rows contiguous along k (the first `rows` real, the rest zero): pair word
// (q, lane) = the lane's row at k = 2q, 2q + 1.
__attribute__((target("avx512f"))) static void pack_rows_bf16(const float *src, long ld, int rows, int lanes, int kc,
                                                               uint32_t *strip) {
    int kp = (kc + 1) / 2;
    for (int r = 0; r < rows; r++) row_to_bf16(src + r * ld, kc, rows_bf16 + r * ROW_PAD);
    // The pair words are 32-bit: the fp32 strip transpose moves them unchanged.
    pack_rows_f32((const float *)rows_bf16, ROW_PAD / 2, rows, lanes, kp, (float *)strip);
}

// A strip of `lanes` (NR or MR) columns of a matrix stored [k, cols] (the first `cols` real, the rest zero): pair
// word (q, lane) = rows 2q and 2q + 1 of the lane's column, 16 lanes at a time.
__attribute__((target("avx512f"))) static void pack_pairs_bf16(const float *src, long ld, int cols, int lanes, int kc,
                                                                uint32_t *strip) {
    int kp = (kc + 1) / 2;
    for (int q = 0; q < kp; q++) {
        const float *even = src + 2L * q * ld;
        for (int c0 = 0; c0 < lanes; c0 += 16) {
            int n = cols - c0, out = lanes - c0 < 16 ? lanes - c0 : 16;
            __mmask16 m = n >= 16 ? 0xffff : n <= 0 ? 0 : (__mmask16)((1u << n) - 1);
            __m512 e = _mm512_maskz_loadu_ps(m, even + c0);
            __m512 o = 2 * q + 1 < kc ? _mm512_maskz_loadu_ps(m, even + ld + c0) : _mm512_setzero_ps();
            _mm512_mask_storeu_epi32(strip + (long)q * lanes + c0, (__mmask16)((1u << out) - 1), bf16_pairs(e, o));
        }
    }
}

// `count` rows of op(A) (lanes MR) or columns of op(B) (lanes NR), from index i0 and k = p0, as bf16 strips.
// `alongK`: element (i, p) is at x[i * ld + p] (A not transposed, B transposed); else at x[p * ld + i].
__attribute__((target("avx512f"))) static void pack_bf16(const float *x, long ld, int alongK, long i0, long p0,
                                                          int count, int lanes, int kc, uint16_t *out) {
    int kp = (kc + 1) / 2;
    for (int s = 0; s < count; s += lanes) {
        int n = count - s < lanes ? count - s : lanes;
        uint32_t *strip = (uint32_t *)(out + (long)s * kp * 2);
        if (alongK) pack_rows_bf16(x + (i0 + s) * ld + p0, ld, n, lanes, kc, strip);
        else pack_pairs_bf16(x + p0 * ld + i0 + s, ld, n, lanes, kc, strip);
    }
}
#endif

// ---------------------------------------------------------------------------------------------------------
// Micro-kernels

#if SQS_X86
#define SQS_STORE_TILE()                                                                                          \
    do {                                                                                                          \
        __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);                                             \
        __mmask16 m0 = nr >= 16 ? 0xffff : (__mmask16)((1u << nr) - 1);                                           \
        __mmask16 m1 = nr >= 32 ? 0xffff : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1);                     \
        for (int i = 0; i < mr; i++) {                                                                            \
            float *row = c + (long)i * ldc;                                                                       \
            __m512 x0 = _mm512_mul_ps(va, acc[i][0]), x1 = _mm512_mul_ps(va, acc[i][1]);                          \
            if (beta != 0) {                                                                                      \
                x0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, row), x0);                                     \
                x1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, row + 16), x1);                                \
            }                                                                                                     \
            _mm512_mask_storeu_ps(row, m0, x0);                                                                   \
            _mm512_mask_storeu_ps(row + 16, m1, x1);                                                              \
        }                                                                                                         \
    } while (0)

__attribute__((target("avx512f,fma"))) static void kernel_f32(int kc, const float *a, const float *b, float *c,
                                                               long ldc, float alpha, float beta, int mr, int nr) {
    __m512 acc[MR][2];
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (int p = 0; p < kc; p++) {
        __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
        _mm_prefetch((const char *)(b + 8 * NR), _MM_HINT_T0);
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            __m512 x = _mm512_set1_ps(a[i]);
            acc[i][0] = _mm512_fmadd_ps(x, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(x, b1, acc[i][1]);
        }
        a += MR;
        b += NR;
    }
    SQS_STORE_TILE();
}

__attribute__((target("avx512f,avx512bf16,fma"))) static void kernel_bf16(int kc, const uint16_t *a,
                                                                           const uint16_t *b, float *c, long ldc,
                                                                           float alpha, float beta, int mr, int nr) {
    __m512 acc[MR][2];
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    int kp = (kc + 1) / 2;
    for (int q = 0; q < kp; q++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(b), b1 = (__m512bh)_mm512_loadu_si512(b + 32);
        _mm_prefetch((const char *)(b + 16 * NR), _MM_HINT_T0);
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            int32_t pair;
            memcpy(&pair, a + 2 * i, 4);
            __m512bh x = (__m512bh)_mm512_set1_epi32(pair);
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], x, b0);
            acc[i][1] = _mm512_dpbf16_ps(acc[i][1], x, b1);
        }
        a += 2 * MR;
        b += 2 * NR;
    }
    SQS_STORE_TILE();
}
#endif

// CPUID is slow under a hypervisor (a VM exit): detect once.
static pthread_once_t builtin_once = PTHREAD_ONCE_INIT;
static int builtin_f32 = 0, builtin_bf16 = 0;

static void builtin_detect(void) {
#if SQS_X86
    sqs_cpu_features f;
    sqs_cpu_detect(&f);
    builtin_f32 = f.avx512f && f.fma;
    builtin_bf16 = builtin_f32 && f.avx512bf16;
#endif
}

int sqs_gemm_builtin_available(int bf16) {
    pthread_once(&builtin_once, builtin_detect);
    return bf16 ? builtin_bf16 : builtin_f32;
}

// The blocked driver, shared by both element types. Returns -1 when the CPU cannot run the kernel or memory
// for the packing buffers is missing (the caller falls back), 0 when done.
static int gemm_blocked(int bf16, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                        const float *b, int ldb, float beta, float *c, int ldc) {
#if SQS_X86
    if (!sqs_gemm_builtin_available(bf16)) return -1;
    if (m <= 0 || n <= 0) return 0;
    if (k <= 0) {  // alpha * 0 + beta * C
        for (long i = 0; i < m; i++)
            for (long j = 0; j < n; j++) c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j];
        return 0;
    }
    int kcMax = k_slice(k);
    size_t elem = bf16 ? 2 : 4;
    int ncMax = n < NC ? n : NC;
    size_t bNeed = elem * (size_t)kcMax * (size_t)((ncMax + NR - 1) / NR * NR);
    size_t aNeed = elem * (size_t)kcMax * MC;
    void *pb = grow(&pack_b, &pack_b_size, bNeed), *pa = grow(&pack_a, &pack_a_size, aNeed);
    if (!pb || !pa) return -1;
    for (long j0 = 0; j0 < n; j0 += NC) {
        int nc = n - j0 < NC ? (int)(n - j0) : NC;
        for (long p0 = 0; p0 < k; p0 += kcMax) {
            int kc = k - p0 < kcMax ? (int)(k - p0) : kcMax;
            float be = p0 == 0 ? beta : 1;
            long strideK = bf16 ? 2L * ((kc + 1) / 2) : kc;  // elements per k-row of a packed strip
            if (bf16) pack_bf16(b, ldb, tb, j0, p0, nc, NR, kc, pb);
            else pack_b_f32(kc, nc, b, ldb, tb, p0, j0, pb);
            for (long i0 = 0; i0 < m; i0 += MC) {
                int mc = m - i0 < MC ? (int)(m - i0) : MC;
                if (bf16) pack_bf16(a, lda, !ta, i0, p0, mc, MR, kc, pa);
                else pack_a_f32(mc, kc, a, lda, ta, i0, p0, pa);
                for (int jr = 0; jr < nc; jr += NR) {
                    int nr = nc - jr < NR ? nc - jr : NR;
                    for (int ir = 0; ir < mc; ir += MR) {
                        int mr = mc - ir < MR ? mc - ir : MR;
                        float *tile = c + (i0 + ir) * ldc + j0 + jr;
                        if (bf16)
                            kernel_bf16(kc, (const uint16_t *)pa + ir * strideK, (const uint16_t *)pb + jr * strideK,
                                        tile, ldc, alpha, be, mr, nr);
                        else
                            kernel_f32(kc, (const float *)pa + ir * strideK, (const float *)pb + jr * strideK, tile,
                                       ldc, alpha, be, mr, nr);
                    }
                }
            }
        }
    }
    return 0;
#else
    (void)bf16, (void)ta, (void)tb, (void)m, (void)n, (void)k, (void)alpha, (void)a, (void)lda, (void)b, (void)ldb;
    (void)beta, (void)c, (void)ldc;
    return -1;
#endif
}

void sqs_bf16_convert(const float *src, long ld, long rows, long cols, uint16_t *dst) {
#if SQS_X86
    if (sqs_gemm_builtin_available(0) && sqs_kernels_level() != SQS_KERNELS_REFERENCE) {
        for (long r = 0; r < rows; r++) floats_to_bf16(src + r * ld, cols, dst + r * cols);
        return;
    }
#endif
    for (long r = 0; r < rows; r++)
        for (long i = 0; i < cols; i++) dst[r * cols + i] = sqs_bf16_from_float(src[r * ld + i]);
}

int sqs_gemm_f32_avx512(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda, const float *b,
                        int ldb, float beta, float *c, int ldc) {
    return gemm_blocked(0, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

int sqs_gemm_bf16_avx512(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                         const float *b, int ldb, float beta, float *c, int ldc) {
    return gemm_blocked(1, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
