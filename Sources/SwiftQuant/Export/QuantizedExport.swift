import Foundation

/// Writes a quantized model as a directory:
///
/// | file | content |
/// |---|---|
/// | `config.json` | the Hugging Face config (plus a `swiftquant` entry describing the quantization) |
/// | `model.safetensors` (or shards + index) | every weight in float32, block linears fake-quantized: `transformers` loads it as a plain model |
/// | `quantized.safetensors` | per quantized linear `W` [out, in]: `<W>.qweight` U8 [out, ⌈in·bits/8⌉] (each row one LSB-first bit stream of codes, see `BitPacking`), `<W>.scales` F32 [out, groups], `<W>.zeros` I32 [out, groups] (INT formats: dequantized = (code − zero)·scale, exactly what `model.safetensors` holds; minifloats: decode(code)·scale, zeros absent); with LoRC `<W>.lorc_u` F16 [out, r] and `<W>.lorc_v` F16 [r, in] (the layer adds `(x·Vᵀ)·Uᵀ`; `model.safetensors` holds `Ŵ` alone) |
/// | `swiftquant.json` | method, format, group size, source model, version, timing |
/// | tokenizer files, `generation_config.json` | copied from a source directory; written from the tokenizer and config otherwise (a GGUF source), see `SavedModelFiles.writeCompanions` |
///
/// `config.json`'s `swiftquant` object records the weight format and the activation settings (`aformat`,
/// `kv_format`) and LoRC rank: `LoadedModel.load` of the directory restores them, so the model evaluates as it
/// did when it was saved.
///
/// The directory is written under a temporary name beside `dir` and renamed into place at the end, so an
/// interrupted export leaves no half-written directory under the final name. An existing `dir` is replaced
/// only if it is empty or was written by SwiftQuant (has `swiftquant.json`).
public enum QuantizedExport {
    public static let marker = "swiftquant.json"

