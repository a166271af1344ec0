// Models, tokenizers and evaluation in the C ABI: opaque handles over `LoadedModel` and `Tokenizer`.
import CSQSupport
import CSwiftQuant
import Foundation
import SwiftQuant

/// What an `sq_model*` points to. Keeps every tensor it handed out alive until `sq_model_free`.
final class ModelHandle {
    let loaded: LoadedModel
    /// The quantized tensors (`loaded.quantization`'s).
    let quantized: [String: QuantizedTensor]
    /// Effective weights that differ from the source (fake-quantized block linears).
    let overrides: [String: Tensor]
    let configJSON: UnsafeMutablePointer<CChar>
    var names: [UnsafeMutablePointer<CChar>] = []
    var handedOut: [String: Tensor] = [:]
    var boxes: [String: QuantizedBox] = [:]
    let quantizedNames: [UnsafeMutablePointer<CChar>]
    let lock = NSLock()

    init(_ loaded: LoadedModel, overrides: [String: Tensor] = [:]) {
        self.loaded = loaded
        self.quantized = loaded.quantization?.tensors ?? [:]
        self.overrides = overrides
        configJSON = strdup(loaded.configJSON)!
        names = loaded.source.tensorInfos.map { strdup($0.name)! }
        quantizedNames = quantized.keys.sorted().map { strdup($0)! }
    }

    deinit {
        free(configJSON)
        for n in names + quantizedNames { free(n) }
    }
}

private func model(_ p: OpaquePointer?) throws -> ModelHandle {
    guard let p else { throw SwiftQuantError.invalidArgument("model handle is NULL") }
    return Unmanaged<ModelHandle>.fromOpaque(UnsafeRawPointer(p)).takeUnretainedValue()
}

private func tokenizer(_ p: OpaquePointer?) throws -> Tokenizer {
    guard let p else { throw SwiftQuantError.invalidArgument("tokenizer handle is NULL") }
    return Unmanaged<Tokenizer>.fromOpaque(UnsafeRawPointer(p)).takeUnretainedValue()
}

private func retained(_ m: ModelHandle) -> OpaquePointer { OpaquePointer(Unmanaged.passRetained(m).toOpaque()) }

@_cdecl("sq_model_open")
public func cabi_model_open(_ path: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    status {
        let out = try nonNull(out, "out")
        out.pointee = nil
        let loaded = try LoadedModel.load(path: String(cString: try nonNull(path, "path")))
        out.pointee = retained(ModelHandle(loaded))
    }
}

@_cdecl("sq_model_free")
public func cabi_model_free(_ p: OpaquePointer?) {
    guard let p else { return }
    Unmanaged<ModelHandle>.fromOpaque(UnsafeRawPointer(p)).release()
}

