#!/usr/bin/env python3
"""Writes the LET + LWC gradient parity fixtures with activation and KV quantization on (ALGORITHMS.md §2, §2b).

Run by hand (never in CI), in a venv with torch, transformers, safetensors and numpy:
    venv/bin/python Tests/SwiftQuantTests/Fixtures/make_let_fixtures.py
It imports load / call_layer / linear_order from make_block_fixtures.py and lwc from make_autodiff_fixtures.py.

One case per tiny model (llama_gqa, qwen2, opt), decoder layer 0, T = 12 tokens, batch 1, in transformers' own
decoder layer (eager attention) through torch.func.functional_call:
- LET parameters (random, seeded): qkv_scale, fc1_scale [hidden] in ±[0.5, 2]; out_scale [kv_dim];
  qkt_scale [kv_dim/2] for RoPE families (one per rotated pair (j, j + head_dim/2) of each kv head), [kv_dim]
  otherwise; OPT also qkv_shift, fc1_shift, out_shift (in [−0.3, 0.3]); `llama_gqa_shifts` and `qwen2_shifts` the
  same three shifts on the RMSNorm families (the option `let_shifts`): their norms gain the bias −δ/s and their
  bias-less linears the bias W·δ (forward hooks add what transformers' modules have no parameter for).
  Truncation |s| < 1e-2 → ±1e-2 with an identity backward. The transformed norms, weights and biases are built
  from the frozen layer exactly as LETParameters.apply documents (GQA: out/qkt scales repeated over each query group).
- LWC on every linear's transformed weight: 4 bits asymmetric, groups of 24 columns, u, l = 2 + 1.5·randn.
- Activations: every linear's input fake-quantized per token, INT4 asymmetric min/max (§1 without clipping),
  differentiated as OmniQuant's Q_a is (round_ste; the scale h not detached, so amax/amin carry its gradient;
  z without gradient); Q and K after RoPE and V per head per token (groups of head_dim), INT4, the same.
  (OPT: Q before transformers' q scaling, as SwiftQuant's block applies it in attention.)
- loss = MSE(out, target), target = FP layer output + 0.05·randn.
Stored: x, target, loss, the LET parameters and their gradients, and every linear's u, l, du, dl. Draws are
redone until every rounded value (weights and activations) sits at least MARGIN from a rounding tie.
Also `actgrad.<case>.{x, g, y, dx}`: the activation quantizer's own gradient (INT4, INT8 per token, INT4 per 16
features, E4M3 per token) on a [5, 40] input with a tie for a row's max and a constant row.
"""
import importlib.util
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "let_fixtures.safetensors")
T = 12
BITS, G = 4, 24
ABITS = 4
MARGIN = 5e-5


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


blk = _load("make_block_fixtures")
lwc, clamp_g = blk.lwc, blk.clamp_g

margins = []


def fake_quant_rows(x, width, bits=ABITS):
    """Per row (groups of `width` features) asymmetric min/max fake quant as OmniQuant's Q_a trains: round_ste,
    h = clamp((xmax − xmin)/(2^N − 1), 1e-5, 1e4) NOT detached (amax/amin carry its gradient), z = round(·)
    without gradient, both clamps passing the gradient at their bounds (the "inclusive" torch ≤ 2.12 semantics)."""
    shape = x.shape
    xs = x.reshape(-1, width)
    xmax, xmin = xs.amax(1, keepdim=True), xs.amin(1, keepdim=True)
    h = clamp_g((xmax - xmin) / (2 ** bits - 1), 1e-5, 1e4, "inclusive")
    t = xs / h
    with torch.no_grad():
        z = (-xmin / h).clamp(-1e4, 1e4)
        margins.append(min(((t - t.floor()) - 0.5).abs().min().item(), ((z - z.floor()) - 0.5).abs().min().item()))
        z = z.round()
    x_int = t + (t.round() - t).detach()
    q = (clamp_g(x_int + z, 0.0, float(2 ** bits - 1), "inclusive") - z) * h
    return q.reshape(shape)


def fake_quant_fp8_rows(x, width):
    """Per row (groups of `width`) symmetric absmax E4M3 fake quant with the same rule: s = absmax/448 not detached
    (gradient to the element(s) of largest |x|, by abs().amax()), the cast straight-through, the ±448 clamp
    passing at its bounds."""
    shape = x.shape
    xs = x.reshape(-1, width)
    s = xs.abs().amax(1, keepdim=True) / 448.0
    y = clamp_g(xs / s, -448.0, 448.0, "inclusive")
    c = y + (y.detach().to(torch.float8_e4m3fn).to(torch.float32) - y).detach()
    return (c * s).reshape(shape)


