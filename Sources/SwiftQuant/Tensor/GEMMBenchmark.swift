import CSQSupport
import Foundation

/// Measures the BLAS façade on the matrix products of a transformer block (`swiftquant bench gemm`).
public enum GEMMBenchmark {
    public struct Shape: Sendable {
        public let m: Int, k: Int, n: Int
        public let label: String
    }

    /// Square 2048³ plus the products of a SmolLM2-135M block over `tokens` tokens (hidden 576, kv 192,
    /// intermediate 1536), as `x[m, k] · Wᵀ` with `W` stored `[n, k]`.
    public static func transformerShapes(tokens: Int) -> [Shape] {
        [
            Shape(m: 2048, k: 2048, n: 2048, label: "square"),
            Shape(m: tokens, k: 576, n: 576, label: "q_proj / o_proj"),
            Shape(m: tokens, k: 576, n: 192, label: "k_proj / v_proj"),
            Shape(m: tokens, k: 576, n: 1536, label: "gate_proj / up_proj"),
            Shape(m: tokens, k: 1536, n: 576, label: "down_proj"),
        ]
    }

    /// GFLOP/s of `C = A · Bᵀ` (B stored [n, k], as Linear weights are) over about `seconds`.
    public static func gflops(m: Int, k: Int, n: Int, seconds: Double) -> Double {
        let a = Tensor(zeros: [m, k]), b = Tensor(zeros: [n, k]), c = Tensor(zeros: [m, n])
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        for t in [a, b] {
            for i in 0..<t.count {
                state = state &* 6364136223846793005 &+ 1442695040888963407
                t.pointer[i] = Float(Int(state >> 40) % 2001 - 1000) / 1000
            }
        }
        func once() {
            BLAS.sgemm(transB: true, m: m, n: n, k: k, a: a.pointer, lda: k, b: b.pointer, ldb: k, c: c.pointer, ldc: n)
        }
        once()
        var iterations = 0
        let start = sqs_now()
        repeat {
            once()
            iterations += 1
        } while sqs_now() - start < seconds
        let perCall = (sqs_now() - start) / Double(iterations)
        return 2 * Double(m) * Double(n) * Double(k) / perCall / 1e9
    }

    /// The same products timed by NumPy in a child process; nil when no Python with NumPy runs.
    public static func numpyGFLOPS(python: String, shapes: [Shape], seconds: Double) -> [Double]? {
        let list = shapes.map { "(\($0.m),\($0.k),\($0.n))" }.joined(separator: ",")
        let script = """
            import numpy as np, time
            for m, k, n in [\(list)]:
                rng = np.random.default_rng(0)
                a = rng.uniform(-1, 1, (m, k)).astype(np.float32); b = rng.uniform(-1, 1, (n, k)).astype(np.float32)
                c = np.empty((m, n), np.float32); bt = b.T
                np.matmul(a, bt, out=c); it = 0; t = time.perf_counter()
                while True:
                    np.matmul(a, bt, out=c); it += 1
                    if time.perf_counter() - t >= \(seconds): break
                print(2.0 * m * n * k * it / (time.perf_counter() - t) / 1e9)
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [python, "-c", script]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch { return nil }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { return nil }
        let values = String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap { Double($0) }
        return values.count == shapes.count ? values : nil
    }
}
