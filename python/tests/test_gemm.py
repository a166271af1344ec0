"""Matrix products through SwiftQuant's GEMM backends (sq.matmul), the backend choice, and bf16 calibration."""
import os
import subprocess
import sys

import numpy as np
import pytest

import swiftquant as sq

BACKENDS = ("cblas", "mkl", "builtin", "reference")


def _bound(a, b):
    """float32 summation bound per entry: 4·k·ε·Σ|a||b|."""
    k = a.shape[1]
    return 4 * (k + 2) * np.finfo(np.float32).eps * (np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64).T)


@pytest.mark.parametrize("m, k, n", [(1, 1, 1), (13, 7, 33), (300, 130, 96), (40, 90, 700), (2048, 576, 192)])
def test_matmul_matches_float64_within_the_summation_bound(m, k, n):
    rng = np.random.default_rng(m * 1000 + n)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((n, k), dtype=np.float32)
    exact = a.astype(np.float64) @ b.astype(np.float64).T
    got = sq.matmul(a, b, trans_b=True)
    assert got.dtype == np.float32 and got.shape == (m, n)
    assert (np.abs(got - exact) <= _bound(a, b)).all()
    got_nt = sq.matmul(a, np.ascontiguousarray(b.T))
    assert (np.abs(got_nt - exact) <= _bound(a, b)).all()


def test_backend_is_named_with_its_reason():
    assert sq.gemm_backend() in BACKENDS
    assert "chosen:" in sq.blas_info()


def test_bf16_backend_is_named_with_its_reason():
    assert sq.gemm_backend("bf16") in ("builtin", "mkl", "reference")
    info = sq.blas_info(precision="bf16")
    assert "chosen:" in info or "no bf16 arithmetic" in info, info
    with pytest.raises(ValueError, match="precision"):
        sq.blas_info("fp16")


def test_swiftquant_gemm_bf16_forces_a_backend():
    code = "import swiftquant as sq; print(sq.gemm_backend('bf16')); print(sq.blas_info('bf16'))"
    name, info = _in_subprocess({"SWIFTQUANT_GEMM_BF16": "reference"}, code).splitlines()
    assert name == "reference" and "SWIFTQUANT_GEMM_BF16=reference" in info
    name, info = _in_subprocess({"SWIFTQUANT_GEMM_BF16": "bogus"}, code).splitlines()
    assert "unknown" in info


def _in_subprocess(env_updates, code):
    env = dict(os.environ, **env_updates)
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def test_swiftquant_gemm_forces_a_backend_and_results_agree():
    code = ("import numpy as np, swiftquant as sq; rng = np.random.default_rng(0); "
            "a = rng.standard_normal((200, 300), dtype=np.float32); b = rng.standard_normal((150, 300), dtype=np.float32); "
            "c = sq.matmul(a, b, trans_b=True); e = a.astype(np.float64) @ b.astype(np.float64).T; "
            "print(sq.gemm_backend(), float(np.abs(c - e).max()))")
    out = _in_subprocess({"SWIFTQUANT_GEMM": "cblas"}, code).split()
    assert out[0] == "cblas" and float(out[1]) < 1e-3
    out = _in_subprocess({"SWIFTQUANT_GEMM": "builtin"}, code).split()
    # builtin where the CPU has AVX-512; elsewhere the choice says so and falls back to a measured backend
    assert out[0] in BACKENDS and float(out[1]) < 1e-3
    out = _in_subprocess({"SWIFTQUANT_GEMM": "reference"}, code).split()  # the scalar GEMM, by the definition
    assert out[0] == "reference" and float(out[1]) < 1e-3
    info = _in_subprocess({"SWIFTQUANT_GEMM": "no-such-backend"}, "import swiftquant as sq; print(sq.blas_info())")
    assert "unknown" in info


def test_precision_is_checked_before_any_work(smollm2_path):
    with pytest.raises(ValueError, match="fp32 or bf16"):
        sq.recipe("omniquant", "int3", precision="fp16")
    with pytest.raises(ValueError, match="OmniQuant"):
        sq.recipe("gptq", "int4", precision="bf16")
    m = sq.load_model(smollm2_path)
    with pytest.raises(ValueError, match="precision"):
        sq.omniquant(m, 3, precision="half", progress=False)


def test_bf16_calibration_runs_and_stays_close_to_fp32(smollm2_path, wikitext_test):
    try:
        sq.recipe("omniquant", "int3", precision="bf16")
    except ValueError as e:
        assert "AVX512-BF16" in str(e)
        pytest.skip(f"this CPU has no AVX512-BF16: {e}")
    m = sq.load_model(smollm2_path)
    settings = dict(group_size=128, epochs=2, nsamples=2, seqlen=128, progress=False)
    fp32 = sq.omniquant(m, 3, **settings)
    bf16 = sq.omniquant(m, 3, precision="bf16", **settings)
    assert bf16.options["precision"] == "bf16" and fp32.options["precision"] == "fp32"
    name = "model.layers.3.mlp.down_proj.weight"
    a, b = fp32.weights[name], bf16.weights[name]
    assert a.codes.shape == b.codes.shape
    # Different arithmetic, same training: most codes agree, and the two models' perplexities are close.
    assert (a.codes == b.codes).mean() > 0.9
    text = wikitext_test.read_text(encoding="utf-8")[:60000]
    p32 = sq.perplexity(fp32.model, text=text, seqlen=256, limit=4, progress=False)
    p16 = sq.perplexity(bf16.model, text=text, seqlen=256, limit=4, progress=False)
    assert abs(p16 - p32) / p32 < 0.05, (p32, p16)