@_cdecl("sq_model_config_json")
public func cabi_model_config_json(_ p: OpaquePointer?, _ json: UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> Int32 {
    status { try nonNull(json, "json").pointee = UnsafePointer(try model(p).configJSON) }
}

@_cdecl("sq_model_tensor_count")
public func cabi_model_tensor_count(_ p: OpaquePointer?, _ count: UnsafeMutablePointer<Int64>?) -> Int32 {
    status { try nonNull(count, "count").pointee = Int64(try model(p).names.count) }
}

@_cdecl("sq_model_tensor_name")
public func cabi_model_tensor_name(_ p: OpaquePointer?, _ index: Int64, _ name: UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> Int32 {
    status {
        let m = try model(p)
        try require(index >= 0 && index < Int64(m.names.count), "tensor index \(index) outside 0..<\(m.names.count)")
        try nonNull(name, "name").pointee = UnsafePointer(m.names[Int(index)])
    }
}

@_cdecl("sq_model_tensor")
public func cabi_model_tensor(
    _ p: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ data: UnsafeMutablePointer<UnsafePointer<Float>?>?,
    _ shape: UnsafeMutablePointer<Int64>?, _ rank: UnsafeMutablePointer<Int32>?, _ isCopy: UnsafeMutablePointer<Int32>?
) -> Int32 {
    status {
        let m = try model(p)
        let n = String(cString: try nonNull(name, "name"))
        let (data, shape, rank, isCopy) = (try nonNull(data, "data"), try nonNull(shape, "shape"),
                                           try nonNull(rank, "rank"), try nonNull(isCopy, "is_copy"))
        let t: Tensor, copy: Bool
        if let o = m.overrides[n] {
            t = o; copy = true
        } else {
            guard m.loaded.source.info(n) != nil else {
                throw SwiftQuantError.invalidArgument("\(m.loaded.path): no tensor named '\(n)'")
            }
            t = try m.loaded.source.float32(n)
            copy = !m.loaded.source.isZeroCopy(n)
        }
        try require(t.rank <= 4, "tensor '\(n)' has rank \(t.rank) > 4")
        m.lock.lock(); m.handedOut[n] = t; m.lock.unlock()
        data.pointee = UnsafePointer(t.pointer)
        for i in 0..<4 { shape[i] = i < t.rank ? Int64(t.shape[i]) : 0 }
        rank.pointee = Int32(t.rank)
        isCopy.pointee = copy ? 1 : 0
    }
}

@_cdecl("sq_model_vocab_size")
public func cabi_model_vocab_size(_ p: OpaquePointer?, _ vocab: UnsafeMutablePointer<Int64>?) -> Int32 {
    status { try nonNull(vocab, "vocab").pointee = Int64(try model(p).loaded.model.vocabSize) }
}

private func ids(_ p: UnsafePointer<Int32>?, _ n: Int64) throws -> [Int32] {
    try require(n > 0, "no token ids given")
    return Array(UnsafeBufferPointer(start: try nonNull(p, "ids"), count: Int(n)))
}

@_cdecl("sq_model_logits")
public func cabi_model_logits(_ p: OpaquePointer?, _ idp: UnsafePointer<Int32>?, _ n: Int64,
                              _ out: UnsafeMutablePointer<Float>?) -> Int32 {
    status {
        let m = try model(p)
        try m.loaded.model.loadWeights()   // first call on a converted model: a bar when it takes a while
        let l = try m.loaded.model.logits(ids: try ids(idp, n))
        try nonNull(out, "out").update(from: l.pointer, count: l.count)
    }
}

@_cdecl("sq_model_perplexity")
public func cabi_model_perplexity(_ p: OpaquePointer?, _ idp: UnsafePointer<Int32>?, _ n: Int64, _ seqlen: Int64,
                                  _ limit: Int64, _ progress: Int32, _ ppl: UnsafeMutablePointer<Double>?,
                                  _ windows: UnsafeMutablePointer<Int64>?) -> Int32 {
    status {
        let m = try model(p)
        try require(limit >= 0, "limit must be ≥ 0 (0 = all windows), got \(limit)")
        let r = try Perplexity.evaluate(model: m.loaded.model, tokens: try ids(idp, n), seqLen: Int(seqlen),
                                        limit: limit == 0 ? nil : Int(limit), progress: progress != 0)
        try nonNull(ppl, "ppl").pointee = r.perplexity
        windows?.pointee = Int64(r.windows)
    }
}

@_cdecl("sq_recipe_resolve")
public func cabi_recipe_resolve(_ json: UnsafePointer<CChar>?,
                                _ resolved: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    status {
        let out = try nonNull(resolved, "resolved")
        out.pointee = nil
        let r = try QuantRecipe.fromJSON(String(cString: try nonNull(json, "recipe_json")))
        try r.validate()
        out.pointee = strdup(r.json)
    }
}

@_cdecl("sq_model_quantize")
public func cabi_model_quantize(_ p: OpaquePointer?, _ json: UnsafePointer<CChar>?, _ calib: UnsafePointer<CChar>?,
                                _ workDir: UnsafePointer<CChar>?, _ resume: Int32, _ progress: Int32,
                                _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    status {
        let out = try nonNull(out, "out")
        out.pointee = nil
        let m = try model(p)
        let recipe = try QuantRecipe.fromJSON(String(cString: try nonNull(json, "recipe_json")))
        var dir: String?
        if recipe.needsCalibrationData {
            guard let workDir else { throw SwiftQuantError.invalidArgument("\(recipe.method.rawValue) needs a work_dir") }
            dir = String(cString: workDir)
        }
        let copy = try m.loaded.fresh()
        _ = try CalibrationPipeline.quantize(copy, recipe: recipe, calibrationPath: calib.map { String(cString: $0) },
                                                 workDir: dir, resume: resume != 0, progress: progress != 0)
        var overrides: [String: Tensor] = [:]
        for i in 0..<copy.model.numBlocks {
            let b = try copy.model.block(i)
            let prefix = copy.model.blockPrefix(i)
            for (name, lin) in b.linears {
                overrides[prefix + name + ".weight"] = lin.weight
                if let bias = lin.bias { overrides[prefix + name + ".bias"] = bias }
            }
            for (name, n) in b.norms {  // an equivalent transformation rescales them
                if let w = n.weight { overrides[prefix + name + ".weight"] = w }
                if let bias = n.bias { overrides[prefix + name + ".bias"] = bias }
            }
        }
        out.pointee = retained(ModelHandle(copy, overrides: overrides))
    }
}

@_cdecl("sq_model_save")
public func cabi_model_save(_ p: OpaquePointer?, _ dir: UnsafePointer<CChar>?) -> Int32 {
    status {
        let m = try model(p)
        let d = String(cString: try nonNull(dir, "dir"))
        try QuantizedExport.write(m.loaded, to: d)
    }
}

@_cdecl("sq_model_export")
public func cabi_model_export(_ p: OpaquePointer?, _ format: UnsafePointer<CChar>?, _ path: UnsafePointer<CChar>?,
                              _ requantize: Int32, _ progress: Int32) -> Int32 {
    status {
        let m = try model(p)
        let f = try ExportFormat.parse(String(cString: try nonNull(format, "format")))
        try ModelExport.write(m.loaded, format: f, to: String(cString: try nonNull(path, "path")),
                              options: ExportOptions(requantize: requantize != 0, progress: progress != 0))
    }
}

@_cdecl("sq_model_tokenizer")
public func cabi_model_tokenizer(_ p: OpaquePointer?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    status {
        let out = try nonNull(out, "out")
        out.pointee = nil
        let m = try model(p)
        guard let t = m.loaded.tokenizer else {
            throw SwiftQuantError.invalidArgument("\(m.loaded.path): the model has no tokenizer")
        }
        out.pointee = OpaquePointer(Unmanaged.passRetained(t).toOpaque())
    }
}

@_cdecl("sq_tokenizer_open")
public func cabi_tokenizer_open(_ path: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    status {
        let out = try nonNull(out, "out")
        out.pointee = nil
        let p = String(cString: try nonNull(path, "path"))
        guard FileManager.default.fileExists(atPath: p) else { throw SwiftQuantError.io("\(p): no such file") }
        let t: Tokenizer
        if p.hasSuffix(".gguf") {
            guard let tok = try GGUFModelConfig.tokenizer(try GGUFFile(path: p)) else {
                throw SwiftQuantError.format("\(p): no tokenizer metadata in this GGUF file")
            }
            t = tok
        } else {
            t = try Tokenizer.fromJSON(path: p)
        }
        out.pointee = OpaquePointer(Unmanaged.passRetained(t).toOpaque())
    }
}

@_cdecl("sq_tokenizer_free")
public func cabi_tokenizer_free(_ p: OpaquePointer?) {
    guard let p else { return }
    Unmanaged<Tokenizer>.fromOpaque(UnsafeRawPointer(p)).release()
}

@_cdecl("sq_tokenizer_vocab_size")
public func cabi_tokenizer_vocab_size(_ p: OpaquePointer?, _ size: UnsafeMutablePointer<Int64>?) -> Int32 {
    status { try nonNull(size, "size").pointee = Int64(try tokenizer(p).vocabSize) }
}

@_cdecl("sq_tokenizer_encode")
public func cabi_tokenizer_encode(_ p: OpaquePointer?, _ text: UnsafePointer<CChar>?, _ len: Int,
                                  _ idsOut: UnsafeMutablePointer<UnsafeMutablePointer<Int32>?>?,
                                  _ count: UnsafeMutablePointer<Int64>?) -> Int32 {
    status {
        let t = try tokenizer(p)
        let (idsOut, count) = (try nonNull(idsOut, "ids"), try nonNull(count, "count"))
        let bytes = len == 0 ? UnsafeRawBufferPointer(start: nil, count: 0)
            : UnsafeRawBufferPointer(start: try nonNull(text, "text"), count: len)
        guard let s = String(validating: bytes, as: UTF8.self) else {
            throw SwiftQuantError.invalidArgument("text is not valid UTF-8")
        }
        let ids = t.encode(s)
        let buf = malloc(max(1, ids.count) * 4)!.assumingMemoryBound(to: Int32.self)
        ids.withUnsafeBufferPointer { buf.update(from: $0.baseAddress!, count: ids.count) }
        idsOut.pointee = buf
        count.pointee = Int64(ids.count)
    }
}

@_cdecl("sq_tokenizer_decode")
public func cabi_tokenizer_decode(_ p: OpaquePointer?, _ idp: UnsafePointer<Int32>?, _ n: Int64, _ skip: Int32,
                                  _ text: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    status {
        let t = try tokenizer(p)
        try require(n >= 0, "negative id count")
        let list = n == 0 ? [] : Array(UnsafeBufferPointer(start: try nonNull(idp, "ids"), count: Int(n)))
        let s = try t.decode(list, skipSpecialTokens: skip != 0)
        try nonNull(text, "text").pointee = strdup(s)
    }
}

@_cdecl("sq_free")
public func cabi_free(_ p: UnsafeMutableRawPointer?) { free(p) }

// ---- Quantized weights

@_cdecl("sq_model_quantized_count")
public func cabi_model_quantized_count(_ p: OpaquePointer?, _ count: UnsafeMutablePointer<Int64>?) -> Int32 {
    status { try nonNull(count, "count").pointee = Int64(try model(p).quantizedNames.count) }
}

@_cdecl("sq_model_quantized_name")
public func cabi_model_quantized_name(_ p: OpaquePointer?, _ index: Int64,
                                      _ name: UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> Int32 {
    status {
        let m = try model(p)
        try require(index >= 0 && index < Int64(m.quantizedNames.count), "index \(index) outside 0..<\(m.quantizedNames.count)")
        try nonNull(name, "name").pointee = UnsafePointer(m.quantizedNames[Int(index)])
    }
}

@_cdecl("sq_model_quantized")
public func cabi_model_quantized(
    _ p: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ codes: UnsafeMutablePointer<UnsafePointer<UInt8>?>?,
    _ scales: UnsafeMutablePointer<UnsafePointer<Float>?>?, _ zeros: UnsafeMutablePointer<UnsafePointer<Int32>?>?,
    _ rows: UnsafeMutablePointer<Int64>?, _ cols: UnsafeMutablePointer<Int64>?, _ groups: UnsafeMutablePointer<Int64>?,
    _ format: UnsafeMutablePointer<UnsafePointer<CChar>?>?, _ groupSize: UnsafeMutablePointer<Int64>?, _ symmetric: UnsafeMutablePointer<Int32>?
) -> Int32 {
    status {
        let m = try model(p)
        let n = String(cString: try nonNull(name, "name"))
        guard let box = m.quantizedBox(n) else {
            throw SwiftQuantError.invalidArgument("no quantized weight named '\(n)'")
        }
        let q = box.tensor
        try nonNull(codes, "codes").pointee = UnsafePointer(box.codes)
        try nonNull(scales, "scales").pointee = UnsafePointer(box.scales)
        try nonNull(zeros, "zeros").pointee = UnsafePointer(box.zeros)
        try nonNull(rows, "rows").pointee = Int64(q.rows)
        try nonNull(cols, "cols").pointee = Int64(q.cols)
        try nonNull(groups, "groups").pointee = Int64(q.groupCount)
        try nonNull(format, "format").pointee = UnsafePointer(box.formatName)
        try nonNull(groupSize, "group_size").pointee = q.config.groupSize.abiValue
        try nonNull(symmetric, "symmetric").pointee = q.config.symmetric ? 1 : 0
    }
}

@_cdecl("sq_model_quantized_group_index")
public func cabi_model_quantized_group_index(_ p: OpaquePointer?, _ name: UnsafePointer<CChar>?,
                                             _ gIdx: UnsafeMutablePointer<UnsafePointer<Int32>?>?) -> Int32 {
    status {
        let m = try model(p)
        let n = String(cString: try nonNull(name, "name"))
        guard let box = m.quantizedBox(n) else {
            throw SwiftQuantError.invalidArgument("no quantized weight named '\(n)'")
        }
        try nonNull(gIdx, "g_idx").pointee = box.groupIndex.map { UnsafePointer($0) }
    }
}

/// Stable copies of a quantized tensor's arrays for the C side.
final class QuantizedBox {
    let tensor: QuantizedTensor
    let codes: UnsafeMutablePointer<UInt8>, scales: UnsafeMutablePointer<Float>, zeros: UnsafeMutablePointer<Int32>
    /// Each column's group when they are not consecutive (GPTQ act-order), else nil.
    let groupIndex: UnsafeMutablePointer<Int32>?
    /// The format's name as a C string ("int3", "e2m1"), owned by the box.
    let formatName: UnsafeMutablePointer<CChar>
    init(_ q: QuantizedTensor) {
        tensor = q
        formatName = strdup(q.config.format.name)!
        codes = .allocate(capacity: max(1, q.codes.count)); codes.initialize(from: q.codes, count: q.codes.count)
        scales = .allocate(capacity: max(1, q.scales.count)); scales.initialize(from: q.scales, count: q.scales.count)
        zeros = .allocate(capacity: max(1, q.zeros.count)); zeros.initialize(from: q.zeros, count: q.zeros.count)
        groupIndex = q.groupIndex.map { g in
            let p = UnsafeMutablePointer<Int32>.allocate(capacity: max(1, g.count))
            p.initialize(from: g, count: g.count)
            return p
        }
    }
    deinit { codes.deallocate(); scales.deallocate(); zeros.deallocate(); groupIndex?.deallocate(); free(formatName) }
}

extension ModelHandle {
    func quantizedBox(_ name: String) -> QuantizedBox? {
        lock.lock(); defer { lock.unlock() }
        if let b = boxes[name] { return b }
        guard let q = quantized[name] else { return nil }
        let b = QuantizedBox(q)
        boxes[name] = b
        return b
    }
}
