// Fused 4-bit min/max quantization + packing (ALGORITHMS.md §1 and the packing of §4): the C fast twin of
// `IntGrid` (Swift, Quantizers/Quantizer.swift) for 4 bits, policy minmax, no clipping.
//
// Two implementations with one signature, chosen once at load time (`sqs_kernels_level`, from CPUID and
// $SWIFTQUANT_KERNELS):
// - `quant_int4_reference`: the scalar definition, value by value (also what every machine without AVX2 runs);
// - `quant_int4_avx2`: compiled for AVX2 + FMA with a per-function target attribute, so the rest of the library
//   keeps the baseline instruction set and a pre-AVX2 machine never executes it.
// The arithmetic is the specification's, operation by operation in float32: h and z from the group's range,
// t = w / h (a true division), round half to even, + z, clamp to [0, 15]. No FMA contraction (the one explicit
// FMA only flags NaN/Inf), so the two are bit-exact with each other and with Swift's `IntGrid`; the Swift tests
// compare all three on every shape class. (AVX-512 was not added: the kernel is bound by memory bandwidth, the
// AVX2 version already runs at about half the time of a plain copy of the matrix.)
#pragma clang fp contract(off)
#include "sq_support.h"

#include <math.h>
#include <pthread.h>

#if defined(__x86_64__) || defined(__i386__)
#define SQ_HAVE_X86 1
#include <immintrin.h>
#define SQ_AVX2 __attribute__((target("avx2,fma")))
#endif

// ---------------------------------------------------------------------------------------------------------
// The scalar definition

static inline void params(float mn, float mx, int symmetric, float *h, float *z) {
    if (symmetric) {
        float a = fabsf(mx), b = fabsf(mn);
        float absmax = a > b ? a : b;
        float s = absmax / 7.0f;
        s = s < 1e-5f ? 1e-5f : s;
        *h = s > 1e4f ? 1e4f : s;
        *z = 7.0f;
    } else {
        float s = (mx - mn) / 15.0f;
        s = s < 1e-5f ? 1e-5f : s;
        s = s > 1e4f ? 1e4f : s;
        float q = -mn / s;
        q = q < -1e4f ? -1e4f : q;
        q = q > 1e4f ? 1e4f : q;
        *h = s;
        *z = rintf(q);
    }
}

static inline unsigned code1(float w, float h, float z) {
    float p = rintf(w / h) + z;
    p = p < 0.0f ? 0.0f : p;
    p = p > 15.0f ? 15.0f : p;
    return (unsigned)p;
}

static int64_t quant_int4_reference(const float *w, int64_t r0, int64_t r1, int64_t cols, int64_t width,
                                    int symmetric, uint8_t *packed, int64_t stride, float *scales, int32_t *zeros) {
    if (width <= 0 || width % 2 != 0) return -2;
    const int64_t groups = (cols + width - 1) / width;
    for (int64_t r = r0; r < r1; r++) {
        const float *row = w + r * cols;
        uint8_t *out = packed + r * stride;
        for (int64_t g = 0; g < groups; g++) {
            const int64_t lo = g * width, n = (cols < lo + width ? cols : lo + width) - lo;
            float mn = row[lo], mx = row[lo];
            for (int64_t i = 0; i < n; i++) {
                float v = row[lo + i];
                if (!((v - v) == 0.0f)) return r;  // NaN or ±Inf
                mn = v < mn ? v : mn;
                mx = v > mx ? v : mx;
            }
            float h, z;
            params(mn, mx, symmetric, &h, &z);
            scales[r * groups + g] = h;
            zeros[r * groups + g] = (int32_t)z;
            for (int64_t i = 0; i < n; i += 2) {
                unsigned c = code1(row[lo + i], h, z);
                if (i + 1 < n) c |= code1(row[lo + i + 1], h, z) << 4;
                out[(lo + i) / 2] = (uint8_t)c;
            }
        }
    }
    return -1;
}

