/*
 * swiftquant.h: the C ABI of SwiftQuant (post-training quantization of large language models).
 *
 * This header is the ABI's source of truth. It is implemented by the dynamic library `libSwiftQuantCABI`
 * (SwiftPM product `SwiftQuantCABI`) and used by the Python module `swiftquant` and by C programs.
 *
 * Conventions
 *  - Every function that can fail returns an `int` status: SQ_OK (0) or one of the SQ_ERR_* codes. On
 *    failure, `sq_last_error()` returns a message for the calling thread (valid until that thread's next
 *    call into the library). Nothing is written to output buffers on argument errors; on errors found while
 *    working (for example NaN in the input), outputs may be partly written.
 *  - Outputs are caller-allocated; the library never keeps a pointer past the call. Inputs may be read in
 *    place from any memory (NumPy buffers, mapped files); `out` may equal `w` where noted.
 *  - Matrices are row-major float32, `[rows, cols]`, contiguous.
 *  - Format names are UTF-8 strings: "int2" … "int8", or the minifloats "e4m3fn", "e5m2", "e3m2", "e2m3",
 *    "e2m1" (aliases: "fp8_e4m3", "fp8_e5m2", "fp6_e3m2", "fp6_e2m3", "fp4").
 *  - Thread safety: every function may be called from any thread; calls do not share mutable state.
 */
#ifndef SWIFTQUANT_H
#define SWIFTQUANT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Incremented on every incompatible change of this header. Compare with sq_abi_version() at run time. */
#define SQ_ABI_VERSION 2

/* Status codes. */
#define SQ_OK 0
#define SQ_ERR_INVALID_ARGUMENT 1 /* a setting or argument that cannot work (Python: ValueError) */
#define SQ_ERR_TYPE 2             /* wrong element type (Python: TypeError) */
#define SQ_ERR_NON_FINITE 3       /* NaN or Inf where it cannot be represented (Python: ValueError) */
#define SQ_ERR_FORMAT 4           /* unreadable or inconsistent file (Python: swiftquant.FormatError) */
#define SQ_ERR_IO 5               /* the operating system refused (Python: OSError) */
#define SQ_ERR_UNSUPPORTED 6      /* valid but not implemented (Python: NotImplementedError) */
#define SQ_ERR_INTERNAL 7         /* a bug: please report it */

/* Message of the calling thread's last error ("" when none). */
const char *sq_last_error(void);

/* "0.1.0" */
const char *sq_version(void);

/* SQ_ABI_VERSION of the library that is loaded. */
int sq_abi_version(void);

/* The GEMM backend in use and why it was chosen, for example
 * "SwiftQuant AVX-512 GEMM (12x32 micro-kernel, split over 2 threads); chosen: fastest when measured (cblas 263
 * GFLOP/s, builtin 389 GFLOP/s)" or "OpenBLAS 0.3.21 ... [libopenblas.so.0] (core: SkylakeX; ...); chosen: ...".
 * The choice is made once per process: $SWIFTQUANT_GEMM (cblas, mkl, builtin, reference, auto), else the CBLAS
 * named by $SWIFTQUANT_BLAS, else the fastest available backend on a block's shapes (cached per machine). */
const char *sq_blas_info(void);

/* The backend's short name: "cblas" (OpenBLAS or the library in $SWIFTQUANT_BLAS), "mkl" (libmkl_rt from
 * $SWIFTQUANT_MKL, $VIRTUAL_ENV/lib or the loader path), "builtin" (SwiftQuant's AVX-512 kernel) or "reference". */
const char *sq_gemm_backend(void);

/* The bf16 GEMM backend of bf16 calibration (precision "bf16") and why, for example "SwiftQuant AVX512-BF16 GEMM
 * (...); chosen: fastest when measured (mkl 310 GFLOP/s, builtin 690 GFLOP/s)" or "MKL cblas_gemm_bf16bf16f32
 * [...] (AMX-BF16; ...)". Chosen once per process: $SWIFTQUANT_GEMM_BF16 (builtin, mkl, reference, auto, measure),
 * else the fastest on a block's shapes (cached per machine). "none: ..." on CPUs without bf16 arithmetic. */
const char *sq_blas_bf16_info(void);
/* Its short name: "builtin", "mkl" or "reference". */
const char *sq_gemm_bf16_backend(void);

/* Bit width of a format name ("int4" -> 4, "e4m3fn" -> 8, "e2m1" -> 4) in *bits. */
int sq_format_bits(const char *format, int *bits);

