import CSQSupport
import Foundation

/// Times one OmniQuant calibration step — LWC fake-quant forward, backward, AdamW — on one real block
/// (`swiftquant bench block-step`, `python/benchmarks/bench_block_step.py`).
public enum BlockStepBenchmark {
    public struct Result: Sendable {
        public var stepSeconds: Double
        /// Matrix-product FLOPs of one step (forward, weight gradients, input gradients where needed).
        public var flops: Double
        public var peakGFLOPS: Double
        public var losses: [Float]
    }

    public static func run(model: LlamaModel, block index: Int, tokens: Int, wbits: Int, groupSize: Int,
                           iterations: Int, seed: UInt64 = 7) throws -> Result {
        let c = model.config
        let block = try model.loadBlock(index)
        var state = seed
        let ids = (0..<tokens).map { _ -> Int32 in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int32(Int(state >> 33) % c.vocabSize)
        }
        let x = try model.embed(ids)
        let target = try model.forwardBlock(index, hidden: x)
        let w = LlamaModel.linearNames.map { block.linear($0).weight }
        let grad = try LlamaBlockGrad(
            config: LlamaBlockConfig(hidden: c.hiddenSize, heads: c.numAttentionHeads, kvHeads: c.numKeyValueHeads,
                                     headDim: c.headDim, ffn: c.intermediateSize, rmsEps: Float(c.rmsNormEps),
                                     ropeTheta: c.ropeTheta),
            weights: LlamaBlockWeights(inputNorm: block.norms["input_layernorm"]!.weight!, q: w[0], k: w[1], v: w[2],
                                       o: w[3], postNorm: block.norms["post_attention_layernorm"]!.weight!,
                                       gate: w[4], up: w[5], down: w[6]),
            bits: wbits, groupSize: groupSize, maxRows: tokens)
        let adam = try AdamW(parameters: grad.u + grad.l, learningRate: 1e-2)
        let grads = grad.gradU + grad.gradL
        var losses: [Float] = []
        var best = Double.infinity
        for _ in 0..<(max(1, iterations) + 1) {
            let t = sqs_now()
            losses.append(try grad.trainStep(input: x, target: target))
            try adam.step(gradients: grads)
            best = min(best, sqs_now() - t)
        }
        // Matrix-product FLOPs actually done: forward, weight gradients of all seven linears, input gradients of
        // all but q/k/v (the block input needs none), attention forward and backward (2× forward).
        let params = Double(w.reduce(0) { $0 + $1.count }), qkv = Double(w[0].count + w[1].count + w[2].count)
        let T = Double(tokens)
        let attn = 2.0 * 2 * T * T / 2 * Double(c.numAttentionHeads * c.headDim)
        let flops = 2 * T * params + 2 * T * params + 2 * T * (params - qkv) + 3 * attn
        let peak = GEMMBenchmark.gflops(m: 1024, k: 1024, n: 1024, seconds: 0.5)
        return Result(stepSeconds: best, flops: flops, peakGFLOPS: peak, losses: losses)
    }
}
