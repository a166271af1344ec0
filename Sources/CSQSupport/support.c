#define _GNU_SOURCE
#include "sq_support.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

// ---------------------------------------------------------------------------------------------------------
// CPU features

void sqs_cpu_detect(sqs_cpu_features *out) {
    memset(out, 0, sizeof(*out));
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return;
    unsigned max_leaf = a;
    memcpy(out->vendor + 0, &b, 4);
    memcpy(out->vendor + 4, &d, 4);
    memcpy(out->vendor + 8, &c, 4);
    out->vendor[12] = 0;
    __get_cpuid(1, &a, &b, &c, &d);
    int osxsave = (c >> 27) & 1;
    out->fma = (c >> 12) & 1;
    out->f16c = (c >> 29) & 1;
    unsigned long long xcr0 = 0;
    if (osxsave) {
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        xcr0 = ((unsigned long long)hi << 32) | lo;
    }
    int ymm = (xcr0 & 0x6) == 0x6, zmm = (xcr0 & 0xe6) == 0xe6;
    if (!ymm) out->fma = out->f16c = 0;
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        out->avx2 = ymm && ((b >> 5) & 1);
        out->avx512f = zmm && ((b >> 16) & 1);
        out->avx512dq = zmm && ((b >> 17) & 1);
        out->avx512cd = zmm && ((b >> 28) & 1);
        out->avx512bw = zmm && ((b >> 30) & 1);
        out->avx512vl = zmm && ((b >> 31) & 1);
        __cpuid_count(7, 1, a, b, c, d);
        out->avx512bf16 = zmm && ((a >> 5) & 1);
    }
    unsigned ext = __get_cpuid_max(0x80000000, 0);
    if (ext >= 0x80000004) {
        unsigned regs[12];
        for (unsigned i = 0; i < 3; i++)
            __get_cpuid(0x80000002 + i, &regs[4 * i], &regs[4 * i + 1], &regs[4 * i + 2], &regs[4 * i + 3]);
        memcpy(out->brand, regs, 48);
        out->brand[48] = 0;
        // trim leading blanks
        char *p = out->brand;
        while (*p == ' ') p++;
        if (p != out->brand) memmove(out->brand, p, strlen(p) + 1);
    }
#endif
}

// ---------------------------------------------------------------------------------------------------------
// Kernel level, chosen once

static pthread_once_t kernels_once = PTHREAD_ONCE_INIT;
static int kernels_level = SQS_KERNELS_REFERENCE;

int sqs_kernels_available(int level) {
    if (level <= SQS_KERNELS_REFERENCE) return 1;
    sqs_cpu_features f;
    sqs_cpu_detect(&f);
    return level == SQS_KERNELS_AVX2 && f.avx2 && f.fma;
}

static void kernels_choose(void) {
    const char *want = getenv("SWIFTQUANT_KERNELS");
    if (want && strcmp(want, "reference") == 0) return;
    if (sqs_kernels_available(SQS_KERNELS_AVX2)) kernels_level = SQS_KERNELS_AVX2;
}

int sqs_kernels_level(void) {
    pthread_once(&kernels_once, kernels_choose);
    return kernels_level;
}

const char *sqs_kernels_name(void) { return sqs_kernels_level() == SQS_KERNELS_AVX2 ? "avx2" : "reference"; }

// ---------------------------------------------------------------------------------------------------------
// BLAS loaded at run time

typedef void (*sgemm_fn)(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                         const float *b, int ldb, float beta, float *c, int ldc);
typedef char *(*str_fn)(void);
typedef int (*int_fn)(void);
typedef void (*set_int_fn)(int);

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
static sgemm_fn blas_sgemm = NULL;
// LAPACK from the same library (OpenBLAS ships the Fortran routines even when built without LAPACKE, as
// Debian's is): Cholesky and triangular inverse for GPTQ. Fortran calling convention: column-major, arguments by
// reference, one hidden length per character argument (gfortran; ignored by callees that do not expect it).
typedef void (*potrf_fn)(const char *uplo, const int *n, float *a, const int *lda, int *info, size_t uplo_len);
typedef void (*trtri_fn)(const char *uplo, const char *diag, const int *n, float *a, const int *lda, int *info,
                         size_t uplo_len, size_t diag_len);
static potrf_fn lapack_spotrf = NULL;
static trtri_fn lapack_strtri = NULL;
static str_fn blas_corename = NULL;
static int_fn blas_get_threads = NULL;
static set_int_fn blas_set_threads = NULL;
static char blas_desc[512] = "none: built-in reference GEMM (install libopenblas0 or set SWIFTQUANT_BLAS)";
static char blas_core[64] = "";