/* ---- Minifloat formats ------------------------------------------------------------------------------- */

/* Encodes n float32 values to the format's bit pattern (low bits of each byte): round to nearest, ties to
 * even, subnormals and signed zero kept, the format's own overflow rule (bit-exact with ml_dtypes' astype). */
int sq_encode(const float *x, size_t n, const char *format, uint8_t *codes);

/* Decodes n codes of the format to float32. */
int sq_decode(const uint8_t *codes, size_t n, const char *format, float *out);

/* ---- Quantizers ---------------------------------------------------------------------------------------- */

#define SQ_POLICY_MINMAX 0 /* OmniQuant: min/max of the group, zero not forced into the range */
#define SQ_POLICY_GPTQ 1   /* GPTQ: 0 forced into the range */

#define SQ_SCALE_FREE 0 /* scales as computed */
#define SQ_SCALE_M1 1   /* power-of-two scale per group (ZeroQuant-FP) */
#define SQ_SCALE_M2 2   /* per-row real scale times a power of two per group (ZeroQuant-FP) */

/* Group sizes (Swift's GroupSize): a positive number of consecutive input columns per group, or SQ_GROUP_PER_ROW
 * for one group per output row. Negative sizes are an error. Python spells per-row None or "per-row", the CLI
 * --group-size per-row. */
#define SQ_GROUP_PER_ROW 0

typedef struct sq_quant_options {
    int64_t group_size;     /* consecutive input columns per group, or SQ_GROUP_PER_ROW */
    int32_t symmetric;      /* 0 asymmetric, 1 symmetric */
    int32_t policy;         /* SQ_POLICY_* (integer formats only) */
    int32_t scale_constraint; /* SQ_SCALE_* (minifloat formats only) */
    int32_t reserved;       /* must be 0 */
} sq_quant_options;

/* Number of groups per row for `cols` columns: ceil(cols / group_size), or 1 for SQ_GROUP_PER_ROW or a size
 * larger than the row; 0 for cols <= 0 or a negative group size. */
int64_t sq_group_count(int64_t cols, int64_t group_size);

/* Quantizes w [rows, cols]. codes [rows, cols]: integer codes or minifloat bit patterns; scales and zeros
 * [rows, groups]: step (or minifloat scale) and integer zero-point (0 for minifloats). clip_up / clip_low
 * (either both NULL or both [rows, groups] in [0, 1]) multiply each group's max and min before the scale is
 * computed (OmniQuant's Learnable Weight Clipping, sigma(u) and sigma(l)). */
int sq_quantize(const float *w, int64_t rows, int64_t cols, const char *format, const sq_quant_options *options,
                const float *clip_up, const float *clip_low, uint8_t *codes, float *scales, int32_t *zeros);

/* GPTQ (ALGORITHMS.md §5) of one weight w [rows, cols] given the Hessian h [cols, cols] of its inputs
 * (h = 2/n·XᵀX; it is copied, not changed). Options as sq_quantize (policy SQ_POLICY_GPTQ for GPTQ's INT grid);
 * act_order != 0 visits columns by decreasing diag(h). Writes codes [rows, cols], scales and zeros [rows, groups],
 * g_idx [cols] (each column's group) and the dequantized weight [rows, cols]. */
int sq_gptq(const float *w, int64_t rows, int64_t cols, const float *h, const char *format,
            const sq_quant_options *options, int act_order, uint8_t *codes, float *scales, int32_t *zeros,
            int32_t *g_idx, float *dequantized);

/* As sq_quantize, but writes the codes packed row by row (sq_pack of each row; row stride
 * sq_packed_size(cols, bits) bytes) instead of one byte per code. */
int sq_quantize_packed(const float *w, int64_t rows, int64_t cols, const char *format,
                       const sq_quant_options *options, const float *clip_up, const float *clip_low,
                       uint8_t *packed, float *scales, int32_t *zeros);

/* Dequantizes codes [rows, cols] with scales and zeros [rows, groups] into out [rows, cols]. */
int sq_dequantize(const uint8_t *codes, const float *scales, const int32_t *zeros, int64_t rows, int64_t cols,
                  const char *format, const sq_quant_options *options, float *out);

/* out = dequantize(quantize(w)); out may equal w (in place). */
int sq_fake_quantize(const float *w, int64_t rows, int64_t cols, const char *format,
                     const sq_quant_options *options, const float *clip_up, const float *clip_low, float *out);

/* ---- Bit packing --------------------------------------------------------------------------------------- */

