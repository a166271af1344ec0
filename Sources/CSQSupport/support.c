#define _GNU_SOURCE
#include "sq_support.h"

#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

// ---------------------------------------------------------------------------------------------------------
// CPU features

static void cpu_detect_uncached(sqs_cpu_features *out) {
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
        // AMX-BF16 and AMX-TILE, with the tile state enabled by the OS (XCR0 bits 17, 18).
        out->amxbf16 = ((d >> 22) & 1) && ((d >> 24) & 1) && (xcr0 & 0x60000) == 0x60000;
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

// CPUID traps to the hypervisor in a VM (microseconds a call): detected once, copied after.
static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;
static sqs_cpu_features cpu_cached;
static void cpu_detect_once(void) { cpu_detect_uncached(&cpu_cached); }

void sqs_cpu_detect(sqs_cpu_features *out) {
    pthread_once(&cpu_once, cpu_detect_once);
    *out = cpu_cached;
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

const char *sqs_cblas_description(void) {
    sqs_blas_load();
    return blas_desc;
}

const char *sqs_blas_core(void) {
    sqs_blas_load();
    return blas_core;
}


// ---------------------------------------------------------------------------------------------------------
// GEMM backend: the loaded CBLAS (threaded by itself), MKL (sequential; callers split the work), or SwiftQuant's
// own AVX-512 kernel (gemm.c; callers split the work). Chosen once per process by $SWIFTQUANT_GEMM or by a short
// measurement on a block's shapes, cached per machine (see sqs_gemm_backend).

static pthread_once_t gemm_once = PTHREAD_ONCE_INIT;
static int gemm_backend = SQS_GEMM_REFERENCE;
static sgemm_fn mkl_sgemm = NULL;
// cblas_gemm_bf16bf16f32: row-major (101), transposes 111/112, MKL_BF16 operands (uint16), fp32 C.
typedef void (*gemm_bf16_fn)(int, int, int, int, int, int, float, const uint16_t *, int, const uint16_t *, int, float,
                             float *, int);
static gemm_bf16_fn mkl_gemm_bf16 = NULL;
static char mkl_loaded[512] = "";
static pthread_once_t mkl_once = PTHREAD_ONCE_INIT;
static char gemm_desc[1024] = "";
static int gemm_split_threads = 1;  // threads callers split over (backends that do not thread themselves)

static const char *backend_name(int b) {
    switch (b) {
    case SQS_GEMM_CBLAS: return "cblas";
    case SQS_GEMM_MKL: return "mkl";
    case SQS_GEMM_BUILTIN: return "builtin";
    default: return "reference";
    }
}

// MKL from the PyPI `mkl` package (libmkl_rt): $SWIFTQUANT_MKL, then the active venv's lib/, then the loader path.
static void mkl_load_once(void) {
    char venv[600] = "";
    const char *env = getenv("VIRTUAL_ENV");
    if (env && env[0]) snprintf(venv, sizeof venv, "%s/lib/libmkl_rt.so.2", env);
    char venv3[600] = "";
    if (env && env[0]) snprintf(venv3, sizeof venv3, "%s/lib/libmkl_rt.so.3", env);
    const char *candidates[5] = {getenv("SWIFTQUANT_MKL"), venv3, venv, "libmkl_rt.so.2", "libmkl_rt.so.3"};
    for (int i = 0; i < 5; i++) {
        if (candidates[i] == NULL || candidates[i][0] == 0) continue;
        void *h = dlopen(candidates[i], RTLD_NOW | RTLD_LOCAL);
        if (!h) continue;
        sgemm_fn f = (sgemm_fn)dlsym(h, "cblas_sgemm");
        int (*layer)(int) = (int (*)(int))dlsym(h, "MKL_Set_Threading_Layer");
        if (!f || !layer) {
            dlclose(h);
            continue;
        }
        layer(1);  // MKL_THREADING_SEQUENTIAL: SwiftQuant splits the work over its own threads
        mkl_sgemm = f;
        mkl_gemm_bf16 = (gemm_bf16_fn)dlsym(h, "cblas_gemm_bf16bf16f32");
        snprintf(mkl_loaded, sizeof mkl_loaded, "%s", candidates[i]);
        return;
    }
}

static void mkl_load(void) { pthread_once(&mkl_once, mkl_load_once); }

// MKL's bf16 GEMM takes bf16 operands: op(A) and op(B) are rounded into thread-local compact copies first (the
// same rounding as the builtin kernel's packing), then multiplied as stored (the transposes passed on).
static __thread uint16_t *bf16_a = NULL, *bf16_b = NULL;
static __thread size_t bf16_a_size = 0, bf16_b_size = 0;

static uint16_t *bf16_buffer(uint16_t **buffer, size_t *size, size_t count) {
    if (count > *size) {
        uint16_t *grown = realloc(*buffer, count * sizeof(uint16_t));
        if (!grown) return NULL;
        *buffer = grown, *size = count;
    }
    return *buffer;
}

int sqs_gemm_bf16_mkl(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda, const float *b,
                      int ldb, float beta, float *c, int ldc) {
    mkl_load();
    if (!mkl_gemm_bf16) return -1;
    if (m <= 0 || n <= 0) return 0;
    // Stored shapes: A is m x k (k x m when transposed), B is k x n (n x k when transposed).
    long aRows = ta ? k : m, aCols = ta ? m : k, bRows = tb ? n : k, bCols = tb ? k : n;
    uint16_t *a16 = bf16_buffer(&bf16_a, &bf16_a_size, (size_t)(aRows * aCols > 0 ? aRows * aCols : 1));
    uint16_t *b16 = bf16_buffer(&bf16_b, &bf16_b_size, (size_t)(bRows * bCols > 0 ? bRows * bCols : 1));
    if (!a16 || !b16) return -1;
    sqs_bf16_convert(a, lda, aRows, aCols, a16);
    sqs_bf16_convert(b, ldb, bRows, bCols, b16);
    mkl_gemm_bf16(101, ta ? 112 : 111, tb ? 112 : 111, m, n, k, alpha, a16, aCols > 0 ? (int)aCols : 1, b16,
                  bCols > 0 ? (int)bCols : 1, beta, c, ldc);
    return 0;
}

static int run_backend(int backend, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                       const float *b, int ldb, float beta, float *c, int ldc) {
    switch (backend) {
    case SQS_GEMM_CBLAS:
        if (!blas_sgemm) return -1;
        blas_sgemm(101, ta ? 112 : 111, tb ? 112 : 111, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return 0;
    case SQS_GEMM_MKL:
        if (!mkl_sgemm) return -1;
        mkl_sgemm(101, ta ? 112 : 111, tb ? 112 : 111, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return 0;
    case SQS_GEMM_BUILTIN: return sqs_gemm_f32_avx512(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    default: return -1;
    }
}

static int run_bf16_backend(int backend, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                            const float *b, int ldb, float beta, float *c, int ldc) {
    switch (backend) {
    case SQS_GEMM_MKL: return sqs_gemm_bf16_mkl(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    case SQS_GEMM_BUILTIN: return sqs_gemm_bf16_avx512(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    default: return -1;
    }
}

// The measurement: y = x W^T on a block's shapes (x: 2048 tokens x 576, W: 576 x 576 and 1536 x 576), split over
// the threads as BLAS.sgemm does for the backends that do not thread themselves. Two warm-up calls (a threaded
// BLAS wakes its threads), then the best of at least 5 calls and 40 ms per shape. About 0.1 s a backend.
typedef struct {
    int bf16, backend, m, n, k;
    const float *a, *b;
    float *c;
} probe_job;

static void *probe_part(void *arg) {
    probe_job *j = arg;
    (j->bf16 ? run_bf16_backend : run_backend)(j->backend, 0, 1, j->m, j->n, j->k, 1, j->a, j->k, j->b, j->k, 0, j->c,
                                               j->n);
    return NULL;
}

static void probe_once(int bf16, int backend, int threads, int m, int n, int k, const float *a, const float *b,
                       float *c) {
    probe_job j0 = {bf16, backend, m, n, k, a, b, c};
    if ((backend == SQS_GEMM_CBLAS && !bf16) || threads <= 1) {
        probe_part(&j0);
        return;
    }
    int half = (m / 2 + 11) / 12 * 12;
    j0.m = half;
    probe_job j1 = {bf16, backend, m - half, n, k, a + (long)half * k, b, c + (long)half * n};
    pthread_t t;
    int spawned = pthread_create(&t, NULL, probe_part, &j1) == 0;
    probe_part(&j0);
    if (spawned) pthread_join(t, NULL);
    else probe_part(&j1);
}

static double probe(int bf16, int backend, int threads) {
    const int m = 2048, k = 576, ns[2] = {576, 1536};
    float *a = malloc(sizeof(float) * m * k), *b = malloc(sizeof(float) * 1536 * k), *c = malloc(sizeof(float) * m * 1536);
    if (!a || !b || !c) return free(a), free(b), free(c), 0;
    for (long i = 0; i < (long)m * k; i++) a[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
    for (long i = 0; i < 1536L * k; i++) b[i] = (float)((i * 104729) % 1000) * 1e-3f - 0.5f;
    double seconds = 0, flops = 0;
    for (int s = 0; s < 2; s++) {
        int n = ns[s];
        for (int w = 0; w < 2; w++) probe_once(bf16, backend, threads, m, n, k, a, b, c);
        double best = 1e30, start = sqs_now();
        for (int rep = 0; rep < 5 || sqs_now() - start < 0.04; rep++) {
            double t0 = sqs_now();
            probe_once(bf16, backend, threads, m, n, k, a, b, c);
            double dt = sqs_now() - t0;
            if (dt < best) best = dt;
            if (rep > 200) break;
        }
        seconds += best;
        flops += 2.0 * m * n * k;
    }
    free(a), free(b), free(c);
    return flops / seconds * 1e-9;
}

static void cache_path(char *out, size_t size) {
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (xdg && xdg[0]) snprintf(out, size, "%s/swiftquant/gemm-backend-v2", xdg);
    else if (home && home[0]) snprintf(out, size, "%s/.cache/swiftquant/gemm-backend-v2", home);
    else out[0] = 0;
}

// One line per machine configuration: "<key>\t<backend>\t<rates>".
static int cache_read(const char *key, char *rates, size_t size) {
    char path[700];
    cache_path(path, sizeof path);
    FILE *f = path[0] ? fopen(path, "r") : NULL;
    if (!f) return -1;
    char line[2048];
    int found = -1;
    size_t keyLen = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, keyLen) != 0 || line[keyLen] != '\t') continue;
        char *name = line + keyLen + 1, *tab = strchr(name, '\t');
        if (!tab) continue;
        *tab = 0;
        char *end = strchr(tab + 1, '\n');
        if (end) *end = 0;
        for (int b = SQS_GEMM_CBLAS; b <= SQS_GEMM_BUILTIN; b++)
            if (strcmp(name, backend_name(b)) == 0) found = b;
        snprintf(rates, size, "%s", tab + 1);
    }
    fclose(f);
    return found;
}

static void cache_write(const char *key, int backend, const char *rates) {
    char path[700];
    cache_path(path, sizeof path);
    if (!path[0]) return;
    char dir[700];
    snprintf(dir, sizeof dir, "%s", path);
    for (char *p = dir + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(dir, 0755);
            *p = '/';
        }
    // Keep the other machines' lines; write a temporary file and rename it over the cache.
    char tmp[720];
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
    FILE *out = fopen(tmp, "w");
    if (!out) return;
    FILE *in = fopen(path, "r");
    if (in) {
        char line[2048];
        size_t keyLen = strlen(key);
        while (fgets(line, sizeof line, in))
            if (!(strncmp(line, key, keyLen) == 0 && line[keyLen] == '\t')) fputs(line, out);
        fclose(in);
    }
    fprintf(out, "%s\t%s\t%s\n", key, backend_name(backend), rates);
    if (fclose(out) == 0) rename(tmp, path);
    else remove(tmp);
}

// $var when set: the backend it names among `available` (cblas also spelled openblas; cblas refused for bf16), or -1
// with the reason in `why` ("auto", "measure" and unknown names: -1). *remeasure: the value was "measure".
static int forced_backend(const char *var, int bf16, const int available[4], char *why, size_t size, int *remeasure) {
    const char *want = getenv(var);
    *remeasure = want && strcmp(want, "measure") == 0;
    if (!want || !want[0] || strcmp(want, "auto") == 0 || *remeasure) return -1;
    int chosen = -1;
    for (int b = SQS_GEMM_REFERENCE; b <= SQS_GEMM_BUILTIN; b++)
        if ((strcmp(want, backend_name(b)) == 0 || (b == SQS_GEMM_CBLAS && strcmp(want, "openblas") == 0)) &&
            !(bf16 && b == SQS_GEMM_CBLAS))
            chosen = b;
    if (chosen < 0) {
        snprintf(why, size, "%s=%s is unknown (%s, reference, auto, measure); ", var, want,
                 bf16 ? "builtin, mkl" : "cblas, mkl, builtin");
        return -1;
    }
    if (!available[chosen]) {
        snprintf(why, size, "%s=%s is not available here; ", var, want);
        return -1;
    }
    snprintf(why, size, "%s=%s", var, want);
    return chosen;
}

// The fastest of the available backends on a block's products, from the cache line `key` unless `remeasure`;
// appends the rates to `why`.
static int measured_backend(const char *key, int bf16, const int available[4], int remeasure, char *why, size_t size) {
    char rates[300] = "";
    int chosen = remeasure ? -1 : cache_read(key, rates, sizeof rates);
    if (chosen >= 0 && available[chosen]) {
        snprintf(why + strlen(why), size - strlen(why), "fastest when measured (%s; cached)", rates);
        return chosen;
    }
    double best = -1;
    rates[0] = 0;
    for (int b = SQS_GEMM_CBLAS; b <= SQS_GEMM_BUILTIN; b++) {
        if (!available[b]) continue;
        double r = probe(bf16, b, gemm_split_threads);
        snprintf(rates + strlen(rates), sizeof rates - strlen(rates), "%s%s %.0f GFLOP/s", rates[0] ? ", " : "",
                 backend_name(b), r);
        if (r > best) best = r, chosen = b;
    }
    cache_write(key, chosen, rates);
    snprintf(why + strlen(why), size - strlen(why), "fastest when measured (%s)", rates);
    return chosen;
}

static void gemm_choose(void) {
    sqs_blas_load();
    mkl_load();
    // The cores this process may run on (a container's CPU set), as the Swift side's parallel loops use.
    cpu_set_t set;
    long cores = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : sysconf(_SC_NPROCESSORS_ONLN);
    gemm_split_threads = cores > 0 ? (int)cores : 1;
    int available[4] = {1, blas_sgemm != NULL, mkl_sgemm != NULL,
                        sqs_gemm_builtin_available(0) && sqs_kernels_level() != SQS_KERNELS_REFERENCE};
    char why[600] = "";
    int remeasure;
    int chosen = forced_backend("SWIFTQUANT_GEMM", 0, available, why, sizeof why, &remeasure);
    if (chosen < 0 && getenv("SWIFTQUANT_BLAS") && getenv("SWIFTQUANT_BLAS")[0] && available[SQS_GEMM_CBLAS]) {
        chosen = SQS_GEMM_CBLAS;
        snprintf(why + strlen(why), sizeof why - strlen(why), "SWIFTQUANT_BLAS names the library");
    }
    int candidates = available[SQS_GEMM_CBLAS] + available[SQS_GEMM_MKL] + available[SQS_GEMM_BUILTIN];
    if (chosen < 0 && candidates <= 1) {
        chosen = available[SQS_GEMM_BUILTIN] ? SQS_GEMM_BUILTIN
                 : available[SQS_GEMM_MKL]   ? SQS_GEMM_MKL
                 : available[SQS_GEMM_CBLAS] ? SQS_GEMM_CBLAS
                                             : SQS_GEMM_REFERENCE;
        snprintf(why + strlen(why), sizeof why - strlen(why), "the only backend here");
    }
    if (chosen < 0) {
        sqs_cpu_features f;
        sqs_cpu_detect(&f);
        const char *core = getenv("OPENBLAS_CORETYPE");
        char key[400];
        snprintf(key, sizeof key, "%s|%d threads|cblas=%s%s|mkl=%s|builtin=%d", f.brand, gemm_split_threads,
                 blas_core[0] ? blas_core : "?", core && core[0] ? " (OPENBLAS_CORETYPE set)" : "", mkl_loaded,
                 available[SQS_GEMM_BUILTIN]);
        chosen = measured_backend(key, 0, available, remeasure, why, sizeof why);
    }
    gemm_backend = chosen;
    switch (chosen) {
    case SQS_GEMM_CBLAS: snprintf(gemm_desc, sizeof gemm_desc, "%s; chosen: %s", blas_desc, why); break;
    case SQS_GEMM_MKL:
        snprintf(gemm_desc, sizeof gemm_desc, "MKL [%s] (sequential, split over %d threads by SwiftQuant); chosen: %s",
                 mkl_loaded, gemm_split_threads, why);
        break;
    case SQS_GEMM_BUILTIN:
        snprintf(gemm_desc, sizeof gemm_desc,
                 "SwiftQuant AVX-512 GEMM (12x32 micro-kernel, split over %d threads); chosen: %s", gemm_split_threads,
                 why);
        break;
    default: snprintf(gemm_desc, sizeof gemm_desc, "none: built-in reference GEMM (%s)", why); break;
    }
}

int sqs_gemm_backend(void) {
    pthread_once(&gemm_once, gemm_choose);
    return gemm_backend;
}

const char *sqs_blas_description(void) {
    sqs_gemm_backend();
    return gemm_desc;
}

const char *sqs_gemm_backend_name(void) { return backend_name(sqs_gemm_backend()); }

static int backend_splits(int backend) { return backend == SQS_GEMM_MKL || backend == SQS_GEMM_BUILTIN; }

int sqs_gemm_splits(void) { return backend_splits(sqs_gemm_backend()) ? gemm_split_threads : 1; }
int sqs_blas_threads(void) {
    if (backend_splits(sqs_gemm_backend())) return gemm_split_threads;
    return blas_get_threads ? blas_get_threads() : 1;
}

void sqs_blas_set_threads(int n) {
    if (n <= 0) return;
    if (backend_splits(sqs_gemm_backend())) gemm_split_threads = n;
    else if (blas_set_threads) blas_set_threads(n);
}

// ---------------------------------------------------------------------------------------------------------
// bf16 GEMM backend: SwiftQuant's AVX512-BF16 kernel or MKL's cblas_gemm_bf16bf16f32 (AMX on the CPUs that have
// it), both single-threaded and split by the callers. Chosen once like the fp32 backend, cached on its own line.

static pthread_once_t bf16_once = PTHREAD_ONCE_INIT;
static int bf16_backend = SQS_GEMM_REFERENCE;
static char bf16_desc[1024] = "";

int sqs_cpu_amx_bf16(void) {
    sqs_cpu_features f;
    sqs_cpu_detect(&f);
    return f.amxbf16;
}

static void bf16_choose(void) {
    sqs_gemm_backend();  // the split thread count, the CBLAS and MKL loaded
    sqs_cpu_features f;
    sqs_cpu_detect(&f);
    int reference = sqs_kernels_level() == SQS_KERNELS_REFERENCE;
    // MKL's bf16 GEMM runs anywhere, but bf16 calibration is offered only on CPUs with bf16 arithmetic.
    int available[4] = {1, 0, mkl_gemm_bf16 != NULL && (f.avx512bf16 || f.amxbf16) && !reference,
                        sqs_gemm_builtin_available(1) && !reference};
    char why[600] = "";
    int remeasure;
    int chosen = forced_backend("SWIFTQUANT_GEMM_BF16", 1, available, why, sizeof why, &remeasure);
    if (chosen < 0 && reference) {
        chosen = SQS_GEMM_REFERENCE;
        snprintf(why + strlen(why), sizeof why - strlen(why), "SWIFTQUANT_KERNELS=reference");
    }
    if (chosen < 0 && available[SQS_GEMM_MKL] + available[SQS_GEMM_BUILTIN] <= 1) {
        chosen = available[SQS_GEMM_BUILTIN] ? SQS_GEMM_BUILTIN : available[SQS_GEMM_MKL] ? SQS_GEMM_MKL
                                                                                          : SQS_GEMM_REFERENCE;
        snprintf(why + strlen(why), sizeof why - strlen(why), "%s",
                 chosen == SQS_GEMM_REFERENCE ? "no bf16 arithmetic on this CPU" : "the only bf16 backend here");
    }
    if (chosen < 0) {
        char key[400];
        snprintf(key, sizeof key, "%s|%d threads|bf16|amx=%d|mkl=%s", f.brand, gemm_split_threads, f.amxbf16,
                 mkl_loaded);
        chosen = measured_backend(key, 1, available, remeasure, why, sizeof why);
    }
    bf16_backend = chosen;
    switch (chosen) {
    case SQS_GEMM_MKL:
        snprintf(bf16_desc, sizeof bf16_desc, "MKL cblas_gemm_bf16bf16f32 [%s] (%s; split over %d threads); chosen: %s",
                 mkl_loaded, f.amxbf16 ? "AMX-BF16" : "AVX512-BF16", gemm_split_threads, why);
        break;
    case SQS_GEMM_BUILTIN:
        snprintf(bf16_desc, sizeof bf16_desc,
                 "SwiftQuant AVX512-BF16 GEMM (12x32 vdpbf16ps micro-kernel, split over %d threads); chosen: %s",
                 gemm_split_threads, why);
        break;
    default: snprintf(bf16_desc, sizeof bf16_desc, "none: scalar bf16 reference GEMM (%s)", why); break;
    }
}

int sqs_gemm_bf16_backend(void) {
    pthread_once(&bf16_once, bf16_choose);
    return bf16_backend;
}

const char *sqs_gemm_bf16_backend_name(void) { return backend_name(sqs_gemm_bf16_backend()); }

const char *sqs_gemm_bf16_description(void) {
    sqs_gemm_bf16_backend();
    return bf16_desc;
}

int sqs_gemm_bf16(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
                  float beta, float *c, int ldc) {
    int backend = sqs_gemm_bf16_backend();
    if (backend == SQS_GEMM_REFERENCE) return -1;
    if (run_bf16_backend(backend, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) == 0) return 0;
    return backend == SQS_GEMM_MKL ? sqs_gemm_bf16_avx512(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) : -1;
}

int sqs_sgemm(int transA, int transB, int m, int n, int k, float alpha, const float *a, int lda,
              const float *b, int ldb, float beta, float *c, int ldc) {
    int backend = sqs_gemm_backend();
    if (backend == SQS_GEMM_REFERENCE) return -1;  // the caller runs its scalar GEMM
    if (run_backend(backend, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) == 0) return 0;
    // A backend that cannot run this call (e.g. out of memory for packing) hands it to the CBLAS.
    return backend != SQS_GEMM_CBLAS ? run_backend(SQS_GEMM_CBLAS, transA, transB, m, n, k, alpha, a, lda, b, ldb,
                                                   beta, c, ldc)
                                     : -1;
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
