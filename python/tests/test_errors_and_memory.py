"""Bad input gets a clear exception and the process survives; arrays are read in place (zero copy)."""
import tracemalloc

import numpy as np
import pytest

import swiftquant as sq

W = np.random.default_rng(3).standard_normal((16, 256)).astype(np.float32)


@pytest.mark.parametrize(
    "call, exc, message",
    [
        (lambda: sq.quantize(W.astype(np.float64), "int4"), TypeError, "float32"),
        (lambda: sq.quantize(W.astype(np.float16), "int4"), TypeError, "float32"),
        (lambda: sq.quantize(W.tolist(), "int4"), TypeError, "NumPy array"),
        (lambda: sq.quantize(W[:, ::2], "int4", group_size=64), TypeError, "contiguous"),
        (lambda: sq.quantize(W.T, "int4", group_size=16), TypeError, "contiguous"),
        (lambda: sq.quantize(W.reshape(-1), "int4"), ValueError, "2-D"),
        (lambda: sq.quantize(W.reshape(4, 4, 256), "int4"), ValueError, "2-D"),
        (lambda: sq.quantize(np.zeros((0, 128), np.float32), "int4"), ValueError, "empty"),
        (lambda: sq.quantize(W, "int4", group_size=0), ValueError, "group_size"),
        (lambda: sq.quantize(W, "int4", group_size=257), ValueError, "larger than the row"),
        (lambda: sq.quantize(W, "int9"), ValueError, "int9"),
        (lambda: sq.quantize(W, "int1"), ValueError, "int1"),
        (lambda: sq.quantize(W, "fp5"), ValueError, "fp5"),
        (lambda: sq.quantize(W, "int4", policy="mystery"), ValueError, "policy"),
        (lambda: sq.quantize(W, "int4", scale_constraint="m3"), ValueError, "scale_constraint"),
        (lambda: sq.quantize(W, "int4", clip=(np.ones((16, 1), np.float32),) * 2), ValueError, "shape"),
        (lambda: sq.quantize(W, "int4", clip=np.ones((16, 2), np.float32)), TypeError, "pair"),
        (lambda: sq.quantize(W, "int4", clip=(np.full((16, 2), 1.5, np.float32),) * 2), ValueError, "clip"),
        (lambda: sq.quantize(W, "int4", clip=(np.full((16, 2), np.nan, np.float32),) * 2), ValueError, "clip"),
        (lambda: sq.encode(W.astype(np.float64), "e4m3fn"), TypeError, "float32"),
        (lambda: sq.encode(W, "e9m9"), ValueError, "e9m9"),
        (lambda: sq.decode(np.array([1.0], np.float32), "e2m1"), TypeError, "uint8"),
        (lambda: sq.decode(np.array([16], np.uint8), "e2m1"), ValueError, "16"),
        (lambda: sq.pack(np.array([16], np.uint8), 4), ValueError, "16"),
        (lambda: sq.pack(np.array([1], np.uint8), 9), ValueError, "bits"),
        (lambda: sq.pack(np.array([1], np.uint8), 0), ValueError, "bits"),
        (lambda: sq.unpack(np.zeros(1, np.uint8), 4, 3), ValueError, "need"),
        (lambda: sq.fake_quantize(W, "int4", out=np.empty((16, 255), np.float32)), ValueError, "shape"),
        (lambda: sq.fake_quantize(W, "int4", out=np.empty((16, 256), np.float64)), TypeError, "float32"),
    ],
)
def test_bad_input_raises_clear_error(call, exc, message):
    with pytest.raises(exc) as info:
        call()
    assert message.lower() in str(info.value).lower(), str(info.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused_with_position(bad):
    w = W.copy()
    w[5, 17] = bad
    with pytest.raises(ValueError) as info:
        sq.quantize(w, "int4", group_size=64)
    msg = str(info.value)
    assert "5" in msg and "17" in msg, msg
    with pytest.raises(ValueError):
        sq.fake_quantize(w, "int4", group_size=64)
    # nothing was changed
    assert np.isnan(w[5, 17]) if np.isnan(bad) else w[5, 17] == bad


def test_process_survives_many_errors():
    for _ in range(1000):
        with pytest.raises(ValueError):
            sq.quantize(W, "int4", group_size=0)
    q = sq.quantize(W, "int4", group_size=64)
    assert q.codes.shape == W.shape


def test_quantize_reads_input_in_place():
    """No input-sized allocation while quantizing a large matrix: only codes (1 byte per weight, a quarter of
    the input) and the small scale/zero arrays are allocated."""
    w = np.random.default_rng(0).standard_normal((2048, 4096)).astype(np.float32)  # 32 MiB
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        q = sq.quantize(w, "int4", group_size=128)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    allocated = peak - base
    assert allocated < w.nbytes // 2, f"allocated {allocated} bytes for a {w.nbytes}-byte input"
    assert allocated >= q.codes.nbytes  # the tracer does see NumPy's allocations


def test_fake_quantize_out_is_written_in_place():
    w = W.copy()
    expected = sq.fake_quantize(W, "int3", group_size=64)
    result = sq.fake_quantize(w, "int3", group_size=64, out=w)
    assert result is w
    assert np.array_equal(w, expected)


def test_outputs_do_not_alias_inputs():
    q = sq.quantize(W, "int4", group_size=64)
    assert not np.shares_memory(q.codes, W)