/* Bytes needed for `count` codes of `bits` bits: ceil(count * bits / 8). */
size_t sq_packed_size(size_t count, int bits);

/* Packs codes (each < 2^bits, bits 1..8) as one little-endian bit stream: code i occupies bits
 * [i*bits, (i+1)*bits), least significant bit first, zero-padded to a whole byte. */
int sq_pack(const uint8_t *codes, size_t count, int bits, uint8_t *out, size_t out_size);

/* Packs codes [rows, cols] row by row: each row is its own sq_pack stream of sq_packed_size(cols, bits)
 * bytes (out holds rows times that). */
int sq_pack_rows(const uint8_t *codes, int64_t rows, int64_t cols, int bits, uint8_t *out, size_t out_size);

/* Inverse of sq_pack. */
int sq_unpack(const uint8_t *packed, size_t packed_size, int bits, size_t count, uint8_t *codes);

/* ---- Matrix products ------------------------------------------------------------------------------------ */

/* Row-major C[m, n] = alpha * op(A) * op(B) + beta * C through the library's BLAS. */
int sq_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
             int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc);

/* ---- Models, tokenizers, evaluation --------------------------------------------------------------------- */

/* Opaque handles. A model owns its weights (memory-mapped file views or converted copies) and its tokenizer;
 * pointers it hands out stay valid until sq_model_free. Handles may be used from any thread, one call at a time
 * per handle. */
typedef struct sq_model sq_model;
typedef struct sq_tokenizer sq_tokenizer;

/* Opens a Hugging Face model directory (config.json + safetensors [+ tokenizer.json]) or a .gguf file. */
int sq_model_open(const char *path, sq_model **out);
void sq_model_free(sq_model *model);

/* config.json of the model as UTF-8 JSON (for GGUF: the equivalent Hugging Face config). */
int sq_model_config_json(sq_model *model, const char **json);

/* Number of tensors, and the Hugging Face name of tensor i (0 <= i < count). */
int sq_model_tensor_count(sq_model *model, int64_t *count);
int sq_model_tensor_name(sq_model *model, int64_t index, const char **name);

/* A tensor as float32 in Hugging Face layout: *data points to shape[0]*...*shape[*rank-1] values (rank <= 4).
 * *is_copy is 0 when the data is a view of the memory-mapped file, 1 when it was converted (F16, BF16, GGUF
 * block types) or computed (quantized weights). Read-only. */
int sq_model_tensor(sq_model *model, const char *name, const float **data, int64_t shape[4], int *rank,
                    int *is_copy);

/* Vocabulary size (logits width). */
int sq_model_vocab_size(sq_model *model, int64_t *vocab);

/* Logits of a window of n token ids: out holds n * vocab float32 values, row per position. */
int sq_model_logits(sq_model *model, const int32_t *ids, int64_t n, float *out);

/* Perplexity over non-overlapping windows of `seqlen` tokens of `ids` (at most `limit` windows; 0 = all):
 * exp(mean next-token NLL). With `progress` != 0 a progress bar with ETA is drawn on stderr. */
int sq_model_perplexity(sq_model *model, const int32_t *ids, int64_t n, int64_t seqlen, int64_t limit,
                        int progress, double *ppl, int64_t *windows);

/* ---- Quantization: one recipe, one pipeline ------------------------------------------------------------ */

/* A recipe is JSON (the same in Swift, the CLI and Python), keys in snake_case:
 *   {"method": "rtn" | "smoothquant" | "omniquant" | "gptq", "wformat": "int3" | "e2m1" | ... (or "wbits": 3),
 *    "group_size": 128 or null (per row), "symmetric": false, "preset": "paper" | "cpu", "epochs": ..,
 *    "nsamples": .., "seqlen": .., "lr": .., "aug_loss": .., "seed": 2, "scale_constraint": null | "m1" | "m2",
 *    "aformat": null | "int8" | "e4m3fn" | ... (or "abits": 8), "kv_format" (or "kv_bits"; null/"none": FP),
 *    "act_order": false, "lorc_rank": 0, "let": .., "let_shifts": null, "alpha": 0.5, "let_lr": 5e-3,
 *    "precision": "fp32" | "bf16" (OmniQuant training's matrix products; bf16 needs AVX512-BF16),
 *    "let_down": false, "keep_best": false, "loss": "mse" | "relative", "activation_gradient": "scale" | "ste",
 *    "weight_rounding": "rtn" | "gptq" (SmoothQuant / OmniQuant: GPTQ rounds the transformed weights)}
 * Only method and wformat are required; missing budget fields come from the preset ("paper": 128 x 2048 tokens,
 * 20 epochs, lr 1e-2; "cpu": 16 x 512, 5 epochs, lr 5e-2; GPTQ's "cpu": 32 x 512), the KV format follows the
 * activations, aug_loss is on for OmniQuant W2 weight-only and W4A4 at the paper preset, and let (LET with LWC)
 * is on for OmniQuant with activation quantization. */

