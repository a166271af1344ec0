import CSQSupport
import Foundation

extension BLAS {
    /// GFLOP/s of `C = A · Bᵀ` (B stored [n, k], as Linear weights are) over about `seconds`: the rate the loaded
    /// BLAS reaches on this machine, which benchmarks report their matrix-product time against.
    public static func measureGFLOPS(m: Int, k: Int, n: Int, seconds: Double) -> Double {
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

}

/// Kept for `BlockStepBenchmark` (Pipeline); the benchmarks themselves live in the CLI (`swiftquant bench`).
enum GEMMBenchmark {
    static func gflops(m: Int, k: Int, n: Int, seconds: Double) -> Double {
        BLAS.measureGFLOPS(m: m, k: k, n: n, seconds: seconds)
    }
}
