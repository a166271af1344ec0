"""SwiftQuant: post-training quantization of large language models, with a Swift core.

NumPy arrays go to the native core without a copy: inputs must be C-contiguous and of the documented dtype
(float32 weights, uint8 codes). Anything else is refused with ``TypeError`` rather than converted silently,
so memory use and aliasing are always what you see. Results are NumPy arrays allocated once and filled by
the core; the GIL is released while it works.

>>> import numpy as np, swiftquant as sq
>>> w = np.random.default_rng(0).standard_normal((256, 512), dtype=np.float32)
>>> q = sq.quantize(w, "int4", group_size=128)
>>> q.codes.shape, q.scales.shape
((256, 512), (256, 4))
>>> bool(np.array_equal(q.dequantize(), sq.fake_quantize(w, "int4", group_size=128)))
True
"""

from __future__ import annotations

import os as _os
import sys as _sys

import numpy as np


def _offer_mkl() -> None:
    """Let the native library find MKL from the PyPI `mkl` package installed in this environment: it measures
    MKL beside its other GEMM backends at first use (see :func:`blas_info`). $SWIFTQUANT_MKL wins when set."""
    if _os.environ.get("SWIFTQUANT_MKL"):
        return
    for prefix in dict.fromkeys((_sys.prefix, _sys.base_prefix)):
        for name in ("libmkl_rt.so.2", "libmkl_rt.so.3"):
            path = _os.path.join(prefix, "lib", name)
            if _os.path.exists(path):
                _os.environ["SWIFTQUANT_MKL"] = path
                return


_offer_mkl()

from . import _native  # noqa: E402
from ._native import FormatError

__all__ = [
    "FormatError",
    "MINIFLOAT_FORMATS",
    "INT_FORMATS",
    "QuantizedTensor",
    "encode",
    "decode",
    "quantize",
    "gptq_quantize",
    "fake_quantize",
    "dequantize",
    "pack",
    "unpack",
    "matmul",
    "blas_info",
    "gemm_backend",
    "Model",
    "Tokenizer",
    "load_model",
    "perplexity",
    "rtn",
    "smoothquant",
    "omniquant",
    "OmniQuantResult",
    "smollm2_path",
    "__version__",
]

__version__ = _native.version()

#: Minifloat formats: name -> (exponent bits, mantissa bits, largest finite value).
MINIFLOAT_FORMATS = {
    "e4m3fn": (4, 3, 448.0),
    "e5m2": (5, 2, 57344.0),
    "e3m2": (3, 2, 28.0),
    "e2m3": (2, 3, 7.5),
    "e2m1": (2, 1, 6.0),
}
INT_FORMATS = tuple(f"int{b}" for b in range(2, 9))

_POLICIES = {"minmax": 0, "gptq": 1}
_SCALE_CONSTRAINTS = {None: 0, "none": 0, "m1": 1, "m2": 2}


def _precision(precision: str) -> str:
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    return precision


def blas_info(precision: str = "fp32") -> str:
    """The GEMM backend SwiftQuant uses for matrix products, its kernel, and why it was chosen.

    The choice is made once per process, at the first product: ``$SWIFTQUANT_GEMM`` (``cblas``, ``mkl``,
    ``builtin``, ``reference``, ``auto``) when set; the library named by ``$SWIFTQUANT_BLAS``; otherwise the
    fastest of the backends present on a transformer block's shapes (about 0.1 s), cached per machine in
    ``~/.cache/swiftquant/gemm-backend-v2``. ``precision="bf16"``: the backend of bf16 calibration
    (``omniquant(..., precision="bf16")``), SwiftQuant's AVX512-BF16 kernel or MKL's ``cblas_gemm_bf16bf16f32``
    (AMX where the CPU has it), chosen the same way (``$SWIFTQUANT_GEMM_BF16``).

    >>> sq.blas_info()  # doctest: +SKIP
    'SwiftQuant AVX-512 GEMM (12x32 micro-kernel, split over 2 threads); chosen: fastest when measured (cblas 263 GFLOP/s, builtin 389 GFLOP/s)'
    """
    return _native.blas_bf16_info() if _precision(precision) == "bf16" else _native.blas_info()


