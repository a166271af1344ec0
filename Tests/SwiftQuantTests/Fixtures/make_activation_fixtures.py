#!/usr/bin/env python3
"""Writes the parity fixtures of the dynamic activation quantizers (Sources/SwiftQuant/Quantizers/
ActivationQuantizers.swift), from NumPy float32 arithmetic and ml_dtypes casts written directly from
docs/ALGORITHMS.md §1 (asymmetric MinMax without LWC), §2b and §4 (symmetric absmax, clamp before the cast).

Run by hand (never in CI), from any directory, with numpy and ml_dtypes from PyPI:
    python3 -m venv venv-act && venv-act/bin/pip install numpy ml_dtypes
    venv-act/bin/python Tests/SwiftQuantTests/Fixtures/make_activation_fixtures.py

Output, next to this script: activation_fixtures.safetensors, all tensors float32 [ROWS, FEATURES]:
  input              the activations (seeded; the hand-made rows are listed in ROW_KINDS below)
  expected.<case>    the fake-quantized activations of one case
Metadata: "cases" = JSON list of {"name", "format", "width"} (width null = per token), "rows" = JSON list naming
each input row's kind, and the numpy / ml_dtypes versions. The Swift tests compare bit patterns (0 mismatches,
signed zeros included).
"""
import json
import os

import ml_dtypes
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
F32 = np.float32
FEATURES = 64
MINIFLOATS = {"e4m3fn": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2}
FMAX = {"e4m3fn": F32(448.0), "e5m2": F32(57344.0)}
CASES = [
    ("int8", "int8", None), ("int6", "int6", None), ("int4", "int4", None), ("int3", "int3", None),
    ("int2", "int2", None), ("e4m3fn", "e4m3fn", None), ("e5m2", "e5m2", None),
    ("int4_w8", "int4", 8), ("int4_w24", "int4", 24), ("e4m3fn_w16", "e4m3fn", 16),
]


# ---- the references, one group at a time, float32 throughout ----

def int_fake_quant(x, bits):
    """§1 asymmetric MinMax, no LWC: 0 not forced into the range; true division; np.rint = half to even."""
    qmax = F32(2**bits - 1)
    xmin, xmax = x.min(), x.max()
    with np.errstate(over="ignore"):  # huge rows: xmax − xmin, −xmin/h and x/h may overflow to ±inf, then clamp
        h = np.clip((xmax - xmin) / qmax, F32(1e-5), F32(1e4)).astype(F32)
        z = np.rint(np.clip(-xmin / h, F32(-1e4), F32(1e4))).astype(F32)
        q = np.clip(np.rint(x / h) + z, F32(0), qmax).astype(F32)
    return ((q - z) * h).astype(F32)


def fp_fake_quant(x, name):
    """§4 symmetric absmax: s = absmax/Fmax (0 -> 1), y = clamp(x/s, ±Fmax), decode(cast(y))·s."""
    fmax = FMAX[name]
    s = F32(np.abs(x).max() / fmax)
    if s == 0:
        s = F32(1)
    y = np.clip(x / s, -fmax, fmax).astype(F32)
    return (y.astype(MINIFLOATS[name]).astype(F32) * s).astype(F32)


def fake_quant(x, fmt, width):
    out = np.empty_like(x)
    w = width or x.shape[1]
    for r in range(x.shape[0]):
        for lo in range(0, x.shape[1], w):
            g = x[r, lo:lo + w]
            out[r, lo:lo + w] = int_fake_quant(g, int(fmt[3:])) if fmt.startswith("int") else fp_fake_quant(g, fmt)
    return out


# ---- the inputs ----

def grid_values(name):
    v = np.arange(256, dtype=np.uint8).view(MINIFLOATS[name]).astype(F32)
    return np.unique(v[np.isfinite(v) & (v >= 0)])


def fill(vals, rng):
    """A row of FEATURES values: `vals` first, then random picks among them (shuffled)."""
    vals = np.asarray(vals, F32)
    row = np.concatenate([vals, rng.choice(vals, FEATURES - len(vals))]) if len(vals) < FEATURES else vals[:FEATURES]
    return rng.permutation(row).astype(F32)


