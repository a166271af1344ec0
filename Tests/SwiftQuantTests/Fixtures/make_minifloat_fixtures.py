"""Writes the minifloat parity fixtures from ml_dtypes (run by hand: python make_minifloat_fixtures.py; not
run in CI). For each format:

  minifloat_<fmt>.bin   u32 n | n × u32 float32 bit patterns | n × u8 codes (ml_dtypes' astype from float32)
                        the edge set: every value, every tie and one ulp either side, overflow boundaries,
                        zeros, infinities, NaNs, float32 subnormals
  minifloat_decode.json decoded value of every code (bit pattern of float32; NaN as "nan")
  minifloat_sweep.json  FNV-1a 64 of the codes of a sweep of 2^20 float32 inputs per format, evenly spaced
                        bit patterns from lo = bits(min subnormal / 8) to hi = bits(4 · max), u_k = lo +
                        k·(hi − lo) // 2^19 for k < 2^19, then the same with the sign bit set; hashed in 16
                        blocks of 65,536 codes (so a mismatch names its block)
"""
import json
import os

import ml_dtypes
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
FORMATS = {
    "e4m3fn": (ml_dtypes.float8_e4m3fn, 8, 448.0),
    "e5m2": (ml_dtypes.float8_e5m2, 8, 57344.0),
    "e3m2": (ml_dtypes.float6_e3m2fn, 6, 28.0),
    "e2m3": (ml_dtypes.float6_e2m3fn, 6, 7.5),
    "e2m1": (ml_dtypes.float4_e2m1fn, 4, 6.0),
}
SWEEP = 1 << 20
BLOCKS = 16


def codes_of(x, dt, bits):
    return x.astype(dt).view(np.uint8) & np.uint8((1 << bits) - 1)


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def edge_inputs(dt, bits, fmax):
    codes = np.arange(2**bits, dtype=np.uint8)
    vals = codes.view(dt).astype(np.float32)
    finite = np.unique(vals[np.isfinite(vals)])
    mids = ((finite[:-1].astype(np.float64) + finite[1:]) / 2).astype(np.float32)
    top = np.float32(fmax)
    extra = np.array([top * 1.0625, top * 1.125, top * 1.5, top * 2, 464, 465, 480, 61440, 61439, 65504, 1e30,
                      np.finfo(np.float32).max, np.finfo(np.float32).tiny], np.float32)
    base = np.concatenate([finite, mids, extra])
    base = np.concatenate([base, -base])
    around = np.concatenate([np.nextafter(base, np.float32(np.inf)), np.nextafter(base, np.float32(-np.inf))])
    special = np.array([0.0, -0.0, np.inf, -np.inf], np.float32)
    nans = np.array([0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0x7FA00000], np.uint32)
    subnormals = np.array([1, 2, 3, 0x7FFFFF, 0x400000], np.uint32).view(np.float32)
    x = np.concatenate([base, around, special, nans.view(np.float32), subnormals, -subnormals]).astype(np.float32)
    return x


def sweep_inputs(dt, bits, fmax):
    codes = np.arange(2**bits, dtype=np.uint8)
    vals = codes.view(dt).astype(np.float32)
    min_sub = np.min(np.abs(vals[(vals != 0) & np.isfinite(vals)]))
    lo = int(np.float32(min_sub / 8).view(np.uint32))
    hi = int(np.float32(fmax * 4).view(np.uint32))
    half = SWEEP // 2
    k = np.arange(half, dtype=np.uint64)
    u = (lo + (k * (hi - lo)) // half).astype(np.uint32)
    return np.concatenate([u, u | np.uint32(0x80000000)]).view(np.float32)


def main():
    decode = {}
    sweep = {}
    for name, (dt, bits, fmax) in FORMATS.items():
        x = edge_inputs(dt, bits, fmax)
        c = codes_of(x, dt, bits)
        with open(os.path.join(HERE, f"minifloat_{name}.bin"), "wb") as f:
            f.write(np.uint32(len(x)).tobytes())
            f.write(x.view(np.uint32).astype("<u4").tobytes())
            f.write(c.tobytes())
        vals = np.arange(2**bits, dtype=np.uint8).view(dt).astype(np.float32)
        decode[name] = ["nan" if np.isnan(v) else int(np.float32(v).view(np.uint32)) for v in vals]
        sc = codes_of(sweep_inputs(dt, bits, fmax), dt, bits)
        per = SWEEP // BLOCKS
        sweep[name] = [format(fnv1a64(sc[b * per:(b + 1) * per].tobytes()), "016x") for b in range(BLOCKS)]
        print(name, len(x), "edge inputs")
    with open(os.path.join(HERE, "minifloat_decode.json"), "w") as f:
        json.dump(decode, f)
    with open(os.path.join(HERE, "minifloat_sweep.json"), "w") as f:
        json.dump({"count": SWEEP, "blocks": BLOCKS, "fnv1a64": sweep}, f, indent=1)


if __name__ == "__main__":
    main()