def gemm_backend(precision: str = "fp32") -> str:
    """The GEMM backend's short name: ``"cblas"`` (OpenBLAS), ``"mkl"``, ``"builtin"`` (SwiftQuant's AVX-512
    kernel) or ``"reference"``; with ``precision="bf16"`` the bf16 backend (``"builtin"``, ``"mkl"`` or
    ``"reference"``). See :func:`blas_info`."""
    return _native.gemm_bf16_backend() if _precision(precision) == "bf16" else _native.gemm_backend()


# ---- argument checking ---------------------------------------------------------------------------------


def _array(x, name: str, dtype, ndim: int | None = None) -> np.ndarray:
    """Returns `x` as an ndarray without copying; refuses the wrong dtype or a non-contiguous layout."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array of {np.dtype(dtype).name}, got {type(x).__name__}")
    if x.dtype != dtype:
        raise TypeError(
            f"{name} must have dtype {np.dtype(dtype).name}, got {x.dtype.name}"
            f" (convert explicitly, e.g. {name}.astype(np.{np.dtype(dtype).name}))"
        )
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {x.shape}")
    if not x.flags.c_contiguous:
        raise TypeError(
            f"{name} must be C-contiguous (SwiftQuant reads it in place and never copies silently);"
            f" pass np.ascontiguousarray({name})"
        )
    return x


def _matrix(w, name: str = "w") -> np.ndarray:
    w = _array(w, name, np.float32, 2)
    if w.size == 0:
        raise ValueError(f"{name} is empty (shape {w.shape})")
    return w


PER_ROW = "per-row"
"""``group_size`` for one group per output row (``None`` means the same); the C ABI's ``SQ_GROUP_PER_ROW``."""


def _group_size(group_size) -> int:
    """``group_size`` (None, ``"per-row"`` or a positive int) in the C ABI's encoding (SQ_GROUP_PER_ROW = 0, or
    the size). The size against the row is checked once, by the library (Swift ``GroupSize.validate``)."""
    if group_size is None or group_size == PER_ROW:
        return _native.GROUP_PER_ROW
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)):
        raise TypeError(f"group_size must be a positive int, None or 'per-row', got {group_size!r}")
    if group_size < 1:
        raise ValueError(f"group_size must be positive (None or 'per-row' for one group per row), got {group_size}")
    return int(group_size)


def _options(fmt, group_size, symmetric, policy, scale_constraint, cols: int):
    if not isinstance(fmt, str):
        raise TypeError(f"fmt must be a format name such as 'int4' or 'e2m1', got {type(fmt).__name__}")
    group = _group_size(group_size)
    if policy not in _POLICIES:
        raise ValueError(f"policy must be one of {sorted(_POLICIES)}, got {policy!r}")
    if scale_constraint not in _SCALE_CONSTRAINTS:
        raise ValueError(f"scale_constraint must be None, 'm1' or 'm2', got {scale_constraint!r}")
    return (group, bool(symmetric), _POLICIES[policy], _SCALE_CONSTRAINTS[scale_constraint])


def _clips(clip, rows: int, groups: int):
    if clip is None:
        return None, None
    if not isinstance(clip, (tuple, list)) or len(clip) != 2:
        raise TypeError("clip must be a pair (up, low) of float32 arrays of shape [rows, n_groups]")
    up = _array(clip[0], "clip[0]", np.float32)
    low = _array(clip[1], "clip[1]", np.float32)
    for name, a in (("clip[0]", up), ("clip[1]", low)):
        if a.shape != (rows, groups):
            raise ValueError(f"{name} must have shape {(rows, groups)} ([rows, n_groups]), got {a.shape}")
    return up, low


# ---- minifloats ------------------------------------------------------------------------------------------


def encode(x: np.ndarray, fmt: str) -> np.ndarray:
    """Casts float32 values to a minifloat format; returns uint8 codes (the format's bit pattern in the low
    bits) of the same shape. Round to nearest, ties to even, subnormals and signed zero kept, and each
    format's own overflow rule: bit-exact with ``ml_dtypes``' ``x.astype(dtype)``."""
    x = _array(x, "x", np.float32)
    out = np.empty(x.shape, dtype=np.uint8)
    _native.encode(x, fmt, out)
    return out


def decode(codes: np.ndarray, fmt: str) -> np.ndarray:
    """The float32 values of minifloat codes (same shape)."""
    codes = _array(codes, "codes", np.uint8)
    out = np.empty(codes.shape, dtype=np.float32)
    _native.decode(codes, fmt, out)
    return out


