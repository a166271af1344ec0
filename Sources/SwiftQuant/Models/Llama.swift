import Foundation

/// The Llama family (llama, mistral, qwen2): RMSNorm, rotary positions ("rotate_half"), grouped-query causal
/// attention, SiLU-gated MLP. Qwen2 adds q/k/v biases.
public final class LlamaModel: TransformerModel {
    public let config: LlamaConfig
    public let source: TensorSource
    private let loader: WeightLoader
    private let overrides = BlockOverrides()
    private var embedCache: Tensor?
    private var ropeCache: (positions: Int, cos: Tensor, sin: Tensor)?
    private let lock = NSLock()

    public var modelType: String { config.modelType }
    public var hiddenSize: Int { config.hiddenSize }
    public var vocabSize: Int { config.vocabSize }
    public var numBlocks: Int { config.numHiddenLayers }
    public var maxSequenceLength: Int { config.slidingWindow ?? Int.max }

    public static let linearNames = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                     "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    public var blockLinearNames: [String] { Self.linearNames }
    public var letPairs: [LETPair] {
        [LETPair(source: .norm("input_layernorm"),
                 targets: ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
         LETPair(source: .linear("self_attn.v_proj"), targets: ["self_attn.o_proj"]),
         LETPair(source: .norm("post_attention_layernorm"), targets: ["mlp.gate_proj", "mlp.up_proj"]),
         LETPair(source: .linear("mlp.up_proj"), targets: ["mlp.down_proj"])]
    }

    /// Validates `config` and checks the embedding is present; blocks are read when first used.
    public init(config: LlamaConfig, source: TensorSource) throws {
        try config.validate()
        self.config = config
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

    public func blockPrefix(_ i: Int) -> String { "model.layers.\(i)." }

    public func loadBlock(_ i: Int) throws -> TransformerBlock {
        try require(i >= 0 && i < numBlocks, "block index \(i) outside 0..<\(numBlocks)")
        let c = config, p = blockPrefix(i), h = c.hiddenSize
        let qOut = c.numAttentionHeads * c.headDim, kvOut = c.numKeyValueHeads * c.headDim
        let specs: [(String, Int, Int, Bool)] = [
            ("self_attn.q_proj", qOut, h, c.qkvBias), ("self_attn.k_proj", kvOut, h, c.qkvBias),
            ("self_attn.v_proj", kvOut, h, c.qkvBias), ("self_attn.o_proj", h, qOut, c.outputBias),
            ("mlp.gate_proj", c.intermediateSize, h, c.mlpBias), ("mlp.up_proj", c.intermediateSize, h, c.mlpBias),
            ("mlp.down_proj", h, c.intermediateSize, c.mlpBias),
        ]
        var linears: [String: Linear] = [:]
        for (name, out, inF, bias) in specs {
            linears[name] = try loader.linear(p + name, out: out, in: inF, bias: bias)
        }
        var norms: [String: NormWeights] = [:]
        for name in ["input_layernorm", "post_attention_layernorm"] {
            norms[name] = NormWeights(weight: try loader.load(p + name + ".weight", [h]))
        }
        return TransformerBlock(index: i, linearNames: Self.linearNames, linears: linears, norms: norms)
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
        let d = config.headDim
        var inv = (0..<(d / 2)).map { i in Float(1) / Foundation.pow(Float(config.ropeTheta), Float(2 * i) / Float(d)) }
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
    private func ropeTables(_ T: Int) -> (Tensor, Tensor) {
        lock.lock(); defer { lock.unlock() }
        if let c = ropeCache, c.positions >= T { return (c.cos, c.sin) }
        let half = config.headDim / 2
        let inv = inverseFrequencies()
        let cosT = Tensor(zeros: [T, half]), sinT = Tensor(zeros: [T, half])
        for p in 0..<T {
            for j in 0..<half {
                let angle = Float(p) * inv[j]  // float32 product, as transformers
                cosT.pointer[p * half + j] = Float(Foundation.cos(Double(angle)))
                sinT.pointer[p * half + j] = Float(Foundation.sin(Double(angle)))
            }
        }
        ropeCache = (T, cosT, sinT)
        return (cosT, sinT)
    }

    public func forward(block: TransformerBlock, hidden: Tensor, workspace ws: Workspace) throws {
        let c = config, T = hidden.shape[0], h = c.hiddenSize, hd = c.headDim
        if let w = c.slidingWindow, T > w {
            throw SwiftQuantError.unsupported("window of \(T) tokens exceeds sliding_window \(w)")
        }
        let heads = c.numAttentionHeads, kvHeads = c.numKeyValueHeads
        let qDim = heads * hd, kvDim = kvHeads * hd, inter = c.intermediateSize
        let eps = Float(c.rmsNormEps)
        let x = hidden.pointer
        let xn = ws.buffer(0, T * h)
        let q = ws.buffer(1, T * qDim), k = ws.buffer(2, T * kvDim), v = ws.buffer(3, T * kvDim)
        let attn = ws.buffer(4, T * qDim)
        guard let n1 = block.norms["input_layernorm"]?.weight, let n2 = block.norms["post_attention_layernorm"]?.weight
        else { throw SwiftQuantError.invalidArgument("block \(block.index) lacks its norms") }

        Kernels.rmsNorm(x, rows: T, dim: h, weight: n1.pointer, eps: eps, xn)
        Kernels.linear(xn, rows: T, block.linear("self_attn.q_proj"), q)
        Kernels.linear(xn, rows: T, block.linear("self_attn.k_proj"), k)
        Kernels.linear(xn, rows: T, block.linear("self_attn.v_proj"), v)
        let (cosT, sinT) = ropeTables(T)
        Kernels.applyRoPE(q, rows: T, heads: heads, headDim: hd, stride: qDim, cos: cosT.pointer, sin: sinT.pointer)
        Kernels.applyRoPE(k, rows: T, heads: kvHeads, headDim: hd, stride: kvDim, cos: cosT.pointer, sin: sinT.pointer)
        Kernels.causalAttention(q: q, k: k, v: v, out: attn, T: T, heads: heads, kvHeads: kvHeads, headDim: hd,
                                scale: 1 / Float(hd).squareRoot(), workspace: ws, slot: 8)
        Kernels.linear(attn, rows: T, block.linear("self_attn.o_proj"), x, accumulate: true)

        Kernels.rmsNorm(x, rows: T, dim: h, weight: n2.pointer, eps: eps, xn)
        let gate = ws.buffer(6, T * inter), up = ws.buffer(7, T * inter)
        Kernels.linear(xn, rows: T, block.linear("mlp.gate_proj"), gate)
        Kernels.linear(xn, rows: T, block.linear("mlp.up_proj"), up)
        Kernels.siluMul(gate, up, count: T * inter)
        Kernels.linear(gate, rows: T, block.linear("mlp.down_proj"), x, accumulate: true)
    }
}
