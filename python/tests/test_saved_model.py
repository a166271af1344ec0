"""A saved model is complete: a model saved from the SmolLM2 GGUF (which carries no tokenizer files) has config,
weights, generation_config.json and a tokenizer that other tools read with the same ids as SwiftQuant's own.

Checked with the real readers when installed: `transformers` (AutoTokenizer, and AutoModelForCausalLM when torch is
there) or else the `tokenizers` library (the Makefile's venv has it); without either the parity tests skip and
say why. The GGUF metadata the expectations come from is read with the `gguf` package, not with SwiftQuant.
Also: the tokenizer.json files TokenizerTests writes for every fixture tokenizer (SWIFTQUANT_TOKENIZER_JSON_OUT,
set by `make test`) give the `tokenizers` library the fixtures' reference ids.
"""
import json
import os
import subprocess

import numpy as np
import pytest

import swiftquant as sq
from conftest import REPO

FIXTURES = REPO / "Tests" / "SwiftQuantTests" / "Fixtures"


def _optional(name):
    try:
        return __import__(name)
    except Exception as e:  # noqa: BLE001 - any import failure means "not usable here"
        print(f"note: {name} is not importable here ({type(e).__name__}: {e})")
        return None


def _gguf_metadata(path):
    gguf = pytest.importorskip("gguf")
    r = gguf.GGUFReader(path)
    out = {}
    for key in ("tokenizer.chat_template", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                "tokenizer.ggml.padding_token_id", "tokenizer.ggml.unknown_token_id",
                "tokenizer.ggml.add_bos_token", "llama.context_length"):
        f = r.fields.get(key)
        if f is not None:
            out[key] = f.contents()
    out["tokens"] = r.fields["tokenizer.ggml.tokens"].contents()
    return out


def _first_difference(a, b):
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


@pytest.fixture(scope="module")
def saved(smollm2_path, tmp_path_factory):
    """SmolLM2 GGUF → RTN W4 g64 → save (the path every save takes)."""
    out = tmp_path_factory.mktemp("saved") / "smollm2-rtn-w4g64"
    m = sq.load_model(smollm2_path)
    q = sq.rtn(m, 4, group_size=64)
    q.save(out)
    return out, m, q


@pytest.fixture(scope="module")
def wiki_text(wikitext_test):
    return wikitext_test.read_text(encoding="utf-8")


