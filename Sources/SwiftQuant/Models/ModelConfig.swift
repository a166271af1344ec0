import Foundation

// Configuration types mirroring Hugging Face `config.json`. Each decodes from the JSON (or from the parsed
// `[String: Any]` dictionary), fills in the defaults transformers uses for absent keys, and validates: a
// configuration this library cannot run faithfully is refused with `SwiftQuantError.unsupported`, a malformed
// one with `SwiftQuantError.format`.

/// `rope_scaling` of a Llama-family config. Only the types this library implements survive `validate()`.
public struct RopeScaling: Codable, Equatable, Sendable {
    /// "llama3", "linear" or "default" (`rope_type`, or the older `type` key).
    public var type: String
    public var factor: Double?
    public var lowFreqFactor: Double?
    public var highFreqFactor: Double?
    public var originalMaxPositionEmbeddings: Int?

    public init(type: String, factor: Double? = nil, lowFreqFactor: Double? = nil, highFreqFactor: Double? = nil,
                originalMaxPositionEmbeddings: Int? = nil) {
        self.type = type
        self.factor = factor
        self.lowFreqFactor = lowFreqFactor
        self.highFreqFactor = highFreqFactor
        self.originalMaxPositionEmbeddings = originalMaxPositionEmbeddings
    }

    /// Llama 3.1 frequency-dependent scaling.
    public static func llama3(factor: Double, lowFreqFactor: Double, highFreqFactor: Double,
                              originalMaxPositionEmbeddings: Int) -> RopeScaling {
        RopeScaling(type: "llama3", factor: factor, lowFreqFactor: lowFreqFactor, highFreqFactor: highFreqFactor,
                    originalMaxPositionEmbeddings: originalMaxPositionEmbeddings)
    }

    enum CodingKeys: String, CodingKey {
        case ropeType = "rope_type", type, factor
        case lowFreqFactor = "low_freq_factor", highFreqFactor = "high_freq_factor"
        case originalMaxPositionEmbeddings = "original_max_position_embeddings"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        type = try c.decodeIfPresent(String.self, forKey: .ropeType)
            ?? c.decodeIfPresent(String.self, forKey: .type) ?? "default"
        factor = try c.decodeIfPresent(Double.self, forKey: .factor)
        lowFreqFactor = try c.decodeIfPresent(Double.self, forKey: .lowFreqFactor)
        highFreqFactor = try c.decodeIfPresent(Double.self, forKey: .highFreqFactor)
        originalMaxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .originalMaxPositionEmbeddings)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(type, forKey: .ropeType)
        try c.encodeIfPresent(factor, forKey: .factor)
        try c.encodeIfPresent(lowFreqFactor, forKey: .lowFreqFactor)
        try c.encodeIfPresent(highFreqFactor, forKey: .highFreqFactor)
        try c.encodeIfPresent(originalMaxPositionEmbeddings, forKey: .originalMaxPositionEmbeddings)
    }

    public func validate() throws {
        switch type {
        case "default":
            return
        case "linear":
            guard let f = factor, f > 0 else {
                throw SwiftQuantError.format("rope_scaling 'linear' needs a positive 'factor'")
            }
        case "llama3":
            guard let f = factor, let lo = lowFreqFactor, let hi = highFreqFactor,
                  let orig = originalMaxPositionEmbeddings else {
                throw SwiftQuantError.format("rope_scaling 'llama3' needs factor, low_freq_factor, high_freq_factor "
                                             + "and original_max_position_embeddings")
            }
            guard f > 0, lo > 0, hi > lo, orig > 0 else {
                throw SwiftQuantError.format("rope_scaling 'llama3' has invalid values (factor \(f), "
                                             + "low_freq_factor \(lo), high_freq_factor \(hi), "
                                             + "original_max_position_embeddings \(orig))")
            }
        default:
            throw SwiftQuantError.unsupported("rope_scaling type '\(type)' is not supported "
                                              + "(supported: llama3, linear, default)")
        }
    }
}

/// Llama-family configuration (llama, mistral, qwen2).
public struct LlamaConfig: Codable, Equatable, Sendable {
    public var modelType: String
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    /// Defaults to `numAttentionHeads` (no grouped-query attention).
    public var numKeyValueHeads: Int
    /// Defaults to `hiddenSize / numAttentionHeads`.
    public var headDim: Int
    public var rmsNormEps: Double
    public var ropeTheta: Double
    public var ropeScaling: RopeScaling?
    public var vocabSize: Int
    public var tieWordEmbeddings: Bool
    /// Bias on q, k, v and o projections (Llama's `attention_bias`).
    public var attentionBias: Bool
    public var mlpBias: Bool
    public var maxPositionEmbeddings: Int
    public var hiddenAct: String
    /// Mistral's sliding-window attention; windows longer than this are refused.
    public var slidingWindow: Int?

