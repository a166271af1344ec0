import ArgumentParser
import Foundation
import SwiftQuant

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Speed measurements, each next to a reference measured in the same run.",
        subcommands: [GEMM.self, Quantize.self]
    )
}

extension Bench {
    struct GEMM: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "fp32 GEMM GFLOP/s on a transformer block's shapes, next to NumPy's matmul (when python3 with numpy is found).")

        @Option(help: "Tokens per product (rows of the activations).")
        var tokens = 2048

        @Option(help: "Seconds to spend on each shape and library.")
        var seconds = 1.0

        @Option(help: "Python interpreter with NumPy for the reference column.")
        var python = ProcessInfo.processInfo.environment["PYTHON"] ?? "python3"

        func run() throws {
            print("BLAS: \(BLAS.description)")
            print("CPU:  \(SwiftQuantInfo.cpu)")
            let shapes = GEMMBenchmark.transformerShapes(tokens: tokens)
            let numpy = GEMMBenchmark.numpyGFLOPS(python: python, shapes: shapes, seconds: seconds)
            print("")
            print(pad("m×k×n", 22) + pad("SwiftQuant GFLOP/s", 20) + pad("NumPy GFLOP/s", 16) + "ratio")
            for (i, s) in shapes.enumerated() {
                let ours = GEMMBenchmark.gflops(m: s.m, k: s.k, n: s.n, seconds: seconds)
                let ref = numpy?[i]
                let line = pad("\(s.m)×\(s.k)×\(s.n)", 22) + pad(String(format: "%.1f", ours), 20)
                    + pad(ref.map { String(format: "%.1f", $0) } ?? "n/a", 16)
                    + (ref.map { String(format: "%.2f×", ours / $0) } ?? "")
                print(line + "  " + s.label)
            }
            if numpy == nil { print("\n(no NumPy reference: \(python) with numpy was not found)") }
        }
    }

    struct Quantize: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "int4 group-128 quantize + pack of a weight matrix, against a memory copy of the same matrix.")

        @Option var rows = 11008
        @Option var cols = 4096
        @Option var iterations = 10

        func run() throws {
            print(QuantizeBenchmark.run(rows: rows, cols: cols, iterations: iterations))
        }
    }
}

func pad(_ s: String, _ width: Int) -> String {
    s.count >= width ? s + " " : s + String(repeating: " ", count: width - s.count)
}