def rows_and_kinds():
    rng = np.random.default_rng(20261206)
    rows, kinds = [], []

    def add(kind, row):
        row = np.asarray(row, F32)
        assert row.shape == (FEATURES,)
        rows.append(row)
        kinds.append(kind)

    # Activation-like rows: gaussian at many scales, with a few outlier channels.
    for scale in [1e-3, 0.05, 1.0, 1.0, 7.0, 300.0, 2e4]:
        row = rng.standard_normal(FEATURES).astype(F32) * F32(scale)
        row[rng.choice(FEATURES, 3, replace=False)] *= F32(40)
        add(f"gaussian*{scale} with outliers", row)
    add("uniform [0, 1)", rng.random(FEATURES, dtype=np.float32))
    add("positive only", np.abs(rng.standard_normal(FEATURES)).astype(F32) + F32(0.5))
    add("negative only", -np.abs(rng.standard_normal(FEATURES)).astype(F32) * F32(3) - F32(0.25))
    add("negative only, tiny range", F32(-2.0) - rng.random(FEATURES, dtype=np.float32) * F32(1e-4))
    add("all zero", np.zeros(FEATURES, F32))
    add("all equal 3.7", np.full(FEATURES, 3.7, F32))
    add("all equal -0.02", np.full(FEATURES, -0.02, F32))
    add("all equal 1e-6", np.full(FEATURES, 1e-6, F32))
    add("all equal 3e38 (x/h overflows to inf)", np.full(FEATURES, 3e38, F32))
    add("all equal -1e38 (x/h overflows to -inf)", np.full(FEATURES, -1e38, F32))
    signed = np.zeros(FEATURES, F32)
    signed[1::2] = -0.0
    signed[::7] = rng.standard_normal(len(signed[::7])).astype(F32) * F32(1e-3)
    add("signed zeros and small values", signed)
    add("huge (~1e38, range overflows float32)", (rng.standard_normal(FEATURES) * 1e38).astype(F32))
    huge = (rng.standard_normal(FEATURES) * 1e30).astype(F32)
    huge[0], huge[1] = np.finfo(F32).max, -np.finfo(F32).max
    add("float32 max and -max", huge)
    add("tiny (~1e-38)", (rng.standard_normal(FEATURES) * 1e-38).astype(F32))
    sub = np.array([1, 2, 3, 5, 0x7FFFFF, 0x400000, 0x80000001, 0x80000007], np.uint32).view(F32)
    add("float32 subnormals and zeros", fill(np.concatenate([sub, [0.0, -0.0]]), rng))

    # INT ties: h = 2^j exactly, z = a exactly, the other values (k + 1/2)·2^j, so x/h ties.
    for bits, j, a in [(8, 0, 100), (8, -6, 0), (6, 3, 31), (4, 0, 8), (4, -2, 0), (4, 5, 15), (3, 0, 3), (2, 0, 1)]:
        qmax = 2**bits - 1
        step = F32(2.0**j)
        ties = (np.arange(-a, qmax - a, dtype=F32) + F32(0.5)) * step
        vals = np.concatenate([[F32(-a) * step, F32(qmax - a) * step], ties])
        row = fill(vals, rng)
        row[0], row[1] = F32(-a) * step, F32(qmax - a) * step  # the range, whatever the shuffle dropped
        add(f"int{bits} ties (h = 2^{j}, z = {a})", row)
    # int4 ties inside every group of 8 (per head), each group its own power of two and offset.
    head = []
    for g in range(FEATURES // 8):
        step, off = F32(2.0 ** (g - 4)), F32(8 * (g % 2))
        head += list((np.array([0, 15, 0.5, 3.5, 7.5, 10.5, 14.5, 2.5], F32) - off) * step)
    add("int4 ties in every group of 8", np.array(head, F32))

    # Minifloat ties: absmax = Fmax·2^j (so s = 2^j exactly), the rest the midpoints of the grid (subnormal
    # ones, min subnormal / 2, and between the two largest values) times 2^j, both signs.
    for name in MINIFLOATS:
        vals = grid_values(name)
        mids = ((vals[:-1].astype(np.float64) + vals[1:]) / 2).astype(F32)
        for j, part in [(0, mids[:31]), (-3, mids[-31:]), (4, mids[::4][:31])]:
            step = F32(2.0**j)
            row = fill(np.concatenate([part, -part[::2]]) * step, rng)
            row[0] = FMAX[name] * step
            add(f"{name} ties (s = 2^{j})", row)
    # Fmax boundaries: absmax values a with a / (a/Fmax) above Fmax in float32 (the clamp decides), below it,
    # exactly Fmax; the absmax on the negative side; other values just under the absmax.
    for name in MINIFLOATS:
        fmax = FMAX[name]
        cand = (rng.random(20000) * 1000 + 0.001).astype(F32)
        ratio = (cand / (cand / fmax)).astype(F32)
        above, below = cand[ratio > fmax][:3], cand[ratio < fmax][:2]
        assert len(above) == 3 and len(below) == 2, name
        for a, sign in [(above[0], 1), (above[1], -1), (above[2], 1), (below[0], 1), (below[1], -1)]:
            row = (rng.standard_normal(FEATURES) * a / 4).astype(F32)
            row[0] = F32(sign) * a
            row[1:4] = np.nextafter(np.full(3, F32(sign) * a), F32(0))
            row[4] = F32(-sign) * a  # the same magnitude on the other side
            add(f"{name} absmax {a!r} (a/s {'>' if (a / (a / fmax)).astype(F32) > fmax else '<'} Fmax)", row)
        add(f"{name} absmax = Fmax", fill([fmax, -fmax, fmax * F32(0.99), fmax / 2, fmax / 3, 1.0], rng))
    return np.stack(rows), kinds


def save_safetensors(path, tensors, metadata):
    """A safetensors file with a sorted header (so the bytes are reproducible), float32 little-endian."""
    header, offset, blobs = {"__metadata__": metadata}, 0, []
    for name in sorted(tensors):
        data = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for b in blobs:
            f.write(b)


def main():
    x, kinds = rows_and_kinds()
    tensors = {"input": x}
    for name, fmt, width in CASES:
        tensors[f"expected.{name}"] = fake_quant(x, fmt, width)
        assert np.isfinite(tensors[f"expected.{name}"]).all(), name
    meta = {
        "cases": json.dumps([{"name": n, "format": f, "width": w} for n, f, w in CASES]),
        "rows": json.dumps(kinds),
        "numpy": np.__version__,
        "ml_dtypes": ml_dtypes.__version__,
    }
    path = os.path.join(HERE, "activation_fixtures.safetensors")
    save_safetensors(path, tensors, meta)
    print(f"{os.path.basename(path)}: {x.shape[0]} rows × {FEATURES} features, {len(CASES)} cases, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