def test_saved_directory_has_every_file(saved, smollm2_path):
    out, m, _ = saved
    files = set(os.listdir(out))
    assert {"config.json", "model.safetensors", "quantized.safetensors", "swiftquant.json", "generation_config.json",
            "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} <= files, files
    meta = _gguf_metadata(smollm2_path)
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen == {"bos_token_id": int(meta["tokenizer.ggml.bos_token_id"]),
                   "eos_token_id": int(meta["tokenizer.ggml.eos_token_id"]),
                   "pad_token_id": int(meta["tokenizer.ggml.padding_token_id"])}
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    tokens = meta["tokens"]
    assert cfg["bos_token"] == tokens[int(meta["tokenizer.ggml.bos_token_id"])]
    assert cfg["eos_token"] == tokens[int(meta["tokenizer.ggml.eos_token_id"])]
    assert cfg["pad_token"] == tokens[int(meta["tokenizer.ggml.padding_token_id"])]
    assert cfg["unk_token"] == tokens[int(meta["tokenizer.ggml.unknown_token_id"])]
    assert cfg["add_bos_token"] == bool(meta["tokenizer.ggml.add_bos_token"])
    assert cfg["chat_template"] == meta["tokenizer.chat_template"]
    assert cfg["model_max_length"] == int(meta["llama.context_length"])
    assert json.loads((out / "special_tokens_map.json").read_text())["eos_token"] == cfg["eos_token"]
    # Loads back with its tokenizer: the same ids as the GGUF's on a sentence with special tokens.
    back = sq.load_model(out)
    s = "<|im_start|>user\nHello, world! 12345<|im_end|>\n"
    assert back.tokenizer.encode(s).tolist() == m.tokenizer.encode(s).tolist()


def test_saved_tokenizer_swiftquant_parity_on_wikitext(saved, wiki_text):
    out, m, _ = saved
    want = m.tokenizer.encode(wiki_text)
    assert want.size == 304_986
    for tok in (sq.Tokenizer.from_file(out / "tokenizer.json"), sq.load_model(out).tokenizer):
        got = tok.encode(wiki_text)
        assert np.array_equal(got, want)
        assert tok.decode(got) == wiki_text


def test_saved_tokenizer_transformers_or_tokenizers_parity(saved, wiki_text, smollm2_path):
    out, m, _ = saved
    want = m.tokenizer.encode(wiki_text).tolist()
    meta = _gguf_metadata(smollm2_path)
    transformers = _optional("transformers")
    if transformers is not None:
        tok = transformers.AutoTokenizer.from_pretrained(out)
        got = tok(wiki_text)["input_ids"]
        assert got == want, f"transformers: {len(got)} ids, SwiftQuant {len(want)}, first difference at " \
            f"{_first_difference(got, want)}"
        assert tok.decode(got) == wiki_text
        tokens = meta["tokens"]
        assert tok.bos_token == tokens[int(meta["tokenizer.ggml.bos_token_id"])]
        assert tok.eos_token == tokens[int(meta["tokenizer.ggml.eos_token_id"])]
        assert tok.pad_token == tokens[int(meta["tokenizer.ggml.padding_token_id"])]
        assert tok.unk_token == tokens[int(meta["tokenizer.ggml.unknown_token_id"])]
        assert tok.chat_template == meta["tokenizer.chat_template"]
        chat = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                       add_generation_prompt=True)
        assert chat.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        assert tok(chat)["input_ids"] == m.tokenizer.encode(chat).tolist()
        return
    tokenizers = _optional("tokenizers")
    if tokenizers is None:
        pytest.skip("neither transformers nor tokenizers is installed: the saved tokenizer.json was not checked "
                    "by an independent reader")
    tok = tokenizers.Tokenizer.from_file(str(out / "tokenizer.json"))
    got = tok.encode(wiki_text).ids
    assert got == want, f"tokenizers: {len(got)} ids, SwiftQuant {len(want)}, first difference at " \
        f"{_first_difference(got, want)}"
    assert tok.decode(got, skip_special_tokens=False) == wiki_text
    chat = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.encode(chat).ids == m.tokenizer.encode(chat).tolist()
    assert tok.token_to_id(json.loads((out / "tokenizer_config.json").read_text())["eos_token"]) == \
        int(meta["tokenizer.ggml.eos_token_id"])


def test_saved_model_loads_in_transformers(saved):
    out, _, q = saved
    transformers = _optional("transformers")
    torch = _optional("torch")
    if transformers is None or torch is None:
        pytest.skip("transformers + torch are not installed here (the Makefile's venv has neither)")
    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    ids = transformers.AutoTokenizer.from_pretrained(out)("The capital of France is")["input_ids"]
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()
    got = q.logits(np.array(ids, np.int32))
    assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-4


def _cli():
    for p in (os.environ.get("SWIFTQUANT_CLI", ""), REPO / ".build" / "release" / "swiftquant"):
        if p and os.path.isfile(p) and os.access(p, os.X_OK):
            return str(p)
    return None