/* The recipe with every field filled in and checked (*resolved: NUL-terminated JSON, free it with sq_free). */
int sq_recipe_resolve(const char *recipe_json, char **resolved);

/* Runs the recipe on a copy of `model` (the original is unchanged) and returns a new model with fused,
 * fake-quantized block weights and the packed results (sq_model_quantized). Methods that calibrate read
 * `calib_path` (required for them) and keep finished blocks in `work_dir` (required for them); with `resume`
 * != 0 a run continues after the last finished block there. With `progress` != 0 progress goes to stderr. */
int sq_model_quantize(sq_model *model, const char *recipe_json, const char *calib_path, const char *work_dir,
                      int resume, int progress, sq_model **out);

/* Writes the model to `dir`: config.json + model.safetensors (float32, transformers loads it), and for a
 * quantized model quantized.safetensors with packed codes, scales and zero-points (see the README). Atomic. */
int sq_model_save(sq_model *model, const char *dir);

/* Writes the model to `path` in `format`: "swiftquant" (what sq_model_save writes), "gguf" (a llama.cpp file),
 * "compressed-tensors" or "gptq" (Hugging Face directories). `requantize` != 0 lets a format re-quantize
 * tensors it cannot hold exactly (reporting each one's error on stderr); otherwise such a model is refused.
 * With `progress` != 0 a progress bar goes to stderr. Atomic. */
int sq_model_export(sq_model *model, const char *format, const char *path, int requantize, int progress);

/* The model's tokenizer as a new handle (free it with sq_tokenizer_free); SQ_ERR_INVALID_ARGUMENT if none. */
int sq_model_tokenizer(sq_model *model, sq_tokenizer **out);

/* Opens a tokenizer.json or the tokenizer inside a .gguf file. */
int sq_tokenizer_open(const char *path, sq_tokenizer **out);
void sq_tokenizer_free(sq_tokenizer *tokenizer);
int sq_tokenizer_vocab_size(sq_tokenizer *tokenizer, int64_t *size);

/* Token ids of `len` bytes of UTF-8 text, with the tokenizer's default special tokens. *ids is allocated by the
 * library (free it with sq_free). */
int sq_tokenizer_encode(sq_tokenizer *tokenizer, const char *text, size_t len, int32_t **ids, int64_t *count);

/* Text of n ids as a NUL-terminated UTF-8 string allocated by the library (free it with sq_free). */
int sq_tokenizer_decode(sq_tokenizer *tokenizer, const int32_t *ids, int64_t n, int skip_special, char **text);

/* ---- Quantized weights --------------------------------------------------------------------------------- */

/* Names of the quantized weights of a quantized model (RTN or OmniQuant). */
int sq_model_quantized_count(sq_model *model, int64_t *count);
int sq_model_quantized_name(sq_model *model, int64_t index, const char **name);

/* One quantized weight: codes [rows, cols] (uint8), scales and zeros [rows, groups]; *format the format's name
 * as sq_quantize takes it ("int3", "e2m1"; its width from sq_format_bits); *group_size columns per group or
 * SQ_GROUP_PER_ROW. Pointers (the format name included) stay valid until sq_model_free. */
int sq_model_quantized(sq_model *model, const char *name, const uint8_t **codes, const float **scales,
                       const int32_t **zeros, int64_t *rows, int64_t *cols, int64_t *groups, const char **format,
                       int64_t *group_size, int *symmetric);

/* The group of each of the weight's cols columns when they are not consecutive (GPTQ with act-order: column c
 * uses scales[:, g_idx[c]]); *g_idx is set to NULL when column c is in group c / group_size. Valid until
 * sq_model_free. */
int sq_model_quantized_group_index(sq_model *model, const char *name, const int32_t **g_idx);

/* Frees memory returned by sq_tokenizer_encode / sq_tokenizer_decode. */
void sq_free(void *p);

#ifdef __cplusplus
}
#endif
#endif /* SWIFTQUANT_H */
