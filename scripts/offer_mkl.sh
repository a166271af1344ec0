#!/bin/bash
# Installs MKL (PyPI `mkl`, about 1 GB in the venv) as a GEMM candidate where it is known to pay, by a rule drawn
# from measurements (README "GEMM backends"): on Intel x86-64 processors MKL's fp32 GEMM ran 1.3x OpenBLAS's and
# its bf16 GEMM uses AMX; on AMD processors it takes generic paths and was the slowest backend measured. Once
# installed, SwiftQuant's first product still measures every backend and keeps the fastest, so a wrong guess here
# costs disk space, never speed. SWIFTQUANT_MKL_INSTALL=1 installs anywhere, =0 never; a failed download is a
# warning, not an error (everything works without MKL).
#   usage: scripts/offer_mkl.sh PYTHON
set -u
py="$1"
want="${SWIFTQUANT_MKL_INSTALL:-auto}"
arch="$(uname -m)"
vendor="$(awk -F': ' '/^vendor_id/ {print $2; exit}' /proc/cpuinfo 2>/dev/null)"
if [ "$want" = 0 ]; then
    echo "MKL: not installed (SWIFTQUANT_MKL_INSTALL=0)"; exit 0
fi
if [ "$want" = auto ] && { [ "$arch" != x86_64 ] || [ "$vendor" != GenuineIntel ]; }; then
    echo "MKL: not installed on this ${vendor:-unknown} $arch CPU (measured slower than SwiftQuant's GEMM on AMD; make mkl installs it anyway)"
    exit 0
fi
if "$py" -c "import importlib.metadata as m; m.version('mkl')" >/dev/null 2>&1; then
    echo "MKL: already in the venv"; exit 0
fi
echo "MKL: installing the PyPI mkl package into the venv (${vendor:-?} $arch; SWIFTQUANT_MKL_INSTALL=0 skips this)"
if ! "$py" -m pip install -q mkl; then
    echo "warning: pip install mkl failed; SwiftQuant runs without it" >&2
fi
exit 0
