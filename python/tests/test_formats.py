"""Minifloat encode/decode against ml_dtypes, the independent reference, over every code and millions of
float32 inputs that include every tie, overflow boundary, signed zero, infinity, NaN and subnormal."""
import numpy as np
import pytest

import swiftquant as sq
from reference import FMAX, ml_dtype

ml_dtypes = pytest.importorskip("ml_dtypes")

FORMATS = list(sq.MINIFLOAT_FORMATS)
BITS = {"e4m3fn": 8, "e5m2": 8, "e3m2": 6, "e2m3": 6, "e2m1": 4}


def edge_inputs(fmt):
    """Every representable value, the midpoints between neighbours (ties) and one float32 ulp either side,
    the overflow region, zeros, infinities, NaNs with payloads and float32 subnormals."""
    dt = ml_dtype(fmt)
    codes = np.arange(2 ** BITS[fmt], dtype=np.uint8)
    vals = codes.view(dt).astype(np.float32) if BITS[fmt] == 8 else codes.view(dt).astype(np.float32)
    finite = np.unique(vals[np.isfinite(vals)])
    mids = ((finite[:-1].astype(np.float64) + finite[1:]) / 2).astype(np.float32)
    top = np.float32(FMAX[fmt])
    extra = np.array([top * 1.0625, top * 1.125, top * 1.5, top * 2, 464, 465, 480, 61440, 61439, 65504, 1e30,
                      np.finfo(np.float32).max], np.float32)
    base = np.concatenate([finite, mids, extra])
    base = np.concatenate([base, -base])
    around = np.concatenate([np.nextafter(base, np.float32(np.inf)), np.nextafter(base, np.float32(-np.inf))])
    special = np.array([0.0, -0.0, np.inf, -np.inf], np.float32)
    nans = np.array([0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0x7FA00000], np.uint32).view(np.float32)
    subnormals = np.array([1, 2, 3, 0x7FFFFF, 0x400000], np.uint32).view(np.float32)
    return np.concatenate([base, around, special, nans, subnormals, -subnormals]).astype(np.float32)


@pytest.mark.parametrize("fmt", FORMATS)
def test_decode_every_code(fmt):
    n = 2 ** BITS[fmt]
    codes = np.arange(n, dtype=np.uint8)
    expected = codes.view(ml_dtype(fmt)).astype(np.float32)
    got = sq.decode(codes, fmt)
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32)) or np.array_equal(
        np.isnan(got), np.isnan(expected)
    ) and np.array_equal(got[~np.isnan(got)], expected[~np.isnan(expected)])


@pytest.mark.parametrize("fmt", FORMATS)
def test_encode_edges_bit_exact(fmt):
    x = edge_inputs(fmt)
    expected = x.astype(ml_dtype(fmt)).view(np.uint8)
    got = sq.encode(x, fmt)
    bad = np.flatnonzero(got != expected)
    assert bad.size == 0, f"{fmt}: {bad.size} mismatches, first x={x[bad[0]]!r} got {got[bad[0]]:#x} want {expected[bad[0]]:#x}"


@pytest.mark.parametrize("fmt", FORMATS)
def test_encode_four_million_random_bit_patterns(fmt):
    rng = np.random.default_rng(1234)
    bits = rng.integers(0, 2**32, size=2_000_000, dtype=np.uint64).astype(np.uint32)
    # Half the inputs uniformly over all bit patterns, half concentrated in the format's range.
    scale = np.float32(FMAX[fmt])
    near = (rng.standard_normal(2_000_000).astype(np.float32) * scale / 4).astype(np.float32)
    x = np.concatenate([bits.view(np.float32), near])
    expected = x.astype(ml_dtype(fmt)).view(np.uint8)
    got = sq.encode(x, fmt)
    bad = np.flatnonzero(got != expected)
    assert bad.size == 0, f"{fmt}: {bad.size} mismatches, first x={x[bad[0]]!r} got {got[bad[0]]:#x} want {expected[bad[0]]:#x}"


def test_encode_keeps_shape_and_roundtrips():
    x = np.array([[0.5, -1.5], [3.0, 6.0]], np.float32)
    c = sq.encode(x, "e2m1")
    assert c.shape == (2, 2) and c.dtype == np.uint8
    assert np.array_equal(sq.decode(c, "e2m1"), x)


def test_aliases():
    x = np.linspace(-500, 500, 1001, dtype=np.float32)
    assert np.array_equal(sq.encode(x, "fp8_e4m3"), sq.encode(x, "e4m3fn"))
    assert np.array_equal(sq.encode(x, "fp4"), sq.encode(x, "e2m1"))
