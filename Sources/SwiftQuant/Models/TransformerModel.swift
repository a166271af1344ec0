import Foundation

/// A linear layer `y = x · Wᵀ + b` with the weight in Hugging Face layout `[out, in]`.
public struct Linear: @unchecked Sendable {
    public var weight: Tensor
    public var bias: Tensor?
    /// Low-rank compensation (LoRC, ALGORITHMS.md §6): the layer computes `x·Ŵᵀ + (x·Vᵀ)·Uᵀ + b`.
    public var lowRank: LowRank?

    public var outFeatures: Int { weight.shape[0] }
    public var inFeatures: Int { weight.shape[1] }

    public init(weight: Tensor, bias: Tensor? = nil, lowRank: LowRank? = nil) {
        precondition(weight.rank == 2, "linear weight must be [out, in], got \(weight.shape)")
        precondition(bias == nil || bias!.count == weight.shape[0], "bias does not match weight \(weight.shape)")
        precondition(lowRank.map { $0.u.shape[0] == weight.shape[0] && $0.v.shape[1] == weight.shape[1] } ?? true,
                     "low-rank factors do not match weight \(weight.shape)")
        self.weight = weight
        self.bias = bias
        self.lowRank = lowRank
    }
}

/// A low-rank term `U·V` added to a linear's weight without forming it: `U` `[out, r]`, `V` `[r, in]`.
public struct LowRank: @unchecked Sendable {
    public let u: Tensor, v: Tensor
    public var rank: Int { u.shape[1] }
    public init(u: Tensor, v: Tensor) throws {
        try require(u.rank == 2 && v.rank == 2 && u.shape[1] == v.shape[0] && u.shape[1] > 0,
                    "low-rank factors must be [out, r] and [r, in], got \(u.shape) and \(v.shape)")
        self.u = u
        self.v = v
    }
}

/// Weight (and optional bias) of a normalisation layer.
public struct NormWeights: @unchecked Sendable {
    public var weight: Tensor?
    public var bias: Tensor?
    public init(weight: Tensor?, bias: Tensor? = nil) {
        self.weight = weight
        self.bias = bias
    }
}

/// Where a LET (learnable equivalent transformation) scale can be folded: into the norm (or linear) whose output
/// feeds `targets`. Names are relative to the block (Hugging Face names, e.g. "self_attn.q_proj").
public struct LETPair: Equatable, Sendable {
    public enum Source: Equatable, Sendable {
        case norm(String)
        case linear(String)
    }
    public var source: Source
    public var targets: [String]
    public init(source: Source, targets: [String]) {
        self.source = source
        self.targets = targets
    }
}

/// The weights of one decoder block, as data: its linears and norms under block-relative Hugging Face names.
/// Calibration replaces entries (e.g. with fake-quantized weights) and installs the block with
/// `TransformerModel.setBlock`.
public final class TransformerBlock: @unchecked Sendable {
    public let index: Int
    /// Block-relative names of the linears in execution order ("self_attn.q_proj", …, "mlp.down_proj").
    public let linearNames: [String]
    public var linears: [String: Linear]
    public var norms: [String: NormWeights]

    public init(index: Int, linearNames: [String], linears: [String: Linear], norms: [String: NormWeights]) {
        self.index = index
        self.linearNames = linearNames
        self.linears = linears
        self.norms = norms
    }

    /// The linear named `name`; the adapters only ask for names they created.
    public func linear(_ name: String) -> Linear {
        guard let l = linears[name] else { preconditionFailure("block \(index) has no linear '\(name)'") }
        return l
    }

    /// An independent copy (weights copied), e.g. to modify without touching the source tensors.
    public func copy() -> TransformerBlock {
        TransformerBlock(index: index, linearNames: linearNames,
                         linears: linears.mapValues { Linear(weight: $0.weight.copy(), bias: $0.bias?.copy(), lowRank: $0.lowRank) },
                         norms: norms.mapValues { NormWeights(weight: $0.weight?.copy(), bias: $0.bias?.copy()) })
    }
}

