"""OmniQuant outputs of every calibratable family (tiny Llama-GQA, Qwen2, OPT), written by the Swift test
OmniQuantTests (SWIFTQUANT_TINY_EXPORT_OUT, set by `make test`): each is a plain Hugging Face directory that
SwiftQuant reloads with the same fused weights, and that transformers loads with the same logits when it is
installed (it is not in the test venv: run this file with a venv that has torch + transformers to check that)."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

import swiftquant as sq
from conftest import REPO
from test_models import read_safetensors

OUT = os.environ.get("SWIFTQUANT_TINY_EXPORT_OUT", str(REPO / ".build" / "interop-tiny-omniquant"))
TINY = REPO / "Tests" / "SwiftQuantTests" / "Fixtures" / "tiny"
FAMILIES = ["llama_gqa", "qwen2", "opt"]


def exported(name):
    d = Path(OUT) / name
    if not (d / "config.json").exists():
        pytest.skip(f"{d} was not written (run the Swift tests with SWIFTQUANT_TINY_EXPORT_OUT, as make test does)")
    return d


@pytest.mark.parametrize("name", FAMILIES)
def test_omniquant_output_reloads_with_its_fused_weights(name):
    d = exported(name)
    meta = json.loads((d / "swiftquant.json").read_text())
    assert meta["method"] == "omniquant"
    m = sq.load_model(d)
    weights = read_safetensors(d / "model.safetensors")
    src = read_safetensors(TINY / name / "model.safetensors")
    changed = [k for k in weights if k in src and not np.array_equal(weights[k], src[k])]
    assert changed and all((".layers." in k) for k in changed), "only block linears are quantized"
    for k in changed:
        np.testing.assert_array_equal(m.weights[k], weights[k])
        # 3-bit grid: at most 8 distinct values per row group (groups of 16 columns)
        w = weights[k]
        groups = w.reshape(w.shape[0], -1, 16) if w.shape[1] % 16 == 0 else w[:, :16][:, None, :]
        assert max(len(np.unique(g)) for row in groups for g in row) <= 8
    exp = read_safetensors(TINY / name / "expected.safetensors")
    ids = exp["input_ids"].reshape(-1).astype(np.int32)
    assert np.isfinite(m.logits(ids)).all()


@pytest.mark.parametrize("name", FAMILIES)
def test_transformers_loads_the_omniquant_output(name):
    d = exported(name)
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(d), torch_dtype=torch.float32)
    model.eval()
    exp = read_safetensors(TINY / name / "expected.safetensors")
    ids = exp["input_ids"].reshape(-1).astype(np.int64)
    with torch.no_grad():
        ref = model(input_ids=torch.from_numpy(ids)[None]).logits[0].numpy()
    got = sq.load_model(d).logits(ids.astype(np.int32))
    assert np.abs(got - ref).max() / np.abs(ref).max() <= 1e-4