// The OpenBLAS kernel that fits this CPU, for builds that do not know the CPU themselves.
static const char *preferred_coretype(void) {
    sqs_cpu_features f;
    sqs_cpu_detect(&f);
    if (f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512cd)
        return f.avx512bf16 ? "Cooperlake" : "SkylakeX";
    if (f.avx2 && f.fma) return strcmp(f.vendor, "AuthenticAMD") == 0 ? "Zen" : "Haswell";
    return NULL;
}

static void blas_load_once(void) {
    const char *user_core = getenv("OPENBLAS_CORETYPE");
    const char *chosen = NULL;
    if (user_core == NULL || user_core[0] == 0) {
        chosen = preferred_coretype();
        if (chosen) setenv("OPENBLAS_CORETYPE", chosen, 1);
    }
    const char *candidates[5] = {getenv("SWIFTQUANT_BLAS"), "libopenblas.so.0", "libopenblas.so",
                                 "libblas.so.3", NULL};
    void *handle = NULL;
    const char *loaded = NULL;
    for (int i = 0; i < 4 && handle == NULL; i++) {
        if (candidates[i] == NULL || candidates[i][0] == 0) continue;
        handle = dlopen(candidates[i], RTLD_NOW | RTLD_LOCAL);
        if (handle) loaded = candidates[i];
    }
    // Leave the environment as the user had it: OpenBLAS has read the variable while loading.
    if (chosen) unsetenv("OPENBLAS_CORETYPE");
    if (!handle) return;
    blas_sgemm = (sgemm_fn)dlsym(handle, "cblas_sgemm");
    if (!blas_sgemm) return;
    lapack_spotrf = (potrf_fn)dlsym(handle, "spotrf_");
    lapack_strtri = (trtri_fn)dlsym(handle, "strtri_");
    if (!lapack_spotrf || !lapack_strtri) lapack_spotrf = NULL, lapack_strtri = NULL;
    blas_corename = (str_fn)dlsym(handle, "openblas_get_corename");
    str_fn config = (str_fn)dlsym(handle, "openblas_get_config");
    blas_get_threads = (int_fn)dlsym(handle, "openblas_get_num_threads");
    blas_set_threads = (set_int_fn)dlsym(handle, "openblas_set_num_threads");
    if (blas_corename) snprintf(blas_core, sizeof blas_core, "%s", blas_corename());
    const char *how = chosen ? "OPENBLAS_CORETYPE chosen by SwiftQuant from the CPU's features"
                     : user_core ? "OPENBLAS_CORETYPE set by the user"
                                 : "kernel chosen by the BLAS";
    if (config)
        snprintf(blas_desc, sizeof blas_desc, "%s [%s] (core: %s; %s)", config(), loaded,
                 blas_core[0] ? blas_core : "?", how);
    else
        snprintf(blas_desc, sizeof blas_desc, "CBLAS from %s", loaded);
}

int sqs_blas_load(void) {
    pthread_once(&blas_once, blas_load_once);
    return blas_sgemm != NULL;
}

const char *sqs_blas_description(void) {
    sqs_blas_load();
    return blas_desc;
}

const char *sqs_blas_core(void) {
    sqs_blas_load();
    return blas_core;
}

int sqs_blas_threads(void) {
    sqs_blas_load();
    return blas_get_threads ? blas_get_threads() : 1;
}

void sqs_blas_set_threads(int n) {
    sqs_blas_load();
    if (blas_set_threads && n > 0) blas_set_threads(n);
}

int sqs_sgemm(int transA, int transB, int m, int n, int k, float alpha, const float *a, int lda,
              const float *b, int ldb, float beta, float *c, int ldc) {
    if (!sqs_blas_load()) return -1;
    // CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112
    blas_sgemm(101, transA ? 112 : 111, transB ? 112 : 111, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return 0;
}

int sqs_lapack_available(void) {
    sqs_blas_load();
    return lapack_spotrf != NULL;
}

// A row-major lower triangle is the column-major upper one: 'U' in Fortran's terms.
int sqs_spotrf_lower(int n, float *a, int lda) {
    if (!sqs_blas_load() || !lapack_spotrf) return -1000;
    int info = 0;
    lapack_spotrf("U", &n, a, &lda, &info, 1);
    return info;
}

int sqs_strtri_lower(int n, float *a, int lda) {
    if (!sqs_blas_load() || !lapack_strtri) return -1000;
    int info = 0;
    lapack_strtri("U", "N", &n, a, &lda, &info, 1, 1);
    return info;
}

double sqs_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// ---------------------------------------------------------------------------------------------------------
// Thread-local last error of the C ABI

static __thread char *last_error = NULL;

void sqs_set_last_error(const char *message) {
    free(last_error);
    last_error = message ? strdup(message) : NULL;
}

const char *sqs_last_error(void) { return last_error ? last_error : ""; }
