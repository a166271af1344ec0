"""Independent NumPy references of ALGORITHMS.md §1 and §4, operation by operation in float32 (division,
not multiplication by a reciprocal; round half to even), for parity tests of the Swift core."""
import numpy as np

F32 = np.float32

FMAX = {"e4m3fn": 448.0, "e5m2": 57344.0, "e3m2": 28.0, "e2m3": 7.5, "e2m1": 6.0}


def ml_dtype(fmt):
    import ml_dtypes

    return {
        "e4m3fn": ml_dtypes.float8_e4m3fn,
        "e5m2": ml_dtypes.float8_e5m2,
        "e3m2": ml_dtypes.float6_e3m2fn,
        "e2m3": ml_dtypes.float6_e2m3fn,
        "e2m1": ml_dtypes.float4_e2m1fn,
    }[fmt]


def _groups(cols, group):
    g = cols if group is None else group
    return [(s, min(cols, s + g)) for s in range(0, cols, g)]


def int_quantize(w, bits, group=None, sym=False, clip=None, policy="minmax"):
    rows, cols = w.shape
    spans = _groups(cols, group)
    codes = np.empty((rows, cols), np.uint8)
    scales = np.empty((rows, len(spans)), F32)
    zeros = np.empty((rows, len(spans)), np.int32)
    qmax = F32(2**bits - 1)
    for gi, (a, b) in enumerate(spans):
        blk = w[:, a:b]
        xmax = blk.max(axis=1)
        xmin = blk.min(axis=1)
        if clip is not None:
            xmax = clip[0][:, gi] * xmax
            xmin = clip[1][:, gi] * xmin
        if policy == "gptq":
            xmin = np.minimum(xmin, F32(0))
            xmax = np.maximum(xmax, F32(0))
            if sym:
                xmax = np.maximum(np.abs(xmin), xmax)
                xmin = -xmax
            both0 = (xmin == 0) & (xmax == 0)
            xmin = np.where(both0, F32(-1), xmin)
            xmax = np.where(both0, F32(1), xmax)
            h = (xmax - xmin) / qmax
            z = np.full(rows, F32((2**bits) / 2), F32) if sym else np.round(-xmin / h)
        elif sym:
            absmax = np.maximum(np.abs(xmax), np.abs(xmin))
            h = np.clip(absmax / F32(2 ** (bits - 1) - 1), F32(1e-5), F32(1e4))
            z = np.full(rows, F32(2 ** (bits - 1) - 1), F32)
        else:
            h = np.clip((xmax - xmin) / qmax, F32(1e-5), F32(1e4))
            z = np.round(np.clip(-xmin / h, F32(-1e4), F32(1e4)))
        q = np.clip(np.round(blk / h[:, None]) + z[:, None], F32(0), qmax)
        codes[:, a:b] = q.astype(np.uint8)
        scales[:, gi] = h
        zeros[:, gi] = z.astype(np.int32)
    return codes, scales, zeros


def int_dequantize(codes, scales, zeros, group=None):
    rows, cols = codes.shape
    out = np.empty((rows, cols), F32)
    for gi, (a, b) in enumerate(_groups(cols, group)):
        out[:, a:b] = (codes[:, a:b].astype(F32) - zeros[:, gi, None].astype(F32)) * scales[:, gi, None]
    return out


def _ceil_pow2(x):
    """2^ceil(log2 x) for positive float32 x, exactly (from the exponent and significand)."""
    m, e = np.frexp(x.astype(np.float64))  # x = m * 2^e, m in [0.5, 1)
    e = np.where(m == 0.5, e - 1, e)
    return np.ldexp(np.ones_like(m), e).astype(F32), e


def fp_quantize(w, fmt, group=None, clip=None, scale_constraint=None):
    dt = ml_dtype(fmt)
    fmax = F32(FMAX[fmt])
    rows, cols = w.shape
    spans = _groups(cols, group)
    scales = np.empty((rows, len(spans)), F32)
    for gi, (a, b) in enumerate(spans):
        blk = w[:, a:b]
        xmax, xmin = blk.max(axis=1), blk.min(axis=1)
        if clip is not None:
            xmax = clip[0][:, gi] * xmax
            xmin = clip[1][:, gi] * xmin
        absmax = np.maximum(np.abs(xmax), np.abs(xmin))
        s = absmax / fmax
        scales[:, gi] = np.where(s == 0, F32(1), s)
    if scale_constraint == "m1":
        scales, _ = _ceil_pow2(scales)
    elif scale_constraint == "m2":
        c = scales.max(axis=1, keepdims=True)
        _, k = _ceil_pow2(scales / c)
        k = np.maximum(k, -8)
        scales = (c * np.ldexp(np.ones(k.shape), k).astype(F32)).astype(F32)
    codes = np.empty((rows, cols), np.uint8)
    for gi, (a, b) in enumerate(spans):
        y = np.clip(w[:, a:b] / scales[:, gi, None], -fmax, fmax)
        codes[:, a:b] = y.astype(dt).view(np.uint8)
    return codes, scales, np.zeros_like(scales, dtype=np.int32)


def pack(codes, bits):
    """LSB-first bit stream, zero-padded to a byte, by the definition."""
    bitstream = np.zeros(len(codes) * bits, np.uint8)
    for j in range(bits):
        bitstream[j::bits] = (codes >> j) & 1
    pad = (-len(bitstream)) % 8
    bitstream = np.concatenate([bitstream, np.zeros(pad, np.uint8)])
    return np.packbits(bitstream.reshape(-1, 8)[:, ::-1], axis=1).reshape(-1)
