#!/usr/bin/env bash
# Builds the parsers with libFuzzer + AddressSanitizer and fuzzes them.
#   Fuzz/run.sh [seconds]      (default 600)
# The corpus starts from the committed safetensors/GGUF fixtures; new inputs go to .build-fuzz/corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN=${1:-600}
OUT=.build-fuzz
mkdir -p "$OUT/modules/CSQSupport" "$OUT/corpus"
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
# Seeds: every fixture file, prefixed with the selector byte (0 = safetensors, 1 = GGUF).
for f in $(find Tests/SwiftQuantTests/Fixtures -name '*.safetensors' -size -200k); do
    { printf '\x00'; cat "$f"; } > "$OUT/corpus/seed-st-$(basename "$f")"
done
for f in $(find Tests/SwiftQuantTests/Fixtures -name '*.ggufbin'); do
    { printf '\x01'; cat "$f"; } > "$OUT/corpus/seed-gguf-$(basename "$f")"
done
exec "$OUT/fuzz-parsers" "$OUT/corpus" -max_total_time="$SECONDS_TO_RUN" -max_len=65536 -rss_limit_mb=4096 \
    -timeout=10 -print_final_stats=1
