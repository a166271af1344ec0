import Foundation

/// OPT (pre-LayerNorm): learned positions with offset 2, LayerNorm, biased q/k/v/out projections with q scaled
/// by head_dim^-0.5, ReLU MLP (fc1/fc2), final LayerNorm, LM head tied to the token embedding.
public final class OPTModel: TransformerModel {
    public let config: OPTConfig
    public let source: TensorSource
    private let loader: WeightLoader
    private let overrides = BlockOverrides()
    private var embedCache: Tensor?
    private let lock = NSLock()
    /// transformers' `OPTLearnedPositionalEmbedding` offset: position p reads row p + 2.
    public static let positionOffset = 2
    static let layerNormEps: Float = 1e-5

    public var modelType: String { "opt" }
    public var hiddenSize: Int { config.hiddenSize }
    public var vocabSize: Int { config.vocabSize }
    public var numBlocks: Int { config.numHiddenLayers }
    public var maxSequenceLength: Int { config.maxPositionEmbeddings }

    public static let linearNames = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                     "self_attn.out_proj", "fc1", "fc2"]
    public var blockLinearNames: [String] { Self.linearNames }
    public var letPairs: [LETPair] {
        [LETPair(source: .norm("self_attn_layer_norm"),
                 targets: ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
         LETPair(source: .linear("self_attn.v_proj"), targets: ["self_attn.out_proj"]),
         LETPair(source: .norm("final_layer_norm"), targets: ["fc1"])]
    }

    public init(config: OPTConfig, source: TensorSource) throws {
        try config.validate()
        self.config = config
        self.source = source
        self.loader = WeightLoader(source: source)
        for name in ["model.decoder.embed_tokens.weight", "model.decoder.embed_positions.weight"]
        where !loader.has(name) {
            throw SwiftQuantError.format("missing weight '\(name)': not an OPT checkpoint in Hugging Face naming")
        }
        if !config.tieWordEmbeddings && !loader.has("lm_head.weight") {
            throw SwiftQuantError.format("missing weight 'lm_head.weight' (tie_word_embeddings is false)")
        }
    }

    public convenience init(config: [String: Any], source: TensorSource) throws {
        try self.init(config: try OPTConfig(dictionary: config), source: source)
    }

    public func blockPrefix(_ i: Int) -> String { "model.decoder.layers.\(i)." }

    public func loadBlock(_ i: Int) throws -> TransformerBlock {
        try require(i >= 0 && i < numBlocks, "block index \(i) outside 0..<\(numBlocks)")
        let c = config, p = blockPrefix(i), h = c.hiddenSize, b = c.enableBias
        let specs: [(String, Int, Int)] = [
            ("self_attn.q_proj", h, h), ("self_attn.k_proj", h, h), ("self_attn.v_proj", h, h),
            ("self_attn.out_proj", h, h), ("fc1", c.ffnDim, h), ("fc2", h, c.ffnDim),
        ]
        var linears: [String: Linear] = [:]
        for (name, out, inF) in specs { linears[name] = try loader.linear(p + name, out: out, in: inF, bias: b) }
        var norms: [String: NormWeights] = [:]
        for name in ["self_attn_layer_norm", "final_layer_norm"] { norms[name] = try layerNorm(p + name) }
        return TransformerBlock(index: i, linearNames: Self.linearNames, linears: linears, norms: norms)
    }

    private func layerNorm(_ name: String) throws -> NormWeights {
        guard config.layerNormElementwiseAffine else { return NormWeights(weight: nil) }
        return NormWeights(weight: try loader.load(name + ".weight", [hiddenSize]),
                           bias: try loader.load(name + ".bias", [hiddenSize]))
    }

    public func block(_ i: Int) throws -> TransformerBlock {
        if let b = overrides[i] { return b }
        return try loadBlock(i)
    }

    public func setBlock(_ i: Int, _ block: TransformerBlock?) { overrides[i] = block }

    private func embedTokens() throws -> Tensor {
        lock.lock(); defer { lock.unlock() }
        if let e = embedCache { return e }
        let e = try loader.load("model.decoder.embed_tokens.weight", [config.vocabSize, config.hiddenSize])
        embedCache = e
        return e
    }

    public func embed(_ ids: [Int32]) throws -> Tensor {
        try checkIds(ids)
        let e = try embedTokens(), h = hiddenSize
        let pos = try loader.load("model.decoder.embed_positions.weight",
                                  [config.maxPositionEmbeddings + Self.positionOffset, h])
        let out = Tensor(zeros: [ids.count, h])
        for (t, id) in ids.enumerated() {
            let o = out.pointer + t * h, te = e.pointer + Int(id) * h, pe = pos.pointer + (t + Self.positionOffset) * h
            for j in 0..<h { o[j] = te[j] + pe[j] }
        }
        return out
    }

    public func lmHeadWeight() throws -> Tensor {
        if config.tieWordEmbeddings { return try embedTokens() }
        return try loader.load("lm_head.weight", [config.vocabSize, config.hiddenSize])
    }

    public func applyFinalNorm(_ hidden: Tensor) throws {
        if config.removeFinalLayerNorm { return }
        let n = try layerNorm("model.decoder.final_layer_norm")
        Kernels.layerNorm(hidden.pointer, rows: hidden.shape[0], dim: hiddenSize, weight: n.weight?.pointer,
                          bias: n.bias?.pointer, eps: Self.layerNormEps, hidden.pointer)
    }

    public func forward(block: TransformerBlock, hidden: Tensor, workspace ws: Workspace) throws {
        let c = config, T = hidden.shape[0], h = c.hiddenSize, hd = c.headDim, ffn = c.ffnDim
        try require(T <= c.maxPositionEmbeddings, "window of \(T) tokens is longer than OPT's "
                    + "\(c.maxPositionEmbeddings) positions")
        guard let n1 = block.norms["self_attn_layer_norm"], let n2 = block.norms["final_layer_norm"] else {
            throw SwiftQuantError.invalidArgument("block \(block.index) lacks its norms")
        }
        let x = hidden.pointer
        let xn = ws.buffer(0, T * h)
        let q = ws.buffer(1, T * h), k = ws.buffer(2, T * h), v = ws.buffer(3, T * h), attn = ws.buffer(4, T * h)

        Kernels.layerNorm(x, rows: T, dim: h, weight: n1.weight?.pointer, bias: n1.bias?.pointer,
                          eps: Self.layerNormEps, xn)
        Kernels.linear(xn, rows: T, block.linear("self_attn.q_proj"), q)
        Kernels.linear(xn, rows: T, block.linear("self_attn.k_proj"), k)
        Kernels.linear(xn, rows: T, block.linear("self_attn.v_proj"), v)
        // (q + b)·s·kᵀ = s·(q + b)·kᵀ: the head_dim^-0.5 scaling goes into the score GEMM.
        Kernels.causalAttention(q: q, k: k, v: v, out: attn, T: T, heads: c.numAttentionHeads,
                                kvHeads: c.numAttentionHeads, headDim: hd, scale: 1 / Float(hd).squareRoot(),
                                workspace: ws, slot: 8)
        Kernels.linear(attn, rows: T, block.linear("self_attn.out_proj"), x, accumulate: true)

        Kernels.layerNorm(x, rows: T, dim: h, weight: n2.weight?.pointer, bias: n2.bias?.pointer,
                          eps: Self.layerNormEps, xn)
        let mid = ws.buffer(6, T * ffn)
        Kernels.linear(xn, rows: T, block.linear("fc1"), mid)
        Kernels.relu(mid, count: T * ffn)
        Kernels.linear(mid, rows: T, block.linear("fc2"), x, accumulate: true)
    }
}
