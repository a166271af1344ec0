#!/usr/bin/env python3
"""Writes the decoder-block LWC parity fixtures (one real Hugging Face decoder layer, LWC fake-quantized).

Run by hand (never in CI), from any directory, in a virtual environment with torch and transformers from PyPI:
    python3 -m venv venv-blk && venv-blk/bin/pip install torch transformers safetensors numpy
    venv-blk/bin/python Tests/SwiftQuantTests/Fixtures/make_block_fixtures.py
The torch and transformers versions used are recorded in the file's metadata ("versions"). The script needs
make_autodiff_fixtures.py beside it (it imports `lwc` / `clamp_g` from there, so the quantizer is the same one).

Input: the tiny models in Fixtures/tiny/{llama_gqa,qwen2,opt} (written by make_tiny_models.py), loaded with
AutoModelForCausalLM.from_pretrained(float32, attn_implementation="eager"), eval mode (OPT's dropout is off).

Cases, per model: decoder layer 0 and layer 1 with bits 3, asymmetric, groups of G = 24 input columns (ragged
last group where in_features is not a multiple of 24); and layer 0 again, symmetric, bits 4, one group per
output row (G = in_features; suffix "_sym"). With T = 12 tokens, batch 1:
    x       [T, hidden]  seeded randn (scale 1), the layer's input hidden states (for OPT: positions already added)
    fp_out  [T, hidden]  the HF decoder layer's own forward on x (FP weights)
    target  [T, hidden]  fp_out + 0.05 * seeded randn
    q_out   [T, hidden]  the same layer with every nn.Linear weight W replaced by lwc(W, u, l, bits, G, sym,
                         "inclusive") via torch.func.functional_call; biases (Qwen2 q/k/v, all OPT linears) FP
    loss    [1]          mean MSE(q_out, target)
    dx      [T, hidden]  d loss / d x
    <linear>.u, .l       [out_features, n_groups]  2.0 + 1.5 * seeded randn
    <linear>.du, .dl     d loss / d u, d loss / d l
Tensor names: "<model>.<layer>[_sym].<field>" and "<model>.<layer>[_sym].<linear>.<u|l|du|dl>", <linear> the HF
module name relative to the layer (e.g. "self_attn.q_proj", "mlp.gate_proj", "fc1"). All float32.

Layer call: Llama / Qwen2: layer(hidden_states=x[None], attention_mask=M, position_ids=[[0..T-1]],
position_embeddings=model.model.rotary_emb(x[None], position_ids)); OPT: layer(hidden_states=x[None],
attention_mask=M, position_ids=[[0..T-1]]) (OPT's learned positions are added before the first layer, so x
is taken as already containing them). M is the additive causal mask [1, 1, T, T]: 0 on/below the diagonal,
torch.finfo(float32).min above. The call is checked against the full model: running the layers one by one on
the model's own hidden_states[0] with this convention reproduces model(..., output_hidden_states=True).

Metadata: "meta" is a JSON string {"cases": {"<model>.<layer>[_sym]": {...}}, "versions": {...}, ...}, see main().
"""
import importlib.util
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from safetensors.numpy import load_file, save_file
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "block_fixtures.safetensors")
MODELS = ("llama_gqa", "qwen2", "opt")
T = 12
NOISE = 0.05
BOUNDARY = "inclusive"
MARGIN = 5e-5   # min distance of every W/h and -xmin/h to a rounding tie (k + 0.5); see round_margin

_spec = importlib.util.spec_from_file_location("make_autodiff_fixtures", os.path.join(HERE, "make_autodiff_fixtures.py"))
_ad = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_ad)  # defines functions only; main() is guarded
lwc, clamp_g = _ad.lwc, _ad.clamp_g

torch.set_default_dtype(torch.float32)


def load(name):
    model = AutoModelForCausalLM.from_pretrained(os.path.join(HERE, "tiny", name), dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()
    model.requires_grad_(False)
    return model


def is_opt(model):
    return model.config.model_type == "opt"


def decoder(model):
    return model.model.decoder if is_opt(model) else model.model


def causal_mask(n):
    m = torch.zeros(1, 1, n, n, dtype=torch.float32)
    return m.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1), torch.finfo(torch.float32).min)


def layer_kwargs(model, h):
    """Keyword arguments for one decoder layer call on h [1, n, hidden] at positions 0..n-1."""
    n = h.shape[1]
    pos = torch.arange(n)[None]
    kw = dict(attention_mask=causal_mask(n), position_ids=pos)
    if not is_opt(model):
        kw["position_embeddings"] = model.model.rotary_emb(h, pos)
    return kw


def call_layer(layer, model, h, params=None):
    kw = layer_kwargs(model, h)
    if params is None:
        out = layer(hidden_states=h, **kw)
    else:
        out = torch.func.functional_call(layer, params, args=(), kwargs=dict(hidden_states=h, **kw))
    return out[0] if isinstance(out, tuple) else out