// ---------------------------------------------------------------------------------------------------------
// AVX2 + FMA

#if SQ_HAVE_X86

static inline SQ_AVX2 __m256i codes8(const float *p, __m256 h, __m256 z) {
    __m256 t = _mm256_div_ps(_mm256_loadu_ps(p), h);
    t = _mm256_add_ps(_mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), z);
    t = _mm256_min_ps(_mm256_max_ps(t, _mm256_setzero_ps()), _mm256_set1_ps(15.0f));
    return _mm256_cvttps_epi32(t);
}

// 32 floats → 16 bytes: byte i = code[2i] | code[2i+1] << 4.
static inline SQ_AVX2 __m128i pack_codes(__m256i ab, __m256i cd) {
    __m256i bytes = _mm256_packus_epi16(ab, cd);  // dwords: a0-3 b0-3 c0-3 d0-3 a4-7 b4-7 c4-7 d4-7
    bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    bytes = _mm256_min_epu8(bytes, _mm256_set1_epi8(15));
    __m256i pairs = _mm256_maddubs_epi16(bytes, _mm256_set1_epi16(0x1001));  // c[2i] + 16·c[2i+1]
    return _mm_packus_epi16(_mm256_castsi256_si128(pairs), _mm256_extracti128_si256(pairs, 1));
}

static inline SQ_AVX2 __m128i pack32(const float *p, __m256 h, __m256 z) {
    __m256i ab = _mm256_packus_epi32(codes8(p, h, z), codes8(p + 8, h, z));        // a0-3 b0-3 | a4-7 b4-7
    __m256i cd = _mm256_packus_epi32(codes8(p + 16, h, z), codes8(p + 24, h, z));  // c0-3 d0-3 | c4-7 d4-7
    return pack_codes(ab, cd);
}

// The same codes with fewer operations, for groups where |w / h| < 2^30 while the rounding mode is the default
// (MXCSR, which the conversion follows): round-to-nearest-even conversion to int32, + z, and the clamp to
// [0, 15] done by the saturating packs (signed 32 → 16 bits, then 16 → unsigned 8 bits: negatives become 0)
// and one unsigned byte minimum with 15.
static inline SQ_AVX2 __m256i rounded8(const float *p, __m256 h, __m256i z) {
    return _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_div_ps(_mm256_loadu_ps(p), h)), z);
}

static inline SQ_AVX2 __m128i pack32_int(const float *p, __m256 h, __m256i z) {
    __m256i ab = _mm256_packs_epi32(rounded8(p, h, z), rounded8(p + 8, h, z));
    __m256i cd = _mm256_packs_epi32(rounded8(p + 16, h, z), rounded8(p + 24, h, z));
    return pack_codes(ab, cd);
}

static inline SQ_AVX2 float hmin(__m256 v) {
    __m128 a = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_min_ps(a, _mm_movehl_ps(a, a));
    return _mm_cvtss_f32(_mm_min_ss(a, _mm_shuffle_ps(a, a, 1)));
}

static inline SQ_AVX2 float hmax(__m256 v) {
    __m128 a = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_max_ps(a, _mm_movehl_ps(a, a));
    return _mm_cvtss_f32(_mm_max_ss(a, _mm_shuffle_ps(a, a, 1)));
}

