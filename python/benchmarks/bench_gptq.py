"""GPTQ on the 7 linears of one SmolLM2-135M decoder block, in SwiftQuant (`sq.gptq_quantize`) and in PyTorch doing
the same math, measured in the same run.

Inputs: block 0 run in NumPy (float32) on one window of real WikiText-2 text (`--tokens`, default 2048): RMSNorm,
q/k/v, RoPE, grouped-query causal attention, o, RMSNorm, SiLU-gated MLP. Each input group's Hessian
`H = 2/n·XᵀX` (q/k/v share the norm output, gate/up the second norm output; o and down their own inputs) is
computed once in NumPy and handed to both sides, so both time GPTQ itself (ALGORITHMS.md §5): dead inputs,
damping 1% of mean(diag H), the upper Cholesky factor of H⁻¹, the column sweep in blocks of 128 with group
parameters recomputed at each group start from the error-updated weights, lazy updates, INT grid with 0 kept in
range (GPTQ's min/max policy), W4 (or `--wformat`) groups of 128 along the input (576 columns: a ragged last
group of 64). PyTorch: float32, `torch.linalg.cholesky` / `cholesky_inverse`, the reference algorithm's loops.
Times are the best of `--iterations` runs; codes of both sides are compared (ties at .5 can round differently
after different summation orders) and so is the output error `‖(W − Ŵ)X‖`.

    python python/benchmarks/bench_gptq.py [--iterations 3] [--threads 2] [--wformat int4] [--group-size 128]

Needs torch and the swiftquant module in the same venv (exits 2 without torch).
"""
import argparse
import os
import sys
import time

import numpy as np

import swiftquant as sq

from _common import find_wikitext


def rms_norm(x, w, eps):
    return (x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w).astype(np.float32)


