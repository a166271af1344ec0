"""Quantize a weight matrix with SwiftQuant from Python: formats, groupings, LWC-style clipping, packing.

Run: .venv/bin/python Examples/python/quantize_weights.py
"""
import numpy as np

import swiftquant as sq

rng = np.random.default_rng(0)
w = (0.02 * rng.standard_normal((512, 2048))).astype(np.float32)
print(f"swiftquant {sq.__version__}; BLAS: {sq.blas_info()}")
print(f"weights {w.shape} float32\n")
print(f"{'format':8} {'grouping':10} {'rel. error':>10}  packed bytes")


def rel_err(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


for fmt in ["int8", "int4", "int3", "int2", "e4m3fn", "e2m1"]:
    for group in (None, 128):
        q = sq.quantize(w, fmt, group_size=group, symmetric=fmt.startswith("e"))
        packed = q.pack()
        grouping = "per-row" if group is None else f"group {group}"
        print(f"{fmt:8} {grouping:10} {rel_err(w, q.dequantize()):10.4f}  {packed.nbytes}")

# Learnable Weight Clipping applies sigmoid(u), sigmoid(l) to each group's max and min: clip 10 % off.
groups = w.shape[1] // 128
clip = (np.full((w.shape[0], groups), 0.9, np.float32), np.full((w.shape[0], groups), 0.9, np.float32))
clipped = sq.fake_quantize(w, "int3", group_size=128, clip=clip)
print(f"\nint3 g128 with 10 % clipping: rel. error {rel_err(w, clipped):.4f}")

# ZeroQuant-FP: FP4 weights with power-of-two scales (M1), so FP4 -> FP8 is an exponent shift.
q = sq.quantize(w, "e2m1", group_size=128, symmetric=True, scale_constraint="m1")
print(f"e2m1 g128 with M1 scales: rel. error {rel_err(w, q.dequantize()):.4f};"
      f" scales are powers of two: {bool(np.all(np.log2(q.scales) == np.round(np.log2(q.scales))))}")

# Bad input is refused with a clear message.
try:
    sq.quantize(w.astype(np.float64), "int4")
except TypeError as e:
    print(f"\nrefused: {e}")
