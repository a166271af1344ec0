"""Weight-activation quantization, LoRC, act-order, SmoothQuant, LET and one-matrix GPTQ through the Python API."""
import json

import numpy as np
import pytest

import swiftquant as sq
from conftest import REPO

TINY = REPO / "Tests" / "SwiftQuantTests" / "Fixtures" / "tiny"


def ids(m, n=24, seed=3):
    return np.random.default_rng(seed).integers(0, m.vocab_size, n).astype(np.int32)


@pytest.mark.parametrize("family", ["llama_gqa", "opt"])
def test_activation_settings_survive_save_and_load(tmp_path, family):
    m = sq.load_model(TINY / family)
    q = sq.rtn(m, wbits=4, group_size=16, abits=6, kv_bits=4)
    assert q.quantization["aformat"] == "int6" and q.quantization["kv_format"] == "int4"
    x = ids(m)
    before = q.logits(x)
    assert not np.array_equal(before, sq.rtn(m, wbits=4, group_size=16).logits(x)), "activations must matter"
    q.save(tmp_path / "out")
    back = sq.load_model(tmp_path / "out")
    assert back.config["swiftquant"]["aformat"] == "int6"
    np.testing.assert_array_equal(back.logits(x), before)


def test_kv_bits_none_keeps_attention_fp():
    m = sq.load_model(TINY / "llama_gqa")
    r = sq.recipe("rtn", "int4", 16, aformat="e4m3fn", kv_bits="none")
    assert r["aformat"] == "e4m3fn" and r["kv_format"] is None
    assert sq.rtn(m, wbits=4, group_size=16, aformat="e4m3fn", kv_bits=None).quantization["kv_format"] is None
    assert sq.rtn(m, wbits=4, group_size=16, aformat="e4m3fn").quantization["kv_format"] == "e4m3fn"


@pytest.mark.parametrize("kwargs, message", [
    (dict(wbits=4, abits=1), "abits"),
    (dict(wbits=4, abits=17), "abits"),
    (dict(wbits=4, abits=8, aformat="e4m3fn"), "not both"),
    (dict(wbits=4, aformat="fp9"), "format"),
    (dict(wformat="e2m1", wbits=4), "not both"),
    (dict(wbits=4, scale_constraint="m1"), "minifloat"),
    (dict(wbits=4, group_size=100000), "larger than the row"),
])
def test_bad_settings_fail_before_any_work(kwargs, message):
    m = sq.load_model(TINY / "llama_gqa")
    with pytest.raises(ValueError, match=message):
        sq.rtn(m, **kwargs)


def test_gptq_lorc_act_order_and_let_refusals(smollm2_path):
    m = sq.load_model(smollm2_path)
    with pytest.raises(ValueError, match="lorc_rank"):
        sq.gptq(m, wbits=4, group_size=64, lorc_rank=10**6, nsamples=1, seqlen=32)
    with pytest.raises(ValueError, match="let_down"):
        sq.omniquant(m, 4, abits=4, let=False, let_down=True, nsamples=1, seqlen=32)
    with pytest.raises(ValueError, match="abits or aformat"):
        sq.recipe("smoothquant", "int8", None)
    with pytest.raises(ValueError, match="rtn or gptq"):
        sq.smoothquant(m, wbits=8, abits=8, nsamples=1, seqlen=32, weight_rounding="nearest")
    with pytest.raises(ValueError, match="method gptq"):
        sq.recipe("gptq", "int4", 128, weight_rounding="gptq")


