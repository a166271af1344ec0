#!/usr/bin/env python3
"""Writes the PyTorch-autograd parity fixtures for Sources/SwiftQuant/Autodiff.

Run by hand (never in CI), from any directory, in a virtual environment with torch and numpy from PyPI:
    python3 -m venv venv-ad && venv-ad/bin/pip install torch numpy safetensors
    venv-ad/bin/python Tests/SwiftQuantTests/Fixtures/make_autodiff_fixtures.py
The committed files were made with torch 2.15.0 (recorded in the JSON). Clamp gradients at the bounds are
built explicitly (clamp_g) so the output does not depend on the torch version.

Output, next to this script: autodiff_fixtures.safetensors (all tensors float32; the settings of each case are a
JSON string under the "meta" key of the safetensors metadata, the torch version under "torch").

Every reference below is written directly from the formulas in docs/ALGORITHMS.md §1 and the Hugging Face Llama
conventions (rotate_half RoPE, repeat_kv GQA, RMSNorm in float32); gradients come from torch.autograd.
"""
import json
import math
import os

import numpy as np
import torch
from safetensors.numpy import save_file
import torch.nn.functional as F

torch.manual_seed(1234)
torch.set_default_dtype(torch.float32)
HERE = os.path.dirname(os.path.abspath(__file__))

tensors = {}
meta = {}


def put(name, t):
    tensors[name] = t.detach().to(torch.float32).contiguous().cpu().numpy()


def leaf(*shape, scale=1.0, shift=0.0):
    return (torch.randn(*shape) * scale + shift).requires_grad_(True)


def backprop(y, dy, inputs):
    grads = torch.autograd.grad(y, inputs, grad_outputs=dy)
    return grads