/// A decoder-only transformer adapter: embedding, blocks loaded on demand from a `TensorSource`, final norm
/// and LM head. Batch 1; hidden states are `[T, hiddenSize]` row-major float32.
public protocol TransformerModel: AnyObject {
    var modelType: String { get }
    var hiddenSize: Int { get }
    var vocabSize: Int { get }
    var numBlocks: Int { get }
    /// Longest window the model can take (position table size, sliding window).
    var maxSequenceLength: Int { get }
    var source: TensorSource { get }
    /// Every block's description (norms, linears, attention, MLP, LET pairs) as data: the one block forward
    /// (`BlockGraph`) runs it.
    var blockSpec: BlockSpec { get }
    /// Rotary tables for positions `0..<rows` (nil when the family has no rotary positions).
    func rotaryTables(rows: Int) -> RopeTables?
    /// Activation quantization applied by inference (`finalHidden`, `logits`, perplexity): set by a
    /// weight-activation quantization run and by loading a model saved from one. Nil: FP activations.
    var activations: ActivationScheme? { get set }

    /// Hugging Face prefix of block `i`, e.g. "model.layers.3.".
    func blockPrefix(_ i: Int) -> String
    /// Block `i` read from the source (views of the source's tensors, no copy when they are float32).
    func loadBlock(_ i: Int) throws -> TransformerBlock
    /// Block `i` as the forward pass uses it: the one installed with `setBlock`, else `loadBlock(i)`.
    func block(_ i: Int) throws -> TransformerBlock
    /// Installs a replacement for block `i` (nil goes back to the source).
    func setBlock(_ i: Int, _ block: TransformerBlock?)

    /// Token embeddings (plus positions where the architecture adds them): `[T, hiddenSize]`.
    func embed(_ ids: [Int32]) throws -> Tensor
    /// Applies the final norm in place.
    func applyFinalNorm(_ hidden: Tensor) throws
    /// The LM head weight `[vocabSize, hiddenSize]` (the embedding when tied).
    func lmHeadWeight() throws -> Tensor
}

extension TransformerModel {
    /// Block-relative names of every block's linears, in execution order.
    public var blockLinearNames: [String] { blockSpec.linearNames }
    /// Where LET scales fold, as data.
    public var letPairs: [LETPair] { blockSpec.letPairs }

    /// Runs one block in place on `hidden` `[T, hiddenSize]`, through the one block forward, with optional hooks
    /// on its linears (in `blockSpec.linears` order).
    /// With `stopAt`, only capture: the block stops once linear `stopAt`'s input hooks have run, and `hidden` is
    /// then left partly updated.
    /// `activations`: quantize the linears' inputs (where `hooks` set no input quantizer) and Q/K/V as the scheme
    /// says (nil: FP; inference passes the model's `activations`, calibration its quantized path's).
    public func forward(block: TransformerBlock, hidden: Tensor, workspace: Workspace,
                        hooks: [LinearHooks]? = nil, stopAt: Int? = nil, activations: ActivationScheme? = nil) throws {
        let T = hidden.shape[0]
        try require(T <= maxSequenceLength, "window of \(T) tokens is longer than this model's \(maxSequenceLength)")
        let spec = blockSpec
        try BlockGraph.infer(spec: spec, weights: block,
                             hooks: activations?.merged(into: hooks, count: spec.linears.count) ?? hooks,
                             kv: activations?.kvQuantizer(headDim: spec.headDim), rope: rotaryTables(rows: T),
                             hidden: hidden, ws: workspace, stopAt: stopAt)
    }

    /// A recording block graph for calibration: block `i`'s weights (as installed), tape for `maxRows` tokens,
    /// with `activations` quantized as in `forward`.
    public func blockGraph(_ block: TransformerBlock, hooks: [LinearHooks]? = nil, maxRows: Int,
                           activations: ActivationScheme? = nil) throws -> BlockGraph {
        let spec = blockSpec
        return try BlockGraph(spec: spec, weights: block,
                              hooks: activations?.merged(into: hooks, count: spec.linears.count) ?? hooks,
                              kv: activations?.kvQuantizer(headDim: spec.headDim), rope: rotaryTables(rows: maxRows),
                              maxRows: maxRows)
    }

    public func preloadBlocks() throws {
        for i in 0..<numBlocks { setBlock(i, try loadBlock(i)) }
    }

    func checkIds(_ ids: [Int32]) throws {
        try require(!ids.isEmpty, "empty token window")
        try require(ids.count <= maxSequenceLength,
                    "window of \(ids.count) tokens is longer than this model's \(maxSequenceLength)")
        for id in ids where id < 0 || Int(id) >= vocabSize {
            throw SwiftQuantError.invalidArgument("token id \(id) outside the vocabulary 0..<\(vocabSize)")
        }
    }

