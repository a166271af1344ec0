"""quantize + pack of an 11008×4096 float32 matrix to int4 group 128: SwiftQuant against (a) NumPy doing the
same math and (b) np.copyto of the same matrix, measured in the same run. Prints both ratios.

Run: .venv/bin/python python/benchmarks/bench_quantize.py [--rows R --cols C --repeat N]
"""
import argparse
import time

import numpy as np

import swiftquant as sq


def numpy_quantize_pack(w, bits=4, group=128):
    rows, cols = w.shape
    g = w.reshape(rows, cols // group, group)
    xmax, xmin = g.max(axis=2), g.min(axis=2)
    h = np.clip((xmax - xmin) / np.float32(2**bits - 1), np.float32(1e-5), np.float32(1e4))
    z = np.round(np.clip(-xmin / h, np.float32(-1e4), np.float32(1e4)))
    q = np.clip(np.round(g / h[..., None]) + z[..., None], 0, 2**bits - 1).astype(np.uint8).reshape(rows, cols)
    packed = q[:, 0::2] | (q[:, 1::2] << 4)
    return packed, h, z.astype(np.int32)


def best_time(f, repeat):
    f()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=11008)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=40, help="best of N (NumPy: best of N/5, at least 2)")
    args = ap.parse_args()
    w = np.random.default_rng(0).standard_normal((args.rows, args.cols)).astype(np.float32)
    dst = np.empty_like(w)
    print(f"matrix {w.shape} float32 ({w.nbytes / 2**20:.0f} MiB), int4 group 128, asymmetric; best of {args.repeat}")

    packed, scales, zeros = sq.quantize(w, "int4", group_size=128, packed=True)
    ref_packed, ref_scales, ref_zeros = numpy_quantize_pack(w)
    assert np.array_equal(packed, ref_packed) and np.array_equal(scales, ref_scales), "results differ"

    t_fused = best_time(lambda: sq.quantize(w, "int4", group_size=128, packed=True), args.repeat)
    t_two = best_time(lambda: sq.quantize(w, "int4", group_size=128).pack(), args.repeat)
    t_copy = best_time(lambda: np.copyto(dst, w), args.repeat)
    t_numpy = best_time(lambda: numpy_quantize_pack(w), max(2, args.repeat // 5))
    print(f"SwiftQuant quantize+pack (fused)      {t_fused * 1e3:8.1f} ms")
    print(f"SwiftQuant quantize, then .pack()     {t_two * 1e3:8.1f} ms")
    print(f"NumPy, same math                      {t_numpy * 1e3:8.1f} ms")
    print(f"np.copyto of the input                {t_copy * 1e3:8.1f} ms")
    print(f"speed-up over NumPy: {t_numpy / t_fused:.1f}× (fused), {t_numpy / t_two:.1f}× (two steps)")
    print(f"time / np.copyto:    {t_fused / t_copy:.2f}× (fused), {t_two / t_copy:.2f}× (two steps)")


if __name__ == "__main__":
    main()
