import Foundation

/// Where a quantized model can be written. Each format has its own writer; `ModelExport.write` is the one entry
/// of the CLI (`swiftquant export --format …`, `swiftquant quantize --export …`), the C ABI (`sq_model_export`) and
/// Python (`Model.save(path, format=…)`).
public enum ExportFormat: String, CaseIterable, Sendable {
    /// SwiftQuant's own directory (`QuantizedExport`): float32 `model.safetensors` that transformers loads,
    /// packed codes, activation settings, LoRC factors, tokenizer.
    case swiftquant
    /// A GGUF file for llama.cpp (Q4_0 / Q4_1 / Q8_0 where the grid is exactly representable).
    case gguf
    /// The compressed-tensors `pack-quantized` layout (transformers + compressed-tensors, vLLM).
    case compressedTensors = "compressed-tensors"
    /// A GPTQ checkpoint (`qweight` / `qzeros` / `scales` / `g_idx`, `quant_method: gptq`).
    case gptq

    public static func parse(_ name: String) throws -> ExportFormat {
        guard let f = ExportFormat(rawValue: name.lowercased()) else {
            throw SwiftQuantError.invalidArgument(
                "unknown export format '\(name)' (available: \(allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        return f
    }
}

/// Options every exporter reads.
public struct ExportOptions: Sendable {
    /// Allow re-quantizing tensors whose grid the target format cannot hold exactly (with a per-tensor error
    /// report); without it such a model is refused before anything is written.
    public var requantize: Bool
    /// Progress bar with ETA on stderr for long writes.
    public var progress: Bool
    /// Where per-tensor reports go (stderr by default).
    public var log: @Sendable (String) -> Void

    public init(requantize: Bool = false, progress: Bool = true,
                log: @escaping @Sendable (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }) {
        self.requantize = requantize
        self.progress = progress
        self.log = log
    }
}

public enum ModelExport {
    /// Writes `loaded` (its installed blocks and `quantization`) to `path` in `format`, atomically (a temporary
    /// name renamed into place).
    public static func write(_ loaded: LoadedModel, format: ExportFormat, to path: String,
                             options: ExportOptions = ExportOptions()) throws {
        switch format {
        case .swiftquant: try QuantizedExport.write(loaded, to: path, progress: options.progress)
        case .gguf: try GGUFExport.write(loaded, to: path, options: options)
        case .compressedTensors: try CompressedTensorsExport.write(loaded, to: path, options: options)
        case .gptq: try GPTQExport.write(loaded, to: path, options: options)
        }
    }
}
