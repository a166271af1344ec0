import Foundation
import SwiftQuant

/// `swiftquant bench quantize`: int4 group-128 quantize + pack of a weight matrix, next to a plain memory copy
/// of the same matrix and to the scalar reference kernel, all measured in this run.
/// (`python/benchmarks/bench_quantize.py` adds the NumPy implementation as a second reference.)
enum QuantizeBenchmark {
    static func run(rows: Int, cols: Int, iterations: Int) -> String {
        let n = rows * cols
        let w = Tensor(zeros: [rows, cols])
        var state: UInt64 = 0x2545_F491_4F6C_DD1D
        for i in 0..<n {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            w.pointer[i] = Float(Int(state >> 40) % 20001 - 10000) / 100_000
        }
        let copy = Tensor(zeros: [rows, cols])
        let config = QuantizerConfig(format: .int(bits: 4), groupSize: 128)
        let g = config.groupCount(cols: cols)
        let stride = BitPacking.packedByteCount(count: cols, bits: 4)
        var packed = [UInt8](repeating: 0, count: rows * stride)
        var scales = [Float](repeating: 0, count: rows * g)
        var zeros = [Int32](repeating: 0, count: rows * g)

        func best(_ body: () -> Void) -> Double {
            body()
            var t = Double.infinity
            for _ in 0..<max(1, iterations) {
                let s = Date.timeIntervalSinceReferenceDate
                body()
                t = min(t, Date.timeIntervalSinceReferenceDate - s)
            }
            return t
        }
        let tCopy = best { copy.pointer.update(from: w.pointer, count: n) }
        let tOurs = best {
            packed.withUnsafeMutableBufferPointer { p in
                scales.withUnsafeMutableBufferPointer { s in
                    zeros.withUnsafeMutableBufferPointer { z in
                        try! Quantizer.quantizePacked(UnsafeBufferPointer(w.buffer), rows: rows, cols: cols,
                                                      config: config, packed: p, scales: s, zeros: z)
                    }
                }
            }
        }
        // The scalar reference on a slice of rows (it is slow), scaled to the whole matrix.
        let refRows = min(rows, 512)
        let tRef = best {
            var codes = [UInt8](repeating: 0, count: cols)
            codes.withUnsafeMutableBufferPointer { c in
                for r in 0..<refRows {
                    let row = w.pointer + r * cols
                    let grid = IntGrid(bits: 4)
                    for gi in 0..<g {
                        let lo = gi * 128, n = min(cols, lo + 128) - lo
                        let (mn, mx) = QuantKernels.Reference.minMax(row + lo, n)!
                        let (h, z, _) = grid.params(xmin: mn, xmax: mx)
                        for i in lo..<(lo + n) { c[i] = QuantKernels.Reference.intCode(row[i], h: h, z: z, qmax: grid.qmax) }
                    }
                    BitPacking.Reference.pack(c.baseAddress!, count: cols, bits: 4, into: &packed[r * stride])
                }
            }
        } * Double(rows) / Double(refRows)
        let mb = Double(n * 4) / 1e6
        return """
            int4 group-128 quantize + pack of a \(rows)×\(cols) float32 matrix (\(String(format: "%.0f", mb)) MB), best of \(iterations)
            CPU: \(SwiftQuantInfo.cpu)
            \(KernelDispatch.description)
            memcpy (same matrix)           \(String(format: "%8.2f ms", tCopy * 1e3))  \(String(format: "%6.1f GB/s", 2 * mb / 1e3 / tCopy))
            SwiftQuant quantize + pack     \(String(format: "%8.2f ms", tOurs * 1e3))  \(String(format: "%6.2f×", tOurs / tCopy)) the copy's time
            scalar reference (extrapolated)\(String(format: "%8.2f ms", tRef * 1e3))  \(String(format: "%6.1f×", tRef / tOurs)) slower than SwiftQuant
            """
    }
}
