/// Round-to-nearest weight quantization: every Linear of every block quantized on its own (ALGORITHMS.md §1),
/// no calibration. Embeddings, norms and the LM head stay FP (the papers' setting).
public struct RTN: BlockAlgorithm {
    public init() {}
    public var needsCalibrationData: Bool { false }

    public func quantize(_ job: BlockJob) throws -> BlockOutcome {
        let cfg = try job.recipe.quantizerConfig
        var out: [String: QuantizedTensor] = [:]
        for name in job.weights.linearNames {
            out[name] = try Self.quantizeWeight(job.weights.linear(name).weight, config: cfg,
                                                name: job.model.blockPrefix(job.index) + name).0
        }
        return BlockOutcome(quantized: out)
    }

    /// Quantizes every block linear of `model`, installs the fake-quantized blocks in `model` and returns the
    /// quantized tensors by Hugging Face weight name (the calibration pipeline with `method: .rtn`).
    @discardableResult
    public static func apply(to model: TransformerModel, config: QuantizerConfig, progress: Bool = false) throws
        -> [String: QuantizedTensor]
    {
        let recipe = QuantRecipe(method: .rtn, wformat: config.format.name, groupSize: config.groupSize,
                                 symmetric: config.symmetric)
        return try CalibrationPipeline(recipe: recipe, progress: progress).run(model: model, windows: []).quantized
    }

    /// One weight: its `QuantizedTensor` and the dequantized (fake-quantized) float32 matrix.
    public static func quantizeWeight(_ w: Tensor, config: QuantizerConfig, name: String) throws
        -> (QuantizedTensor, Tensor)
    {
        try require(w.rank == 2, "\(name): a Linear weight must be 2-D, got \(w.shape)")
        let rows = w.shape[0], cols = w.shape[1]
        do {
            let q = try Quantizer.quantize(UnsafeBufferPointer(w.buffer), rows: rows, cols: cols, config: config)
            return (q, q.dequantized())
        } catch let e as SwiftQuantError {
            switch e {
            case .invalidArgument(let m): throw SwiftQuantError.invalidArgument("\(name): \(m)")
            case .nonFinite(let m): throw SwiftQuantError.nonFinite("\(name): \(m)")
            default: throw e
            }
        }
    }
}