def activation_gradient_cases(tensors):
    """`DynamicActivationQuantizer.backward` alone: x [5, 40] (one row with a value tied for the max and one
    all-equal row), upstream g, dx = autograd; INT4 / INT8 per token and per 16 features, E4M3 per token."""
    gen = torch.Generator().manual_seed(77)
    for name, fn in (("int4", lambda x: fake_quant_rows(x, 40, 4)), ("int8", lambda x: fake_quant_rows(x, 40, 8)),
                     ("int4_g16", lambda x: _grouped(x, 16, 4)), ("e4m3fn", lambda x: fake_quant_fp8_rows(x, 40))):
        for attempt in range(100):
            x = 2 * torch.randn(5, 40, generator=gen)
            x[1, 7] = x[1].max().item()          # a tie for the max (amax shares the gradient)
            x[3] = 0.75                          # a constant row: h clamps to 1e-5, no scale gradient
            x.requires_grad_(True)
            margins.clear()
            y = fn(x)
            if name.startswith("int") and min(margins) < MARGIN:
                continue
            break
        g = torch.randn(5, 40, generator=gen)
        (dx,) = torch.autograd.grad(y, (x,), g)
        for k, t in (("x", x), ("g", g), ("y", y), ("dx", dx)):
            tensors[f"actgrad.{name}.{k}"] = np.ascontiguousarray(t.detach().numpy(), dtype="<f4")


def _grouped(x, width, bits):
    """Groups of `width` along each row (40 = 16 + 16 + a ragged 8, each its own min/max)."""
    parts = [fake_quant_rows(x[:, a:a + width].contiguous(), x[:, a:a + width].shape[1], bits)
             for a in range(0, x.shape[1], width)]
    return torch.cat(parts, dim=1)


def trunc(s):
    with torch.no_grad():
        t = torch.where(s.abs() >= 1e-2, s, torch.where(s < 0, torch.full_like(s, -1e-2), torch.full_like(s, 1e-2)))
    return s + (t - s).detach()


