import CSQSupport
import Foundation
import SwiftQuant

/// Times one OmniQuant calibration step — LWC fake-quant forward, backward, AdamW — on one real block
/// (`swiftquant bench block-step`, `python/benchmarks/bench_block_step.py`).
enum BlockStepBenchmark {
    struct Result: Sendable {
        var stepSeconds: Double
        /// Matrix-product FLOPs of one step (forward, weight gradients, input gradients where needed).
        var flops: Double
        var peakGFLOPS: Double
        var losses: [Float]
    }

    /// `abits`: INT activation and KV quantization (per token, per head); `useLET`: LET trained with LWC, scales
    /// starting at 1 (the PyTorch side starts there too), its transform recomputed at every step.
    static func run(model: TransformerModel, block index: Int, tokens: Int, wbits: Int, groupSize: GroupSize,
                    iterations: Int, abits: Int? = nil, useLET: Bool = false, precision: GEMMPrecision = .fp32,
                    seed: UInt64 = 7) throws -> Result {
        let block = try model.loadBlock(index)
        var state = seed
        let ids = (0..<tokens).map { _ -> Int32 in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int32(Int(state >> 33) % model.vocabSize)
        }
        let x = try model.embed(ids)
        let target = try model.forwardBlock(index, hidden: x)
        let spec = model.blockSpec
        let lwc = try spec.linears.map { l -> LWCTransform in
            let t = try LWCTransform(rows: l.outFeatures, columns: l.inFeatures, bits: wbits, group: groupSize,
                                     symmetric: false)
            if useLET { t.gradWeight = Tensor(zeros: [l.outFeatures, l.inFeatures]) }
            return t
        }
        let scheme = try abits.map { try ActivationScheme(linear: "int\($0)", kv: "int\($0)") }
        let graph = try model.blockGraph(block, hooks: lwc.map { LinearHooks(weight: $0) }, maxRows: tokens,
                                         activations: scheme)
        graph.precision = precision
        let letp = useLET ? try LETParameters(spec: spec, shifts: false) : nil
        graph.parameterGradients = useLET
        let adam = try AdamW(parameters: lwc.map(\.u) + lwc.map(\.l), learningRate: 1e-2)
        let adamLET = try letp.map { try AdamW(parameters: $0.parameters, learningRate: 5e-3) }
        let grads = lwc.map(\.gradU) + lwc.map(\.gradL)
        var losses: [Float] = []
        var best = Double.infinity
        for _ in 0..<(max(1, iterations) + 1) {
            let t = sqs_now()
            for l in lwc { l.zeroGradients() }
            if let letp {  // the transformed block from the frozen one, as OmniQuantLET does each step
                letp.zeroGradients()
                try graph.install(try letp.apply(to: block))
            }
            losses.append(try graph.trainStep(input: x, target: target))
            if let letp {
                letp.backward(block: block, dWeights: lwc.map(\.gradWeight), dBiases: graph.biasGradients,
                              dNorms: graph.normGradients)
                try adamLET!.step(gradients: letp.gradients)
            }
            try adam.step(gradients: grads)
            best = min(best, sqs_now() - t)
        }
        let w = spec.linears.map { block.linear($0.name).weight }
        let qkvCount = spec.linears.filter { [.q, .k, .v].contains($0.role) }.reduce(0) { $0 + $1.outFeatures * $1.inFeatures }
        // Matrix-product FLOPs actually done: forward, weight gradients of all seven linears, input gradients of
        // all but q/k/v (the block input needs none), attention forward and backward (2× forward).
        let params = Double(w.reduce(0) { $0 + $1.count }), qkv = Double(qkvCount)
        let T = Double(tokens)
        let attn = 2.0 * 2 * T * T / 2 * Double(spec.qDim)
        let flops = 2 * T * params + 2 * T * params + 2 * T * (params - qkv) + 3 * attn
        let peak = BLAS.measureGFLOPS(m: 1024, k: 1024, n: 1024, seconds: 0.5)
        return Result(stepSeconds: best, flops: flops, peakGFLOPS: peak, losses: losses)
    }
}
