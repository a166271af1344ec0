import Foundation

/// What quantization left on a model: everything a save or an export reads. A quantization run sets it on its
/// `LoadedModel` (`CalibrationPipeline.quantize`); loading a directory SwiftQuant wrote reads it back.
public struct QuantizationState: @unchecked Sendable {
    /// "rtn", "omniquant", "gptq", "smoothquant" (or an imported checkpoint's method).
    public var method: String
    /// The weights' format, group size, symmetry and scale constraint.
    public var weights: QuantizerConfig
    /// Codes, scales and zero-points by Hugging Face weight name ("model.layers.0.self_attn.q_proj.weight").
    public var tensors: [String: QuantizedTensor]
    /// Activation quantization the model runs with (nil: FP activations).
    public var activations: ActivationScheme?
    /// LoRC factors by weight name (the layer computes `x·Ŵᵀ + (x·Vᵀ)·Uᵀ`).
    public var lowRank: [String: LowRank]
    /// The recipe that produced it (JSON), when known.
    public var recipe: String?

    public init(method: String, weights: QuantizerConfig, tensors: [String: QuantizedTensor],
                activations: ActivationScheme? = nil, lowRank: [String: LowRank] = [:], recipe: String? = nil) {
        self.method = method; self.weights = weights; self.tensors = tensors; self.activations = activations
        self.lowRank = lowRank; self.recipe = recipe
    }

    /// The `swiftquant` object of a saved `config.json`.
    public var configObject: [String: Any] {
        var q: [String: Any] = ["method": method, "format": weights.format.name, "bits": weights.format.bitWidth,
                                "symmetric": weights.symmetric, "packed_file": "quantized.safetensors"]
        q["group_size"] = weights.groupSize.columns.map { $0 as Any } ?? weights.groupSize.description
        if weights.scaleConstraint != .none { q["scale_constraint"] = weights.scaleConstraint.rawValue }
        for (k, v) in (activations ?? (try! ActivationScheme())).jsonObject { q[k] = v }
        q["lorc_rank"] = lowRank.values.map(\.rank).max() ?? 0
        return q
    }
}