def test_cli_eval_runs_on_saved_directory(saved, wikitext_test):
    out, _, q = saved
    cli = _cli()
    if cli is None:
        pytest.skip("swiftquant CLI not found (set SWIFTQUANT_CLI or build with swift build -c release)")
    r = subprocess.run([cli, "eval", "--model", str(out), "--data", str(wikitext_test), "--seqlen", "256",
                        "--limit", "2", "--json", "--quiet"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    want = sq.perplexity(q, wikitext_test, seqlen=256, limit=2, progress=False)
    assert rep["windows"] == 2 and rep["tokens_in_text"] == 304_986
    assert abs(rep["perplexity"] - want) / want < 1e-4


def test_written_tokenizer_json_matches_tokenizers_on_fixtures():
    """tokenizer.json files written by TokenizerJSONWriter (TokenizerTests, SWIFTQUANT_TOKENIZER_JSON_OUT) for the
    fixture tokenizers, read by the `tokenizers` library (and by transformers' AutoTokenizer when installed): its
    ids and decodes equal the fixtures' references (`tokenizers` on the original files; `sentencepiece` for the
    GGUF "llama" vocabulary, whose merges the writer derives from scores)."""
    d = os.environ.get("SWIFTQUANT_TOKENIZER_JSON_OUT", str(REPO / ".build" / "interop-tokenizers"))
    if not os.path.isdir(d):
        pytest.skip(f"{d} was not written (run the Swift TokenizerTests with SWIFTQUANT_TOKENIZER_JSON_OUT, as make "
                    "test does)")
    tokenizers = pytest.importorskip("tokenizers")
    cases = json.loads((FIXTURES / "tokenizer_cases.json").read_text())
    for name in ("gpt2", "llama3", "qwen2", "sp", "sp_metaspace"):
        tok = tokenizers.Tokenizer.from_file(os.path.join(d, name, "tokenizer.json"))
        checked = 0
        for c in cases[name]:
            if "partial" in c:
                for p in c["partial"]:
                    assert tok.decode(p["ids"], skip_special_tokens=False) == p["decoded"], (name, p["ids"])
                continue
            assert tok.encode(c["text"]).ids == c["ids"], (name, c["text"])
            assert tok.decode(c["ids"], skip_special_tokens=False) == c.get("decoded", c["text"]), (name, c["text"])
            checked += 1
        assert checked > 50
    g = json.loads((FIXTURES / "gguf_llama_cases.json").read_text())
    tok = tokenizers.Tokenizer.from_file(os.path.join(d, "gguf_llama", "tokenizer.json"))
    assert len(g["cases"]) > 50
    for c in g["cases"]:
        assert tok.encode(c["text"]).ids == c["ids"], c["text"]
        assert tok.decode(c["ids"], skip_special_tokens=True) == c["decoded"], c["text"]
    # The same directories through transformers (tokenizer.json + tokenizer_config.json; BOS added once).
    transformers = _optional("transformers")
    if transformers is None:
        return
    for name in ("gpt2", "llama3", "qwen2", "sp", "sp_metaspace"):
        tok = transformers.AutoTokenizer.from_pretrained(os.path.join(d, name))
        for c in cases[name]:
            if "partial" not in c:
                assert tok(c["text"])["input_ids"] == c["ids"], (name, c["text"])
                assert tok.decode(c["ids"]) == c.get("decoded", c["text"]), (name, c["text"])
    tok = transformers.AutoTokenizer.from_pretrained(os.path.join(d, "gguf_llama"))
    for c in g["cases"]:
        assert tok(c["text"])["input_ids"] == c["ids"], c["text"]


def test_cli_weight_rounding(tmp_path, smollm2_path, wikitext_test):
    """`--weight-rounding gptq` reaches the recipe (SmoothQuant W8A8 with GPTQ weights, saved and reloaded); a bad
    value fails before any work and writes nothing."""
    cli = _cli()
    if cli is None:
        pytest.skip("swiftquant CLI not found (set SWIFTQUANT_CLI or build with swift build -c release)")
    common = [cli, "quantize", "--model", str(smollm2_path), "--method", "smoothquant", "--wbits", "8", "--abits", "8",
              "--group-size", "per-row", "--nsamples", "1", "--seqlen", "32", "--calib", str(wikitext_test)]
    bad = subprocess.run(common + ["--weight-rounding", "nearest", "--out", str(tmp_path / "bad")],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "rtn or gptq" in bad.stderr, bad.stderr
    assert not (tmp_path / "bad").exists()
    ok = subprocess.run(common + ["--weight-rounding", "gptq", "--out", str(tmp_path / "ok")],
                        capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0, ok.stderr
    back = sq.load_model(tmp_path / "ok")
    recipe = json.loads(json.loads((tmp_path / "ok" / "swiftquant.json").read_text())["recipe"])
    assert recipe["weight_rounding"] == "gptq"
    assert back.config["swiftquant"]["aformat"] == "int8"