def rope(x, heads, d, theta):
    t = x.shape[0]
    inv = 1.0 / theta ** (np.arange(0, d, 2, dtype=np.float64) / d)
    ang = np.outer(np.arange(t), inv)
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
    x = x.reshape(t, heads, d)
    a, b = x[..., : d // 2], x[..., d // 2:]
    out = np.concatenate([a * cos[:, None] - b * sin[:, None], b * cos[:, None] + a * sin[:, None]], -1)
    return out.reshape(t, heads * d)


def block_inputs(model, ids):
    """The four inputs of block 0's linears (q/k/v, o, gate/up, down) on `ids`."""
    c = model.config
    W = model.weights
    p = "model.layers.0."
    eps, theta = c.get("rms_norm_eps", 1e-5), c.get("rope_theta", 10000.0)
    h, nh, nkv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    d = h // nh
    x = W["model.embed_tokens.weight"][ids].astype(np.float32)
    n1 = rms_norm(x, W[p + "input_layernorm.weight"], eps)
    q = rope(n1 @ W[p + "self_attn.q_proj.weight"].T, nh, d, theta)
    k = rope(n1 @ W[p + "self_attn.k_proj.weight"].T, nkv, d, theta)
    v = n1 @ W[p + "self_attn.v_proj.weight"].T
    t = len(ids)
    attn = np.empty((t, nh * d), np.float32)
    mask = np.triu(np.full((t, t), -np.inf, np.float32), 1)
    for hh in range(nh):
        g = hh // (nh // nkv)
        s = q[:, hh * d:(hh + 1) * d] @ k[:, g * d:(g + 1) * d].T / np.float32(np.sqrt(d)) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        attn[:, hh * d:(hh + 1) * d] = (s / s.sum(-1, keepdims=True)) @ v[:, g * d:(g + 1) * d]
    h1 = x + attn @ W[p + "self_attn.o_proj.weight"].T
    n2 = rms_norm(h1, W[p + "post_attention_layernorm.weight"], eps)
    gate, up = n2 @ W[p + "mlp.gate_proj.weight"].T, n2 @ W[p + "mlp.up_proj.weight"].T
    m = (gate / (1 + np.exp(-gate)) * up).astype(np.float32)
    return {"qkv": n1, "o": attn, "gateup": n2, "down": m}


LINEARS = [("self_attn.q_proj", "qkv"), ("self_attn.k_proj", "qkv"), ("self_attn.v_proj", "qkv"),
           ("self_attn.o_proj", "o"), ("mlp.gate_proj", "gateup"), ("mlp.up_proj", "gateup"), ("mlp.down_proj", "down")]


def torch_gptq(torch, w, h, bits, group, block=128, damp=0.01):
    """GPTQ with GPTQ's INT min/max grid (0 in range), written from the paper's algorithm."""
    W = torch.from_numpy(np.array(w))
    H = torch.from_numpy(np.array(h))
    cols = W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += damp * torch.mean(torch.diag(H)) * torch.eye(cols)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    maxq = 2 ** bits - 1
    Q = torch.zeros_like(W)
    codes = torch.zeros(W.shape, dtype=torch.int32)
    scale = zero = None
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            c = i1 + i
            if c % group == 0:
                # group parameters from the current (error-updated) weights of the group
                cur = torch.cat([W1[:, i:], W[:, i2:]], 1)[:, : min(group, cols - c)]
                xmin = torch.clamp(cur.min(1).values, max=0)
                xmax = torch.clamp(cur.max(1).values, min=0)
                both0 = (xmin == 0) & (xmax == 0)
                xmin[both0], xmax[both0] = -1, 1
                scale = (xmax - xmin) / maxq
                zero = torch.round(-xmin / scale)
            w1 = W1[:, i]
            q = torch.clamp(torch.round(w1 / scale) + zero, 0, maxq)
            codes[:, c] = q.to(torch.int32)
            dq = scale * (q - zero)
            Q1[:, i] = dq
            err = (w1 - dq) / Hinv1[i, i]
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        Q[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return codes.numpy(), Q.numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--wformat", default="int4", help="int2 … int8")
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        print("torch is not installed: the PyTorch side cannot run", file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(args.threads)
    bits = int(args.wformat[3:])
    data = find_wikitext()
    if data is None:
        print("skipped: ../shared/data/wikitext-2-raw/test.joined.txt not found")
        return
    model = sq.load_model(args.model or sq.smollm2_path())
    ids = model.tokenizer.encode(data.read_text(encoding="utf-8")[:200000])[: args.tokens]
    xs = block_inputs(model, ids)
    hs = {k: (2.0 / x.shape[0] * (x.T.astype(np.float32) @ x)).astype(np.float32) for k, x in xs.items()}
    weights = {n: np.ascontiguousarray(model.weights["model.layers.0." + n + ".weight"], np.float32) for n, _ in LINEARS}
    print(f"SwiftQuant {sq.__version__}, torch {torch.__version__} ({args.threads} threads); block 0 of SmolLM2, "
          f"{len(ids)} tokens, {args.wformat} g{args.group_size}; load average {os.getloadavg()[0]:.2f}")

    def swift():
        return {n: sq.gptq_quantize(weights[n], hs[g], args.wformat, group_size=args.group_size) for n, g in LINEARS}

    def pytorch():
        return {n: torch_gptq(torch, weights[n], hs[g], bits, args.group_size) for n, g in LINEARS}

    def best(f):
        times, out = [], None
        for _ in range(args.iterations):
            t = time.perf_counter()
            out = f()
            times.append(time.perf_counter() - t)
        return min(times), out

    ts, s_out = best(swift)
    tt, t_out = best(pytorch)
    print(f"\n| linear | shape | codes equal | ‖(W−Ŵ)X‖ SwiftQuant / PyTorch |\n|---|---|---|---|")
    for n, g in LINEARS:
        qt, _, deq = s_out[n]
        codes, tq = t_out[n]
        eq = float((qt.codes.astype(np.int32) == codes).mean())
        x = xs[g]
        es = np.linalg.norm((weights[n] - deq) @ x.T)
        et = np.linalg.norm((weights[n] - tq) @ x.T)
        print(f"| {n} | {weights[n].shape[0]}×{weights[n].shape[1]} | {eq:.4%} | {es / et:.4f} |")
    print(f"\nGPTQ of the block's 7 linears (best of {args.iterations}): SwiftQuant {ts * 1e3:.1f} ms, "
          f"PyTorch {tt * 1e3:.1f} ms: {tt / ts:.2f}x")


if __name__ == "__main__":
    main()
