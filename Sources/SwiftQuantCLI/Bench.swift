import ArgumentParser
import Foundation
import SwiftQuant

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Speed measurements, each next to a reference measured in the same run.",
        subcommands: [GEMM.self, Quantize.self, BlockStep.self]
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
                let ours = BLAS.measureGFLOPS(m: s.m, k: s.k, n: s.n, seconds: seconds)
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

extension Bench {
    struct BlockStep: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "block-step",
            abstract: "One OmniQuant LWC calibration step (forward + backward + AdamW) on one block of a model.")

        @Option(help: "A Hugging Face model directory or .gguf file (Llama family).")
        var model: String

        @Option(help: "Block index.")
        var block = 0

        @Option(help: "Tokens in the calibration window.")
        var tokens = 512

        @Option var wbits = 3
        @Option(help: "Group size: a number of columns, or per-row.")
        var groupSize: GroupSize = 128
        @Option var iterations = 10
        @Option(help: "Quantize every linear input per token and Q/K/V per head to this many bits (INT, W-A step).")
        var abits: Int?
        @Flag(name: .customLong("let"), help: "Train OmniQuant's LET (scales from 1) together with LWC.")
        var useLET = false
        @Option(help: "Arithmetic of the block's matrix products: fp32 or bf16 (AVX512-BF16 or AMX CPUs).")
        var precision = "fp32"

        @Flag(help: "Print one JSON object.")
        var json = false

        func run() throws {
            try runReportingErrors {
                let loaded = try LoadedModel.load(path: model)
                guard let llama = loaded.model as? LlamaModel else {
                    throw SwiftQuantError.unsupported("block-step needs a Llama-family model")
                }
                guard let p = GEMMPrecision(rawValue: precision), p.isSupported else {
                    throw SwiftQuantError.invalidArgument("--precision must be fp32 or bf16 (bf16 needs AVX512-BF16 or AMX-BF16; this CPU: \(SwiftQuantInfo.cpu))")
                }
                let r = try BlockStepBenchmark.run(model: llama, block: block, tokens: tokens, wbits: wbits,
                                                   groupSize: groupSize, iterations: iterations, abits: abits,
                                                   useLET: useLET, precision: p)
                if json {
                    let o: [String: Any] = ["step_ms": r.stepSeconds * 1e3, "gflop_per_step": r.flops / 1e9,
                                            "gemm_peak_gflops": r.peakGFLOPS, "losses": r.losses.map(Double.init),
                                            "precision": p.rawValue,
                                            "blas": p == .bf16 ? BLAS.bf16Description : BLAS.description]
                    print(String(decoding: try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]), as: UTF8.self))
                } else {
                    print(String(format: "block %d, %d tokens, W%d g%@: %.1f ms per step (best of %d), %.2f GFLOP, %.0f GFLOP/s = %.0f%% of the GEMM peak (%.0f GFLOP/s, 1024³ in this run)",
                                 block, tokens, wbits, groupSize.description, r.stepSeconds * 1e3, iterations, r.flops / 1e9,
                                 r.flops / r.stepSeconds / 1e9, r.flops / r.stepSeconds / 1e9 / r.peakGFLOPS * 100, r.peakGFLOPS))
                }
            }
        }
    }
}

func pad(_ s: String, _ width: Int) -> String {
    s.count >= width ? s + " " : s + String(repeating: " ", count: width - s.count)
}
