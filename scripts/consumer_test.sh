#!/usr/bin/env bash
# SwiftQuant as a versioned Swift package dependency, the way another project uses it:
#   1. clone this checkout to a temporary folder, bring over the working tree's uncommitted changes (tracked and
#      new files), commit them there and tag the result 0.1.0;
#   2. create a small consumer package with `.package(url: "file://…", from: "0.1.0")` that depends on the
#      SwiftQuant library product only;
#   3. resolve, build and run it with no environment variables, check its output, and check that the library
#      product did not bring swift-argument-parser (the CLI's dependency) into the build. SwiftPM (6.x) still
#      resolves and clones it, because a package's dependencies cannot be scoped to one of its products; only
#      moving the CLI into a package of its own would avoid that.
# Called by `make test`; safe to run on its own: scripts/consumer_test.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/swiftquant-consumer.XXXXXX")"
[ -n "${KEEP_CONSUMER:-}" ] || trap 'rm -rf "$TMP"' EXIT

git clone -q "$ROOT" "$TMP/SwiftQuant"
(
    cd "$ROOT"
    git ls-files --cached --others --exclude-standard | while IFS= read -r f; do [ -f "$f" ] && printf '%s\n' "$f"; done \
        | tar -cf - -T -
) | tar -xf - -C "$TMP/SwiftQuant"
(cd "$ROOT" && git ls-files --deleted) | (cd "$TMP/SwiftQuant" && xargs -r rm -f)
(
    cd "$TMP/SwiftQuant"
    git add -A
    git -c user.name=consumer-test -c user.email=consumer-test@localhost commit -q -m "working tree" --allow-empty
    git tag 0.1.0
)

mkdir -p "$TMP/consumer/Sources/Consumer"
cat > "$TMP/consumer/Package.swift" <<MANIFEST
// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Consumer",
    dependencies: [
        .package(url: "file://$TMP/SwiftQuant", from: "0.1.0"),
    ],
    targets: [
        .executableTarget(name: "Consumer", dependencies: [.product(name: "SwiftQuant", package: "SwiftQuant")]),
    ]
)
MANIFEST
cat > "$TMP/consumer/Sources/Consumer/main.swift" <<'SWIFT'
import SwiftQuant

// A 4 × 64 matrix, int4 in groups of 32: quantize, dequantize, and check the error bound (half a step).
let rows = 4, cols = 64
let w: [Float] = (0..<(rows * cols)).map { Float(($0 * 37) % 23) / 11 - 1 }
let config = QuantizerConfig(format: try NumberFormat.parse("int4"), groupSize: 32)
let q = try w.withUnsafeBufferPointer { try Quantizer.quantize($0, rows: rows, cols: cols, config: config) }
let back = q.dequantized()
var worst: Float = 0
for r in 0..<rows {
    for c in 0..<cols {
        let step = q.scales[r * config.groupCount(cols: cols) + c / 32]
        worst = max(worst, abs(back.pointer[r * cols + c] - w[r * cols + c]) / step)
    }
}
let packed = q.packed()
print("consumer: \(config), \(q.codes.count) codes, \(packed.count) packed bytes, worst error \(worst) steps")
print(worst <= 0.5 ? "consumer: OK" : "consumer: FAILED")
SWIFT

cd "$TMP/consumer"
env -i PATH="$PATH" HOME="$HOME" swift build -c release --product Consumer 2>&1 | tail -3
OUT="$(env -i PATH="$PATH" HOME="$HOME" .build/release/Consumer)"
echo "$OUT"
grep -q "consumer: int4 g32 asym, 256 codes, 128 packed bytes" <<<"$OUT"
grep -q "consumer: OK" <<<"$OUT"
if [ -n "$(find .build/release -path '*ArgumentParser*' -name '*.o' 2>/dev/null)" ] || nm .build/release/Consumer | grep -q ArgumentParser; then
    echo "consumer_test: building the SwiftQuant library product compiled swift-argument-parser" >&2
    exit 1
fi
resolved=no
grep -q "swift-argument-parser" Package.resolved 2>/dev/null && resolved="yes (pinned, not built)"
echo "consumer_test: a versioned dependency on SwiftQuant 0.1.0 builds and runs; swift-argument-parser resolved: $resolved"
