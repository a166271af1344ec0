"""fp32 GEMM GFLOP/s of every SwiftQuant GEMM backend present (sq.matmul), next to NumPy's matmul and MKL called
directly (when the PyPI `mkl` package is found), same shapes, same run: the square 2048³ product and the products
of a SmolLM2-135M transformer block over 2048 tokens.

Each SwiftQuant backend runs in its own process (the backend is chosen once per process; SWIFTQUANT_GEMM picks
it): `cblas` (OpenBLAS as loaded, with its kernel), `mkl` (libmkl_rt, sequential, split over the threads by
SwiftQuant), `builtin` (SwiftQuant's AVX-512 kernel, Sources/CSQSupport/gemm.c). The "auto" column is the backend
SwiftQuant chooses here by itself, and the ratio is auto over the best of NumPy and MKL.

Run: .venv/bin/python python/benchmarks/bench_gemm.py [--seconds S] [--mkl PATH/libmkl_rt.so.N] [--threads 2]
"""
import argparse
import ctypes
import json
import os
import subprocess
import sys
import time

import numpy as np

SHAPES = [  # m, k, n: activations [m, k] times weights stored [n, k]
    (2048, 2048, 2048, "square"),
    (2048, 576, 576, "q_proj / o_proj"),
    (2048, 576, 192, "k_proj / v_proj"),
    (2048, 576, 1536, "gate_proj / up_proj"),
    (2048, 1536, 576, "down_proj"),
]
BACKENDS = ("cblas", "mkl", "builtin")


def gflops(f, flops, seconds):
    f()
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds or n < 3:
        f()
        n += 1
    return flops * n / (time.perf_counter() - t) / 1e9


def operands(m, k, n):
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (m, k)).astype(np.float32)
    b = rng.uniform(-1, 1, (n, k)).astype(np.float32)
    return a, b, np.empty((m, n), np.float32)


def numpy_blas():
    try:
        from threadpoolctl import threadpool_info

        return ", ".join(f"{i['internal_api']} {i.get('version')} {i.get('architecture')}" for i in threadpool_info())
    except ImportError:
        return "(install threadpoolctl to see NumPy's BLAS kernel)"


def find_mkl(explicit):
    if explicit:
        return explicit
    if os.environ.get("SWIFTQUANT_MKL"):
        return os.environ["SWIFTQUANT_MKL"]
    for name in ("libmkl_rt.so.2", "libmkl_rt.so.3"):
        path = os.path.join(sys.prefix, "lib", name)
        if os.path.exists(path):
            return path
    return None


def mkl_sgemm(path, threads):
    """cblas_sgemm from libmkl_rt with MKL's own threading (Intel OpenMP from the same directory)."""
    omp = os.path.join(os.path.dirname(path), "libiomp5.so")
    if os.path.exists(omp):
        ctypes.CDLL(omp, mode=ctypes.RTLD_GLOBAL)
    lib = ctypes.CDLL(path)
    lib.MKL_Set_Num_Threads(ctypes.c_int(threads))
    f = lib.cblas_sgemm
    f.restype = None
    P = ctypes.c_void_p
    f.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, P, ctypes.c_int, P, ctypes.c_int, ctypes.c_float, P,
                                       ctypes.c_int]

    def run(a, b, c):  # c = a @ b.T, row-major
        m, k = a.shape
        n = b.shape[0]
        f(101, 111, 112, m, n, k, 1.0, a.ctypes.data, k, b.ctypes.data, k, 0.0, c.ctypes.data, n)
    return run


def child(seconds):
    """One SwiftQuant backend (SWIFTQUANT_GEMM set by the parent): JSON on stdout."""
    import swiftquant as sq

    out = {"backend": sq.gemm_backend(), "info": sq.blas_info(), "rates": []}
    for m, k, n, _ in SHAPES:
        a, b, c = operands(m, k, n)
        assert np.allclose(sq.matmul(a, b, trans_b=True), a @ b.T, rtol=1e-4, atol=1e-3)
        out["rates"].append(max(gflops(lambda: sq.matmul(a, b, trans_b=True, out=c), 2 * m * n * k, seconds / 2)
                                for _ in range(2)))
    print(json.dumps(out))


def run_child(backend, args):
    env = dict(os.environ)
    if backend != "auto":
        env["SWIFTQUANT_GEMM"] = backend
    else:
        env.pop("SWIFTQUANT_GEMM", None)
    mkl = find_mkl(args.mkl)
    if mkl:
        env["SWIFTQUANT_MKL"] = mkl
    p = subprocess.run([sys.executable, __file__, "--child", "--seconds", str(args.seconds)], env=env,
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"bench_gemm: the {backend} child failed:\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--mkl", default=None, help="libmkl_rt to measure directly (default: $SWIFTQUANT_MKL, venv/lib)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.seconds)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import cpu_name

    print(f"CPU:        {cpu_name()}, {args.threads} threads")
    print(f"NumPy:      {np.__version__}: {numpy_blas()}")
    mkl_path = find_mkl(args.mkl)
    mkl = mkl_sgemm(mkl_path, args.threads) if mkl_path else None
    print(f"MKL:        {mkl_path or 'not found (pip install mkl, or --mkl PATH)'}")

    results = {}
    for backend in BACKENDS + ("auto",):
        r = run_child(backend, args)
        if backend != "auto" and r["backend"] != backend:
            print(f"SwiftQuant {backend}: not available here ({r['info']})")
            continue
        results[backend] = r
        print(f"SwiftQuant {backend}: {r['info']}")
    auto = results["auto"]["backend"]

    names = [b for b in BACKENDS if b in results]
    header = f"{'m×k×n':18}{'NumPy':>8}{'MKL':>8}" + "".join(f"{'sq ' + b:>12}" for b in names)
    print(f"\n{header}{'auto/best ref':>15}   GFLOP/s (auto = {auto})")
    for i, (m, k, n, label) in enumerate(SHAPES):
        a, b, c = operands(m, k, n)
        bt = b.T
        ref = max(gflops(lambda: np.matmul(a, bt, out=c), 2 * m * n * k, args.seconds / 2) for _ in range(2))
        mk = max(gflops(lambda: mkl(a, b, c), 2 * m * n * k, args.seconds / 2) for _ in range(2)) if mkl else None
        best_ref = max(ref, mk or 0)
        ours = results["auto"]["rates"][i]
        row = f"{f'{m}×{k}×{n}':18}{ref:8.1f}{(f'{mk:8.1f}' if mk else '       —')}"
        row += "".join(f"{results[b]['rates'][i]:12.1f}" for b in names)
        print(f"{row}{ours / best_ref:14.2f}×   {label}")


if __name__ == "__main__":
    main()