    /// Qwen2 has q/k/v biases (but no o bias) without saying so in its config.
    public var qkvBias: Bool { attentionBias || modelType == "qwen2" }
    public var outputBias: Bool { attentionBias }

    public init(modelType: String = "llama", hiddenSize: Int, intermediateSize: Int, numHiddenLayers: Int,
                numAttentionHeads: Int, numKeyValueHeads: Int? = nil, headDim: Int? = nil,
                rmsNormEps: Double = 1e-6, ropeTheta: Double = 10000, ropeScaling: RopeScaling? = nil,
                vocabSize: Int, tieWordEmbeddings: Bool = false, attentionBias: Bool = false,
                mlpBias: Bool = false, maxPositionEmbeddings: Int = 2048, hiddenAct: String = "silu",
                slidingWindow: Int? = nil) {
        self.modelType = modelType
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads ?? numAttentionHeads
        self.headDim = headDim ?? (numAttentionHeads > 0 ? hiddenSize / numAttentionHeads : 0)
        self.rmsNormEps = rmsNormEps
        self.ropeTheta = ropeTheta
        self.ropeScaling = ropeScaling
        self.vocabSize = vocabSize
        self.tieWordEmbeddings = tieWordEmbeddings
        self.attentionBias = attentionBias
        self.mlpBias = mlpBias
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.hiddenAct = hiddenAct
        self.slidingWindow = slidingWindow
    }

    enum CodingKeys: String, CodingKey {
        case modelType = "model_type", hiddenSize = "hidden_size", intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers", numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads", headDim = "head_dim", rmsNormEps = "rms_norm_eps"
        case ropeTheta = "rope_theta", ropeScaling = "rope_scaling", vocabSize = "vocab_size"
        case tieWordEmbeddings = "tie_word_embeddings", attentionBias = "attention_bias", mlpBias = "mlp_bias"
        case maxPositionEmbeddings = "max_position_embeddings", hiddenAct = "hidden_act"
        case slidingWindow = "sliding_window", useSlidingWindow = "use_sliding_window"
        case ropeParameters = "rope_parameters"
    }

    /// transformers ≥ 5 writes `rope_parameters` (`rope_type`, `rope_theta` and the scaling fields together).
    struct RopeParameters: Decodable {
        var ropeTheta: Double?
        enum CodingKeys: String, CodingKey { case ropeTheta = "rope_theta" }
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let modelType = try c.decodeIfPresent(String.self, forKey: .modelType) ?? "llama"
        // Qwen2 only slides when `use_sliding_window` is true; Mistral whenever `sliding_window` is set.
        var window = try c.decodeIfPresent(Int.self, forKey: .slidingWindow)
        if modelType == "qwen2", try c.decodeIfPresent(Bool.self, forKey: .useSlidingWindow) != true { window = nil }
        self.init(
            modelType: modelType,
            hiddenSize: try c.decode(Int.self, forKey: .hiddenSize),
            intermediateSize: try c.decode(Int.self, forKey: .intermediateSize),
            numHiddenLayers: try c.decode(Int.self, forKey: .numHiddenLayers),
            numAttentionHeads: try c.decode(Int.self, forKey: .numAttentionHeads),
            numKeyValueHeads: try c.decodeIfPresent(Int.self, forKey: .numKeyValueHeads),
            headDim: try c.decodeIfPresent(Int.self, forKey: .headDim),
            rmsNormEps: try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6,
            ropeTheta: try c.decodeIfPresent(RopeParameters.self, forKey: .ropeParameters)?.ropeTheta
                ?? c.decodeIfPresent(Double.self, forKey: .ropeTheta) ?? 10000,
            ropeScaling: try (c.decodeIfPresent(RopeScaling.self, forKey: .ropeScaling)
                ?? c.decodeIfPresent(RopeScaling.self, forKey: .ropeParameters)).flatMap {
                    $0.type == "default" ? nil : $0
                },
            vocabSize: try c.decode(Int.self, forKey: .vocabSize),
            tieWordEmbeddings: try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? false,
            attentionBias: try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false,
            mlpBias: try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false,
            maxPositionEmbeddings: try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? 2048,
            hiddenAct: try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu",
            slidingWindow: window)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(modelType, forKey: .modelType)
        try c.encode(hiddenSize, forKey: .hiddenSize)
        try c.encode(intermediateSize, forKey: .intermediateSize)
        try c.encode(numHiddenLayers, forKey: .numHiddenLayers)
        try c.encode(numAttentionHeads, forKey: .numAttentionHeads)
        try c.encode(numKeyValueHeads, forKey: .numKeyValueHeads)
        try c.encode(headDim, forKey: .headDim)
        try c.encode(rmsNormEps, forKey: .rmsNormEps)
        try c.encode(ropeTheta, forKey: .ropeTheta)
        try c.encodeIfPresent(ropeScaling, forKey: .ropeScaling)
        try c.encode(vocabSize, forKey: .vocabSize)
        try c.encode(tieWordEmbeddings, forKey: .tieWordEmbeddings)
        try c.encode(attentionBias, forKey: .attentionBias)
        try c.encode(mlpBias, forKey: .mlpBias)
        try c.encode(maxPositionEmbeddings, forKey: .maxPositionEmbeddings)
        try c.encode(hiddenAct, forKey: .hiddenAct)
        try c.encodeIfPresent(slidingWindow, forKey: .slidingWindow)
    }