    /// Refuses an output directory that exists, is not empty and is not ours (check before any work).
    public static func checkOutput(_ dir: String) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir) else { return }
        guard isDir.boolValue else { throw SwiftQuantError.invalidArgument("\(dir): exists and is not a directory") }
        let items = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        if !items.isEmpty && !items.contains(marker) {
            throw SwiftQuantError.invalidArgument(
                "\(dir): exists, is not empty and was not written by SwiftQuant; choose another --out or remove it")
        }
    }

    /// Writes `loaded` (its installed blocks and its `quantization`; a plain model is written as it is).
    public static func write(_ loaded: LoadedModel, to dir: String, info: [String: Any] = [:],
                             shardBytes: Int = 2 << 30, progress: Bool = true) throws {
        try writeDirectory(dir) { tmp in
            try writeContents(loaded, into: tmp, info: info, shardBytes: shardBytes, progress: progress)
        }
    }

    /// Runs `body` on a new directory under a temporary name beside `dir` and renames it to `dir` when `body`
    /// returns (replacing an earlier output of ours; `checkOutput` first); on error nothing is left behind. Every
    /// exporter that writes a directory goes through here.
    static func writeDirectory(_ dir: String, _ body: (String) throws -> Void) throws {
        try checkOutput(dir)
        let fm = FileManager.default
        let parent = (dir as NSString).deletingLastPathComponent
        let tmp = (parent.isEmpty ? "." : parent) + "/." + (dir as NSString).lastPathComponent
            + ".partial-\(ProcessInfo.processInfo.processIdentifier)"
        try? fm.removeItem(atPath: tmp)
        do {
            try fm.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        } catch {
            throw SwiftQuantError.io("\(tmp): cannot create the output directory: \(error.localizedDescription)")
        }
        do {
            try body(tmp)
            if fm.fileExists(atPath: dir) {
                let old = tmp + ".old"
                try fm.moveItem(atPath: dir, toPath: old)
                try fm.moveItem(atPath: tmp, toPath: dir)
                try? fm.removeItem(atPath: old)
            } else {
                try fm.moveItem(atPath: tmp, toPath: dir)
            }
        } catch {
            try? fm.removeItem(atPath: tmp)
            if let e = error as? SwiftQuantError { throw e }
            throw SwiftQuantError.io("\(dir): \(error.localizedDescription)")
        }
    }

    /// The tokenizer and generation files every exported directory carries (`SavedModelFiles.writeCompanions`:
    /// copied from the source, or written from its tokenizer).
    static func writeCompanions(_ loaded: LoadedModel, into dir: String) throws {
        try SavedModelFiles.writeCompanions(loaded, into: dir)
    }

    static func writeContents(_ loaded: LoadedModel, into dir: String, info: [String: Any], shardBytes: Int,
                              progress: Bool = true) throws {
        let state = loaded.quantization
        let quantized = state?.tensors ?? [:]
        // model.safetensors: the effective float32 weights (norms and biases as the blocks run them), in the
        // source's order, streamed tensor by tensor.
        try SavedModelFiles.writeEffectiveWeights(loaded, into: dir, shardBytes: shardBytes, progress: progress)

        // quantized.safetensors: packed codes, scales, zero-points.
        var packed: [SafetensorsEntry] = []
        for name in quantized.keys.sorted() {
            let q = quantized[name]!
            let base = name.hasSuffix(".weight") ? String(name.dropLast(7)) : name
            let stride = BitPacking.packedByteCount(count: q.cols, bits: q.config.format.bitWidth)
            packed.append(SafetensorsEntry(name: base + ".qweight", dtype: .u8, shape: [q.rows, stride],
                                           bytes: Data(q.packed())))
            packed.append(SafetensorsEntry(name: base + ".scales", dtype: .f32, shape: [q.rows, q.groupCount],
                                           bytes: q.scales.withUnsafeBufferPointer { Data(buffer: $0) }))
            if q.config.isInteger {
                packed.append(SafetensorsEntry(name: base + ".zeros", dtype: .i32, shape: [q.rows, q.groupCount],
                                               bytes: q.zeros.withUnsafeBufferPointer { Data(buffer: $0) }))
            }
            if let g = q.groupIndex {  // GPTQ act-order: column c belongs to group g_idx[c]
                packed.append(SafetensorsEntry(name: base + ".g_idx", dtype: .i32, shape: [q.cols],
                                               bytes: g.withUnsafeBufferPointer { Data(buffer: $0) }))
            }
            if let r = state?.lowRank[name] {
                packed.append(try SafetensorsEntry(name: base + ".lorc_u", tensor: r.u, as: .f16))
                packed.append(try SafetensorsEntry(name: base + ".lorc_v", tensor: r.v, as: .f16))
            }
        }
        let config = state?.weights ?? QuantizerConfig(format: .int(bits: 8), groupSize: .perRow)
        let meta = [
            "format": config.format.name, "bits": String(config.format.bitWidth),
            "group_size": config.groupSize.description, "symmetric": String(config.symmetric),
            "layout": "qweight: U8 [out, ceil(in*bits/8)], each row an LSB-first bit stream of codes; "
                + "scales: F32 [out, groups]; zeros: I32 [out, groups]; W = (code - zero) * scale",
        ]
        try SafetensorsWriter.write(packed, metadata: meta, to: dir + "/quantized.safetensors")

        // config.json
        var cfg = loaded.config
        let q = (state ?? QuantizationState(method: "none", weights: config, tensors: [:])).configObject
        cfg["swiftquant"] = q
        cfg["torch_dtype"] = "float32"
        try writeJSON(cfg, to: dir + "/config.json")

        var marker: [String: Any] = q
        marker["swiftquant_version"] = SwiftQuantInfo.version
        marker["source"] = loaded.path
        marker["quantized_tensors"] = quantized.count
        for (k, v) in info { marker[k] = v }
        try writeJSON(marker, to: dir + "/" + Self.marker)
        try SavedModelFiles.writeCompanions(loaded, into: dir)
    }

    static func writeJSON(_ object: [String: Any], to path: String) throws {
        let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
        guard FileManager.default.createFile(atPath: path, contents: data) else {
            throw SwiftQuantError.io("\(path): cannot write")
        }
    }
}
