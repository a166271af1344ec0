import Foundation
import SwiftQuant

/// Measures the BLAS façade on the matrix products of a transformer block (`swiftquant bench gemm`).
enum GEMMBenchmark {
    struct Shape: Sendable {
        let m: Int, k: Int, n: Int
        let label: String
    }

    /// Square 2048³ plus the products of a SmolLM2-135M block over `tokens` tokens (hidden 576, kv 192,
    /// intermediate 1536), as `x[m, k] · Wᵀ` with `W` stored `[n, k]`.
    static func transformerShapes(tokens: Int) -> [Shape] {
        [
            Shape(m: 2048, k: 2048, n: 2048, label: "square"),
            Shape(m: tokens, k: 576, n: 576, label: "q_proj / o_proj"),
            Shape(m: tokens, k: 576, n: 192, label: "k_proj / v_proj"),
            Shape(m: tokens, k: 576, n: 1536, label: "gate_proj / up_proj"),
            Shape(m: tokens, k: 1536, n: 576, label: "down_proj"),
        ]
    }

    /// The same products timed by NumPy in a child process; nil when no Python with NumPy runs.
    static func numpyGFLOPS(python: String, shapes: [Shape], seconds: Double) -> [Double]? {
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