    /// Runs block `i` on `hidden` `[T, hiddenSize]` and returns the new hidden state (`hidden` is unchanged).
    public func forwardBlock(_ i: Int, hidden: Tensor) throws -> Tensor {
        try require(i >= 0 && i < numBlocks, "block index \(i) outside 0..<\(numBlocks)")
        try require(hidden.rank == 2 && hidden.shape[1] == hiddenSize,
                    "hidden state must be [T, \(hiddenSize)], got \(hidden.shape)")
        try require(hidden.shape[0] <= maxSequenceLength,
                    "window of \(hidden.shape[0]) tokens is longer than this model's \(maxSequenceLength)")
        let out = hidden.copy()
        try forward(block: try block(i), hidden: out, workspace: Workspace(), activations: activations)
        return out
    }

    /// Final hidden states (after the final norm) for a window: `[T, hiddenSize]`.
    public func finalHidden(ids: [Int32]) throws -> Tensor {
        try checkIds(ids)
        let hidden = try embed(ids)
        let ws = Workspace()
        let scheme = activations
        for i in 0..<numBlocks { try forward(block: try block(i), hidden: hidden, workspace: ws, activations: scheme) }
        try applyFinalNorm(hidden)
        return hidden
    }

    /// Logits `[T, vocabSize]`.
    public func logits(ids: [Int32]) throws -> Tensor {
        let h = try finalHidden(ids: ids)
        let w = try lmHeadWeight()
        let T = ids.count
        let out = Tensor(zeros: [T, vocabSize])
        BLAS.sgemm(transB: true, m: T, n: vocabSize, k: hiddenSize, a: h.pointer, lda: hiddenSize,
                   b: w.pointer, ldb: hiddenSize, c: out.pointer, ldc: vocabSize)
        return out
    }
}

/// Reads tensors with shape checks, naming the tensor in errors.
struct WeightLoader {
    let source: TensorSource

    func load(_ name: String, _ shape: [Int]) throws -> Tensor {
        guard source.info(name) != nil else {
            throw SwiftQuantError.format("missing weight '\(name)' (expected shape \(shape))")
        }
        let t = try source.float32(name)
        guard t.shape == shape else {
            throw SwiftQuantError.format("weight '\(name)' has shape \(t.shape), expected \(shape)")
        }
        return t
    }

    func has(_ name: String) -> Bool { source.info(name) != nil }

    func linear(_ name: String, out: Int, in inF: Int, bias: Bool) throws -> Linear {
        Linear(weight: try load(name + ".weight", [out, inF]), bias: bias ? try load(name + ".bias", [out]) : nil)
    }

    /// Block `i`'s linears and norms as `spec` declares them, under `prefix`. A bias the family does not declare
    /// is read when the file has it: a SwiftQuant model whose LET shifts were folded into an RMSNorm family
    /// (norm biases, and biases on linears that had none).
    func block(_ i: Int, prefix p: String, spec: BlockSpec) throws -> TransformerBlock {
        var linears: [String: Linear] = [:]
        for l in spec.linears {
            linears[l.name] = try linear(p + l.name, out: l.outFeatures, in: l.inFeatures,
                                         bias: l.bias || has(p + l.name + ".bias"))
        }
        var norms: [String: NormWeights] = [:]
        for n in [spec.attentionNorm, spec.mlpNorm] where n.affine {
            let bias = n.bias || has(p + n.name + ".bias")
            norms[n.name] = NormWeights(weight: try load(p + n.name + ".weight", [spec.hidden]),
                                        bias: bias ? try load(p + n.name + ".bias", [spec.hidden]) : nil)
        }
        return TransformerBlock(index: i, linearNames: spec.linearNames, linears: linears, norms: norms)
    }
}

/// Installed block replacements, shared by the adapters.
final class BlockOverrides {
    private var blocks: [Int: TransformerBlock] = [:]
    private let lock = NSLock()
    subscript(i: Int) -> TransformerBlock? {
        get { lock.lock(); defer { lock.unlock() }; return blocks[i] }
        set { lock.lock(); blocks[i] = newValue; lock.unlock() }
    }
}
