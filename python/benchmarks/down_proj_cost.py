"""What quantizing the down projection's input costs, and how much a per-channel scale wins back at best.

An independent NumPy forward of SmolLM2-135M (weights and tokenizer read through ``swiftquant``, everything else
plain NumPy) with every tensor FP except the down_proj input of every block, which goes through
the per-token asymmetric MinMax quantizer of ALGORITHMS.md §1/§2b (INT ``--bits``, 6 by default). Rows:

- ``FP``: no quantizer; checked against ``sq.perplexity`` on the same windows (the forward is right). This pass
  also counts, per block, in how many channels the tokens' largest values sit: what a per-channel scale can reach.
- ``down_proj input, no transform``: what W6A6 pays there before LET.
- ``... smoothed, alpha a``: the input divided per channel by ``s_j = max_t |x_tj|^a`` (and down_proj's columns
  multiplied by it, which is exact because ``silu(gate) * up`` is linear in ``up``). The maxima come from the
  evaluation windows themselves (an oracle) and the weights stay FP, so the scale costs nothing on the weight side:
  a best case for the up → down pair (``let_down``) and for SmoothQuant-style scales.
- With ``--wbits N``, down_proj's weights are quantized too (after the scale is folded into its columns): per output
  row, INT N, the same MinMax formula (RTN, no clipping). Then the rows show the trade-off a scale on this pair
  faces: what it takes out of the per-token input range it puts into the per-row weight range. A row
  ``down_proj weights only`` (input FP) is added.

Run from the repository: ``python python/benchmarks/down_proj_cost.py [--windows 4] [--bits 6] [--wbits 6]``. Needs
WikiText-2 in ``../shared/data/wikitext-2-raw``; exits 0 with a message when it is absent. About 20 s per window
and row on 2 cores.
"""
import argparse
import sys
import time

import numpy as np

from _common import cpu_name, find_wikitext


def quantize_rows(x, bits):
    """ALGORITHMS.md §1 without LWC, per row (token): min/max of the row (0 not forced in), h clamped to
    [1e-5, 1e4], plain-rounded zero point, codes clamped to [0, 2^bits - 1]; NumPy rounds half to even."""
    top = 2 ** bits - 1
    xmax, xmin = x.max(-1, keepdims=True), x.min(-1, keepdims=True)
    h = np.clip((xmax - xmin) / top, 1e-5, 1e4)
    z = np.round(np.clip(-xmin / h, -1e4, 1e4))
    return ((np.clip(np.round(x / h) + z, 0, top) - z) * h).astype(np.float32)


def window_nll(logits, tokens):
    """Summed next-token NLL of a window from its logits ``[tokens, vocab]``."""
    logits = logits - logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -float(logp[np.arange(len(tokens) - 1), tokens[1:]].sum())