// Range of n values; returns 0 when one of them is NaN or ±Inf.
static inline SQ_AVX2 int minmax(const float *p, int64_t n, float *outMin, float *outMax) {
    __m256 lo0 = _mm256_set1_ps(INFINITY), hi0 = _mm256_set1_ps(-INFINITY), bad0 = _mm256_setzero_ps();
    __m256 lo1 = lo0, hi1 = hi0, bad1 = bad0;
    const __m256 zero = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 a = _mm256_loadu_ps(p + i), b = _mm256_loadu_ps(p + i + 8);
        lo0 = _mm256_min_ps(lo0, a); hi0 = _mm256_max_ps(hi0, a);
        lo1 = _mm256_min_ps(lo1, b); hi1 = _mm256_max_ps(hi1, b);
        bad0 = _mm256_fmadd_ps(a, zero, bad0);  // a·0 is NaN for NaN and ±Inf, 0 otherwise
        bad1 = _mm256_fmadd_ps(b, zero, bad1);
    }
    __m256 bad = _mm256_add_ps(bad0, bad1);
    int ok = _mm256_movemask_ps(_mm256_cmp_ps(bad, bad, _CMP_UNORD_Q)) == 0;
    float l = hmin(_mm256_min_ps(lo0, lo1)), h = hmax(_mm256_max_ps(hi0, hi1));
    for (; i < n; i++) {
        float v = p[i];
        l = v < l ? v : l; h = v > h ? v : h;
        ok &= (v - v) == 0.0f;
    }
    *outMin = l; *outMax = h;
    return ok;
}

