/// Element types found in model files (safetensors names; GGUF block types have their ggml names).
public enum DType: String, Sendable, CaseIterable {
    case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16"
    case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8", u8 = "U8", bool = "BOOL"
    case q8_0 = "Q8_0", q4_0 = "Q4_0", q4_1 = "Q4_1"
}

/// Name, element type and shape of one stored tensor. Shapes are in the Hugging Face / PyTorch order
/// (outermost first) whatever the file's own convention.
public struct TensorInfo: Sendable, Equatable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    public init(name: String, dtype: DType, shape: [Int]) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
    }
}

/// Anything that holds named tensors: a safetensors file, a sharded Hugging Face directory, a GGUF file seen
/// with Hugging Face names. Model code reads weights only through this protocol.
public protocol TensorSource: AnyObject {
    /// Every tensor, in the file's order.
    var tensorInfos: [TensorInfo] { get }
    func info(_ name: String) -> TensorInfo?
    /// The tensor as float32 in Hugging Face layout: a zero-copy view of the mapped file when the stored type
    /// is F32 and aligned, otherwise a converted copy. Throws `SwiftQuantError.format` naming file and tensor.
    func float32(_ name: String) throws -> Tensor
}

extension TensorSource {
    public func info(_ name: String) -> TensorInfo? { tensorInfos.first { $0.name == name } }
    public var names: [String] { tensorInfos.map(\.name) }
}

/// Tensors held in memory (tests, and models built from NumPy arrays).
public final class InMemoryTensorSource: TensorSource {
    public private(set) var tensorInfos: [TensorInfo] = []
    private var tensors: [String: Tensor] = [:]

    public init(_ tensors: [(String, Tensor)] = []) {
        for (name, t) in tensors { set(name, t) }
    }

    public func set(_ name: String, _ tensor: Tensor) {
        if tensors[name] == nil { tensorInfos.append(TensorInfo(name: name, dtype: .f32, shape: tensor.shape)) }
        else if let i = tensorInfos.firstIndex(where: { $0.name == name }) {
            tensorInfos[i] = TensorInfo(name: name, dtype: .f32, shape: tensor.shape)
        }
        tensors[name] = tensor
    }

    public func info(_ name: String) -> TensorInfo? {
        tensors[name].map { TensorInfo(name: name, dtype: .f32, shape: $0.shape) }
    }

    public func float32(_ name: String) throws -> Tensor {
        guard let t = tensors[name] else { throw SwiftQuantError.format("no tensor named '\(name)'") }
        return t
    }
}
