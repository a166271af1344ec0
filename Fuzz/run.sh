#!/usr/bin/env bash
# Builds the parsers and checkpoint importers with libFuzzer + AddressSanitizer and fuzzes them.
#   Fuzz/run.sh [seconds] [target]      (default 600 s, every target)
# target pins one entry point (FuzzTarget.swift): 0 safetensors, 1 GGUF, 2 GPTQ import, 3 compressed-tensors
# import, 4 SwiftQuant's saved quantization; its corpus is then .build-fuzz/corpus-<target>.
# The corpus starts from the committed safetensors/GGUF fixtures and from checkpoints the harness writes itself
# (FormatFuzz.importSeeds: a one-block Llama exported as GPTQ, compressed-tensors and SwiftQuant's format).
# FUZZ_SKIP_BUILD=1 reuses the last build (to run several targets side by side).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN=${1:-600}
TARGET=${2:-}
OUT=.build-fuzz
CORPUS="$OUT/corpus${TARGET:+-$TARGET}"
mkdir -p "$OUT/modules/CSQSupport" "$CORPUS"
if [ -z "${FUZZ_SKIP_BUILD:-}" ]; then
cat > "$OUT/modules/CSQSupport/module.modulemap" <<MAP
module CSQSupport {
    header "$PWD/Sources/CSQSupport/include/sq_support.h"
    export *
}
MAP
for c in support quant_int4; do
    clang -O1 -g -fsanitize=fuzzer-no-link,address -c Sources/CSQSupport/$c.c -I Sources/CSQSupport/include \
        -o "$OUT/$c.o"
done
swiftc -O -g -sanitize=fuzzer,address -parse-as-library -module-name SwiftQuant \
    -I "$OUT/modules/CSQSupport" $(find Sources/SwiftQuant -name '*.swift') Fuzz/FormatFuzz.swift Fuzz/FuzzTarget.swift \
    "$OUT/support.o" "$OUT/quant_int4.o" -ldl -o "$OUT/fuzz-parsers"
fi
# Seeds: every fixture file, prefixed with the selector byte (0 = safetensors, 1 = GGUF), and the importer seeds
# (written by the harness at start-up, SWIFTQUANT_FUZZ_SEEDS).
for f in $(find Tests/SwiftQuantTests/Fixtures -name '*.safetensors' -size -200k); do
    { printf '\x00'; cat "$f"; } > "$CORPUS/seed-st-$(basename "$f")"
done
for f in $(find Tests/SwiftQuantTests/Fixtures -name '*.ggufbin'); do
    { printf '\x01'; cat "$f"; } > "$CORPUS/seed-gguf-$(basename "$f")"
done
SWIFTQUANT_FUZZ_SEEDS="$CORPUS" SWIFTQUANT_FUZZ_TARGET="$TARGET" exec "$OUT/fuzz-parsers" "$CORPUS" \
    -max_total_time="$SECONDS_TO_RUN" -max_len=131072 -rss_limit_mb=4096 -timeout=10 -print_final_stats=1