class Llama:
    def __init__(self, model, heads, kv_heads, eps, theta):
        self.w = {k: model.weights[k] for k in model.weights}
        self.layers = sum(1 for k in self.w if k.endswith("input_layernorm.weight"))
        self.h, self.kv, self.eps, self.theta = heads, kv_heads, eps, theta
        self.d = self.w["model.layers.0.self_attn.q_proj.weight"].shape[0] // heads
        self.head = self.w.get("lm_head.weight", self.w["model.embed_tokens.weight"])

    def norm(self, x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * w

    def rope(self, x):
        t, d = x.shape[1], self.d
        ang = np.arange(t)[:, None] * self.theta ** (-np.arange(0, d, 2) / d)[None]
        ang = np.concatenate([ang, ang], 1)
        rot = np.concatenate([-x[..., d // 2:], x[..., :d // 2]], -1)
        return x * np.cos(ang).astype(np.float32) + rot * np.sin(ang).astype(np.float32)

    def logits(self, tokens, hook=None, down_weight=None):
        """Logits ``[tokens, vocab]`` of one window. ``hook(site, layer, x)`` may replace the tensor at each site:
        ``"qkv"`` (the q/k/v input), ``"q"``, ``"k"``, ``"v"`` (``[heads, tokens, head_dim]``, Q and K after RoPE, K
        and V before the query groups share them), ``"o"``, ``"fc1"`` (the gate/up input), ``"down"``;
        ``down_weight[layer]`` (if given) replaces each down_proj weight."""
        t, w = len(tokens), self.w

        def at(site, i, x):
            return x if hook is None else hook(site, i, x)

        x = w["model.embed_tokens.weight"][tokens].astype(np.float32)
        mask = np.triu(np.full((t, t), -np.inf, np.float32), 1)
        for i in range(self.layers):
            p = f"model.layers.{i}."
            a = at("qkv", i, self.norm(x, w[p + "input_layernorm.weight"]))
            q = (a @ w[p + "self_attn.q_proj.weight"].T).reshape(t, self.h, self.d).transpose(1, 0, 2)
            k = (a @ w[p + "self_attn.k_proj.weight"].T).reshape(t, self.kv, self.d).transpose(1, 0, 2)
            v = (a @ w[p + "self_attn.v_proj.weight"].T).reshape(t, self.kv, self.d).transpose(1, 0, 2)
            q, k, v = at("q", i, self.rope(q)), at("k", i, self.rope(k)), at("v", i, v)
            k, v = np.repeat(k, self.h // self.kv, 0), np.repeat(v, self.h // self.kv, 0)
            s = q @ k.transpose(0, 2, 1) / np.sqrt(self.d) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            att = at("o", i, (s @ v).transpose(1, 0, 2).reshape(t, -1))
            x = x + att @ w[p + "self_attn.o_proj.weight"].T
            a = at("fc1", i, self.norm(x, w[p + "post_attention_layernorm.weight"]))
            g, u = a @ w[p + "mlp.gate_proj.weight"].T, a @ w[p + "mlp.up_proj.weight"].T
            m = at("down", i, g / (1 + np.exp(-g)) * u)
            wd = w[p + "mlp.down_proj.weight"] if down_weight is None else down_weight[i]
            x = x + m @ wd.T
        return self.norm(x, w["model.norm.weight"]) @ self.head.T

    def nll(self, tokens, down_input=None, down_weight=None):
        """Summed next-token NLL of one window; ``down_input(layer, x)`` replaces each down_proj input and
        ``down_weight[layer]`` (if given) each down_proj weight."""
        hook = None if down_input is None else (lambda site, i, x: down_input(i, x) if site == "down" else x)
        return window_nll(self.logits(tokens, hook, down_weight), tokens)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--windows", type=int, default=4, help="WikiText-2 test windows of 2048 tokens (default 4)")
    ap.add_argument("--bits", type=int, default=6, help="activation bits of the down_proj input (default 6)")
    ap.add_argument("--alphas", default="0.5,0.75,1", help="migration strengths to try (comma-separated)")
    ap.add_argument("--wbits", type=int, default=None,
                    help="also quantize down_proj's weights per output row at this width (default: FP weights)")
    args = ap.parse_args()
    if not 1 <= args.windows <= 148 or not 2 <= args.bits <= 16 or (args.wbits is not None and not 2 <= args.wbits <= 16):
        ap.error("--windows is 1..148 (WikiText-2 test has 148 windows of 2048), --bits and --wbits 2..16")
    text = find_wikitext()
    if text is None:
        print("skipped: ../shared/data/wikitext-2-raw/test.joined.txt not found")
        return 0
    import swiftquant as sq
    model = sq.load_model(sq.smollm2_path())
    # SmolLM2-135M's configuration (config.json of HuggingFaceTB/SmolLM2-135M-Instruct).
    net = Llama(model, heads=9, kv_heads=3, eps=1e-5, theta=100000.0)
    ids = model.tokenizer.encode(text.read_text(encoding="utf-8"))
    wins = [ids[i * 2048:(i + 1) * 2048] for i in range(args.windows)]
    n = args.windows * 2047
    weights = f"down_proj weights INT{args.wbits} per row" if args.wbits else "down_proj weights FP"
    print(f"{cpu_name()}; SmolLM2-135M (Q4_1 weights, dequantized), WikiText-2 test, first {args.windows} windows; "
          f"down_proj input at INT{args.bits} per token, {weights}, everything else FP")

    def ppl(down_input=None, scale=None, fp_weights=False):
        """Perplexity with ``down_input`` on the down_proj inputs and, with --wbits, down_proj's weights (columns
        multiplied by ``scale[layer]`` first, if given) quantized per row."""
        t0 = time.time()
        dw = None
        if args.wbits and not fp_weights:
            dw = {}
            for i in range(net.layers):
                wd = net.w[f"model.layers.{i}.mlp.down_proj.weight"]
                dw[i] = quantize_rows(wd if scale is None else wd * scale[i][None], args.wbits)
        v = float(np.exp(sum(net.nll(w, down_input, dw) for w in wins) / n))
        return v, time.time() - t0

    amax = {}  # the oracle's channel maxima, observed on the evaluation windows during the FP pass
    argmax = {}  # per block: how often each channel holds a token's largest |value|

    def observe(i, m):
        a = np.abs(m)
        amax[i] = np.maximum(amax.get(i, 0), a.max(0))
        argmax[i] = argmax.get(i, 0) + np.bincount(a.argmax(1), minlength=m.shape[1])
        return m

    fp, sec = ppl(observe, fp_weights=True)
    ref = sq.perplexity(model, ids=ids, limit=args.windows, progress=False)
    print(f"FP                                {fp:8.3f}  ({sec:.0f} s; sq.perplexity {ref:.3f}, "
          f"{abs(fp - ref) / ref:.1e} apart)")
    print("where each token's largest |value| sits (block: distinct channels, share of tokens in the 16 most "
          "frequent):")
    shares = [f"{i}: {np.count_nonzero(c)}, {np.sort(c)[-16:].sum() / c.sum():.2f}" for i, c in sorted(argmax.items())]
    for k in range(0, len(shares), 6):
        print("  " + "; ".join(shares[k:k + 6]))
    if args.wbits:
        v, sec = ppl(lambda i, m: m)
        print(f"down_proj weights only            {v:8.3f}  {100 * (v / fp - 1):+.2f}%  ({sec:.0f} s)")
    plain, sec = ppl(lambda i, m: quantize_rows(m, args.bits))
    print(f"down_proj input, no transform     {plain:8.3f}  {100 * (plain / fp - 1):+.2f}%  ({sec:.0f} s)")
    for alpha in (float(a) for a in args.alphas.split(",")):
        scale = {i: np.maximum(a ** alpha, 1e-5).astype(np.float32) for i, a in amax.items()}
        if args.wbits:  # the scale lives in the (quantized) weights: the input is only divided
            v, sec = ppl(lambda i, m: quantize_rows(m / scale[i], args.bits), scale)
        else:
            v, sec = ppl(lambda i, m: quantize_rows(m / scale[i], args.bits) * scale[i])
        print(f"  smoothed, alpha {alpha:<4} (oracle)    {v:8.3f}  {100 * (v / fp - 1):+.2f}%  ({sec:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
