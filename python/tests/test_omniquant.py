"""sq.omniquant from Python: settings are checked before any work starts (the calibration itself is tested in
Swift on a tiny model, and shown on SmolLM2 by `make demo`)."""
import time

import pytest

import swiftquant as sq


@pytest.fixture(scope="module")
def smollm2(smollm2_path):
    return sq.load_model(smollm2_path)


@pytest.mark.parametrize("kwargs, exc, fragment", [
    (dict(wbits=9), ValueError, "wbits"),
    (dict(wbits=0), ValueError, "wbits"),
    (dict(wbits=3, group_size=4096), ValueError, "larger than the row"),
    (dict(wbits=3, group_size=0), ValueError, "group.size"),
    (dict(wbits=3, epochs=0), ValueError, "epochs"),
    (dict(wbits=3, nsamples=-1), ValueError, "nsamples"),
    (dict(wbits=3, preset="gpu"), ValueError, "preset"),
    (dict(wbits=3, calib="/nonexistent/calib.txt"), FileNotFoundError, "calib"),
])
def test_bad_settings_fail_fast(smollm2, kwargs, exc, fragment):
    t = time.perf_counter()
    with pytest.raises(exc, match=fragment):
        sq.omniquant(smollm2, progress=False, **kwargs)
    assert time.perf_counter() - t < 5


def test_calibration_text_shorter_than_a_window(smollm2, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("only a few words of calibration text")
    with pytest.raises(ValueError, match="fewer than one window"):
        sq.omniquant(smollm2, 3, calib=short, preset="cpu", progress=False)


def test_tiny_budget_runs_and_returns_packed_weights(smollm2, wikitext_test):
    r = sq.omniquant(smollm2, 4, group_size=64, epochs=1, nsamples=1, seqlen=64, progress=False)
    name = "model.layers.0.self_attn.q_proj.weight"
    q = r.weights[name]
    assert q.codes.shape == (576, 576) and q.scales.shape == (576, 9) and q.codes.max() <= 15
    assert (q.dequantize() == r.model.weights[name]).all()
    assert len(r.weights) == 7 * 30
    # the C ABI reports the format by name and the group size in its one spelling
    assert q.format == "int4" and q.group_size == 64


def test_gptq_settings_fail_fast_and_tiny_budget_runs(smollm2):
    with pytest.raises(ValueError, match="minifloat"):
        sq.gptq(smollm2, wformat="int4", scale_constraint="m1", progress=False)
    with pytest.raises(ValueError, match="not both"):
        sq.gptq(smollm2, wformat="int4", wbits=4, progress=False)
    assert sq.recipe("gptq", "e2m1", preset="cpu")["nsamples"] == 32
    r = sq.gptq(smollm2, wformat="e2m1", group_size=64, scale_constraint="m2", nsamples=1, seqlen=32, progress=False)
    q = r.weights["model.layers.0.mlp.up_proj.weight"]
    assert q.format == "e2m1" and q.group_size == 64
    assert (q.dequantize() == r.model.weights["model.layers.0.mlp.up_proj.weight"]).all()


def test_keep_best_and_loss_are_omniquant_recipe_keys(smollm2):
    # Their effects are tested in Swift (LETTests.testKeepBestEndsWithTheBestEpochsParameters: the best epoch's
    # parameters bit for bit; AutodiffGradCheckTests.testRelativeMSE); here: the keys, defaults and refusals.
    assert "keep_best" not in sq.recipe("omniquant", "int3", preset="cpu")
    assert sq.recipe("omniquant", "int3", preset="cpu", keep_best=True)["keep_best"] is True
    with pytest.raises(ValueError, match="keep_best"):
        sq.recipe("gptq", "int4", keep_best=True)
    assert "loss" not in sq.recipe("omniquant", "int3", preset="cpu")
    assert sq.recipe("omniquant", "int3", loss="relative")["loss"] == "relative"
    with pytest.raises(ValueError, match="mse or relative"):
        sq.recipe("omniquant", "int3", loss="l1")
    with pytest.raises(ValueError, match="OmniQuant"):
        sq.recipe("rtn", "int4", loss="relative")
    r = sq.omniquant(smollm2, 4, group_size=64, epochs=2, nsamples=1, seqlen=32, keep_best=True, loss="relative",
                     progress=False)
    assert r.options["keep_best"] is True and r.options["loss"] == "relative"
