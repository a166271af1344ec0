"""fp32 GEMM GFLOP/s through SwiftQuant's BLAS path (sq.matmul) next to NumPy's matmul, same shapes, same run:
the square 2048³ product and the products of a SmolLM2-135M transformer block over 2048 tokens.

Run: .venv/bin/python python/benchmarks/bench_gemm.py [--seconds S]
"""
import argparse
import time

import numpy as np

import swiftquant as sq

from _common import cpu_name

SHAPES = [  # m, k, n: activations [m, k] times weights stored [n, k]
    (2048, 2048, 2048, "square"),
    (2048, 576, 576, "q_proj / o_proj"),
    (2048, 576, 192, "k_proj / v_proj"),
    (2048, 576, 1536, "gate_proj / up_proj"),
    (2048, 1536, 576, "down_proj"),
]


def gflops(f, flops, seconds):
    f()
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        f()
        n += 1
    return flops * n / (time.perf_counter() - t) / 1e9


def numpy_blas():
    try:
        from threadpoolctl import threadpool_info

        return ", ".join(f"{i['internal_api']} {i.get('version')} {i.get('architecture')}" for i in threadpool_info())
    except ImportError:
        return "(install threadpoolctl to see NumPy's BLAS kernel)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    print(f"CPU:        {cpu_name()}")
    print(f"SwiftQuant: {sq.blas_info()}")
    print(f"NumPy:      {numpy_blas()}")
    print(f"\n{'m×k×n':18}{'SwiftQuant':>12}{'NumPy':>10}{'ratio':>8}   GFLOP/s")
    rng = np.random.default_rng(0)
    for m, k, n, label in SHAPES:
        a = rng.uniform(-1, 1, (m, k)).astype(np.float32)
        b = rng.uniform(-1, 1, (n, k)).astype(np.float32)
        c = np.empty((m, n), np.float32)
        bt = b.T
        assert np.allclose(sq.matmul(a, b, trans_b=True), a @ bt, rtol=1e-4, atol=1e-3)
        # Interleave the two libraries so frequency drift affects both alike.
        ours, ref = [], []
        for _ in range(2):
            ours.append(gflops(lambda: sq.matmul(a, b, trans_b=True, out=c), 2 * m * n * k, args.seconds / 2))
            ref.append(gflops(lambda: np.matmul(a, bt, out=c), 2 * m * n * k, args.seconds / 2))
        o, r = max(ours), max(ref)
        print(f"{f'{m}×{k}×{n}':18}{o:12.1f}{r:10.1f}{o / r:7.2f}×   {label}")


if __name__ == "__main__":
    main()