def test_gptq_quantize_with_identity_hessian_is_rtn():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((40, 96)).astype(np.float32)
    for fmt in ("int4", "e2m1"):
        q, g_idx, deq = sq.gptq_quantize(w, np.eye(96, dtype=np.float32), fmt, group_size=32)
        r = sq.quantize(w, fmt, group_size=32, policy="gptq" if fmt.startswith("int") else "minmax")
        np.testing.assert_array_equal(q.codes, r.codes)
        np.testing.assert_array_equal(q.scales, r.scales)
        np.testing.assert_array_equal(g_idx, np.arange(96) // 32)
        np.testing.assert_array_equal(deq, r.dequantize())
    with pytest.raises(ValueError):
        sq.gptq_quantize(w, np.eye(95, dtype=np.float32), "int4")


def test_gptq_act_order_tensor_carries_g_idx():
    """With act-order the groups are not consecutive columns: the QuantizedTensor keeps g_idx, and its
    dequantize() reproduces GPTQ's own dequantized matrix bit for bit."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((24, 96)).astype(np.float32)
    x = rng.standard_normal((256, 96)).astype(np.float32) * np.linspace(0.1, 3.0, 96, dtype=np.float32)[::-1]
    h = (2.0 / 256 * x.T @ x).astype(np.float32)
    for fmt in ("int4", "e2m1"):
        q, g_idx, deq = sq.gptq_quantize(w, h, fmt, group_size=32, act_order=True)
        assert q.g_idx is not None and not np.array_equal(g_idx, np.arange(96) // 32), fmt
        np.testing.assert_array_equal(q.g_idx, g_idx)
        np.testing.assert_array_equal(q.dequantize(), deq, err_msg=fmt)
        assert np.bincount(g_idx, minlength=3).tolist() == [32, 32, 32]
        plain, _, _ = sq.gptq_quantize(w, h, fmt, group_size=32)
        assert plain.g_idx is None
    with pytest.raises(ValueError, match="g_idx"):
        sq.QuantizedTensor(q.codes, q.scales, q.zeros, "int4", 32, g_idx=np.full(96, 3, np.int32))
    with pytest.raises(ValueError, match="g_idx"):
        sq.QuantizedTensor(q.codes, q.scales, q.zeros, "int4", 32, g_idx=np.zeros(95, np.int32))


def test_lorc_act_order_smoothquant_and_let_round_trip(tmp_path, smollm2_path):
    """Tiny budgets on the real model (the calibration text needs its tokenizer): each result reloads with
    bit-identical logits (LoRC factors, g_idx, folded norms/biases and activation settings come back)."""
    m = sq.load_model(smollm2_path)
    x = ids(m, 16)
    runs = {
        "gptq": sq.gptq(m, wbits=4, group_size=64, act_order=True, lorc_rank=4, nsamples=1, seqlen=32,
                        progress=False),
        "smoothquant": sq.smoothquant(m, wbits=8, abits=8, nsamples=1, seqlen=32, progress=False),
        "smoothquant_gptq": sq.smoothquant(m, wbits=8, abits=8, nsamples=1, seqlen=32, progress=False,
                                           weight_rounding="gptq"),
        "let": sq.omniquant(m, 4, group_size=None, abits=8, let=True, epochs=1, nsamples=1, seqlen=32,
                            progress=False),
        # LET shifts on a Llama-family model: new RMSNorm and q/k/v/o/gate/up biases, which only SwiftQuant loads
        "let_shifts": sq.omniquant(m, 4, group_size=32, let=True, let_shifts=True, epochs=1, nsamples=1, seqlen=32,
                                   progress=False),
    }
    assert runs["gptq"].model.quantization["lorc_rank"] == 4
    assert runs["smoothquant_gptq"].model.quantization["weight_rounding"] == "gptq"
    name = "model.layers.0.self_attn.q_proj.weight"  # same smoothing, same grid, GPTQ's codes
    a, b = runs["smoothquant"].weights[name], runs["smoothquant_gptq"].weights[name]
    np.testing.assert_array_equal(a.scales, b.scales)
    assert not np.array_equal(a.codes, b.codes)
    # act-order's weights carry their column groups, and dequantize to the model's (fake-quantized) weights.
    weights = runs["gptq"].weights
    permuted = [n for n, q in weights.items() if q.g_idx is not None]
    assert permuted, "act-order produced no g_idx"
    for n in permuted[:3]:
        np.testing.assert_array_equal(weights[n].dequantize(), runs["gptq"].model.weights[n], err_msg=n)
    for name, res in runs.items():
        before = res.model.logits(x)
        assert np.isfinite(before).all(), name
        res.save(tmp_path / name)
        back = sq.load_model(tmp_path / name)
        np.testing.assert_array_equal(back.logits(x), before, err_msg=name)
    assert sq.load_model(tmp_path / "gptq").config["swiftquant"]["lorc_rank"] == 4
    shifted = sq.load_model(tmp_path / "let_shifts")
    assert "model.layers.0.input_layernorm.bias" in shifted.weights
    assert "model.layers.0.self_attn.o_proj.bias" in shifted.weights
    for fmt in ("gguf", "gptq"):
        with pytest.raises(NotImplementedError, match="RMSNorm.*let_shifts"):
            runs["let_shifts"].save(tmp_path / f"shifted-{fmt}", format=fmt, requantize=True, progress=False)
        assert not (tmp_path / f"shifted-{fmt}").exists()


def test_down_proj_cost_benchmark_quantizes_as_the_core(monkeypatch):
    """benchmarks/down_proj_cost.py re-implements the per-token activation quantizer in NumPy; its numbers are
    only evidence if that quantizer is SwiftQuant's, bit for bit (heavy-tailed rows, as the down_proj input)."""
    monkeypatch.syspath_prepend(str(REPO / "python" / "benchmarks"))
    from down_proj_cost import quantize_rows
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((129, 1536)) * rng.standard_normal((129, 1536)) ** 3).astype(np.float32)
    x[3] = 0.0                        # a constant row: h at its 1e-5 floor
    x[5, :] = np.abs(x[5, :]) + 1.0   # an all-positive row: the zero point leaves the grid
    for bits in (2, 4, 6, 8):
        ours = quantize_rows(x, bits)
        core = sq.fake_quantize(x, f"int{bits}", group_size=None)
        assert np.array_equal(ours, core), f"int{bits}: {np.count_nonzero(ours != core)} values differ"
        assert np.count_nonzero(ours != x) > x.size // 2   # it quantized