def linear_order(layer, model):
    """Names (relative to the layer) of the nn.Linear modules in the order the forward calls them."""
    order, hooks = [], []
    for name, mod in layer.named_modules():
        if isinstance(mod, torch.nn.Linear):
            hooks.append(mod.register_forward_hook(lambda m, i, o, name=name: order.append(name)))
    with torch.no_grad():
        call_layer(layer, model, torch.randn(1, T, model.config.hidden_size))
    for hk in hooks:
        hk.remove()
    assert len(order) == len(set(order)) == len(hooks), order
    return order


def verify(name, model):
    """Layer-by-layer recomputation with our call convention vs the model's own hidden_states."""
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, model.config.vocab_size, (1, T), generator=g)
    with torch.no_grad():
        res = model(input_ids=ids, output_hidden_states=True)
        hs = res.hidden_states
        dec = decoder(model)
        h = hs[0]
        report = {}
        for i, layer in enumerate(dec.layers):
            h = call_layer(layer, model, h)
            ref = hs[i + 1]
            last = i == len(dec.layers) - 1
            if last:
                # transformers puts the final-norm output in the last hidden_states slot
                fn = dec.final_layer_norm if is_opt(model) else dec.norm
                cand = fn(h)
                if is_opt(model) and dec.project_out is not None:
                    cand = dec.project_out(cand)
                rel_raw = ((h - ref).norm() / ref.norm()).item()
                rel_norm = ((cand - ref).norm() / ref.norm()).item()
                got, conv = (cand, "final_norm(layer_out)") if rel_norm < rel_raw else (h, "layer_out")
            else:
                got, conv = h, "layer_out"
            rel = ((got - ref).norm() / ref.norm()).item()
            mx = (got - ref).abs().max().item()
            report[f"layer{i}"] = dict(rel=rel, max_abs=mx, compared=conv)
            print(f"  verify {name} layer {i}: rel {rel:.3e}  max|diff| {mx:.3e}  (hidden_states[{i + 1}] = {conv})")
            assert rel < 1e-5, (name, i, rel)
        # logits from the recomputed stack, via the model's own head
        logits = model.lm_head(cand)
        rel_logits = ((logits - res.logits).norm() / res.logits.norm()).item()
        report["logits_rel"] = rel_logits
        print(f"  verify {name} logits: rel {rel_logits:.3e}")
        assert rel_logits < 1e-5
    return report


def round_margin(W, u, l, bits, G, sym):
    """Smallest distance of any value that lwc rounds (W/h, and -xmin/h for asym) to a tie k + 0.5, computed
    with the same float32 ops as lwc. A tiny margin would let a 1-ulp difference in a float32 reimplementation
    (Swift) flip one rounding and move q_out / the gradients by far more than the test tolerance."""
    rows, cols = W.shape
    m = float("inf")
    with torch.no_grad():
        for gi, g0 in enumerate(range(0, cols, G)):
            Wg = W[:, g0:g0 + G]
            xmax = torch.sigmoid(u[:, gi:gi + 1]) * Wg.amax(dim=1, keepdim=True)
            xmin = torch.sigmoid(l[:, gi:gi + 1]) * Wg.amin(dim=1, keepdim=True)
            if sym:
                h = torch.max(xmax.abs(), xmin.abs()) / (2 ** (bits - 1) - 1)
                vals = [Wg / h.clamp(1e-5, 1e4)]
            else:
                h = ((xmax - xmin) / (2 ** bits - 1)).clamp(1e-5, 1e4)
                vals = [Wg / h, (-xmin / h).clamp(-1e4, 1e4)]
            for v in vals:
                m = min(m, ((v - v.floor()) - 0.5).abs().min().item())
    return m


