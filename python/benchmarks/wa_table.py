"""OmniQuant's weight-activation table on SmolLM2-135M (WikiText-2 test, papers' protocol): W8A8, W6A6, W4A8 and
W4A4 with RTN, SmoothQuant and OmniQuant (LWC + LET), activations and the KV cache quantized.

Settings (OmniQuant, ALGORITHMS.md §2b–§3): weights per output channel, INT asymmetric; activations INT
asymmetric MinMax per token at every block linear's input; Q and K after RoPE and V per head per token at the
activation width (kv_bits = abits); softmax output, embeddings, norms and the LM head FP. SmoothQuant: α = 0.5
scales from 16 × 512 calibration tokens folded into norm → q/k/v and norm → gate/up, RTN weights. OmniQuant:
LWC + LET trained together (lr 5e-2 / 5e-3 at the CPU preset: 16 × 512 tokens, 5 epochs; lr 1e-2 / 5e-3 at
32 × 512 tokens × 20 epochs), aug_loss for W4A4 as the paper's scripts. Calibration text: WikiText-2 validation
windows (``sq.default_calibration_path()``), never the test text. Rows marked "up-down pair" / "relative loss" /
"keep_best" (W6A6 and W4A4) go beyond the paper: ``let_down=True``, ``loss="relative"`` and ``keep_best=True`` of
``sq.omniquant``; "shifts" is ``let_shifts=True`` (the paper's LET shifts, an option on Llama-family models); rows marked "GPTQ weights" round the transformed weights with GPTQ (``weight_rounding="gptq"``,
beyond the papers). Training differentiates the activation quantizers as the paper's code does (through each token's
scale); ``activation_gradient="ste"`` gives the straight-through training SwiftQuant used until 2026-12-07.

    python python/benchmarks/wa_table.py --out wa.json [--only LABEL,...] [--full LABEL,...] [--keep DIR]

The OmniQuant rows print each block's resident memory (rss) while calibrating, on stderr.
"""
import swiftquant as sq

import _tables

SETTINGS = ((8, 8), (6, 6), (4, 8), (4, 4))


def rows() -> dict:
    out = {}
    for w, a in SETTINGS:
        kind = f"W{w}A{a}"
        aug = a == 4
        out[f"RTN {kind}"] = _tables.timed(lambda m, w=w, a=a: sq.rtn(m, wbits=w, group_size=None, abits=a))
        out[f"SmoothQuant {kind}"] = _tables.timed(
            lambda m, w=w, a=a: sq.smoothquant(m, wbits=w, abits=a, preset="cpu", progress=False))
        # beyond the papers: the smoothed weights rounded by GPTQ (llm-compressor's SmoothQuant -> GPTQ recipe)
        out[f"SmoothQuant {kind} (GPTQ weights)"] = _tables.timed(
            lambda m, w=w, a=a: sq.smoothquant(m, wbits=w, abits=a, preset="cpu", progress=False,
                                               weight_rounding="gptq"))
        out[f"OmniQuant {kind} (CPU preset)"] = _tables.timed(
            lambda m, w=w, a=a, aug=aug: sq.omniquant(m, wbits=w, abits=a, group_size=None, let=True, aug_loss=aug,
                                                      preset="cpu"))
        out[f"OmniQuant {kind} (CPU preset; GPTQ weights)"] = _tables.timed(
            lambda m, w=w, a=a, aug=aug: sq.omniquant(m, wbits=w, abits=a, group_size=None, let=True, aug_loss=aug,
                                                      preset="cpu", weight_rounding="gptq"))
        out[f"OmniQuant {kind} (32x512 x 20 epochs)"] = _tables.timed(
            lambda m, w=w, a=a, aug=aug: sq.omniquant(m, wbits=w, abits=a, group_size=None, let=True, aug_loss=aug,
                                                      preset="paper", nsamples=32, seqlen=512))
        if a <= 6:  # beyond the paper: the up -> down pair, the per-token relative loss, keep_best at the long budget
            out[f"OmniQuant {kind} (CPU preset; up-down pair)"] = _tables.timed(
                lambda m, w=w, a=a, aug=aug: sq.omniquant(m, wbits=w, abits=a, group_size=None, let=True, aug_loss=aug,
                                                          preset="cpu", let_down=True))
            out[f"OmniQuant {kind} (CPU preset; shifts)"] = _tables.timed(
                lambda m, w=w, a=a, aug=aug: sq.omniquant(m, wbits=w, abits=a, group_size=None, let=True, aug_loss=aug,
                                                          preset="cpu", let_shifts=True))
            out[f"OmniQuant {kind} (CPU preset; up-down pair; shifts)"] = _tables.timed(
                lambda m, w=w, a=a, aug=aug: sq.omniquant(m, wbits=w, abits=a, group_size=None, let=True, aug_loss=aug,
                                                          preset="cpu", let_down=True, let_shifts=True))
            out[f"OmniQuant {kind} (CPU preset; 10 epochs; up-down pair; shifts)"] = _tables.timed(
                lambda m, w=w, a=a, aug=aug: sq.omniquant(m, wbits=w, abits=a, group_size=None, let=True, aug_loss=aug,
                                                          preset="cpu", epochs=10, let_down=True, let_shifts=True))
            out[f"OmniQuant {kind} (32x512 x 20 epochs; up-down pair; shifts)"] = _tables.timed(
                lambda m, w=w, a=a, aug=aug: sq.omniquant(m, wbits=w, abits=a, group_size=None, let=True, aug_loss=aug,
                                                          preset="paper", nsamples=32, seqlen=512, let_down=True,
                                                          let_shifts=True))
            out[f"OmniQuant {kind} (CPU preset; relative loss)"] = _tables.timed(
                lambda m, w=w, a=a, aug=aug: sq.omniquant(m, wbits=w, abits=a, group_size=None, let=True, aug_loss=aug,
                                                          preset="cpu", loss="relative"))
            out[f"OmniQuant {kind} (32x512 x 20 epochs; relative loss; keep_best)"] = _tables.timed(
                lambda m, w=w, a=a, aug=aug: sq.omniquant(m, wbits=w, abits=a, group_size=None, let=True, aug_loss=aug,
                                                          preset="paper", nsamples=32, seqlen=512, loss="relative",
                                                          keep_best=True))
    return out


def main():
    args = _tables.arguments(__doc__.splitlines()[0], "wa_table.json").parse_args()
    _tables.run(rows(), args, "(SmolLM2's packaged weights are Q4_1, group 32; activation quantization is simulated "
                              "in float32: SwiftQuant ships no low-bit activation kernels.)")


if __name__ == "__main__":
    main()
