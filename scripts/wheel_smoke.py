"""Run by scripts/wheel_test.sh inside a fresh venv where only the swiftquant wheel (and NumPy) is installed, with
the Swift toolchain's library folder hidden: checks that nothing of the package resolves into the toolchain, then
quantizes and evaluates a model and saves it, and checks that no toolchain file was mapped into the process.

    python wheel_smoke.py --toolchain-dir DIR [--toolchain-dir DIR …] [--gguf SmolLM2.gguf] [--text FILE] --out DIR
"""
import argparse
import math
import os
import shutil
import subprocess
import sys

import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("--toolchain-dir", action="append", required=True)
ap.add_argument("--gguf")
ap.add_argument("--text")
ap.add_argument("--out", required=True)
args = ap.parse_args()
toolchain = [os.path.realpath(d) for d in args.toolchain_dir]


def in_toolchain(path):
    p = os.path.realpath(path)
    return any(p == d or p.startswith(d + os.sep) for d in toolchain)


import swiftquant as sq  # noqa: E402

pkg = os.path.dirname(os.path.realpath(sq.__file__))
assert os.path.realpath(sys.prefix) in pkg, f"swiftquant imported from {pkg}, not from this venv {sys.prefix}"
libs = sorted(f for f in os.listdir(pkg) if f.endswith(".so"))
print(f"wheel_smoke: {len(libs)} shared objects in {pkg}")

# 1. What the dynamic loader resolves, and the run paths written in the files.
for f in libs:
    out = subprocess.run(["ldd", os.path.join(pkg, f)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        assert "not found" not in line, f"{f}: {line.strip()}"
        if "=>" in line:
            target = line.split("=>")[1].split("(")[0].strip()
            assert not (target and in_toolchain(target)), f"{f} resolves into the toolchain: {line.strip()}"
            name = line.split("=>")[0].strip()
            if os.path.exists(os.path.join(pkg, name)):
                assert os.path.realpath(target) == os.path.realpath(os.path.join(pkg, name)), \
                    f"{f}: {name} resolves to {target}, not to the bundled copy"
    if shutil.which("readelf"):
        dyn = subprocess.run(["readelf", "-d", os.path.join(pkg, f)], capture_output=True, text=True, check=True).stdout
        for line in dyn.splitlines():
            if "RUNPATH" in line or "RPATH" in line:
                paths = line.split("[", 1)[1].rstrip("]").split(":")
                assert all(p.startswith("$ORIGIN") for p in paths if p), f"{f}: {line.strip()}"
print("wheel_smoke: ldd and RUNPATH point only into the package or the system")

# 2. Work: the quantizer on an array, and a model loaded, quantized, evaluated, saved and loaded back.
w = np.random.default_rng(0).standard_normal((256, 256), dtype=np.float32)
q = sq.quantize(w, "int4", group_size=128)
step = np.repeat(q.scales, 128, axis=1)
assert np.all(np.abs(q.dequantize() - w) <= 0.5 * step + 1e-6)
if args.gguf:
    m = sq.load_model(args.gguf)
    text = open(args.text, encoding="utf-8").read()[:20000] if args.text else "The quick brown fox. " * 400
    ids = m.tokenizer.encode(text)[:512]
    assert ids.size == 512, ids.size
    r = sq.rtn(m, 4, group_size=128)
    fp = sq.perplexity(m, ids=ids, seqlen=256, progress=False)
    rq = sq.perplexity(r, ids=ids, seqlen=256, progress=False)
    assert math.isfinite(fp) and math.isfinite(rq) and 1 < fp < 1000 and 1 < rq < 1000, (fp, rq)
    r.save(args.out)
    back = sq.load_model(args.out)
    assert np.array_equal(back.logits(ids[:16]), r.logits(ids[:16]))
    assert np.array_equal(back.tokenizer.encode(text[:2000]), m.tokenizer.encode(text[:2000]))
    print(f"wheel_smoke: SmolLM2 RTN W4 g128 on 2 windows of 256 tokens: perplexity {rq:.3f} (FP {fp:.3f}); "
          f"saved and reloaded")
else:
    print("wheel_smoke: no --gguf given: model load/quantize/eval not run")

# 3. Nothing of the toolchain was mapped into this process.
with open("/proc/self/maps") as f:
    mapped = {line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6}
bad = sorted(p for p in mapped if p.startswith("/") and in_toolchain(p))
assert not bad, f"mapped from the toolchain: {bad}"
core = [p for p in mapped if os.path.basename(p) == "libswiftCore.so"]
assert core and all(os.path.dirname(os.path.realpath(p)) == pkg for p in core), core
print(f"wheel_smoke: OK (libswiftCore.so mapped from {os.path.dirname(core[0])}; nothing from {', '.join(toolchain)})")