# ---- quantizers ----------------------------------------------------------------------------------------


class QuantizedTensor:
    """A quantized matrix: integer codes (or minifloat bit patterns), per-group scales and zero-points.

    Attributes:
        codes: uint8 ``[rows, cols]``.
        scales: float32 ``[rows, n_groups]``: the step ``h`` (integer formats) or scale ``s`` (minifloats).
        zeros: int32 ``[rows, n_groups]``: the integer zero-point ``z`` (may be negative for a group that is
            all positive, see ALGORITHMS.md §1); 0 for minifloats.
        format, group_size, symmetric, policy, scale_constraint: how it was made (``group_size`` None: one
            group per row).
        g_idx: None, or int32 ``[cols]``: column ``c``'s group when the groups are not consecutive columns
            (GPTQ with act-order; the GPTQ checkpoint's ``g_idx``). None means column ``c`` is in group
            ``c // group_size``.

    ``dequantize()`` returns ``(codes - zeros) * scales`` for integer formats and ``decode(codes) * scales``
    for minifloats, exactly as the quantizer computed it (the scale and zero of each column's group).
    """

    __slots__ = ("codes", "scales", "zeros", "format", "group_size", "symmetric", "policy", "scale_constraint",
                 "g_idx")

    def __init__(self, codes, scales, zeros, format, group_size, symmetric=False, policy="minmax",
                 scale_constraint=None, g_idx=None):
        self.codes = _array(codes, "codes", np.uint8, 2)
        self.scales = _array(scales, "scales", np.float32, 2)
        self.zeros = _array(zeros, "zeros", np.int32, 2)
        self.format = format
        self.group_size = None if group_size is None or _group_size(group_size) == _native.GROUP_PER_ROW else int(group_size)
        self.symmetric = bool(symmetric)
        self.policy = policy
        self.scale_constraint = scale_constraint
        rows, cols = self.codes.shape
        groups = _native.group_count(cols, _group_size(group_size))
        for name, a in (("scales", self.scales), ("zeros", self.zeros)):
            if a.shape != (rows, groups):
                raise ValueError(f"{name} must have shape {(rows, groups)}, got {a.shape}")
        self.g_idx = None
        if g_idx is not None:
            g = _array(g_idx, "g_idx", np.int32, 1)
            if g.shape != (cols,):
                raise ValueError(f"g_idx must have shape {(cols,)}, got {g.shape}")
            if g.size and (g.min() < 0 or g.max() >= groups):
                raise ValueError(f"g_idx values must be groups in 0..{groups - 1}, got {g.min()}..{g.max()}")
            self.g_idx = g

    @property
    def shape(self) -> tuple[int, int]:
        return self.codes.shape

    @property
    def bits(self) -> int:
        return _format_bits(self.format)

    def _opts(self):
        return _options(self.format, self.group_size, self.symmetric, self.policy, self.scale_constraint,
                        self.codes.shape[1])

    def dequantize(self) -> np.ndarray:
        """float32 ``[rows, cols]``."""
        rows, cols = self.codes.shape
        out = np.empty((rows, cols), dtype=np.float32)
        if self.g_idx is None:
            _native.dequantize(self.codes, self.scales, self.zeros, rows, cols, self.format, self._opts(), out)
        else:
            # Each column with its own group's scale and zero: the same formula with groups of one column.
            scales = np.ascontiguousarray(self.scales[:, self.g_idx])
            zeros = np.ascontiguousarray(self.zeros[:, self.g_idx])
            opts = _options(self.format, 1, self.symmetric, self.policy, self.scale_constraint, cols)
            _native.dequantize(self.codes, scales, zeros, rows, cols, self.format, opts, out)
        return out

    def pack(self) -> np.ndarray:
        """The codes packed row by row: each row is one little-endian bit stream (code i at bits
        ``[i*b, (i+1)*b)``, LSB first) zero-padded to a whole byte. uint8 ``[rows, ceil(cols*b/8)]``."""
        rows, cols = self.codes.shape
        bits = self.bits
        out = np.empty((rows, _native.packed_size(cols, bits)), dtype=np.uint8)
        _native.pack_rows(self.codes, rows, cols, bits, out)
        return out

    def __repr__(self) -> str:
        g = "per-row" if self.group_size is None else f"group {self.group_size}"
        order = ", g_idx" if self.g_idx is not None else ""
        return f"QuantizedTensor({self.format}, {g}, shape={self.shape}, symmetric={self.symmetric}{order})"


