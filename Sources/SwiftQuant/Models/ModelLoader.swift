import Foundation

/// A model ready to use: the architecture adapter over its weights, its Hugging Face config and its tokenizer.
/// Loads a Hugging Face directory (config.json + safetensors [+ tokenizer.json]) or a single GGUF file (config
/// and tokenizer rebuilt from its metadata, tensors seen with Hugging Face names and layout).
public final class LoadedModel: @unchecked Sendable {
    public let path: String
    public let model: TransformerModel
    /// config.json as a dictionary (for a GGUF file: the equivalent Hugging Face config).
    public let config: [String: Any]
    public let tokenizer: Tokenizer?
    /// Where the weights come from (cached: converted tensors are kept after their first use).
    public let source: CachingTensorSource
    /// Original files to carry into an exported directory (tokenizer.json, tokenizer_config.json …).
    public let companionFiles: [String]
    /// The quantization this model carries (set by a quantization run, or read from a directory SwiftQuant
    /// wrote); nil for a plain model.
    public var quantization: QuantizationState?
    /// What a saved tokenizer_config.json / generation_config.json needs beyond the tokenizer (chat template, pad
    /// id, context length), when the source says.
    public internal(set) var tokenizerExtras = TokenizerExtras()

    init(path: String, model: TransformerModel, config: [String: Any], tokenizer: Tokenizer?,
         source: CachingTensorSource, companionFiles: [String]) {
        self.path = path
        self.model = model
        self.config = config
        self.tokenizer = tokenizer
        self.source = source
        self.companionFiles = companionFiles
    }

    /// Opens `path`: a directory, a `.gguf` file, or a `.safetensors` file beside a config.json.
    public static func load(path: String) throws -> LoadedModel {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw SwiftQuantError.io("\(path): no such file or directory")
        }
        if isDir.boolValue { return try loadDirectory(path) }
        if try isGGUF(path) { return try loadGGUF(path) }
        if path.hasSuffix(".safetensors") {
            return try loadDirectory((path as NSString).deletingLastPathComponent)
        }
        throw SwiftQuantError.format("\(path): neither a GGUF file nor a Hugging Face model directory")
    }

    static func isGGUF(_ path: String) throws -> Bool {
        guard let h = FileHandle(forReadingAtPath: path) else { throw SwiftQuantError.io("\(path): cannot open") }
        defer { try? h.close() }
        let magic = (try? h.read(upToCount: 4)) ?? Data()
        return magic == Data("GGUF".utf8)
    }

    static func loadDirectory(_ dir: String) throws -> LoadedModel {
        let hf = try HFDirectorySource(directory: dir)
        guard var config = try hf.config() else { throw SwiftQuantError.format("\(dir): no config.json") }
        // A GPTQ or compressed-tensors checkpoint: its packed linears are read into a QuantizationState and served
        // to the model dequantized; the config loses its quantization_config (a re-export writes its own).
        var imported: QuantizationState?
        var base: TensorSource = hf
        if config["quantization_config"] != nil {
            let opened = try RuntimeCheckpoint.open(hf, config: config,
                                                    configPath: (dir as NSString).appendingPathComponent("config.json"))
            imported = opened.state
            base = opened.source
            config["quantization_config"] = nil
        }
        let source = CachingTensorSource(base)
        let model = try ArchitectureRegistry.model(config: config, source: source)
        let tokPath = (dir as NSString).appendingPathComponent("tokenizer.json")
        let tokenizer = FileManager.default.fileExists(atPath: tokPath) ? try Tokenizer.fromJSON(path: tokPath) : nil
        let companions = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                          "vocab.json", "merges.txt", "tokenizer.model"]
            .map { (dir as NSString).appendingPathComponent($0) }
            .filter { FileManager.default.fileExists(atPath: $0) }
        let loaded = LoadedModel(path: dir, model: model, config: config, tokenizer: tokenizer, source: source,
                                 companionFiles: companions)
        loaded.tokenizerExtras = TokenizerExtras(padId: (config["pad_token_id"] as? Int).map { Int32($0) },
                                                 modelMaxLength: config["max_position_embeddings"] as? Int)
        if let imported {
            try loaded.install(imported)
        } else if let state = try QuantizedExport.readState(directory: dir, config: config, model: model) {
            try loaded.install(state)
        }
        return loaded
    }

    static func loadGGUF(_ path: String) throws -> LoadedModel {
        let file = try GGUFFile(path: path)
        let config = try GGUFModelConfig.huggingFaceConfig(file)
        let source = CachingTensorSource(try GGUFTensorSource(file: file))
        let model = try ArchitectureRegistry.model(config: config, source: source)
        let tokenizer = try GGUFModelConfig.tokenizer(file)
        let loaded = LoadedModel(path: path, model: model, config: config, tokenizer: tokenizer, source: source,
                                 companionFiles: [])
        let m = file.metadata
        let pad = m["tokenizer.ggml.padding_token_id"]?.int
        loaded.tokenizerExtras = TokenizerExtras(
            chatTemplate: m["tokenizer.chat_template"]?.string,
            padId: pad.flatMap { $0 >= 0 && $0 < (tokenizer?.vocabSize ?? 0) ? Int32($0) : nil },
            modelMaxLength: config["max_position_embeddings"] as? Int)
        return loaded
    }

    /// Sets `state` as this model's quantization: its activation scheme on the model, its LoRC terms on the
    /// blocks' linears (the blocks are installed as views of the source).
    public func install(_ state: QuantizationState) throws {
        quantization = state
        model.activations = state.activations
        guard !state.lowRank.isEmpty else { return }
        for i in 0..<model.numBlocks {
            let b = try model.block(i), p = model.blockPrefix(i)
            var linears = b.linears, touched = false
            for (name, l) in b.linears {
                guard let r = state.lowRank[p + name + ".weight"] else { continue }
                try require(r.u.shape[0] == l.outFeatures && r.v.shape[1] == l.inFeatures,
                            "\(p + name): LoRC factors \(r.u.shape) × \(r.v.shape) do not fit the weight \(l.weight.shape)")
                linears[name] = Linear(weight: l.weight, bias: l.bias, lowRank: r)
                touched = true
            }
            if touched { model.setBlock(i, TransformerBlock(index: i, linearNames: b.linearNames, linears: linears, norms: b.norms)) }
        }
    }

    /// The same weights, tokenizer and config under a new adapter with no installed blocks: quantizing the
    /// copy leaves this model as it is.
    public func fresh() throws -> LoadedModel {
        let copy = LoadedModel(path: path, model: try ArchitectureRegistry.model(config: config, source: source),
                               config: config, tokenizer: tokenizer, source: source, companionFiles: companionFiles)
        copy.tokenizerExtras = tokenizerExtras
        return copy
    }

    /// config.json text (keys sorted).
    public var configJSON: String {
        let data = (try? JSONSerialization.data(withJSONObject: config, options: [.sortedKeys, .prettyPrinted])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }
}