// (h, z) of 8 groups at once; the same operations as params(), lane by lane.
static inline SQ_AVX2 void params8(const float *mn, const float *mx, int symmetric, float *h, float *z) {
    const __m256 lo = _mm256_set1_ps(1e-5f), hi = _mm256_set1_ps(1e4f), sign = _mm256_set1_ps(-0.0f);
    __m256 a = _mm256_loadu_ps(mx), b = _mm256_loadu_ps(mn);
    if (symmetric) {
        __m256 absmax = _mm256_max_ps(_mm256_andnot_ps(sign, b), _mm256_andnot_ps(sign, a));
        __m256 s = _mm256_div_ps(absmax, _mm256_set1_ps(7.0f));
        _mm256_storeu_ps(h, _mm256_min_ps(_mm256_max_ps(s, lo), hi));
        _mm256_storeu_ps(z, _mm256_set1_ps(7.0f));
    } else {
        __m256 s = _mm256_div_ps(_mm256_sub_ps(a, b), _mm256_set1_ps(15.0f));
        s = _mm256_min_ps(_mm256_max_ps(s, lo), hi);
        __m256 q = _mm256_div_ps(_mm256_xor_ps(b, sign), s);
        q = _mm256_min_ps(_mm256_max_ps(q, _mm256_set1_ps(-1e4f)), hi);
        _mm256_storeu_ps(h, s);
        _mm256_storeu_ps(z, _mm256_round_ps(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
}

// Groups per pass: their ranges, then their scales at once, then their codes. Eight groups of 128 stay in L1, and
// the phases alternate quickly enough that the memory stream never idles (64 groups measured 25% slower).
enum { CHUNK = 8 };

SQ_AVX2 static int64_t quant_int4_avx2(const float *w, int64_t r0, int64_t r1, int64_t cols, int64_t width, int symmetric,
                              uint8_t *packed, int64_t stride, float *scales, int32_t *zeros) {
    if (width <= 0 || width % 2 != 0) return -2;
    const int64_t groups = (cols + width - 1) / width;
    float mn[CHUNK], mx[CHUNK], hs[CHUNK], zs[CHUNK];
    const int defaultRounding = (_mm_getcsr() & 0x6000) == 0;  // MXCSR rounding control: to nearest
    for (int64_t r = r0; r < r1; r++) {
        const float *row = w + r * cols;
        uint8_t *out = packed + r * stride;
        for (int64_t g0 = 0; g0 < groups; g0 += CHUNK) {
            const int64_t ng = groups - g0 < CHUNK ? groups - g0 : CHUNK;
            int ok = 1;
            for (int64_t g = 0; g < ng; g++) {
                const int64_t lo = (g0 + g) * width, n = (cols < lo + width ? cols : lo + width) - lo;
                ok &= minmax(row + lo, n, &mn[g], &mx[g]);
            }
            if (!ok) { _mm_sfence(); return r; }
            int64_t g = 0;
            for (; g + 8 <= ng; g += 8) params8(mn + g, mx + g, symmetric, hs + g, zs + g);
            for (; g < ng; g++) params(mn[g], mx[g], symmetric, &hs[g], &zs[g]);
            for (g = 0; g < ng; g++) {
                const int64_t lo = (g0 + g) * width, n = (cols < lo + width ? cols : lo + width) - lo;
                const float h = hs[g], z = zs[g];
                scales[r * groups + g0 + g] = h;
                zeros[r * groups + g0 + g] = (int32_t)z;
                const float *p = row + lo;
                uint8_t *o = out + lo / 2;
                const __m256 hv = _mm256_set1_ps(h), zv = _mm256_set1_ps(z);
                const float amax = fabsf(mn[g]) > fabsf(mx[g]) ? fabsf(mn[g]) : fabsf(mx[g]);
                const int aligned = ((uintptr_t)o & 15) == 0;  // then streaming stores: not read back here
                int64_t i = 0;
                if (defaultRounding && amax / h < 0x1p30f) {
                    const __m256i zi = _mm256_set1_epi32((int32_t)z);
                    for (; i + 32 <= n; i += 32) {
                        __m128i v = pack32_int(p + i, hv, zi);
                        if (aligned) _mm_stream_si128((__m128i *)(o + i / 2), v);
                        else _mm_storeu_si128((__m128i *)(o + i / 2), v);
                    }
                } else {
                    for (; i + 32 <= n; i += 32) _mm_storeu_si128((__m128i *)(o + i / 2), pack32(p + i, hv, zv));
                }
                for (; i < n; i += 2) {
                    unsigned c = code1(p[i], h, z);
                    if (i + 1 < n) c |= code1(p[i + 1], h, z) << 4;
                    o[i / 2] = (uint8_t)c;
                }
            }
        }
    }
    _mm_sfence();
    return -1;
}

#endif  // SQ_HAVE_X86

// ---------------------------------------------------------------------------------------------------------
// Dispatch, once

typedef int64_t (*int4_fn)(const float *, int64_t, int64_t, int64_t, int64_t, int, uint8_t *, int64_t, float *,
                           int32_t *);
static int4_fn int4_impl = quant_int4_reference;
static pthread_once_t int4_once = PTHREAD_ONCE_INIT;

static void int4_choose(void) {
#if SQ_HAVE_X86
    if (sqs_kernels_level() >= SQS_KERNELS_AVX2) int4_impl = quant_int4_avx2;
#endif
}

int64_t sqs_quant_int4_packed(const float *w, int64_t r0, int64_t r1, int64_t cols, int64_t width, int symmetric,
                              uint8_t *packed, int64_t stride, float *scales, int32_t *zeros) {
    pthread_once(&int4_once, int4_choose);
    return int4_impl(w, r0, r1, cols, width, symmetric, packed, stride, scales, zeros);
}

int64_t sqs_quant_int4_packed_reference(const float *w, int64_t r0, int64_t r1, int64_t cols, int64_t width,
                                        int symmetric, uint8_t *packed, int64_t stride, float *scales,
                                        int32_t *zeros) {
    return quant_int4_reference(w, r0, r1, cols, width, symmetric, packed, stride, scales, zeros);
}

int64_t sqs_quant_int4_packed_avx2(const float *w, int64_t r0, int64_t r1, int64_t cols, int64_t width,
                                   int symmetric, uint8_t *packed, int64_t stride, float *scales, int32_t *zeros) {
#if SQ_HAVE_X86
    if (sqs_kernels_available(SQS_KERNELS_AVX2))
        return quant_int4_avx2(w, r0, r1, cols, width, symmetric, packed, stride, scales, zeros);
#endif
    (void)w; (void)r0; (void)r1; (void)cols; (void)width; (void)symmetric; (void)packed; (void)stride;
    (void)scales; (void)zeros;
    return -3;
}
