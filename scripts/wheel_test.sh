#!/usr/bin/env bash
# The wheel runs without the Swift toolchain:
#   1. `pip wheel ./python` packages the release build already made (SWIFTQUANT_SWIFT_BIN; no Swift build here),
#      with the Swift runtime bundled beside libSwiftQuantCABI.so and RUNPATH $ORIGIN (python/setup.py);
#   2. a fresh temporary venv gets the wheel (and NumPy, its one dependency);
#   3. scripts/wheel_smoke.py runs there with a clean environment and, when this machine allows a private mount
#      namespace (unshare -m; root, or unshare -mr), with the toolchain's runtime folder hidden under an empty
#      tmpfs: ldd/RUNPATH checks, RTN + perplexity + save/load of SmolLM2 (SWIFTQUANT_SMOLLM2), and no toolchain
#      file mapped into the process.
# Called by `make test` (target wheel-test); on its own: SWIFTQUANT_SWIFT_BIN=… scripts/wheel_test.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"        # builds the wheel: needs setuptools, wheel, numpy
: "${SWIFTQUANT_SWIFT_BIN:?set SWIFTQUANT_SWIFT_BIN to the release build folder (swift build -c release --show-bin-path)}"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/swiftquant-wheel.XXXXXX")"
[ -n "${KEEP_WHEEL_TEST:-}" ] || trap 'rm -rf "$TMP"' EXIT
t0=$SECONDS

SWIFTQUANT_SWIFT_BIN="$SWIFTQUANT_SWIFT_BIN" "$PY" -m pip wheel -q --no-build-isolation --no-deps -w "$TMP/dist" \
    "$ROOT/python" >/dev/null
WHEEL="$(ls "$TMP"/dist/swiftquant-*.whl)"
"$PY" -c 'import os, sys; n = os.path.getsize(sys.argv[1]); print(f"wheel_test: {os.path.basename(sys.argv[1])}: {n} bytes ({n / 1e6:.1f} MB, {n / 2**20:.1f} MiB)")' "$WHEEL"

"$PY" -m venv "$TMP/venv"
"$TMP/venv/bin/python" -m pip install -q "$WHEEL"

# The toolchain's runtime folders (libswiftCore …) and its resource folder that holds them.
mapfile -t DIRS < <(swift -print-target-info | "$PY" -c '
import json, sys
p = json.load(sys.stdin)["paths"]
for d in [p["runtimeResourcePath"]] + p["runtimeLibraryPaths"]:
    print(d)')
ARGS=(--out "$TMP/saved" --text "$ROOT/../shared/data/wikitext-2-raw/test.joined.txt")
[ -f "$ROOT/../shared/data/wikitext-2-raw/test.joined.txt" ] || ARGS=(--out "$TMP/saved")
for d in "${DIRS[@]}"; do ARGS+=(--toolchain-dir "$d"); done
if [ -n "${SWIFTQUANT_SMOLLM2:-}" ] && [ -f "$SWIFTQUANT_SMOLLM2" ]; then
    ARGS+=(--gguf "$SWIFTQUANT_SMOLLM2")
else
    echo "wheel_test: SWIFTQUANT_SMOLLM2 not set: only the array quantizer runs (make test sets it)"
fi
CLEAN=(env -i PATH=/usr/bin:/bin HOME="$TMP" LANG=C.UTF-8 "$TMP/venv/bin/python" "$ROOT/scripts/wheel_smoke.py" "${ARGS[@]}")
# Hide each folder under an empty read-only tmpfs (one inside an already hidden folder no longer exists: skipped).
HIDE='for d in "$@"; do [ "$d" = -- ] && break; [ -d "$d" ] && mount -t tmpfs -o ro,size=4k none "$d"; done
while [ "$1" != -- ]; do shift; done; shift; exec "$@"'
cd "$TMP"
if unshare -m true 2>/dev/null; then
    echo "wheel_test: running with ${DIRS[*]} hidden (private mount namespace)"
    unshare -m sh -c "$HIDE" sh "${DIRS[@]}" -- "${CLEAN[@]}"
elif unshare -mr true 2>/dev/null; then
    echo "wheel_test: running with ${DIRS[*]} hidden (user + mount namespace)"
    unshare -mr sh -c "$HIDE" sh "${DIRS[@]}" -- "${CLEAN[@]}"
else
    echo "wheel_test: no mount namespace here: the toolchain stays on disk; running with a clean environment and"
    echo "            checking ldd, RUNPATH and the process's mapped files instead"
    "${CLEAN[@]}"
fi
echo "wheel_test: passed in $(( SECONDS - t0 )) s"