/// Hugging Face config and tokenizer from GGUF metadata (llama.cpp's key names).
public enum GGUFModelConfig {
    public static func huggingFaceConfig(_ file: GGUFFile) throws -> [String: Any] {
        let m = file.metadata
        guard let arch = m["general.architecture"]?.string else {
            throw SwiftQuantError.format("\(file.path): no general.architecture in the metadata")
        }
        let modelType: String
        switch arch {
        case "llama", "mistral": modelType = "llama"
        case "qwen2": modelType = "qwen2"
        default:
            throw SwiftQuantError.unsupported("\(file.path): GGUF architecture '\(arch)' is not supported (llama, qwen2)")
        }
        func int(_ key: String) throws -> Int {
            guard let v = m["\(arch).\(key)"]?.int else {
                throw SwiftQuantError.format("\(file.path): metadata key '\(arch).\(key)' is missing or not an integer")
            }
            return v
        }
        if file.tensor("rope_freqs.weight") != nil {
            throw SwiftQuantError.unsupported("\(file.path): RoPE frequency factors (rope_freqs.weight, Llama-3.1 style) are not supported from GGUF; use the Hugging Face directory")
        }
        guard let embd = file.tensor("token_embd.weight"), embd.dims.count == 2 else {
            throw SwiftQuantError.format("\(file.path): no 2-D token_embd.weight tensor")
        }
        let heads = try int("attention.head_count")
        var c: [String: Any] = [
            "model_type": modelType,
            "architectures": [modelType == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM"],
            "hidden_size": try int("embedding_length"),
            "intermediate_size": try int("feed_forward_length"),
            "num_hidden_layers": try int("block_count"),
            "num_attention_heads": heads,
            "num_key_value_heads": m["\(arch).attention.head_count_kv"]?.int ?? heads,
            "rms_norm_eps": m["\(arch).attention.layer_norm_rms_epsilon"]?.double ?? 1e-6,
            "rope_theta": m["\(arch).rope.freq_base"]?.double ?? 10000,
            "max_position_embeddings": m["\(arch).context_length"]?.int ?? 2048,
            "vocab_size": embd.dims[1],
            "tie_word_embeddings": file.tensor("output.weight") == nil,
            "hidden_act": "silu",
            "torch_dtype": "float32",
        ]
        if let k = m["\(arch).attention.key_length"]?.int { c["head_dim"] = k }
        if let b = m["tokenizer.ggml.bos_token_id"]?.int { c["bos_token_id"] = b }
        if let e = m["tokenizer.ggml.eos_token_id"]?.int { c["eos_token_id"] = e }
        return c
    }

    public static func tokenizer(_ file: GGUFFile) throws -> Tokenizer? {
        let m = file.metadata
        guard let model = m["tokenizer.ggml.model"]?.string, let tokens = m["tokenizer.ggml.tokens"]?.stringArray else {
            return nil
        }
        let types = m["tokenizer.ggml.token_type"]?.array?.compactMap { $0.int.map(Int32.init) }
        let scores = m["tokenizer.ggml.scores"]?.array?.compactMap { $0.double.map(Float.init) }
        // `tokenizer.ggml.pre = "smollm"` names SmolLM's pre-tokenizer (digits split one by one, then byte-level).
        // transformers' GGUF conversion (`AutoTokenizer.from_pretrained(dir, gguf_file=…)`), the reference this
        // project's perplexities are compared with, ignores it and uses the plain GPT-2 byte-level split: 304,986
        // tokens on WikiText-2 test instead of 304,978. We follow transformers so both sides score the same
        // tokens; a tokenizer.json (Hugging Face directory) is always followed as written.
        var pre = m["tokenizer.ggml.pre"]?.string
        if pre == "smollm" { pre = nil }
        do {
            let spec = try TokenizerSpec.fromGGUF(
                model: model, pre: pre, tokens: tokens, tokenTypes: types, scores: scores,
                merges: m["tokenizer.ggml.merges"]?.stringArray, bos: m["tokenizer.ggml.bos_token_id"]?.int,
                eos: m["tokenizer.ggml.eos_token_id"]?.int, unk: m["tokenizer.ggml.unknown_token_id"]?.int,
                addBOS: m["tokenizer.ggml.add_bos_token"]?.bool, addEOS: m["tokenizer.ggml.add_eos_token"]?.bool)
            return try Tokenizer(spec: spec)
        } catch let e as SwiftQuantError {
            throw SwiftQuantError.format("\(file.path): tokenizer metadata: \(e.message)")
        }
    }
}

/// A `TensorSource` that keeps every converted tensor after its first use (zero-copy views are cheap to
/// recreate and are not kept). Evaluation reads each weight once per window; converting a quantized GGUF
/// tensor each time would dominate. Thread-safe.
public final class CachingTensorSource: TensorSource, @unchecked Sendable {
    public let base: TensorSource
    private var cache: [String: Tensor] = [:]
    private let lock = NSLock()
    public var enabled = true

    public init(_ base: TensorSource) { self.base = base }

    public var tensorInfos: [TensorInfo] { base.tensorInfos }
    public func info(_ name: String) -> TensorInfo? { base.info(name) }

    public func float32(_ name: String) throws -> Tensor {
        lock.lock()
        if let t = cache[name] { lock.unlock(); return t }
        lock.unlock()
        let t = try base.float32(name)
        if enabled && !isZeroCopy(name) {
            lock.lock(); cache[name] = t; lock.unlock()
        }
        return t
    }

    /// Whether `float32(name)` is a view of the mapped file rather than a converted copy.
    public func isZeroCopy(_ name: String) -> Bool {
        if let s = base as? SafetensorsFile { return s.isZeroCopy(name) }
        if let s = base as? HFDirectorySource { return s.isZeroCopy(name) }
        if let s = base as? GGUFTensorSource { return s.isZeroCopy(name) }
        if let s = base as? DequantizedTensorSource, s.quantized[name] == nil, let h = s.base as? HFDirectorySource {
            return h.isZeroCopy(name)
        }
        return false
    }

    /// Drops the converted tensors (frees their memory).
    public func clear() { lock.lock(); cache.removeAll(); lock.unlock() }
}