def test_wa_breakdown_reproduces_the_fused_model(tmp_path, smollm2_path, monkeypatch):
    """benchmarks/wa_breakdown.py prices each activation quantizer of a W-A model in its own NumPy forward: its
    rows are evidence only if that forward is SwiftQuant's model (FP, and fused with every quantizer on) and its
    folding of the learned LET scales is exact. On SmolLM2's first two blocks (real weights and tokenizer): over
    30 blocks, float-level differences flip 6-bit roundings and the flips compound (the perplexities still agree
    to 0.2% on 4 WikiText-2 windows), so logits are compared where they can be exact."""
    monkeypatch.syspath_prepend(str(REPO / "python" / "benchmarks"))
    from wa_breakdown import SITES, setup
    full = tmp_path / "smollm2"
    sq.load_model(smollm2_path).save(full)
    config = json.loads((full / "config.json").read_text())
    config["num_hidden_layers"] = 2
    (full / "config.json").write_text(json.dumps(config))
    r = sq.omniquant(full, 6, abits=6, group_size=None, let_down=True, epochs=2, nsamples=2, seqlen=64,
                     resume=tmp_path / "work", progress=False)
    r.save(tmp_path / "model")
    net, fp, transformed, quantized, fused = setup(full, tmp_path / "work", tmp_path / "model")
    assert net.layers == 2
    x = np.asarray(fused.tokenizer.encode("The tower is 324 metres tall, about the same height as an 81-storey "
                                          "building, and the tallest structure in Paris."), dtype=np.int32)

    def logits(weights, sites=()):
        net.w, net.sites = weights, set(sites)
        return net.logits(x)

    def rel(a, b):
        return float(np.linalg.norm(a - b) / np.linalg.norm(b))

    plain = logits(fp)
    assert rel(plain, sq.load_model(full).logits(x)) < 1e-5
    for name in ("model.layers.1.mlp.down_proj.weight", "model.layers.1.self_attn.q_proj.weight"):
        assert rel(transformed[name], fp[name]) > 0.05, f"{name}: LET moved nothing, the next check would be empty"
    assert rel(logits(transformed), plain) < 1e-5           # folding the learned scales is exact
    every, want = logits(quantized, SITES), fused.logits(x)
    # The fused model with every quantizer on, position by position: float-level differences between the two
    # forwards may flip a 6-bit rounding of one token's activations, which moves that position alone (measured:
    # 3 of 31 positions by 3e-3..1e-2, the others within 5e-7); a wrong quantizer or site moves every position.
    per = np.linalg.norm(every - want, axis=1) / np.linalg.norm(want, axis=1)
    assert np.mean(per < 1e-5) >= 0.8 and per.max() < 5e-2, f"the fused model with every quantizer on: {per}"
    assert rel(every, plain) > 1e-3
    for site in SITES:                                      # each site alone does something
        assert rel(logits(transformed, (site,)), plain) > 1e-4, site
