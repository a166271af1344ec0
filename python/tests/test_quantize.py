"""INT and FP quantizers against the NumPy reference of ALGORITHMS.md §1/§4 (tests/reference.py)."""
import numpy as np
import pytest

import reference as ref
import swiftquant as sq

RNG = np.random.default_rng(7)


def weights(rows=48, cols=300, special=True):
    w = (RNG.standard_normal((rows, cols)) * RNG.uniform(0.01, 1, (rows, 1))).astype(np.float32)
    if special:
        w[0] = 0.0  # all-zero row/groups
        w[1] = 0.25  # constant groups
        w[2, :128] = np.abs(w[2, :128]) + 0.1  # all-positive group: negative zero-point
        w[3, :] = -np.abs(w[3, :])  # all-negative
    return w


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group", [None, 64, 128, 100])
@pytest.mark.parametrize("sym", [False, True])
@pytest.mark.parametrize("clipped", [False, True])
def test_int_parity(bits, group, sym, clipped):
    w = weights()
    rows, cols = w.shape
    ng = 1 if group is None else -(-cols // group)
    clip = None
    if clipped:
        clip = (RNG.uniform(0.5, 1, (rows, ng)).astype(np.float32), RNG.uniform(0.5, 1, (rows, ng)).astype(np.float32))
    codes, scales, zeros = ref.int_quantize(w, bits, group, sym, clip)
    q = sq.quantize(w, f"int{bits}", group_size=group, symmetric=sym, clip=clip)
    assert q.scales.shape == (rows, ng) and q.zeros.shape == (rows, ng)
    assert np.array_equal(q.scales.view(np.uint32), scales.view(np.uint32))
    assert np.array_equal(q.zeros.astype(np.int64), zeros.astype(np.int64))
    assert np.array_equal(q.codes, codes)
    assert np.all(np.isfinite(q.scales)) and np.all(q.scales > 0)
    deq = q.dequantize()
    assert np.array_equal(deq, ref.int_dequantize(codes, scales, zeros, group))
    fake = sq.fake_quantize(w, f"int{bits}", group_size=group, symmetric=sym, clip=clip)
    assert np.array_equal(fake, deq)


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("sym", [False, True])
def test_gptq_policy_parity(bits, sym):
    w = weights(special=True)
    codes, scales, zeros = ref.int_quantize(w, bits, 128, sym, policy="gptq")
    q = sq.quantize(w, f"int{bits}", group_size=128, symmetric=sym, policy="gptq")
    assert np.array_equal(q.scales, scales)
    assert np.array_equal(q.zeros.astype(np.int64), zeros.astype(np.int64))
    assert np.array_equal(q.codes, codes)


def test_fake_quant_lies_on_grid():
    w = weights(special=False)
    q = sq.quantize(w, "int3", group_size=64)
    fake = sq.fake_quantize(w, "int3", group_size=64)
    assert q.codes.max() <= 7
    for gi in range(q.scales.shape[1]):
        blk = fake[:, gi * 64:(gi + 1) * 64]
        # every value is one of the 8 grid points (k - z)·h of its row's group, computed in float32
        grid = (np.arange(8, dtype=np.float32)[None, :] - q.zeros[:, gi, None].astype(np.float32)) * q.scales[:, gi, None]
        assert all(np.isin(blk[r], grid[r]).all() for r in range(blk.shape[0]))


@pytest.mark.parametrize("fmt", ["e4m3fn", "e5m2", "e3m2", "e2m3", "e2m1"])
@pytest.mark.parametrize("group", [None, 128, 100])
@pytest.mark.parametrize("constraint", [None, "m1", "m2"])
def test_fp_parity(fmt, group, constraint):
    pytest.importorskip("ml_dtypes")
    w = weights(special=True)
    codes, scales, _ = ref.fp_quantize(w, fmt, group, scale_constraint=constraint)
    q = sq.quantize(w, fmt, group_size=group, symmetric=True, scale_constraint=constraint)
    assert np.array_equal(q.scales.view(np.uint32), scales.view(np.uint32))
    assert np.array_equal(q.codes, codes)
    assert np.all(q.zeros == 0)
    if constraint == "m1":
        m, _ = np.frexp(q.scales)
        assert np.all(m == 0.5), "M1 scales must be powers of two"
    if constraint == "m2":
        ratio = q.scales / q.scales.max(axis=1, keepdims=True)
        m, _ = np.frexp(ratio)
        assert np.all(m == 0.5), "M2 scales must be the row scale times a power of two"


def test_m1_makes_fp4_to_fp8_an_exponent_shift():
    """With power-of-two scales every dequantized FP4 weight is exactly an E4M3 value times one power of two
    per row: FP4 -> FP8 conversion is a shift of the exponent."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    w = weights(special=False)
    q = sq.quantize(w, "e2m1", group_size=128, symmetric=True, scale_constraint="m2")
    deq = q.dequantize()
    row_scale = q.scales.max(axis=1, keepdims=True)
    y = deq / row_scale
    assert np.array_equal(y.astype(ml_dtypes.float8_e4m3fn).astype(np.float32), y)


def test_pack_matches_reference_and_roundtrips():
    for bits in range(1, 9):
        codes = RNG.integers(0, 2**bits, size=1001, dtype=np.uint8)
        p = sq.pack(codes, bits)
        assert np.array_equal(p, ref.pack(codes, bits)), bits
        assert np.array_equal(sq.unpack(p, bits, codes.size), codes)
    assert sq.pack(np.array([1, 2], np.uint8), 4).tolist() == [0x21]
    # 3-bit: 1 | 2<<3 | 7<<6 = 0b11_010_001 -> 0xD1, then the last bit of 7 in the next byte
    assert sq.pack(np.array([1, 2, 7], np.uint8), 3).tolist() == [0xD1, 0x01]


def test_quantized_tensor_pack_row_by_row():
    w = weights(rows=5, cols=37, special=False)
    q = sq.quantize(w, "int3", group_size=None)
    p = q.pack()
    assert p.shape == (5, (37 * 3 + 7) // 8)
    for r in range(5):
        assert np.array_equal(p[r], ref.pack(q.codes[r], 3))


def test_packed_quantize_equals_quantize_then_pack():
    w = weights(rows=64, cols=512, special=True)
    for fmt in ["int4", "int3", "int2", "int8", "e2m1", "e4m3fn"]:
        packed, scales, zeros = sq.quantize(w, fmt, group_size=128, packed=True)
        q = sq.quantize(w, fmt, group_size=128)
        assert np.array_equal(packed, q.pack()), fmt
        assert np.array_equal(scales, q.scales) and np.array_equal(zeros, q.zeros)


def test_group_size_spellings():
    """One group per row is None or "per-row" (the C ABI's SQ_GROUP_PER_ROW); 0 and negatives are errors."""
    w = np.random.default_rng(5).standard_normal((8, 96)).astype(np.float32)
    a = sq.quantize(w, "int4", group_size=None)
    b = sq.quantize(w, "int4", group_size="per-row")
    assert np.array_equal(a.codes, b.codes) and a.scales.shape == (8, 1)
    assert np.array_equal(sq.quantize(w, "int4", group_size=96).codes, a.codes)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="per-row"):
            sq.quantize(w, "int4", group_size=bad)
    with pytest.raises(TypeError, match="group_size"):
        sq.quantize(w, "int4", group_size="128")