def make_case(tensors, cases, mname, seed, shifts=None):
    model = blk.load(mname)
    opt = blk.is_opt(model)
    layer = blk.decoder(model).layers[0]
    cfg = model.config
    H = cfg.hidden_size
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", heads)
    D = H // heads
    K = kv_heads * D
    group = heads // kv_heads
    order = blk.linear_order(layer, model)
    mods = dict(layer.named_modules())
    names = dict(q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj",
                 o="self_attn.out_proj" if opt else "self_attn.o_proj")
    fc = ["fc1"] if opt else ["mlp.gate_proj", "mlp.up_proj"]
    n1, n2 = ("self_attn_layer_norm", "final_layer_norm") if opt else ("input_layernorm", "post_attention_layernorm")
    shifts = opt if shifts is None else shifts
    q_rows = torch.tensor([(c // D // group) * D + c % D for c in range(heads * D)])
    pair = torch.tensor([(c // D) * (D // 2) + (c % D) % (D // 2) for c in range(K)]) if not opt else torch.arange(K)

    for attempt in range(1, 200):
        gen = torch.Generator().manual_seed(seed * 1000 + attempt)

        def scale(n):
            s = 0.5 + 1.5 * torch.rand(n, generator=gen)
            return torch.where(torch.rand(n, generator=gen) < 0.15, -s, s)

        P = dict(qkv_scale=scale(H), fc1_scale=scale(H), out_scale=scale(K), qkt_scale=scale(K // 2 if not opt else K))
        if shifts:
            P.update(qkv_shift=0.6 * torch.rand(H, generator=gen) - 0.3, fc1_shift=0.6 * torch.rand(H, generator=gen) - 0.3,
                     out_shift=0.6 * torch.rand(K, generator=gen) - 0.3)
        UL = {}
        for n in order:
            out_f, in_f = mods[n].weight.shape
            nG = (in_f + G - 1) // G
            UL[n] = (2.0 + 1.5 * torch.randn(out_f, nG, generator=gen), 2.0 + 1.5 * torch.randn(out_f, nG, generator=gen))
        x = torch.randn(T, H, generator=gen)
        with torch.no_grad():
            fp_out = blk.call_layer(layer, model, x[None])[0]
        target = fp_out + 0.05 * torch.randn(T, H, generator=gen)
        for t in P.values():
            t.requires_grad_(True)
        for u, l in UL.values():
            u.requires_grad_(True); l.requires_grad_(True)

        # the transformed parameters
        s1, s2, s3 = trunc(P["qkv_scale"]), trunc(P["fc1_scale"]), trunc(P["out_scale"])
        s4 = trunc(P["qkt_scale"])[pair]
        d1 = P["qkv_shift"] if shifts else torch.zeros(H)
        d2 = P["fc1_shift"] if shifts else torch.zeros(H)
        d3 = P["out_shift"] if shifts else torch.zeros(K)
        W = {n: mods[n].weight for n in order}
        B = {n: mods[n].bias for n in order}

        def lin(n, col=None, colshift=None, row=None, rowshift=None):
            w = W[n] * (col[None, :] if col is not None else 1) * (row[:, None] if row is not None else 1)
            b = None
            if B[n] is not None or shifts:  # shifts create a bias where the family has none (Llama, Qwen2's o/gate/up)
                u = ((B[n] if B[n] is not None else 0) + (W[n] @ colshift if colshift is not None else 0)
                     - (rowshift if rowshift is not None else 0))
                b = u * (row if row is not None else 1)
            return w, b

        tw = {}
        tw[names["q"]] = lin(names["q"], s1, d1, 1 / s4[q_rows])
        tw[names["k"]] = lin(names["k"], s1, d1, s4)
        tw[names["v"]] = lin(names["v"], s1, d1, 1 / s3, d3)
        tw[names["o"]] = lin(names["o"], s3[q_rows], d3[q_rows])
        for n in fc:
            tw[n] = lin(n, s2, d2)
        for n in order:
            tw.setdefault(n, (W[n], B[n]))
        params, added = {}, {}  # added: biases the module does not have, added to its output by a forward hook
        for n in order:
            w, b = tw[n]
            params[f"{n}.weight"] = lwc(w, UL[n][0], UL[n][1], BITS, G, False, "inclusive")
            if b is not None:
                if B[n] is not None:
                    params[f"{n}.bias"] = b
                else:
                    added[n] = b
        for nn_, s, d in ((n1, s1, d1), (n2, s2, d2)):
            norm = mods[nn_]
            params[f"{nn_}.weight"] = norm.weight / s
            if getattr(norm, "bias", None) is not None:
                params[f"{nn_}.bias"] = (norm.bias - d) / s
            elif shifts:  # RMSNorm gains the bias −δ/s (SwiftQuant's RMSNorm bias)
                added[nn_] = -d / s

        # activation quantizers: linear inputs (pre-hooks), V (hook on v_proj), Q/K after RoPE
        margins.clear()
        # the added biases first: V's quantizer hook below must see v_proj's output with its bias
        hooks = [mods[n].register_forward_hook(lambda m, a, o, b=b: o + b) for n, b in added.items()]
        hooks += [mods[n].register_forward_pre_hook(lambda m, a: (fake_quant_rows(a[0], a[0].shape[-1]),))
                 for n in order]
        if opt:
            for n in (names["q"], names["k"], names["v"]):
                hooks.append(mods[n].register_forward_hook(lambda m, a, o: fake_quant_rows(o, D)))
        else:
            hooks.append(mods[names["v"]].register_forward_hook(lambda m, a, o: fake_quant_rows(o, D)))
            mod = sys.modules[type(layer.self_attn).__module__]
            original = mod.apply_rotary_pos_emb

            def patched(q, k, cos, sin, *a, **kw):
                q2, k2 = original(q, k, cos, sin, *a, **kw)
                return fake_quant_rows(q2, D), fake_quant_rows(k2, D)

            mod.apply_rotary_pos_emb = patched
        try:
            out = blk.call_layer(layer, model, x[None], params)[0]
        finally:
            for hk in hooks:
                hk.remove()
            if not opt:
                mod.apply_rotary_pos_emb = original
        act_margin = min(margins)
        w_margin = min(blk.round_margin(tw[n][0].detach(), UL[n][0].detach(), UL[n][1].detach(), BITS, G, False)
                       for n in order)
        if act_margin < MARGIN or w_margin < MARGIN:
            continue
        loss = F.mse_loss(out, target)
        keys = sorted(P)
        leaves = [P[k] for k in keys] + [UL[n][0] for n in order] + [UL[n][1] for n in order]
        grads = torch.autograd.grad(loss, leaves)
        break
    else:
        raise RuntimeError(f"{mname}: no draw with rounding margin >= {MARGIN}")

    key = mname + ("_shifts" if shifts and not opt else "")

    def put(name, t):
        tensors[f"{key}.{name}"] = np.ascontiguousarray(t.detach().to(torch.float32).numpy(), dtype="<f4")

    put("x", x); put("target", target); put("loss", loss.reshape(1))
    for i, k in enumerate(keys):
        put(f"let.{k}", P[k]); put(f"let.{k}.grad", grads[i])
    for j, n in enumerate(order):
        put(f"{n}.u", UL[n][0]); put(f"{n}.l", UL[n][1])
        put(f"{n}.du", grads[len(keys) + j]); put(f"{n}.dl", grads[len(keys) + len(order) + j])
    cases[key] = dict(model=mname, T=T, bits=BITS, group_size=G, abits=ABITS, kv_bits=ABITS, shifts=shifts,
                      linears=order, let=keys, attempts=attempt, act_margin=act_margin, weight_margin=w_margin)
    print(f"  {key}: loss {loss.item():.6f} after {attempt} draws; margins act {act_margin:.2e} weight {w_margin:.2e}; "
          + " ".join(f"|d{k}| {grads[i].abs().max().item():.3e}" for i, k in enumerate(keys)))


def main():
    torch.manual_seed(0)
    tensors, cases = {}, {}
    for i, m in enumerate(("llama_gqa", "qwen2", "opt")):
        make_case(tensors, cases, m, 300 + i)
    for i, m in enumerate(("llama_gqa", "qwen2")):  # LET shifts on the RMSNorm families (an option there)
        make_case(tensors, cases, m, 310 + i, shifts=True)
    activation_gradient_cases(tensors)
    meta = dict(cases=cases, versions={"torch": torch.__version__, "transformers": transformers.__version__})
    save_file(dict(sorted(tensors.items())), OUT, metadata={"meta": json.dumps(meta, sort_keys=True)})
    print(f"wrote {OUT}: {len(tensors)} tensors, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
