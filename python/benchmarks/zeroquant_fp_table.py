"""ZeroQuant-FP's comparison on SmolLM2-135M (WikiText-2 test, papers' protocol): INT vs FP weights and
activations, RTN vs GPTQ, the M1/M2 power-of-two scale constraints, each with and without LoRC rank 8.

Settings (ZeroQuant-FP, ALGORITHMS.md §4): weights per group of 128 along the input (W8: per output row),
activations dynamic per token at every block linear's input (FP8 E4M3 symmetric absmax, or INT8 asymmetric
min/max), attention (Q/K/V), embeddings, norms and the LM head FP. GPTQ with the CPU budget (32 × 512 calibration
tokens from the WikiText-2 validation text), activations quantized on the calibration path too. LoRC: rank-8
truncated SVD of each linear's residual, FP16 factors, applied at inference.

Rows finished are kept in the JSON file (--out) and skipped when the script runs again. `--full LABELS` also
evaluates those rows on all windows (the first `--head` windows and the rest as two disjoint passes, combined
window-weighted; see _tables.py); `--keep DIR` saves each model so a later `--full` pass does not quantize again.

    python python/benchmarks/zeroquant_fp_table.py --out zqfp.json [--only LABEL,...] [--full LABEL,...]
"""
import swiftquant as sq

import _tables

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


def quantize(model, method, w, group, c, a, lorc):
    common = dict(wformat=w, group_size=group, aformat=a, kv_bits=None, lorc_rank=lorc)
    if method == "rtn":
        return sq.rtn(model, scale_constraint=c, **common)
    return sq.gptq(model, scale_constraint=c, preset="cpu", progress=False, **common)


def main():
    args = _tables.arguments(__doc__.splitlines()[0], "zeroquant_fp_table.json").parse_args()
    rows = {label: _tables.timed(lambda m, spec=spec: quantize(m, *spec)) for label, spec in ROWS.items()}
    _tables.run(rows, args, "(SmolLM2's packaged weights are Q4_1, group 32: 4-bit rows are optimistic.)")


if __name__ == "__main__":
    main()
