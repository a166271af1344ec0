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
        let cfg = LlamaBlockConfig(hidden: 576, heads: 9, kvHeads: 3, headDim: 64, ffn: 1536)
        let T = 512
        func w(_ o: Int, _ i: Int) -> Tensor { tensor(rng.floats(o * i, scale: 1 / Double(i).squareRoot()), [o, i]) }
        let weights = LlamaBlockWeights(inputNorm: tensor(rng.floats(576, scale: 0.1, shift: 1)), q: w(576, 576),
                                        k: w(192, 576), v: w(192, 576), o: w(576, 576),
                                        postNorm: tensor(rng.floats(576, scale: 0.1, shift: 1)),
                                        gate: w(1536, 576), up: w(1536, 576), down: w(576, 1536))
        let block = try LlamaBlockGrad(config: cfg, weights: weights, bits: 3, groupSize: 128, maxRows: T)
        let x = tensor(rng.floats(T * 576), [T, 576])
        let target = try block.forward(x, quantized: false).copy()
        let opt = try AdamW(parameters: block.u + block.l, learningRate: 1e-2)
        let dOut = zeros([T, 576])
        func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
        var fwd: [Double] = [], bwd: [Double] = [], adam: [Double] = [], total: [Double] = []
        for _ in 0..<12 {
            let t0 = now()
            block.zeroGradients()
            let y = try block.forward(x)
            let t1 = now()
            Autodiff.MSELoss.backward(pred: y.pointer, target: target.pointer, dPred: dOut.pointer, count: y.count)
            _ = try block.backward(dOut)
            let t2 = now()
            try opt.step(gradients: block.gradU + block.gradL)
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