def _format_bits(fmt: str) -> int:
    if not isinstance(fmt, str):
        raise TypeError(f"fmt must be a format name such as 'int4' or 'e2m1', got {type(fmt).__name__}")
    return _native.format_bits(fmt)


def gptq_quantize(w: np.ndarray, h: np.ndarray, fmt: str, group_size: int | None = 128, symmetric: bool = False,
                  scale_constraint: str | None = None, act_order: bool = False):
    """GPTQ (ALGORITHMS.md §5) of one weight ``w [out, in]`` given the Hessian ``h [in, in]`` of its inputs
    (``h = 2/n · X.T @ X``, float32; not modified). INT formats use GPTQ's grid (0 kept in range); minifloats
    absmax scales, with ``scale_constraint`` ``"m1"``/``"m2"`` applied inside the sweep. Returns
    ``(QuantizedTensor, g_idx, dequantized)``: ``g_idx [in]`` is each column's group (act-order permutes it)."""
    w = _matrix(w)
    rows, cols = w.shape
    h = _matrix(h, "h")
    if h.shape != (cols, cols):
        raise ValueError(f"h must be [{cols}, {cols}] for w of shape {w.shape}, got {h.shape}")
    opts = _options(fmt, group_size, symmetric, "gptq" if fmt.lower().startswith(("int", "uint")) else "minmax",
                    scale_constraint, cols)
    groups = _native.group_count(cols, opts[0])
    codes = np.empty((rows, cols), np.uint8)
    scales = np.empty((rows, groups), np.float32)
    zeros = np.empty((rows, groups), np.int32)
    g_idx = np.empty(cols, np.int32)
    deq = np.empty((rows, cols), np.float32)
    _native.gptq(w, h, rows, cols, fmt, opts, bool(act_order), codes, scales, zeros, g_idx, deq)
    policy = "gptq" if fmt.lower().startswith(("int", "uint")) else "minmax"
    q = QuantizedTensor(codes, scales, zeros, fmt, group_size, symmetric, policy, scale_constraint,
                        g_idx=g_idx if act_order else None)
    return q, g_idx, deq


def quantize(w: np.ndarray, fmt: str, group_size: int | None = 128, symmetric: bool = False, clip=None,
             policy: str = "minmax", scale_constraint: str | None = None, *, packed: bool = False):
    """Quantizes a float32 matrix ``w [rows, cols]`` (a Linear weight ``[out, in]``).

    Args:
        fmt: ``"int2"`` … ``"int8"``, or a minifloat name (``"e4m3fn"``, ``"e5m2"``, ``"e3m2"``, ``"e2m3"``,
            ``"e2m1"``).
        group_size: consecutive input columns that share a scale; ``None`` for one group per row. A size
            that does not divide the row leaves a shorter last group (padding is excluded from min/max).
        symmetric: symmetric grid (zero-point ``2^(N-1)-1``) instead of min/max asymmetric.
        clip: ``(up, low)`` float32 arrays ``[rows, n_groups]`` in [0, 1] that multiply each group's max and
            min (OmniQuant's Learnable Weight Clipping, ``sigmoid(u)`` and ``sigmoid(l)``).
        policy: ``"minmax"`` (OmniQuant: zero need not be in the range) or ``"gptq"`` (0 forced into the range).
        scale_constraint: ``None``, ``"m1"`` or ``"m2"``: ZeroQuant-FP's power-of-two scale constraints
            (minifloat formats only).
        packed: return ``(packed_codes, scales, zeros)`` straight from the fused quantize+pack kernel
            instead of a ``QuantizedTensor`` (the fastest path to exported weights).

    Returns:
        ``QuantizedTensor``.

    Raises:
        TypeError: ``w`` not a C-contiguous float32 array.
        ValueError: wrong rank, empty, NaN/Inf, impossible settings, unknown format.
    """
    w = _matrix(w)
    rows, cols = w.shape
    opts = _options(fmt, group_size, symmetric, policy, scale_constraint, cols)
    groups = _native.group_count(cols, opts[0])
    up, low = _clips(clip, rows, groups)
    scales = np.empty((rows, groups), dtype=np.float32)
    zeros = np.empty((rows, groups), dtype=np.int32)
    if packed:
        codes = np.empty((rows, _native.packed_size(cols, _format_bits(fmt))), dtype=np.uint8)
    else:
        codes = np.empty((rows, cols), dtype=np.uint8)
    _native.quantize(w, rows, cols, fmt, opts, up, low, codes, scales, zeros, packed)
    if packed:
        return codes, scales, zeros
    return QuantizedTensor(codes, scales, zeros, fmt, group_size, symmetric, policy, scale_constraint)