# ---------------------------------------------------------------- references
def rmsnorm(x, w, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def rope_tables(T, d, theta):
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    freqs = torch.outer(torch.arange(T).float(), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope(x, cos, sin, heads, d):
    T = x.shape[0]
    xh = x.view(T, heads, d)
    y = xh * cos[:, None, :] + rotate_half(xh) * sin[:, None, :]
    return y.reshape(T, heads * d)


def attention(q, k, v, heads, kv, d):
    T = q.shape[0]
    qh = q.view(T, heads, d).transpose(0, 1)
    kh = k.view(T, kv, d).transpose(0, 1).repeat_interleave(heads // kv, dim=0)
    vh = v.view(T, kv, d).transpose(0, 1).repeat_interleave(heads // kv, dim=0)
    s = qh @ kh.transpose(1, 2) / math.sqrt(d)
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    p = torch.softmax(s.masked_fill(mask, float("-inf")), dim=-1)
    return (p @ vh).transpose(0, 1).reshape(T, heads * d)


def clamp_g(x, lo, hi, boundary):
    """clamp whose gradient at the bounds is explicit, so the fixtures do not depend on the torch version:
    "inclusive" passes where lo <= x <= hi (torch.clamp up to at least 2.12), "exclusive" where lo < x < hi
    (torch.clamp in 2.15, minimum-norm subgradient)."""
    y = x.clamp(lo, hi)
    mask = ((x >= lo) & (x <= hi)) if boundary == "inclusive" else ((x > lo) & (x < hi))
    return y.detach() + (x - x.detach()) * mask.to(x.dtype)


def native_clamp_boundary():
    x = torch.tensor([0.0, 1.0], requires_grad=True)
    (g,) = torch.autograd.grad(x.clamp(0.0, 1.0).sum(), (x,))
    return "inclusive" if g[0].item() == 1.0 else "exclusive"


def lwc(W, u, l, bits, G, sym, boundary="inclusive"):
    """LWC fake-quant of W [rows, cols], groups of G columns (ragged last group), u/l [rows, nGroups]."""
    rows, cols = W.shape
    if G <= 0 or G > cols:
        G = cols
    outs = []
    for gi, g0 in enumerate(range(0, cols, G)):
        Wg = W[:, g0:g0 + G]
        xmax = torch.sigmoid(u[:, gi:gi + 1]) * Wg.amax(dim=1, keepdim=True)
        xmin = torch.sigmoid(l[:, gi:gi + 1]) * Wg.amin(dim=1, keepdim=True)
        if sym:
            den = 2 ** (bits - 1) - 1
            h = clamp_g(torch.max(xmax.abs(), xmin.abs()) / den, 1e-5, 1e4, boundary)
            z = float(den)
        else:
            h = clamp_g((xmax - xmin) / (2 ** bits - 1), 1e-5, 1e4, boundary)
            z = (-xmin / h).clamp(-1e4, 1e4).round()
        t = Wg / h
        x_int = t + (t.round() - t).detach()
        q = clamp_g(x_int + z, 0.0, float(2 ** bits - 1), boundary)
        outs.append((q - z) * h)
    return torch.cat(outs, dim=1)


# ---------------------------------------------------------------- ops
def op_linear():
    x, w, b = leaf(5, 7), leaf(6, 7), leaf(6)
    y = F.linear(x, w, b)
    dy = torch.randn_like(y)
    dx, dw, db = backprop(y, dy, (x, w, b))
    for n, t in dict(x=x, w=w, b=b, dy=dy, y=y, dx=dx, dw=dw, db=db).items():
        put(f"linear.{n}", t)


def op_rmsnorm():
    x, w = leaf(4, 16), leaf(16, scale=0.2, shift=1.0)
    y = rmsnorm(x, w, 1e-5)
    dy = torch.randn_like(y)
    dx, dw = backprop(y, dy, (x, w))
    for n, t in dict(x=x, w=w, dy=dy, y=y, dx=dx, dw=dw).items():
        put(f"rmsnorm.{n}", t)


def op_layernorm():
    x, w, b = leaf(4, 16, shift=0.5), leaf(16, scale=0.2, shift=1.0), leaf(16, scale=0.1)
    y = F.layer_norm(x, (16,), w, b, 1e-5)
    dy = torch.randn_like(y)
    dx, dw, db = backprop(y, dy, (x, w, b))
    for n, t in dict(x=x, w=w, b=b, dy=dy, y=y, dx=dx, dw=dw, db=db).items():
        put(f"layernorm.{n}", t)


def op_rope():
    T, H, d = 6, 2, 8
    cos, sin = rope_tables(T, d, 10000.0)
    x = leaf(T, H * d)
    y = rope(x, cos, sin, H, d)
    dy = torch.randn_like(y)
    (dx,) = backprop(y, dy, (x,))
    for n, t in dict(x=x, cos=cos, sin=sin, dy=dy, y=y, dx=dx).items():
        put(f"rope.{n}", t)


def op_attention():
    T, H, KV, d = 7, 4, 2, 8
    q, k, v = leaf(T, H * d), leaf(T, KV * d), leaf(T, KV * d)
    y = attention(q, k, v, H, KV, d)
    dy = torch.randn_like(y)
    dq, dk, dv = backprop(y, dy, (q, k, v))
    for n, t in dict(q=q, k=k, v=v, dy=dy, y=y, dq=dq, dk=dk, dv=dv).items():
        put(f"attention.{n}", t)


def op_activations():
    g, up = leaf(50, scale=2.0), leaf(50)
    y = F.silu(g) * up
    dy = torch.randn_like(y)
    dg, du = backprop(y, dy, (g, up))
    for n, t in dict(gate=g, up=up, dy=dy, y=y, dgate=dg, dup=du).items():
        put(f"silu_mul.{n}", t)
    for name, fn in (("gelu_tanh", lambda x: F.gelu(x, approximate="tanh")),
                     ("gelu_erf", lambda x: F.gelu(x, approximate="none")),
                     ("relu", F.relu)):
        x = torch.randn(50) * 2.5
        x[::7] = 0.0  # exact zeros: ReLU's gradient convention at 0
        x.requires_grad_(True)
        y = fn(x)
        dy = torch.randn_like(y)
        (dx,) = backprop(y, dy, (x,))
        for n, t in dict(x=x, dy=dy, y=y, dx=dx).items():
            put(f"{name}.{n}", t)


def op_mse():
    p, t = leaf(40), torch.randn(40)
    loss = F.mse_loss(p, t)
    (dp,) = torch.autograd.grad(loss, (p,))
    for n, v in dict(pred=p, target=t, loss=loss.reshape(1), dpred=dp).items():
        put(f"mse.{n}", v)


def op_lwc(name, rows, cols, bits, G, sym):
    W = torch.randn(rows, cols) * 0.05
    W[1] = 0.0                      # all-zero row: h clamps to 1e-5, no gradient into u, l
    W[2, 3] = W[2].max() + 0.01     # a distinct max
    W[3] = W[3].abs() + 0.01        # all-positive row: z < 0, many values clamp at the top
    W.requires_grad_(True)
    nG = (cols + G - 1) // G if 0 < G < cols else 1
    u = (torch.randn(rows, nG) * 1.5 + 2.0).requires_grad_(True)
    l = (torch.randn(rows, nG) * 1.5 + 2.0).requires_grad_(True)
    y = lwc(W, u, l, bits, G, sym, "inclusive")
    dy = torch.randn_like(y)
    dW, du, dl = backprop(y, dy, (W, u, l))
    for n, t in dict(w=W, u=u, l=l, dy=dy, y=y, dw=dW, du=du, dl=dl).items():
        put(f"{name}.{n}", t)
    y2 = lwc(W, u, l, bits, G, sym, "exclusive")
    assert torch.equal(y, y2)
    dW, du, dl = backprop(y2, dy, (W, u, l))
    for n, t in dict(dw=dW, du=du, dl=dl).items():
        put(f"{name}.excl.{n}", t)
    meta[name] = dict(rows=rows, cols=cols, bits=bits, group=G, symmetric=sym)


def op_adamw():
    p0 = torch.randn(10)
    grads = torch.randn(5, 10)
    for tag, wd in (("adamw", 0.0), ("adamw_wd", 0.1)):
        p = torch.nn.Parameter(p0.clone())
        opt = torch.optim.AdamW([p], lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)
        traj = []
        for s in range(5):
            p.grad = grads[s].clone()
            opt.step()
            traj.append(p.detach().clone())
        put(f"{tag}.p0", p0)
        put(f"{tag}.grads", grads)
        put(f"{tag}.traj", torch.stack(traj))
        meta[tag] = dict(lr=1e-2, weight_decay=wd)


def llama_block():
    Hd, NH, KV, D, FF, T, bits, G, eps = 64, 4, 2, 16, 96, 16, 3, 32, 1e-5
    shapes = dict(q=(NH * D, Hd), k=(KV * D, Hd), v=(KV * D, Hd), o=(Hd, NH * D),
                  gate=(FF, Hd), up=(FF, Hd), down=(Hd, FF))
    Ws = {n: torch.randn(*s) / math.sqrt(s[1]) for n, s in shapes.items()}
    g1 = torch.randn(Hd) * 0.1 + 1.0
    g2 = torch.randn(Hd) * 0.1 + 1.0
    us = {n: (torch.randn(s[0], s[1] // G) * 0.5 + 3.0).requires_grad_(True) for n, s in shapes.items()}
    ls = {n: (torch.randn(s[0], s[1] // G) * 0.5 + 3.0).requires_grad_(True) for n, s in shapes.items()}
    x = leaf(T, Hd)
    cos, sin = rope_tables(T, D, 10000.0)
    def forward(boundary):
        Wh = {n: lwc(Ws[n], us[n], ls[n], bits, G, False, boundary) for n in shapes}
        n1 = rmsnorm(x, g1, eps)
        q = rope(F.linear(n1, Wh["q"]), cos, sin, NH, D)
        k = rope(F.linear(n1, Wh["k"]), cos, sin, KV, D)
        v = F.linear(n1, Wh["v"])
        h1 = x + F.linear(attention(q, k, v, NH, KV, D), Wh["o"])
        n2 = rmsnorm(h1, g2, eps)
        return Wh, h1 + F.linear(F.silu(F.linear(n2, Wh["gate"])) * F.linear(n2, Wh["up"]), Wh["down"])

    Wh, out = forward("inclusive")
    _, out2 = forward("exclusive")
    assert torch.equal(out, out2)
    dout = torch.randn_like(out)
    names = list(shapes)
    grads = backprop(out, dout, [x] + [us[n] for n in names] + [ls[n] for n in names])
    put("block.x", x); put("block.g1", g1); put("block.g2", g2); put("block.cos", cos); put("block.sin", sin)
    put("block.dout", dout); put("block.out", out); put("block.dx", grads[0])
    for i, n in enumerate(names):
        put(f"block.w.{n}", Ws[n]); put(f"block.u.{n}", us[n]); put(f"block.l.{n}", ls[n])
        put(f"block.du.{n}", grads[1 + i]); put(f"block.dl.{n}", grads[1 + len(names) + i])
        put(f"block.what.{n}", Wh[n])
    grads2 = backprop(out2, dout, [us[n] for n in names] + [ls[n] for n in names])
    for i, n in enumerate(names):
        put(f"block.excl.du.{n}", grads2[i]); put(f"block.excl.dl.{n}", grads2[len(names) + i])
    meta["torch_native_clamp_boundary"] = dict(value=native_clamp_boundary())
    meta["block"] = dict(hidden=Hd, heads=NH, kv_heads=KV, head_dim=D, ffn=FF, rows=T, bits=bits, group=G,
                         eps=eps, theta=10000.0)


def main():
    op_linear(); op_rmsnorm(); op_layernorm(); op_rope(); op_attention(); op_activations(); op_mse()
    op_lwc("lwc_asym", 6, 80, 3, 32, False)   # ragged last group (80 = 32 + 32 + 16)
    op_lwc("lwc_sym", 6, 40, 4, 0, True)      # per output row
    op_adamw()
    llama_block()
    out = {name: np.ascontiguousarray(a, dtype="<f4") for name, a in sorted(tensors.items())}
    save_file(out, os.path.join(HERE, "autodiff_fixtures.safetensors"),
              metadata={"meta": json.dumps(meta, sort_keys=True), "torch": torch.__version__})
    index = out
    off = sum(a.size for a in out.values())
    print(f"{len(index)} tensors, {off * 4} bytes")


if __name__ == "__main__":
    main()
