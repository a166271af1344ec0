"""Writes the GPTQ parity fixtures from an independent NumPy implementation of ALGORITHMS.md §5 (run by hand:
python make_gptq_fixtures.py, with numpy, ml_dtypes and safetensors installed; not run in CI).

The implementation below is written from §5 and the definitions in GPTQ.swift's documentation, in float32 with
the same order of operations as the Swift sweep, so codes and scales can be compared bit for bit:
  - dead inputs (H_ii = 0 -> 1, W[:, i] = 0), act-order = stable argsort of -diag H, damping
    0.01 * (sequential float32 sum of diag H in sweep order) / n;
  - U = upper Cholesky factor of H^-1, computed here in float64 (numpy.linalg.inv + cholesky) and rounded to
    float32: a different route from Swift's (Cholesky of the reversed H, triangular inverse), so the Swift test
    compares U within a tolerance, and runs the bit-exact sweep comparison from this U;
  - the sweep in blocks (a block ends early at a group start whose group would end past it), group parameters
    at group starts from the current weights, M1/M2 per group (M2's row scale c_r from the weights at the start
    of the sweep), the in-block updates column by column, the lazy update as a sequential sum over the block's
    columns (what Swift's Reference.sgemm does).

Output, next to this script: gptq_fixtures.safetensors. Per case `<k>`: W, H (inputs), U, perm, codes, scales,
zeros, deq, gidx (all float32). The settings of each case are a JSON list under the "cases" metadata key.
"""
import json
import os

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
F32 = np.float32
MINIFLOATS = {
    "e2m1": (ml_dtypes.float4_e2m1fn, 4),
    "e4m3fn": (ml_dtypes.float8_e4m3fn, 8),
    "e5m2": (ml_dtypes.float8_e5m2, 8),
    "e3m2": (ml_dtypes.float6_e3m2fn, 6),
    "e2m3": (ml_dtypes.float6_e2m3fn, 6),
}

CASES = [
    dict(format="int4", group=8, symmetric=True, constraint="none", act_order=False, block=128),
    dict(format="int3", group=16, symmetric=False, constraint="none", act_order=False, block=12),
    dict(format="int4", group=None, symmetric=False, constraint="none", act_order=True, block=8, dead=[5, 17]),
    dict(format="int2", group=8, symmetric=False, constraint="none", act_order=True, block=16),
    dict(format="int8", group=16, symmetric=True, constraint="none", act_order=False, block=8),
    dict(format="e2m1", group=8, symmetric=False, constraint="none", act_order=False, block=128),
    dict(format="e2m1", group=16, symmetric=False, constraint="m2", act_order=True, block=8),
    dict(format="e2m1", group=8, symmetric=False, constraint="m1", act_order=False, block=16, dead=[3]),
    dict(format="e2m1", group=8, symmetric=False, constraint="m2", act_order=False, block=12),
    dict(format="e4m3fn", group=None, symmetric=False, constraint="none", act_order=True, block=16),
]
ROWS, COLS, TOKENS = 24, 40, 96


def minifloat_info(name):
    dt, bits = MINIFLOATS[name]
    codes = np.arange(2**bits, dtype=np.uint8)
    table = codes.view(dt).astype(F32)
    fmax = F32(np.max(table[np.isfinite(table)]))
    return dt, bits, table, fmax


def ceil_log2(x):
    """Exact ceil(log2 x) of positive float32 values (from the significand and exponent)."""
    m, e = np.frexp(x.astype(F32))
    return np.where(m == 0.5, e - 1, e).astype(np.int64)


def group_params(wg, case, c_row):
    """Per row: (scale, zero) of a group [m, k] of current weights."""
    xmin = wg.min(axis=1).astype(F32)
    xmax = wg.max(axis=1).astype(F32)
    fmt = case["format"]
    if fmt.startswith("int"):
        bits = int(fmt[3:])
        qmax = F32(2**bits - 1)
        lo = np.minimum(xmin, F32(0))
        hi = np.maximum(xmax, F32(0))
        if case["symmetric"]:
            hi = np.maximum(np.abs(lo), hi)
            lo = -hi
        both = (lo == 0) & (hi == 0)
        lo = np.where(both, F32(-1), lo).astype(F32)
        hi = np.where(both, F32(1), hi).astype(F32)
        h = ((hi - lo) / qmax).astype(F32)
        if case["symmetric"]:
            z = np.full_like(h, F32(2 ** (bits - 1)))
        else:
            z = np.round((-lo / h).astype(F32)).astype(F32)
        return h, z
    _, _, _, fmax = minifloat_info(fmt)
    s = (np.maximum(np.abs(xmax), np.abs(xmin)) / fmax).astype(F32)
    s = np.where(s == 0, F32(1), s).astype(F32)
    if case["constraint"] == "m1":
        s = np.ldexp(F32(1), ceil_log2(s)).astype(F32)
    elif case["constraint"] == "m2":
        k = np.clip(ceil_log2((s / c_row).astype(F32)), -8, 6)
        s = (c_row * np.ldexp(F32(1), k).astype(F32)).astype(F32)
    return s, np.zeros_like(s)