def fake_quantize(w: np.ndarray, fmt: str, group_size: int | None = 128, symmetric: bool = False, clip=None,
                  policy: str = "minmax", scale_constraint: str | None = None, out: np.ndarray | None = None):
    """``quantize(w, ...).dequantize()`` in one pass, without storing codes. ``out=w`` works in place."""
    w = _matrix(w)
    rows, cols = w.shape
    opts = _options(fmt, group_size, symmetric, policy, scale_constraint, cols)
    up, low = _clips(clip, rows, _native.group_count(cols, opts[0]))
    if out is None:
        out = np.empty_like(w)
    else:
        out = _array(out, "out", np.float32, 2)
        if out.shape != w.shape:
            raise ValueError(f"out must have the shape of w {w.shape}, got {out.shape}")
    _native.fake_quantize(w, rows, cols, fmt, opts, up, low, out)
    return out


def dequantize(q: QuantizedTensor) -> np.ndarray:
    """Same as ``q.dequantize()``."""
    return q.dequantize()


# ---- packing -----------------------------------------------------------------------------------------


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Packs uint8 codes (each < 2**bits) into one little-endian bit stream, LSB first, zero-padded to a
    byte. Returns uint8 of length ``ceil(codes.size * bits / 8)``."""
    codes = _array(codes, "codes", np.uint8)
    bits = _bits(bits)
    out = np.empty(_native.packed_size(codes.size, bits), dtype=np.uint8)
    _native.pack(codes, bits, out)
    return out


def unpack(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack`: the first ``count`` codes of the stream (uint8)."""
    packed = _array(packed, "packed", np.uint8)
    bits = _bits(bits)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count must be a non-negative int, got {count!r}")
    need = _native.packed_size(int(count), bits)
    if packed.size < need:
        raise ValueError(f"{count} codes of {bits} bits need {need} bytes, the stream has {packed.size}")
    out = np.empty(int(count), dtype=np.uint8)
    _native.unpack(packed[:need] if packed.ndim == 1 else packed.reshape(-1)[:need], bits, out)
    return out


def _bits(bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"bits must be an int, got {type(bits).__name__}")
    if not 1 <= int(bits) <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    return int(bits)


# ---- matrix products -------------------------------------------------------------------------------------


def matmul(a: np.ndarray, b: np.ndarray, *, trans_b: bool = False, out: np.ndarray | None = None) -> np.ndarray:
    """``a @ b`` (or ``a @ b.T`` with ``trans_b``, the layout of Linear weights) for C-contiguous float32
    matrices, through SwiftQuant's BLAS (see :func:`blas_info`). ``out`` receives the result if given."""
    a = _array(a, "a", np.float32, 2)
    b = _array(b, "b", np.float32, 2)
    m, k = a.shape
    n = b.shape[0] if trans_b else b.shape[1]
    kb = b.shape[1] if trans_b else b.shape[0]
    if k != kb:
        raise ValueError(f"shapes {a.shape} and {b.shape}{'.T' if trans_b else ''} do not multiply")
    if out is None:
        out = np.empty((m, n), dtype=np.float32)
    else:
        out = _array(out, "out", np.float32, 2)
        if out.shape != (m, n):
            raise ValueError(f"out must have shape {(m, n)}, got {out.shape}")
    _native.sgemm(a, b, out, m, n, k, False, trans_b)
    return out


from .models import (  # noqa: E402
    Model, OmniQuantResult, Tokenizer, default_calibration_path, gptq, load_model, omniquant, perplexity, recipe, rtn,
    smollm2_path, smoothquant)
