"""Models from Python: loading (HF directories, GGUF), zero-copy weights, logits parity on tiny transformers
models, tokenizers, RTN, export and reload, hostile files. The tiny models and expected logits were written by
Tests/SwiftQuantTests/Fixtures/make_tiny_models.py with transformers."""
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

import swiftquant as sq
from conftest import REPO

FIXTURES = REPO / "Tests" / "SwiftQuantTests" / "Fixtures"
TINY = FIXTURES / "tiny"


def read_safetensors(path):
    """A plain reading of the documented format (independent of the library under test)."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    out = {}
    dtypes = {"F32": np.float32, "I32": np.int32, "I64": np.int64, "U8": np.uint8}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
    return out


@pytest.mark.parametrize("name", ["llama_gqa", "llama3_untied", "qwen2", "opt"])
def test_tiny_model_logits_match_transformers(name):
    m = sq.load_model(TINY / name)
    exp = read_safetensors(TINY / name / "expected.safetensors")
    ids = exp["input_ids"].reshape(-1).astype(np.int32)
    got = m.logits(ids)
    ref = exp["logits"].reshape(got.shape)
    err = np.abs(got - ref).max() / np.abs(ref).max()
    assert err < 1e-4, f"{name}: relative logit error {err:.2e}"


def test_weights_are_zero_copy_read_only_views():
    m = sq.load_model(TINY / "llama_gqa")
    name = "model.layers.0.self_attn.q_proj.weight"
    w = m.weights[name]
    ref = read_safetensors(TINY / "llama_gqa" / "model.safetensors")[name]
    assert w.dtype == np.float32 and w.shape == ref.shape and np.array_equal(w, ref)
    assert not m.weights.is_copy(name)
    assert not w.flags.writeable
    with pytest.raises(ValueError):
        w[0, 0] = 1.0
    # the view keeps the model alive
    del m
    assert np.array_equal(w, ref)
    assert set(sq.load_model(TINY / "llama_gqa").weights) == set(ref_names(TINY / "llama_gqa"))


def ref_names(d):
    return [k for k in read_safetensors(d / "model.safetensors")]


def test_rtn_fake_quantizes_block_linears_only(tmp_path):
    m = sq.load_model(TINY / "llama_gqa")
    q = sq.rtn(m, 4, group_size=32)
    for name in m.weights:
        if ".layers." in name and name.endswith("proj.weight"):
            expected = sq.fake_quantize(np.ascontiguousarray(m.weights[name]), "int4", group_size=32)
            assert np.array_equal(q.weights[name], expected), name
        else:
            assert np.array_equal(q.weights[name], m.weights[name]), name
    ids = np.arange(20, dtype=np.int32)
    assert not np.array_equal(q.logits(ids), m.logits(ids))
    # export, reload: the same logits; packed codes beside
    out = tmp_path / "rtn"
    q.save(out)
    files = set(os.listdir(out))
    assert {"config.json", "model.safetensors", "quantized.safetensors", "swiftquant.json"} <= files
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["swiftquant"]["method"] == "rtn" and cfg["swiftquant"]["bits"] == 4
    back = sq.load_model(out)
    assert np.array_equal(back.logits(ids), q.logits(ids))
    packed = read_safetensors(out / "quantized.safetensors")
    name = "model.layers.1.mlp.down_proj"
    w = np.ascontiguousarray(m.weights[name + ".weight"])
    ref = sq.quantize(w, "int4", group_size=32)
    assert np.array_equal(packed[name + ".qweight"], ref.pack())
    assert np.array_equal(packed[name + ".scales"], ref.scales)
    assert np.array_equal(packed[name + ".zeros"], ref.zeros.astype(np.int32))
    # writing again over our own directory is fine; over someone else's is refused
    q.save(out)
    other = tmp_path / "theirs"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not written by SwiftQuant"):
        q.save(other)
    assert (other / "notes.txt").read_text() == "keep me"
    assert not any(p.name.startswith(".") and "partial" in p.name for p in tmp_path.iterdir())


def test_perplexity_on_token_ids_matches_logits():
    m = sq.load_model(TINY / "llama_gqa")
    ids = np.random.default_rng(0).integers(0, m.vocab_size, 64).astype(np.int32)
    lg = m.logits(ids[:32]).astype(np.float64)
    lse = np.log(np.exp(lg - lg.max(1, keepdims=True)).sum(1)) + lg.max(1)
    nll = lse[:-1] - lg[np.arange(31), ids[1:32]]
    lg2 = m.logits(ids[32:]).astype(np.float64)
    lse2 = np.log(np.exp(lg2 - lg2.max(1, keepdims=True)).sum(1)) + lg2.max(1)
    nll2 = lse2[:-1] - lg2[np.arange(31), ids[33:]]
    expected = np.exp(np.concatenate([nll, nll2]).mean())
    got = sq.perplexity(m, ids=ids, seqlen=32, progress=False)
    assert abs(got - expected) / expected < 1e-5
    one = sq.perplexity(m, ids=ids, seqlen=32, limit=1, progress=False)
    assert abs(one - np.exp(nll.mean())) / one < 1e-5


def test_perplexity_never_guesses_text_or_path(tmp_path, smollm2_path):
    m = sq.load_model(smollm2_path)
    text = "The quick brown fox jumps over the lazy dog. " * 40
    f = tmp_path / "text.txt"
    f.write_text(text, encoding="utf-8")
    want = sq.perplexity(m, ids=m.tokenizer.encode(text), seqlen=64, limit=2, progress=False)
    assert sq.perplexity(m, f, seqlen=64, limit=2, progress=False) == want           # os.PathLike
    assert sq.perplexity(m, str(f), seqlen=64, limit=2, progress=False) == want      # str: a path
    assert sq.perplexity(m, text=text, seqlen=64, limit=2, progress=False) == want
    # A string that is not an existing file is a missing file, never text.
    missing = tmp_path / "a" / "path" / "that" / "does" / "not" / "exist.txt"
    with pytest.raises(FileNotFoundError) as e:
        sq.perplexity(m, str(missing), seqlen=64, progress=False)
    assert e.value.filename == str(missing)
    with pytest.raises(FileNotFoundError):
        sq.perplexity(m, text[:200], seqlen=64, progress=False)
    # Exactly one source.
    with pytest.raises(TypeError, match="exactly one"):
        sq.perplexity(m, seqlen=64)
    with pytest.raises(TypeError, match="exactly one"):
        sq.perplexity(m, f, text=text)
    with pytest.raises(TypeError, match="exactly one"):
        sq.perplexity(m, text=text, ids=[1, 2, 3])
    with pytest.raises(TypeError, match="ids="):
        sq.perplexity(m, np.arange(100, dtype=np.int32))
    with pytest.raises(TypeError, match="text must be str"):
        sq.perplexity(m, text=b"bytes")
    with pytest.raises(TypeError, match="integers"):
        sq.perplexity(m, ids=np.ones(100, np.float32))


@pytest.mark.parametrize("kind", ["gpt2", "llama3", "qwen2", "sp"])
def test_tokenizer_from_file_matches_tokenizers(kind):
    cases = json.loads((FIXTURES / "tokenizer_cases.json").read_text())[kind]
    tok = sq.Tokenizer.from_file(FIXTURES / f"tokenizer_{kind}.json")
    checked = 0
    for case in cases:
        if "partial" in case:  # decode-only cases (cut and reversed id lists)
            for p in case["partial"]:
                assert tok.decode(p["ids"]) == p["decoded"]
            continue
        ids = tok.encode(case["text"])
        assert ids.dtype == np.int32
        assert ids.tolist() == case["ids"], case["text"]
        assert tok.decode(ids) == case.get("decoded", case["text"])  # absent when equal to the text
        checked += 1
    assert checked > 50


def test_bad_files_raise_format_error(tmp_path):
    good = (TINY / "llama_gqa" / "model.safetensors").read_bytes()
    d = tmp_path / "broken"
    d.mkdir()
    (d / "config.json").write_text((TINY / "llama_gqa" / "config.json").read_text())
    (d / "model.safetensors").write_bytes(good[: len(good) // 2])
    with pytest.raises(sq.FormatError, match="model.safetensors") as info:
        sq.load_model(d)
    assert isinstance(info.value, ValueError)
    g = tmp_path / "bad.gguf"
    g.write_bytes(b"GGUF" + struct.pack("<I", 99) + b"\0" * 32)
    with pytest.raises(sq.FormatError, match="bad.gguf"):
        sq.load_model(g)
    g.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1 << 40) + b"ab")
    with pytest.raises(sq.FormatError, match="bad.gguf"):
        sq.load_model(g)
    with pytest.raises(OSError):
        sq.load_model(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(sq.FormatError, match="neither"):
        sq.load_model(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        sq.load_model(TINY / "llama_gqa").logits([0, 10**6])


def test_smollm2_gguf(smollm2_path, wikitext_test):
    assert sq.smollm2_path() == smollm2_path or os.path.samefile(sq.smollm2_path(), smollm2_path)
    m = sq.load_model(smollm2_path)
    assert m.config["num_hidden_layers"] == 30 and m.config["num_key_value_heads"] == 3
    ids = m.tokenizer.encode(wikitext_test.read_text(encoding="utf-8"))
    assert ids.size == 304_986
    assert m.weights.is_copy("model.layers.0.mlp.up_proj.weight")  # Q4_1 blocks are converted
    assert m.weights["model.embed_tokens.weight"].shape == (49152, 576)
