/// One block to quantize, as the calibration pipeline hands it to an algorithm.
public struct BlockJob {
    public let model: TransformerModel
    public let index: Int
    /// The block's full-precision weights.
    public let weights: TransformerBlock
    /// The block's inputs on the quantized path (outputs of the already-quantized blocks before it); empty for
    /// algorithms that need no data.
    public let inputs: [Tensor]
    /// What the block should output for each input (the FP block's outputs; with `aug_loss` averaged with the FP
    /// block's outputs on the quantized inputs).
    public let targets: [Tensor]
    public let recipe: QuantRecipe
    public let log: (String) -> Void

    public init(model: TransformerModel, index: Int, weights: TransformerBlock, inputs: [Tensor], targets: [Tensor],
                recipe: QuantRecipe, log: @escaping (String) -> Void) {
        self.model = model; self.index = index; self.weights = weights; self.inputs = inputs; self.targets = targets
        self.recipe = recipe; self.log = log
    }
}

/// What an algorithm made of one block.
public struct BlockOutcome {
    /// Quantized weights by block-relative linear name (e.g. "self_attn.q_proj"); the pipeline fuses them
    /// (dequantized codes become the block's weights).
    public var quantized: [String: QuantizedTensor]
    /// The block after an equivalent transformation (LET, SmoothQuant: scales and shifts folded into norms,
    /// weights and biases), whose weights `quantized` approximates; nil: the FP block's.
    public var transformed: TransformerBlock?
    /// Learned parameters to keep with the block (e.g. "self_attn.q_proj.lwc_u").
    public var learned: [String: Tensor] = [:]
    public var lossFirstEpoch: Double?
    public var lossLastEpoch: Double?
    /// With `keep_best`: the epoch (0-based) whose parameters the result holds.
    public var keptEpoch: Int?
    public var skippedSteps = 0
    /// Per linear, `‖(W − Ŵ)X‖²` on the calibration inputs of the algorithm's result and of plain RTN on the same
    /// grid (algorithms that see the inputs, e.g. GPTQ).
    public var linearErrors: [String: (quantized: Double, rtn: Double)] = [:]
    public var finalLearningRate: Float?
    /// LWC's learned clipping by linear name: σ(u), σ(l) per row and group ([out · groups] each), the grid
    /// `quantized` was rounded on (empty for algorithms without clipping).
    public var clipping: [String: (up: [Float], low: [Float])] = [:]

    public init(quantized: [String: QuantizedTensor]) { self.quantized = quantized }
}

/// A calibration algorithm: quantizes one block at a time (`CalibrationPipeline` owns windows, capture, targets,
/// fusion, propagation, resume and progress).
public protocol BlockAlgorithm {
    /// Whether the pipeline must capture block inputs and targets (RTN needs none).
    var needsCalibrationData: Bool { get }
    func quantize(_ job: BlockJob) throws -> BlockOutcome
}

extension QuantRecipe {
    /// The algorithm that implements `method`.
    public func algorithm() -> BlockAlgorithm {
        switch method {
        case .rtn: return RTN()
        case .omniquant: return rounded(let_ ? OmniQuantLET() : OmniQuantLWC())
        case .gptq: return GPTQAlgorithm()
        case .smoothquant: return rounded(SmoothQuant())
        }
    }

    private func rounded(_ a: BlockAlgorithm) -> BlockAlgorithm {
        weightRounding == .gptq ? GPTQRounding(a) : a
    }
}