    /// Parses a `config.json` already read into a dictionary, and validates it.
    public init(dictionary: [String: Any]) throws {
        self = try decodeConfig(LlamaConfig.self, from: dictionary)
        try validate()
    }

    public func validate() throws {
        try requirePositive([("hidden_size", hiddenSize), ("intermediate_size", intermediateSize),
                             ("num_hidden_layers", numHiddenLayers), ("num_attention_heads", numAttentionHeads),
                             ("num_key_value_heads", numKeyValueHeads), ("head_dim", headDim),
                             ("vocab_size", vocabSize), ("max_position_embeddings", maxPositionEmbeddings)])
        guard numAttentionHeads % numKeyValueHeads == 0 else {
            throw SwiftQuantError.format("num_attention_heads (\(numAttentionHeads)) is not a multiple of "
                                         + "num_key_value_heads (\(numKeyValueHeads))")
        }
        guard headDim % 2 == 0 else { throw SwiftQuantError.format("head_dim (\(headDim)) must be even for RoPE") }
        guard rmsNormEps > 0, rmsNormEps.isFinite else {
            throw SwiftQuantError.format("rms_norm_eps must be positive, got \(rmsNormEps)")
        }
        guard ropeTheta > 0, ropeTheta.isFinite else {
            throw SwiftQuantError.format("rope_theta must be positive, got \(ropeTheta)")
        }
        guard hiddenAct == "silu" else {
            throw SwiftQuantError.unsupported("hidden_act '\(hiddenAct)' is not supported for \(modelType) "
                                              + "(supported: silu)")
        }
        try ropeScaling?.validate()
    }
}

/// OPT configuration (pre-LayerNorm variants only: every released OPT except 350m).
public struct OPTConfig: Codable, Equatable, Sendable {
    public var hiddenSize: Int
    public var ffnDim: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var vocabSize: Int
    public var maxPositionEmbeddings: Int
    public var wordEmbedProjDim: Int
    public var doLayerNormBefore: Bool
    public var activationFunction: String
    public var enableBias: Bool
    public var layerNormElementwiseAffine: Bool
    public var removeFinalLayerNorm: Bool
    public var tieWordEmbeddings: Bool

    public var headDim: Int { hiddenSize / numAttentionHeads }

