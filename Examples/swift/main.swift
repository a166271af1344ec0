// Quantize one weight matrix with SwiftQuant from Swift: every format, per-row and group 128, with the
// relative error of each. Run: swift run -c release swiftquant-example
import Foundation
import SwiftQuant

let rows = 256, cols = 1024
var state: UInt64 = 42
func gaussian() -> Float {  // Box–Muller over a small LCG: reproducible weights
    func uniform() -> Float {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return (Float(state >> 40) + 0.5) / Float(1 << 24)
    }
    return (-2 * log(uniform())).squareRoot() * cos(2 * Float.pi * uniform())
}
let weights = (0..<(rows * cols)).map { _ in 0.02 * gaussian() }

print("SwiftQuant \(SwiftQuantInfo.version): \(rows)×\(cols) matrix")
print("format   grouping    rel. error")
for name in ["int8", "int4", "int3", "int2", "e4m3fn", "e2m1"] {
    for group in [.perRow, 128] as [GroupSize] {
        let config = QuantizerConfig(format: try NumberFormat.parse(name), groupSize: group,
                                     symmetric: name.hasPrefix("e"))
        let q = try weights.withUnsafeBufferPointer { try Quantizer.quantize($0, rows: rows, cols: cols, config: config) }
        let back = q.dequantized()
        var err: Float = 0, ref: Float = 0
        for i in 0..<weights.count {
            err += (weights[i] - back.pointer[i]) * (weights[i] - back.pointer[i])
            ref += weights[i] * weights[i]
        }
        let grouping = group.columns.map { "group \($0)" } ?? "per-row"
        print(name.padding(8) + " " + grouping.padding(11) + " " + String((err / ref).squareRoot()))
    }
}

extension String {
    func padding(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}
