import Foundation

/// `model_type` (from config.json) → adapter. Adding a family = one config type, one adapter file, one line here.
public enum ArchitectureRegistry {
    public typealias Loader = (_ config: [String: Any], _ source: TensorSource) throws -> TransformerModel

    public static let families: [String: Loader] = [
        "llama": { try LlamaModel(config: $0, source: $1) },
        "mistral": { try LlamaModel(config: $0, source: $1) },
        "qwen2": { try LlamaModel(config: $0, source: $1) },
        "opt": { try OPTModel(config: $0, source: $1) },
    ]

    public static var supportedModelTypes: [String] { families.keys.sorted() }

    /// GGUF `general.architecture` → the family's tensor naming (llama.cpp writes Llama, Mistral and Qwen2
    /// checkpoints it converts from Hugging Face with these names).
    public static let ggufFamilies: [String: GGUFNaming] = [
        "llama": LlamaModel.ggufNaming, "mistral": LlamaModel.ggufNaming, "qwen2": LlamaModel.ggufNaming,
    ]

    /// The naming of a GGUF file's architecture; unknown architectures are refused.
    public static func ggufNaming(_ file: GGUFFile) throws -> GGUFNaming {
        let arch = file.metadata["general.architecture"]?.string ?? "llama"
        guard let n = ggufFamilies[arch] else {
            throw SwiftQuantError.unsupported("\(file.path): GGUF architecture '\(arch)' is not supported (supported: "
                                              + ggufFamilies.keys.sorted().joined(separator: ", ") + ")")
        }
        return n
    }

    /// The adapter for a parsed config.json over `source`. Unknown `model_type` → `.unsupported`.
    public static func model(config: [String: Any], source: TensorSource) throws -> TransformerModel {
        guard let type = config["model_type"] as? String else {
            throw SwiftQuantError.format("config has no 'model_type' string")
        }
        guard let loader = families[type] else {
            throw SwiftQuantError.unsupported("model_type '\(type)' is not supported (supported: "
                                              + supportedModelTypes.joined(separator: ", ") + ")")
        }
        return try loader(config, source)
    }

    /// Same, from the bytes of config.json.
    public static func model(configJSON data: Data, source: TensorSource) throws -> TransformerModel {
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: data) } catch {
            throw SwiftQuantError.format("config.json is not valid JSON: \(error.localizedDescription)")
        }
        guard let dict = object as? [String: Any] else {
            throw SwiftQuantError.format("config.json is not a JSON object")
        }
        return try model(config: dict, source: source)
    }

    /// A Hugging Face model directory (config.json + model.safetensors or sharded safetensors).
    public static func model(directory: String) throws -> TransformerModel {
        let source = try HFDirectorySource(directory: directory)
        guard let config = try source.config() else {
            throw SwiftQuantError.format("\(directory): no config.json")
        }
        return try model(config: config, source: source)
    }
}

extension GGUFTensorSource {
    /// A GGUF file with the tensor naming of its `general.architecture` (see `ArchitectureRegistry.ggufFamilies`).
    public convenience init(file: GGUFFile, undoRopePermutation: Bool? = nil) throws {
        try self.init(file: file, naming: try ArchitectureRegistry.ggufNaming(file), undoRopePermutation: undoRopePermutation)
    }

    public convenience init(path: String, undoRopePermutation: Bool? = nil) throws {
        try self.init(file: GGUFFile(path: path), undoRopePermutation: undoRopePermutation)
    }
}