    public init(hiddenSize: Int, ffnDim: Int, numHiddenLayers: Int, numAttentionHeads: Int, vocabSize: Int,
                maxPositionEmbeddings: Int = 2048, wordEmbedProjDim: Int? = nil, doLayerNormBefore: Bool = true,
                activationFunction: String = "relu", enableBias: Bool = true,
                layerNormElementwiseAffine: Bool = true, removeFinalLayerNorm: Bool = false,
                tieWordEmbeddings: Bool = true) {
        self.hiddenSize = hiddenSize
        self.ffnDim = ffnDim
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.vocabSize = vocabSize
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.wordEmbedProjDim = wordEmbedProjDim ?? hiddenSize
        self.doLayerNormBefore = doLayerNormBefore
        self.activationFunction = activationFunction
        self.enableBias = enableBias
        self.layerNormElementwiseAffine = layerNormElementwiseAffine
        self.removeFinalLayerNorm = removeFinalLayerNorm
        self.tieWordEmbeddings = tieWordEmbeddings
    }

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size", ffnDim = "ffn_dim", numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads", vocabSize = "vocab_size"
        case maxPositionEmbeddings = "max_position_embeddings", wordEmbedProjDim = "word_embed_proj_dim"
        case doLayerNormBefore = "do_layer_norm_before", activationFunction = "activation_function"
        case enableBias = "enable_bias", layerNormElementwiseAffine = "layer_norm_elementwise_affine"
        case removeFinalLayerNorm = "_remove_final_layer_norm", tieWordEmbeddings = "tie_word_embeddings"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            hiddenSize: try c.decode(Int.self, forKey: .hiddenSize),
            ffnDim: try c.decode(Int.self, forKey: .ffnDim),
            numHiddenLayers: try c.decode(Int.self, forKey: .numHiddenLayers),
            numAttentionHeads: try c.decode(Int.self, forKey: .numAttentionHeads),
            vocabSize: try c.decode(Int.self, forKey: .vocabSize),
            maxPositionEmbeddings: try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? 2048,
            wordEmbedProjDim: try c.decodeIfPresent(Int.self, forKey: .wordEmbedProjDim),
            doLayerNormBefore: try c.decodeIfPresent(Bool.self, forKey: .doLayerNormBefore) ?? true,
            activationFunction: try c.decodeIfPresent(String.self, forKey: .activationFunction) ?? "relu",
            enableBias: try c.decodeIfPresent(Bool.self, forKey: .enableBias) ?? true,
            layerNormElementwiseAffine: try c.decodeIfPresent(Bool.self, forKey: .layerNormElementwiseAffine)
                ?? true,
            removeFinalLayerNorm: try c.decodeIfPresent(Bool.self, forKey: .removeFinalLayerNorm) ?? false,
            tieWordEmbeddings: try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? true)
    }

    public init(dictionary: [String: Any]) throws {
        self = try decodeConfig(OPTConfig.self, from: dictionary)
        try validate()
    }

    public func validate() throws {
        try requirePositive([("hidden_size", hiddenSize), ("ffn_dim", ffnDim),
                             ("num_hidden_layers", numHiddenLayers), ("num_attention_heads", numAttentionHeads),
                             ("vocab_size", vocabSize), ("max_position_embeddings", maxPositionEmbeddings)])
        guard hiddenSize % numAttentionHeads == 0 else {
            throw SwiftQuantError.format("hidden_size (\(hiddenSize)) is not a multiple of "
                                         + "num_attention_heads (\(numAttentionHeads))")
        }
        guard wordEmbedProjDim == hiddenSize else {
            throw SwiftQuantError.unsupported("OPT with word_embed_proj_dim (\(wordEmbedProjDim)) ≠ hidden_size "
                                              + "(\(hiddenSize)) (project_in/project_out, as in opt-350m) "
                                              + "is not supported")
        }
        guard doLayerNormBefore else {
            throw SwiftQuantError.unsupported("OPT with do_layer_norm_before = false (post-LayerNorm, as in "
                                              + "opt-350m) is not supported")
        }
        guard activationFunction == "relu" else {
            throw SwiftQuantError.unsupported("OPT activation_function '\(activationFunction)' is not supported "
                                              + "(supported: relu)")
        }
    }
}

/// Sizes are positive and at most 2^26 (a hostile config.json must not make shape arithmetic overflow).
func requirePositive(_ fields: [(String, Int)]) throws {
    for (name, value) in fields where value <= 0 || value > 1 << 26 {
        throw SwiftQuantError.format("config field '\(name)' must be positive and at most \(1 << 26), got \(value)")
    }
}

/// Decodes a config type from a parsed `config.json`, turning decoding failures into messages that name the key.
func decodeConfig<C: Decodable>(_ type: C.Type, from dictionary: [String: Any]) throws -> C {
    let data: Data
    do {
        data = try JSONSerialization.data(withJSONObject: dictionary)
    } catch {
        throw SwiftQuantError.format("config is not JSON-representable: \(error)")
    }
    return try decodeConfig(type, json: data)
}

func decodeConfig<C: Decodable>(_ type: C.Type, json data: Data) throws -> C {
    do {
        return try JSONDecoder().decode(type, from: data)
    } catch let error as SwiftQuantError {
        throw error
    } catch let DecodingError.keyNotFound(key, ctx) {
        throw SwiftQuantError.format("config: missing key '\(pathString(ctx.codingPath + [key]))'")
    } catch let DecodingError.typeMismatch(expected, ctx) {
        throw SwiftQuantError.format("config: key '\(pathString(ctx.codingPath))' is not a \(expected)")
    } catch let DecodingError.valueNotFound(expected, ctx) {
        throw SwiftQuantError.format("config: key '\(pathString(ctx.codingPath))' is null, expected \(expected)")
    } catch let DecodingError.dataCorrupted(ctx) {
        throw SwiftQuantError.format("config: invalid value at '\(pathString(ctx.codingPath))': "
                                     + ctx.debugDescription)
    } catch {
        throw SwiftQuantError.format("config: \(error)")
    }
}

private func pathString(_ path: [CodingKey]) -> String {
    path.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
}
