import Foundation

extension QuantizedExport {
    /// The settings of `config`'s `swiftquant` object (format, group size, activations) as a state without tensors.
    static func readSettings(config: [String: Any], configPath cfgPath: String) throws -> QuantizationState? {
        guard let q = config["swiftquant"] as? [String: Any] else { return nil }
        func bad(_ what: String) -> SwiftQuantError { .format("\(cfgPath): swiftquant.\(what)") }
        guard let method = q["method"] as? String else { throw bad("method is missing") }
        guard let formatName = q["format"] as? String else { throw bad("format is missing") }
        let format: NumberFormat
        do { format = try NumberFormat.parse(formatName) } catch { throw bad("format: \(error)") }
        let group: GroupSize
        switch q["group_size"] {
        case let n as Int: group = try GroupSize.parse(String(n))
        case let s as String: group = try GroupSize.parse(s)
        default: throw bad("group_size must be a number of columns or \"per-row\"")
        }
        let constraint = ScaleConstraint(rawValue: (q["scale_constraint"] as? String) ?? "none") ?? .none
        let wcfg = QuantizerConfig(format: format, groupSize: group, symmetric: q["symmetric"] as? Bool ?? false,
                                   scaleConstraint: constraint)
        let activations: ActivationScheme
        do { activations = try ActivationScheme(jsonObject: q) } catch { throw bad("aformat/kv_format: \(error)") }
        return QuantizationState(method: method, weights: wcfg, tensors: [:],
                                 activations: activations.isActive ? activations : nil)
    }

    /// The quantization of a directory SwiftQuant wrote (`config.json`'s `swiftquant` object and
    /// `quantized.safetensors`), checked against `model`'s shapes; nil when `config` has no `swiftquant` object.
    /// Every inconsistency (a lying shape, a truncated `qweight`, a code outside the format, a zero-point outside
    /// the grid) is refused with the file and tensor named.
    static func readState(directory dir: String, config: [String: Any], model: TransformerModel) throws
        -> QuantizationState?
    {
        guard let q = config["swiftquant"] as? [String: Any] else { return nil }
        let cfgPath = dir + "/config.json"
        guard let state = try readSettings(config: config, configPath: cfgPath) else { return nil }
        let method = state.method
        func bad(_ what: String) -> SwiftQuantError { .format("\(cfgPath): swiftquant.\(what)") }
        let packedFile = (q["packed_file"] as? String) ?? "quantized.safetensors"
        guard !packedFile.contains("/"), packedFile != "..", !packedFile.isEmpty else {
            throw bad("packed_file must be a file name in the directory, got '\(packedFile)'")
        }
        let path = dir + "/" + packedFile
        guard method != "none", FileManager.default.fileExists(atPath: path) else { return state }
        return try readTensors(into: state, file: try SafetensorsFile(path: path), model: model)
    }

    /// The quantization `config` describes (its `swiftquant` object) with the tensors of `file` (the packed file,
    /// parsed from memory by the fuzz harness), checked against `model`'s shapes. Nil without a `swiftquant` object.
    public static func readState(config: [String: Any], packedFile file: SafetensorsFile, model: TransformerModel,
                                 configPath: String) throws -> QuantizationState? {
        guard let state = try readSettings(config: config, configPath: configPath) else { return nil }
        guard state.method != "none" else { return state }
        return try readTensors(into: state, file: file, model: model)
    }

    static func readTensors(into initial: QuantizationState, file: SafetensorsFile, model: TransformerModel) throws
        -> QuantizationState
    {
        var state = initial
        let wcfg = state.weights, format = wcfg.format
        let path = file.path
        let bits = format.bitWidth
        // Every quantized block has tensors in the file: a config cannot make this walk blocks the file cannot hold.
        guard model.numBlocks <= file.tensorInfos.count else {
            throw SwiftQuantError.format("\(path): the config declares \(model.numBlocks) blocks; the file holds only \(file.tensorInfos.count) tensors")
        }
        for i in 0..<model.numBlocks {
            for l in model.blockSpec.linears {
                let name = model.blockPrefix(i) + l.name + ".weight"
                let base = String(name.dropLast(7))
                guard file.info(base + ".qweight") != nil else { continue }
                let rows = l.outFeatures, cols = l.inFeatures, groups = wcfg.groupCount(cols: cols)
                func check(_ t: String, _ dtype: DType, _ shape: [Int]) throws {
                    guard let info = file.info(t) else { throw SwiftQuantError.format("\(path): \(t) is missing") }
                    try require(info.dtype == dtype && info.shape == shape,
                                "\(path): \(t) is \(info.dtype.rawValue) \(info.shape), expected \(dtype.rawValue) \(shape)")
                }
                let stride = BitPacking.packedByteCount(count: cols, bits: bits)
                try check(base + ".qweight", .u8, [rows, stride])
                try check(base + ".scales", .f32, [rows, groups])
                let packed = try file.rawBytes(base + ".qweight").bindMemory(to: UInt8.self)
                var codes = [UInt8](repeating: 0, count: rows * cols)
                try codes.withUnsafeMutableBufferPointer { c in
                    for r in 0..<rows {
                        try BitPacking.unpack(UnsafeBufferPointer(rebasing: packed[(r * stride)..<((r + 1) * stride)]),
                                              bits: bits, count: cols,
                                              into: UnsafeMutableBufferPointer(rebasing: c[(r * cols)..<((r + 1) * cols)]))
                    }
                }
                var zeros = [Int32](repeating: 0, count: rows * groups)
                if wcfg.isInteger {
                    try check(base + ".zeros", .i32, [rows, groups])
                    zeros = Array(try file.rawBytes(base + ".zeros").bindMemory(to: Int32.self))
                    let top = Int32((1 << bits) - 1)
                    if let z = zeros.firstIndex(where: { $0 < 0 || $0 > top }) {
                        throw SwiftQuantError.format("\(path): \(base).zeros[\(z)] = \(zeros[z]) lies outside 0...\(top)")
                    }
                }
                let scales = try file.float32(base + ".scales").array
                if let s = scales.firstIndex(where: { !$0.isFinite }) {
                    throw SwiftQuantError.format("\(path): \(base).scales[\(s)] is \(scales[s])")
                }
                var gIdx: [Int32]?
                if file.info(base + ".g_idx") != nil {
                    try check(base + ".g_idx", .i32, [cols])
                    gIdx = Array(try file.rawBytes(base + ".g_idx").bindMemory(to: Int32.self))
                }
                do {
                    state.tensors[name] = try QuantizedTensor(rows: rows, cols: cols, config: wcfg, codes: codes,
                                                              scales: scales, zeros: zeros, groupIndex: gIdx)
                } catch {
                    throw SwiftQuantError.format("\(path): \(base): \(error)")
                }
                if file.info(base + ".lorc_u") != nil || file.info(base + ".lorc_v") != nil {
                    guard let ui = file.info(base + ".lorc_u"), let vi = file.info(base + ".lorc_v"), ui.shape.count == 2,
                          vi.shape.count == 2, ui.shape[0] == rows, vi.shape[1] == cols, ui.shape[1] == vi.shape[0],
                          ui.shape[1] > 0
                    else {
                        throw SwiftQuantError.format("\(path): \(base).lorc_u / lorc_v must be [\(rows), r] and [r, \(cols)]")
                    }
                    state.lowRank[name] = try LowRank(u: try file.float32(base + ".lorc_u"), v: try file.float32(base + ".lorc_v"))
                }
            }
        }
        return state
    }
}