def make_case(tensors, cases, mname, model, li, bits, G, sym, seed):
    layer = decoder(model).layers[li]
    key = f"{mname}.{li}" + ("_sym" if sym else "")
    hidden = model.config.hidden_size
    order = linear_order(layer, model)
    mods = dict(layer.named_modules())
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(T, hidden, generator=gen)
    with torch.no_grad():
        fp_out = call_layer(layer, model, x[None])[0]
    target = fp_out + NOISE * torch.randn(T, hidden, generator=gen)

    us, ls, shapes, groups, draws, margins = {}, {}, {}, {}, {}, {}
    for n in order:
        out_f, in_f = mods[n].weight.shape
        g = in_f if G == 0 else G
        nG = (in_f + g - 1) // g
        # draw (u, l) from the case's generator; redraw while some rounding sits within MARGIN of a tie
        for attempt in range(1, 101):
            u = 2.0 + 1.5 * torch.randn(out_f, nG, generator=gen)
            l = 2.0 + 1.5 * torch.randn(out_f, nG, generator=gen)
            margin = round_margin(mods[n].weight, u, l, bits, g, sym)
            if margin >= MARGIN:
                break
        else:
            raise RuntimeError(f"{key} {n}: no (u, l) draw with rounding margin >= {MARGIN}")
        us[n], ls[n] = u.requires_grad_(True), l.requires_grad_(True)
        shapes[n], groups[n], draws[n], margins[n] = [out_f, in_f], nG, attempt, margin

    xl = x.clone().requires_grad_(True)
    params = {f"{n}.weight": lwc(mods[n].weight, us[n], ls[n], bits, in_f if G == 0 else G, sym, BOUNDARY)
              for n in order for in_f in [mods[n].weight.shape[1]]}
    q_out = call_layer(layer, model, xl[None], params)[0]
    loss = F.mse_loss(q_out, target)
    grads = torch.autograd.grad(loss, [xl] + [us[n] for n in order] + [ls[n] for n in order])
    dx, du, dl = grads[0], grads[1:1 + len(order)], grads[1 + len(order):]

    # sanity: functional_call with the unmodified weights equals the layer's own forward
    with torch.no_grad():
        same = call_layer(layer, model, x[None], {f"{n}.weight": mods[n].weight for n in order})[0]
    assert torch.equal(same, fp_out)

    def put(name, t):
        tensors[f"{key}.{name}"] = np.ascontiguousarray(t.detach().to(torch.float32).cpu().numpy(), dtype="<f4")

    put("x", x); put("target", target); put("fp_out", fp_out); put("q_out", q_out)
    put("loss", loss.reshape(1)); put("dx", dx)
    for i, n in enumerate(order):
        put(f"{n}.u", us[n]); put(f"{n}.l", ls[n]); put(f"{n}.du", du[i]); put(f"{n}.dl", dl[i])
    biased = [n for n in order if mods[n].bias is not None]
    cases[key] = dict(model=mname, layer=li, bits=bits, group_size=G, symmetric=sym, T=T, hidden=hidden,
                      linears=order, shapes=shapes, n_groups=groups, biased_linears=biased, seed=seed,
                      model_type=model.config.model_type, boundary=BOUNDARY, noise_std=NOISE,
                      ul_draws=draws, round_margin=min(margins.values()))
    print(f"  {key}: loss {loss.item():.6f}  max|du| {max(t.abs().max().item() for t in du):.4e}  "
          f"max|dl| {max(t.abs().max().item() for t in dl):.4e}  max|dx| {dx.abs().max().item():.4e}  "
          f"rel(q_out-fp_out) {((q_out - fp_out).norm() / fp_out.norm()).item():.3f}  "
          f"round margin {min(margins.values()):.2e}  draws {sum(draws.values())}/{len(draws)}")


def check():
    """Re-load the written file and print max |grad| per case."""
    with open(OUT, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        meta = json.loads(json.loads(f.read(n))["__metadata__"]["meta"])
    ts = load_file(OUT)
    print(f"check: {OUT} ({os.path.getsize(OUT)} bytes, {len(ts)} tensors)")
    for key, c in meta["cases"].items():
        assert ts[f"{key}.x"].shape == (c["T"], c["hidden"])
        for n in c["linears"]:
            for f in ("u", "l", "du", "dl"):
                assert ts[f"{key}.{n}.{f}"].shape == (c["shapes"][n][0], c["n_groups"][n])
        du = max(np.abs(ts[f"{key}.{n}.du"]).max() for n in c["linears"])
        dl = max(np.abs(ts[f"{key}.{n}.dl"]).max() for n in c["linears"])
        dx = np.abs(ts[f"{key}.dx"]).max()
        print(f"  {key:14s} loss {ts[key + '.loss'][0]:.6f}  max|du| {du:.4e}  max|dl| {dl:.4e}  max|dx| {dx:.4e}")
        assert np.isfinite(du) and du > 0 and dl > 0
    return meta


def main():
    torch.manual_seed(0)
    tensors, cases, verification = {}, {}, {}
    seed = 100
    for mname in MODELS:
        model = load(mname)
        print(mname)
        verification[mname] = verify(mname, model)
        for li in (0, 1):
            make_case(tensors, cases, mname, model, li, 3, 24, False, seed)
            seed += 1
        make_case(tensors, cases, mname, model, 0, 4, 0, True, seed)
        seed += 1
    meta = dict(
        cases=cases,
        versions={"torch": torch.__version__, "transformers": transformers.__version__},
        verification=verification,
        notes=("group_size 0 = one group per output row (G = in_features). lwc/clamp_g from make_autodiff_fixtures.py, "
               "clamp boundary inclusive. Mask: additive causal [1,1,T,T], 0 / float32 min. Positions 0..T-1. "
               "Biases stay FP. loss = mean MSE(q_out, target). (u, l) per linear redrawn from the case generator "
               f"until every rounded value is >= {MARGIN} from a tie (round_margin)."),
    )
    save_file(dict(sorted(tensors.items())), OUT, metadata={"meta": json.dumps(meta, sort_keys=True)})
    size = os.path.getsize(OUT)
    print(f"wrote {OUT}: {len(tensors)} tensors, {size} bytes")
    assert size < 1_500_000
    check()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--check":
        check()
    else:
        main()
