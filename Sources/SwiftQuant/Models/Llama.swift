import Foundation

/// The Llama family (llama, mistral, qwen2): RMSNorm, rotary positions ("rotate_half"), grouped-query causal
/// attention, SiLU-gated MLP. Qwen2 adds q/k/v biases.
public final class LlamaModel: TransformerModel {
    public let config: LlamaConfig
    public let source: TensorSource
    private let loader: WeightLoader
    private let overrides = BlockOverrides()
    public var activations: ActivationScheme?
    private var embedCache: Tensor?
    private var ropeCache: RopeTables?
    private let lock = NSLock()

    public var modelType: String { config.modelType }
    public var hiddenSize: Int { config.hiddenSize }
    public var vocabSize: Int { config.vocabSize }
    public var numBlocks: Int { config.numHiddenLayers }
    public var maxSequenceLength: Int { config.slidingWindow ?? Int.max }

    public static let linearNames = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                     "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]

    /// RMSNorm → q, k, v (biases for Qwen2 or `attention_bias`) → RoPE → GQA attention → o; RMSNorm → SiLU-gated MLP.
    public let blockSpec: BlockSpec

    /// llama.cpp's tensor names for this family, and the q/k rows its converter permutes.
    public static let ggufNaming = GGUFNaming(
        global: ["token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                 "output_norm.bias": "model.norm.bias", "output.weight": "lm_head.weight", "output.bias": "lm_head.bias"],
        blockPrefix: { "model.layers.\($0)." },
        block: ["attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"],
        permutedRows: ["self_attn.q_proj": "attention.head_count", "self_attn.k_proj": "attention.head_count_kv"])

    /// The block description of a Llama-family config (usable without a checkpoint, e.g. for tests).
    public static func blockSpec(for c: LlamaConfig) -> BlockSpec {
        let h = c.hiddenSize, qd = c.numAttentionHeads * c.headDim, kd = c.numKeyValueHeads * c.headDim
        let f = c.intermediateSize, eps = Float(c.rmsNormEps)
        return BlockSpec(
            hidden: h, heads: c.numAttentionHeads, kvHeads: c.numKeyValueHeads, headDim: c.headDim, ffn: f,
            rope: true, mlp: .gatedSiLU,
            attentionNorm: .init("input_layernorm", .rms, eps: eps), mlpNorm: .init("post_attention_layernorm", .rms, eps: eps),
            linears: [.init("self_attn.q_proj", .q, out: qd, in: h, bias: c.qkvBias),
                      .init("self_attn.k_proj", .k, out: kd, in: h, bias: c.qkvBias),
                      .init("self_attn.v_proj", .v, out: kd, in: h, bias: c.qkvBias),
                      .init("self_attn.o_proj", .o, out: h, in: qd, bias: c.outputBias),
                      .init("mlp.gate_proj", .gate, out: f, in: h, bias: c.mlpBias),
                      .init("mlp.up_proj", .up, out: f, in: h, bias: c.mlpBias),
                      .init("mlp.down_proj", .down, out: h, in: f, bias: c.mlpBias)],
            letPairs: [LETPair(source: .norm("input_layernorm"),
                               targets: ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
                       LETPair(source: .linear("self_attn.v_proj"), targets: ["self_attn.o_proj"]),
                       LETPair(source: .norm("post_attention_layernorm"), targets: ["mlp.gate_proj", "mlp.up_proj"]),
                       LETPair(source: .linear("mlp.up_proj"), targets: ["mlp.down_proj"])])
    }

    /// Validates `config` and checks the embedding is present; blocks are read when first used.
    public init(config: LlamaConfig, source: TensorSource) throws {
        try config.validate()
        self.config = config
        self.blockSpec = Self.blockSpec(for: config)
        self.source = source
        self.loader = WeightLoader(source: source)
        guard loader.has("model.embed_tokens.weight") else {
            throw SwiftQuantError.format("missing weight 'model.embed_tokens.weight': not a \(config.modelType) "
                                         + "checkpoint in Hugging Face naming")
        }
        if !config.tieWordEmbeddings && !loader.has("lm_head.weight") {
            throw SwiftQuantError.format("missing weight 'lm_head.weight' (tie_word_embeddings is false)")
        }
    }

    public convenience init(config: [String: Any], source: TensorSource) throws {
        try self.init(config: try LlamaConfig(dictionary: config), source: source)
    }

    public func blockPrefix(_ i: Int) -> String { Self.ggufNaming.blockPrefix(i) }

    public func loadBlock(_ i: Int) throws -> TransformerBlock {
        try require(i >= 0 && i < numBlocks, "block index \(i) outside 0..<\(numBlocks)")
        return try loader.block(i, prefix: blockPrefix(i), spec: blockSpec)
    }

    public func block(_ i: Int) throws -> TransformerBlock {
        if let b = overrides[i] { return b }
        return try loadBlock(i)
    }

    public func setBlock(_ i: Int, _ block: TransformerBlock?) { overrides[i] = block }

    private func embedTokens() throws -> Tensor {
        lock.lock(); defer { lock.unlock() }
        if let e = embedCache { return e }
        let e = try loader.load("model.embed_tokens.weight", [config.vocabSize, config.hiddenSize])
        embedCache = e
        return e
    }

    public func embed(_ ids: [Int32]) throws -> Tensor {
        try checkIds(ids)
        let e = try embedTokens(), h = hiddenSize
        let out = Tensor(zeros: [ids.count, h])
        for (t, id) in ids.enumerated() { (out.pointer + t * h).update(from: e.pointer + Int(id) * h, count: h) }
        return out
    }

    public func lmHeadWeight() throws -> Tensor {
        if config.tieWordEmbeddings { return try embedTokens() }
        return try loader.load("lm_head.weight", [config.vocabSize, config.hiddenSize])
    }

    public func applyFinalNorm(_ hidden: Tensor) throws {
        let w = try loader.load("model.norm.weight", [hiddenSize])
        Kernels.rmsNorm(hidden.pointer, rows: hidden.shape[0], dim: hiddenSize, weight: w.pointer,
                        eps: Float(config.rmsNormEps), hidden.pointer)
    }

    /// Inverse frequencies `1/θ^(2i/d)` (computed in float32 as transformers does), with `rope_scaling` applied.
    public func inverseFrequencies() -> [Float] {
        var inv = Autodiff.Rope.inverseFrequencies(headDim: config.headDim, theta: config.ropeTheta)
        guard let s = config.ropeScaling else { return inv }
        switch s.type {
        case "linear":
            let f = Float(s.factor!)
            inv = inv.map { $0 / f }
        case "llama3":
            let factor = s.factor!, lo = s.lowFreqFactor!, hi = s.highFreqFactor!
            let old = Double(s.originalMaxPositionEmbeddings!)
            let lowWavelen = old / lo, highWavelen = old / hi
            inv = inv.map { f in
                let fd = Double(f)
                let wavelen = 2 * Double.pi / fd
                if wavelen < highWavelen { return f }                 // high frequency: unchanged
                if wavelen > lowWavelen { return Float(fd / factor) } // low frequency: scaled
                let smooth = (old / wavelen - lo) / (hi - lo)
                return Float((1 - smooth) * fd / factor + smooth * fd)
            }
        default:
            break
        }
        return inv
    }

    /// cos/sin tables `[positions, d/2]`, grown as needed and reused across blocks and windows.
    public func rotaryTables(rows: Int) -> RopeTables? {
        lock.lock(); defer { lock.unlock() }
        if let c = ropeCache, c.rows >= rows { return c }
        let t = Autodiff.Rope.tables(rows: rows, inverseFrequencies: inverseFrequencies())
        ropeCache = t
        return t
    }
}
