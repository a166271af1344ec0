/* Quantize a weight matrix through the C ABI: int4 group 32, dequantize, pack, and one refused setting.
 * Build: cc -I Sources/CSwiftQuant/include Examples/c/quantize.c -L <bin> -lSwiftQuantCABI -Wl,-rpath,<bin> */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "swiftquant.h"

#define ROWS 64
#define COLS 256
#define GROUP 32

int main(void) {
    if (sq_abi_version() != SQ_ABI_VERSION) {
        fprintf(stderr, "ABI mismatch: library %d, header %d\n", sq_abi_version(), SQ_ABI_VERSION);
        return 1;
    }
    printf("SwiftQuant %s\nBLAS: %s\n", sq_version(), sq_blas_info());

    static float w[ROWS * COLS], back[ROWS * COLS];
    static uint8_t codes[ROWS * COLS];
    float scales[ROWS * (COLS / GROUP)];
    int32_t zeros[ROWS * (COLS / GROUP)];
    unsigned state = 12345;
    for (int i = 0; i < ROWS * COLS; i++) {
        state = state * 1103515245u + 12345u;
        w[i] = ((float)((state >> 8) & 0xFFFF) / 65535.0f - 0.5f) * 0.1f;
    }

    sq_quant_options opt = {.group_size = GROUP, .symmetric = 0, .policy = SQ_POLICY_MINMAX};
    if (sq_quantize(w, ROWS, COLS, "int4", &opt, NULL, NULL, codes, scales, zeros) != SQ_OK) {
        fprintf(stderr, "quantize failed: %s\n", sq_last_error());
        return 1;
    }
    if (sq_dequantize(codes, scales, zeros, ROWS, COLS, "int4", &opt, back) != SQ_OK) {
        fprintf(stderr, "dequantize failed: %s\n", sq_last_error());
        return 1;
    }
    double err = 0, ref = 0;
    for (int i = 0; i < ROWS * COLS; i++) {
        err += (double)(w[i] - back[i]) * (w[i] - back[i]);
        ref += (double)w[i] * w[i];
    }
    size_t packed_size = sq_packed_size(ROWS * COLS, 4);
    uint8_t *packed = malloc(packed_size);
    if (!packed || sq_pack(codes, ROWS * COLS, 4, packed, packed_size) != SQ_OK) {
        fprintf(stderr, "pack failed: %s\n", sq_last_error());
        return 1;
    }
    printf("int4 g%d: relative error %.4f, %zu codes packed into %zu bytes (first byte 0x%02x = codes %u, %u)\n",
           GROUP, sqrt(err / ref), (size_t)(ROWS * COLS), packed_size, packed[0], codes[0], codes[1]);
    if (packed[0] != (uint8_t)(codes[0] | (codes[1] << 4))) {
        fprintf(stderr, "unexpected packing\n");
        return 1;
    }
    free(packed);

    /* A setting that cannot work is refused with a status and a message, never a crash. */
    sq_quant_options bad = {.group_size = COLS + 1};
    int st = sq_quantize(w, ROWS, COLS, "int4", &bad, NULL, NULL, codes, scales, zeros);
    printf("group size %d on %d columns -> status %d: %s\n", COLS + 1, COLS, st, sq_last_error());
    return st == SQ_ERR_INVALID_ARGUMENT ? 0 : 1;
}