def quantize_column(w, h, z, case):
    fmt = case["format"]
    if fmt.startswith("int"):
        qmax = F32(2 ** int(fmt[3:]) - 1)
        code = np.clip(np.round((w / h).astype(F32)) + z, F32(0), qmax).astype(F32)
        q = ((code - z) * h).astype(F32)
        return code.astype(np.uint8), q
    dt, bits, table, fmax = minifloat_info(fmt)
    y = np.clip((w / h).astype(F32), -fmax, fmax).astype(F32)
    code = y.astype(dt).view(np.uint8) & np.uint8(2**bits - 1)
    q = ((table[code] - z) * h).astype(F32)
    return code, q


def block_end(b0, n, block, width):
    b1 = min(n, b0 + block)
    last = ((b1 - 1) // width) * width
    if last > b0 and min(n, last + width) > b1:
        b1 = last
    return b1


def gptq(W, H, case):
    m, n = W.shape
    width = min(case["group"] or n, n)
    groups = (n + width - 1) // width
    diag = np.diag(H).astype(F32).copy()
    dead = diag == 0
    diag[dead] = 1
    perm = np.argsort(-diag, kind="stable") if case["act_order"] else np.arange(n)
    Hp = H[np.ix_(perm, perm)].astype(F32).copy()
    Hp[np.arange(n), np.arange(n)] = diag[perm]
    Wp = W[:, perm].astype(F32).copy()
    Wp[:, dead[perm]] = 0
    total = F32(0)
    for p in range(n):
        total = F32(total + Hp[p, p])
    damp = F32(F32(0.01) * F32(total / F32(n)))
    Hd = Hp.copy()
    Hd[np.arange(n), np.arange(n)] = (Hd[np.arange(n), np.arange(n)] + damp).astype(F32)
    U = np.linalg.cholesky(np.linalg.inv(Hd.astype(np.float64))).T.astype(F32)

    c_row = None
    if case["constraint"] == "m2":
        _, _, _, fmax = minifloat_info(case["format"])
        c_row = np.zeros(m, F32)
        for g0 in range(0, n, width):
            wg = Wp[:, g0:min(n, g0 + width)]
            s = (np.maximum(np.abs(wg.max(axis=1)), np.abs(wg.min(axis=1))) / fmax).astype(F32)
            s = np.where(s == 0, F32(1), s).astype(F32)
            c_row = np.maximum(c_row, s)

    codes = np.zeros((m, n), np.uint8)
    deq = np.zeros((m, n), F32)
    scales = np.zeros((m, groups), F32)
    zeros = np.zeros((m, groups), F32)
    h = z = None
    b0 = 0
    while b0 < n:
        b1 = block_end(b0, n, case["block"], width)
        E = np.zeros((m, b1 - b0), F32)
        for i in range(b0, b1):
            if i % width == 0:
                g = i // width
                h, z = group_params(Wp[:, i:min(n, i + width)], case, c_row)
                scales[:, g] = h
                zeros[:, g] = z
            w = Wp[:, i].copy()
            code, q = quantize_column(w, h, z, case)
            codes[:, i] = code
            deq[:, i] = q
            err = ((w - q) / U[i, i]).astype(F32)
            E[:, i - b0] = err
            for j in range(i + 1, b1):
                Wp[:, j] = (Wp[:, j] - (err * U[i, j]).astype(F32)).astype(F32)
        if b1 < n:
            acc = np.zeros((m, n - b1), F32)
            for kk in range(b1 - b0):
                acc = (acc + np.outer(E[:, kk], U[b0 + kk, b1:]).astype(F32)).astype(F32)
            Wp[:, b1:] = (Wp[:, b1:] - acc).astype(F32)
        b0 = b1

    inv = np.argsort(perm)
    gidx = (np.arange(n) // width)[inv]
    return dict(U=U, perm=perm.astype(F32), codes=codes[:, inv].astype(F32), scales=scales, zeros=zeros,
                deq=deq[:, inv], gidx=gidx.astype(F32))


def main():
    rng = np.random.default_rng(20261206)
    out = {}
    meta = []
    for k, case in enumerate(CASES):
        W = (rng.standard_normal((ROWS, COLS)) * 0.05).astype(F32)
        W[:, 7] *= 8  # an outlier column
        mix = rng.standard_normal((COLS, COLS)) * 0.3 + np.eye(COLS)
        X = (mix @ rng.standard_normal((COLS, TOKENS)) * rng.uniform(0.2, 3, (COLS, 1))).astype(F32)
        for d in case.get("dead", []):
            X[d, :] = 0
        H = (F32(2 / TOKENS) * (X @ X.T)).astype(F32)
        H = ((H + H.T) / F32(2)).astype(F32)
        res = gptq(W, H, case)
        out[f"{k}.W"] = W
        out[f"{k}.H"] = H
        for name, v in res.items():
            out[f"{k}.{name}"] = np.ascontiguousarray(v.astype(F32))
        c = {key: v for key, v in case.items() if key != "dead"}
        c["dead"] = case.get("dead", [])
        meta.append(c)
        print(k, case, "codes", res["codes"].shape)
    save_file(out, os.path.join(HERE, "gptq_fixtures.safetensors"),
              metadata={"cases": json.dumps(meta), "numpy": np.__version__, "ml_dtypes": ml_dtypes.__version__})


if __name__ == "__main__":
    main()
