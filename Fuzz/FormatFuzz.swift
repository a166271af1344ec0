import Foundation
import SwiftQuant

/// Entry points for a libFuzzer-style harness: parse untrusted bytes with each file reader entirely in memory,
/// decode every tensor, and swallow the thrown errors. Any crash, trap or hang here is a bug. Memory use is
/// bounded by a small multiple of the input size (decoded float32 is at most ~7× the stored bytes; 2-bit codes
/// dequantize to 16 floats per stored word).
public enum FormatFuzz {
    public static func parseSafetensors(_ bytes: UnsafeRawBufferPointer) {
        guard let f = try? SafetensorsFile(bytes: bytes, name: "fuzz") else { return }
        _ = f.metadata.count
        for t in f.tensorInfos {
            _ = try? f.rawBytes(t.name)
            _ = f.isZeroCopy(t.name)
            _ = try? f.float32(t.name)
        }
    }

    public static func parseGGUF(_ bytes: UnsafeRawBufferPointer) {
        guard let g = try? GGUFFile(bytes: bytes, name: "fuzz") else { return }
        for k in g.keys {
            let v = g.metadata[k]
            _ = v?.int
            _ = v?.double
            _ = v?.stringArray
        }
        for t in g.tensors {
            _ = try? g.data(t.name)
            _ = try? g.float32(t.name)
        }
        if let src = try? GGUFTensorSource(file: g) {
            for t in src.tensorInfos { _ = try? src.float32(t.name) }
        }
    }

    // MARK: checkpoint importers
    //
    // Their input is a checkpoint directory in one buffer: a little-endian UInt32 `n`, `n` bytes of config.json,
    // then one safetensors file (model.safetensors for GPTQ and compressed-tensors, quantized.safetensors for
    // SwiftQuant's own directories). `checkpointInput` builds one.

    /// A directory's config.json and safetensors file as one fuzz input.
    public static func checkpointInput(config: Data, safetensors: Data) -> [UInt8] {
        var out = withUnsafeBytes(of: UInt32(config.count).littleEndian) { Array($0) }
        out += config
        out += safetensors
        return out
    }

    static func split(_ bytes: UnsafeRawBufferPointer) -> ([String: Any], UnsafeRawBufferPointer)? {
        guard bytes.count >= 4 else { return nil }
        let n = Int(UInt32(littleEndian: bytes.loadUnaligned(as: UInt32.self)))
        guard n <= bytes.count - 4 else { return nil }
        let json = Data(bytes: bytes.baseAddress! + 4, count: n)
        guard let config = (try? JSONSerialization.jsonObject(with: json)) as? [String: Any] else { return nil }
        return (config, UnsafeRawBufferPointer(rebasing: bytes[(4 + n)...]))
    }

    /// A GPTQ (`method` "gptq") or compressed-tensors ("compressed-tensors") checkpoint through
    /// `RuntimeCheckpoint.open` (the input's quant_method is replaced by `method`), then every tensor the model
    /// would read. True when the checkpoint was accepted.
    @discardableResult
    public static func importCheckpoint(_ bytes: UnsafeRawBufferPointer, method: String) -> Bool {
        guard let (parsed, rest) = split(bytes) else { return false }
        var config = parsed
        if var qc = config["quantization_config"] as? [String: Any] {
            qc["quant_method"] = method
            config["quantization_config"] = qc
        }
        guard let file = try? SafetensorsFile(bytes: rest, name: "fuzz/model.safetensors"),
              let opened = try? RuntimeCheckpoint.open(file, config: config, configPath: "fuzz/config.json")
        else { return false }
        for t in opened.source.tensorInfos { _ = try? opened.source.float32(t.name) }
        return true
    }

    /// SwiftQuant's own saved quantization (config.json's `swiftquant` object and quantized.safetensors) through
    /// `QuantizedExport.readState`, then every tensor dequantized. True when it was accepted with tensors.
    @discardableResult
    public static func readSavedQuantization(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let (config, rest) = split(bytes),
              let model = try? ArchitectureRegistry.model(config: config, source: AnyNameSource()),
              let file = try? SafetensorsFile(bytes: rest, name: "fuzz/quantized.safetensors"),
              let state = try? QuantizedExport.readState(config: config, packedFile: file, model: model,
                                                         configPath: "fuzz/config.json")
        else { return false }
        for q in state.tensors.values { _ = q.dequantized() }
        return !state.tensors.isEmpty
    }

    /// Lets a model adapter be built from a config alone (the saved-quantization reader needs shapes, not weights).
    final class AnyNameSource: TensorSource {
        var tensorInfos: [TensorInfo] { [] }
        func info(_ name: String) -> TensorInfo? { TensorInfo(name: name, dtype: .f32, shape: []) }
        func float32(_ name: String) throws -> Tensor { throw SwiftQuantError.format("no tensor data here") }
    }

