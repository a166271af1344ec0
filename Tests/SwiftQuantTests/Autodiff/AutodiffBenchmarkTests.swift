import Foundation
import XCTest
import SwiftQuant

/// Times one LWC calibration step (forward + backward + AdamW) on a SmolLM2-135M-sized block. Prints figures,
/// asserts nothing about time. Runs only with SWIFTQUANT_BENCH=1, e.g.
/// `SWIFTQUANT_BENCH=1 swift test -c release --filter AutodiffBenchmark`.
final class AutodiffBenchmarkTests: XCTestCase {
    func testSmolLM2BlockStep() throws {
        try XCTSkipUnless(ProcessInfo.processInfo.environment["SWIFTQUANT_BENCH"] == "1", "set SWIFTQUANT_BENCH=1")
        var rng = TestRNG(seed: 7)
        let T = 512
        let sb = try SyntheticLlamaBlock(hidden: 576, heads: 9, kvHeads: 3, headDim: 64, ffn: 1536, bits: 3, group: 128,
                                        maxRows: T, rng: &rng)
        let block = sb.graph
        let x = tensor(rng.floats(T * 576), [T, 576])
        let target = try sb.fpForward(x)
        let opt = try AdamW(parameters: sb.parameters, learningRate: 1e-2)
        let dOut = zeros([T, 576])
        func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
        var fwd: [Double] = [], bwd: [Double] = [], adam: [Double] = [], total: [Double] = []
        for _ in 0..<12 {
            let t0 = now()
            sb.zeroGradients()
            let y = try block.forward(x)
            let t1 = now()
            Autodiff.MSELoss.backward(pred: y.pointer, target: target.pointer, dPred: dOut.pointer, count: y.count)
            _ = try block.backward(dOut)
            let t2 = now()
            try opt.step(gradients: sb.gradients)
            let t3 = now()
            fwd.append(t1 - t0); bwd.append(t2 - t1); adam.append(t3 - t2); total.append(t3 - t0)
        }
        func med(_ a: [Double]) -> String { String(format: "%.1f ms", a.dropFirst(2).sorted()[(a.count - 2) / 2] * 1e3) }
        // GEMM peak of this machine in the same run: 1024³ sgemm.
        let n = 1024
        let a = tensor(rng.floats(n * n), [n, n]), b = tensor(rng.floats(n * n), [n, n]), c = zeros([n, n])
        BLAS.sgemm(m: n, n: n, k: n, a: a.pointer, lda: n, b: b.pointer, ldb: n, c: c.pointer, ldc: n)
        let g0 = now()
        for _ in 0..<5 { BLAS.sgemm(m: n, n: n, k: n, a: a.pointer, lda: n, b: b.pointer, ldb: n, c: c.pointer, ldc: n) }
        let gflops = 5 * 2 * pow(Double(n), 3) / (now() - g0) / 1e9
        // The step's matrix-product work: 7 linears (fwd 2·T·params, bwd 4·T·params) + attention (QKᵀ, PV; ×2 bwd).
        let params = Double(576 * 576 * 2 + 192 * 576 * 2 + 1536 * 576 * 3)
        let attn = Double(9) * 2 * Double(T * T * 64) * 2
        let work = (6 * Double(T) * params + 3 * attn) / 1e9
        print("""
        SmolLM2 block step (hidden 576, 9/3 heads, d 64, ffn 1536, T \(T), W3 g128), BLAS: \(BLAS.description)
          forward \(med(fwd)), backward \(med(bwd)), AdamW \(med(adam)), total \(med(total))
          GEMM peak here: \(String(format: "%.0f", gflops)) GFLOP/s; step GEMM work \(String(format: "%.1f", work)) GFLOP \
        → \(String(format: "%.1f", work / gflops * 1e3)) ms at peak
        """)
    }
}
