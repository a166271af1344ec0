import SwiftQuant

/// A synthetic Llama block (random weights) run through the one block graph with LWC on every linear.
struct SyntheticLlamaBlock {
    let spec: BlockSpec
    let weights: TransformerBlock
    let lwc: [LWCTransform]
    let graph: BlockGraph
    let rope: RopeTables

    init(hidden: Int, heads: Int, kvHeads: Int, headDim: Int, ffn: Int, bits: Int, group: Int?, maxRows: Int,
         eps: Double = 1e-5, theta: Double = 10_000, rng: inout TestRNG,
         weights given: [String: Tensor]? = nil, norms: (Tensor, Tensor)? = nil, lwcParameters: [(Tensor, Tensor)]? = nil,
         clamp: Autodiff.FakeQuantLWC.ClampGradient = .inclusive, rope tables: RopeTables? = nil) throws {
        let cfg = LlamaConfig(hiddenSize: hidden, intermediateSize: ffn, numHiddenLayers: 1, numAttentionHeads: heads,
                              numKeyValueHeads: kvHeads, headDim: headDim, rmsNormEps: eps, ropeTheta: theta, vocabSize: 8)
        spec = LlamaModel.blockSpec(for: cfg)
        var linears: [String: Linear] = [:]
        for l in spec.linears {
            let w = given?[l.name] ?? tensor(rng.floats(l.outFeatures * l.inFeatures, scale: 1 / Double(l.inFeatures).squareRoot()),
                                             [l.outFeatures, l.inFeatures])
            linears[l.name] = Linear(weight: w)
        }
        let (g1, g2) = norms ?? (tensor(rng.floats(hidden, scale: 0.1, shift: 1)), tensor(rng.floats(hidden, scale: 0.1, shift: 1)))
        weights = TransformerBlock(index: 0, linearNames: spec.linearNames, linears: linears,
                                   norms: ["input_layernorm": NormWeights(weight: g1), "post_attention_layernorm": NormWeights(weight: g2)])
        lwc = try spec.linears.enumerated().map { k, l in
            try LWCTransform(rows: l.outFeatures, columns: l.inFeatures, bits: bits, group: GroupSize(group), symmetric: false,
                             clampGradient: clamp, u: lwcParameters?[k].0, l: lwcParameters?[k].1)
        }
        rope = tables ?? Autodiff.Rope.tables(rows: maxRows, inverseFrequencies: Autodiff.Rope.inverseFrequencies(headDim: headDim, theta: theta))
        graph = try BlockGraph(spec: spec, weights: weights, hooks: lwc.map { LinearHooks(weight: $0) }, rope: rope,
                               maxRows: maxRows)
    }

    /// The FP block (no hooks) on `x`.
    func fpForward(_ x: Tensor) throws -> Tensor {
        try BlockGraph(spec: spec, weights: weights, rope: rope, maxRows: graph.maxRows).forward(x).copy()
    }

    func zeroGradients() { for t in lwc { t.zeroGradients() } }
    var parameters: [Tensor] { lwc.map(\.u) + lwc.map(\.l) }
    var gradients: [Tensor] { lwc.map(\.gradU) + lwc.map(\.gradL) }
}

/// `[rows, d/2]` tables as the `[rows, d]` ones Hugging Face builds (both halves equal).
func fullRopeTable(_ half: Tensor) -> [Double] {
    let rows = half.shape[0], h = half.shape[1]
    var out = [Double](repeating: 0, count: rows * 2 * h)
    for t in 0..<rows {
        for j in 0..<h {
            let v = Double(half.pointer[t * h + j])
            out[t * 2 * h + j] = v; out[t * 2 * h + j + h] = v
        }
    }
    return out
}

/// The first half of each row of a `[rows, d]` table.
func halfRopeTable(_ full: Tensor) -> Tensor {
    let rows = full.shape[0], d = full.shape[1], h = d / 2
    let out = Tensor(zeros: [rows, h])
    for t in 0..<rows { for j in 0..<h { out.pointer[t * h + j] = full.pointer[t * d + j] } }
    return out
}
