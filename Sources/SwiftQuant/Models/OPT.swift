import Foundation

/// OPT (pre-LayerNorm): learned positions with offset 2, LayerNorm, biased q/k/v/out projections with q scaled
/// by head_dim^-0.5, ReLU MLP (fc1/fc2), final LayerNorm, LM head tied to the token embedding.
public final class OPTModel: TransformerModel {
    public let config: OPTConfig
    public let source: TensorSource
    private let loader: WeightLoader
    private let overrides = BlockOverrides()
    public var activations: ActivationScheme?
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

    /// LayerNorm → biased q, k, v → attention (no rotary positions) → out_proj; LayerNorm → fc1 → ReLU → fc2.
    public let blockSpec: BlockSpec

    /// The block description of an OPT config.
    public static func blockSpec(for c: OPTConfig) -> BlockSpec {
        let h = c.hiddenSize, f = c.ffnDim, b = c.enableBias, affine = c.layerNormElementwiseAffine
        return BlockSpec(
            hidden: h, heads: c.numAttentionHeads, kvHeads: c.numAttentionHeads, headDim: c.headDim, ffn: f,
            rope: false, mlp: .relu,
            attentionNorm: .init("self_attn_layer_norm", .layer, eps: layerNormEps, affine: affine, bias: affine),
            mlpNorm: .init("final_layer_norm", .layer, eps: layerNormEps, affine: affine, bias: affine),
            linears: [.init("self_attn.q_proj", .q, out: h, in: h, bias: b), .init("self_attn.k_proj", .k, out: h, in: h, bias: b),
                      .init("self_attn.v_proj", .v, out: h, in: h, bias: b), .init("self_attn.out_proj", .o, out: h, in: h, bias: b),
                      .init("fc1", .up, out: f, in: h, bias: b), .init("fc2", .down, out: h, in: f, bias: b)],
            letPairs: [LETPair(source: .norm("self_attn_layer_norm"),
                               targets: ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
                       LETPair(source: .linear("self_attn.v_proj"), targets: ["self_attn.out_proj"]),
                       LETPair(source: .norm("final_layer_norm"), targets: ["fc1"])])
    }

    public func rotaryTables(rows: Int) -> RopeTables? { nil }

    public init(config: OPTConfig, source: TensorSource) throws {
        try config.validate()
        self.config = config
        self.blockSpec = Self.blockSpec(for: config)
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
        return try loader.block(i, prefix: blockPrefix(i), spec: blockSpec)
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
}