    // MARK: seeds

    /// Valid inputs for the importer targets, keyed by a name: a one-block Llama (hidden 32, 4 heads of 16, 2 KV heads) quantized by
    /// RTN and written as GPTQ (4- and 3-bit, symmetric and not), compressed-tensors (INT4 group, INT8 channel) and
    /// SwiftQuant's own directory. Each value starts with its target's selector byte (see FuzzTarget.swift).
    public static func importSeeds() throws -> [(name: String, bytes: [UInt8])] {
        let fm = FileManager.default
        let root = NSTemporaryDirectory() + "sq-fuzz-seeds-\(ProcessInfo.processInfo.processIdentifier)"
        try? fm.removeItem(atPath: root)
        try fm.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? fm.removeItem(atPath: root) }
        let config: [String: Any] = [
            "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
            "vocab_size": 32, "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "tie_word_embeddings": true, "hidden_act": "silu", "torch_dtype": "float32",
        ]
        var rng = SplitMix64(seed: 7)
        func random(_ shape: [Int]) -> Tensor {
            Tensor(shape: shape, values: (0..<shape.reduce(1, *)).map { _ in Float(rng.next() % 2001) / 1000 - 1 })
        }
        var weights: [(String, Tensor)] = [("model.embed_tokens.weight", random([32, 32])),
                                            ("model.norm.weight", random([32]))]
        let p = "model.layers.0."
        for (n, shape) in [("self_attn.q_proj", [64, 32]), ("self_attn.k_proj", [32, 32]), ("self_attn.v_proj", [32, 32]),
                           ("self_attn.o_proj", [32, 64]), ("mlp.gate_proj", [64, 32]), ("mlp.up_proj", [64, 32]),
                           ("mlp.down_proj", [32, 64])] {
            weights.append((p + n + ".weight", random(shape)))
        }
        weights.append((p + "input_layernorm.weight", random([32])))
        weights.append((p + "post_attention_layernorm.weight", random([32])))
        let src = root + "/model"
        try fm.createDirectory(atPath: src, withIntermediateDirectories: true)
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: src + "/config.json"))
        try SafetensorsWriter.write(float32: weights, to: src + "/model.safetensors")

        var seeds: [(String, [UInt8])] = []
        func add(_ name: String, selector: UInt8, dir: String, file: String) throws {
            let c = try Data(contentsOf: URL(fileURLWithPath: dir + "/config.json"))
            let s = try Data(contentsOf: URL(fileURLWithPath: dir + "/" + file))
            seeds.append((name, [selector] + checkpointInput(config: c, safetensors: s)))
        }
        let runs: [(String, QuantRecipe, ExportFormat, UInt8, String)] = [
            ("gptq-w4g16-asym", QuantRecipe(method: .gptq, wformat: "int4", groupSize: 16), .gptq, 2, "model.safetensors"),
            ("gptq-w3g32-sym", QuantRecipe(method: .rtn, wformat: "int3", groupSize: 32, symmetric: true), .gptq, 2,
             "model.safetensors"),
            ("ct-w4g16-asym", QuantRecipe(method: .gptq, wformat: "int4", groupSize: 16), .compressedTensors, 3,
             "model.safetensors"),
            ("ct-w8-perrow-sym", QuantRecipe(method: .rtn, wformat: "int8", groupSize: .perRow, symmetric: true),
             .compressedTensors, 3, "model.safetensors"),
            ("saved-w4g16", QuantRecipe(method: .rtn, wformat: "int4", groupSize: 16), .swiftquant, 4,
             "quantized.safetensors"),
        ]
        for (name, recipe, format, selector, file) in runs {
            let loaded = try LoadedModel.load(path: src)
            var r = recipe
            if r.method == .gptq { r.nsamples = 2; r.seqlen = 8 }
            // GPTQ needs calibration windows: random token ids through the library's own pipeline.
            let pipeline = try CalibrationPipeline(recipe: r, workDir: nil, progress: false)
            var trng = SplitMix64(seed: 3)
            let windows = r.needsCalibrationData ? (0..<2).map { _ in (0..<8).map { _ in Int32(trng.next() % 32) } } : []
            let result = try pipeline.run(model: loaded.model, windows: windows, resume: false)
            loaded.quantization = QuantizationState(method: r.method.rawValue, weights: try r.quantizerConfig,
                                                    tensors: result.quantized)
            let out = root + "/" + name
            try ModelExport.write(loaded, format: format, to: out, options: ExportOptions(progress: false, log: { _ in }))
            try add(name, selector: selector, dir: out, file: file)
        }
        return seeds
    }
}
