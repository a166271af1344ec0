import Foundation

/// Reads the runtime checkpoint formats SwiftQuant exports — GPTQ (`quant_method: "gptq"`, v1 and v2 zero-points)
/// and compressed-tensors `pack-quantized` (`quant_method: "compressed-tensors"`) — back into a `QuantizationState`
/// (codes, scales, zero-points and `g_idx` by Hugging Face weight name) and a `TensorSource` that serves the model
/// code the dequantized float32 weights. Every stored tensor is checked against the shapes `config.json` implies
/// before it is used; a lying shape, a truncated tensor, a zero-point or `g_idx` outside its range, a non-finite
/// scale or a setting the reader does not implement is refused with the file and tensor named.
public enum RuntimeCheckpoint {
    /// The `quant_method`s `open` reads.
    public static let methods = ["gptq", "compressed-tensors"]

    /// The quantization stored in `source` as `config["quantization_config"]` describes it, and the source the
    /// model should read (dequantized linears, the packed tensors hidden). `configPath` names config.json in
    /// messages.
    public static func open(_ source: StoredTensorSource, config: [String: Any], configPath: String) throws
        -> (state: QuantizationState, source: TensorSource)
    {
        guard let qc = config["quantization_config"] as? [String: Any] else {
            throw SwiftQuantError.format("\(configPath): quantization_config is not an object")
        }
        guard let method = qc["quant_method"] as? String else {
            throw SwiftQuantError.format("\(configPath): quantization_config has no quant_method string")
        }
        var plain = config
        plain["quantization_config"] = nil
        // The adapter gives every block linear's name and shape; its weights are not read here.
        let model = try ArchitectureRegistry.model(config: plain, source: source)
        let read: (QuantizationState, Set<String>)
        switch method {
        case "gptq": read = try readGPTQ(qc, source: source, model: model, configPath: configPath)
        case "compressed-tensors": read = try readCompressedTensors(qc, source: source, model: model, configPath: configPath)
        default:
            throw SwiftQuantError.unsupported(
                "\(configPath): quant_method '\(method)' is not supported (SwiftQuant reads \(methods.joined(separator: ", ")) "
                    + "and its own directories)")
        }
        return (read.0, DequantizedTensorSource(base: source, quantized: read.0.tensors, hidden: read.1))
    }

    // MARK: GPTQ

    static func readGPTQ(_ qc: [String: Any], source: StoredTensorSource, model: TransformerModel, configPath: String)
        throws -> (QuantizationState, Set<String>)
    {
        func bad(_ what: String) -> SwiftQuantError { .format("\(configPath): quantization_config.\(what)") }
        guard let bits = qc["bits"].flatMap(jsonInt), GPTQExport.supportedBits.contains(bits) else {
            throw bad("bits must be 2, 3, 4 or 8, got \(qc["bits"] ?? "nothing")")
        }
        guard let groupSize = qc["group_size"].flatMap(jsonInt), groupSize == -1 || groupSize > 0 else {
            throw bad("group_size must be -1 (per channel) or positive, got \(qc["group_size"] ?? "nothing")")
        }
        let sym = (qc["sym"] as? Bool) ?? true
        let format = ((qc["checkpoint_format"] ?? qc["format"]) as? String)?.lowercased() ?? "gptq"
        guard format == "gptq" || format == "gptq_v2" else {
            throw SwiftQuantError.unsupported("\(configPath): GPTQ checkpoint_format '\(format)' is not supported (gptq, gptq_v2)")
        }
        if let p = qc["pack_dtype"] as? String, p != "int32" {
            throw SwiftQuantError.unsupported("\(configPath): GPTQ pack_dtype '\(p)' is not supported (int32)")
        }
        let v1 = format == "gptq"
        let reader = CheckpointReader(source: source)
        let linears = try PackedLinear.find(in: model, source: source, marker: ".qweight")
        guard !linears.isEmpty else {
            throw SwiftQuantError.format("\(configPath): quant_method is gptq but no block linear has a .qweight tensor")
        }
        let top = (1 << bits) - 1, half = 1 << (bits - 1)
        var tensors: [String: QuantizedTensor] = [:]
        var hidden = Set<String>()
        for l in linears {
            let rows = l.rows, cols = l.cols
            guard (cols * bits) % 32 == 0, (rows * bits) % 32 == 0 else {
                throw reader.fail(l.base + ".qweight", "[\(rows), \(cols)] at \(bits) bits does not fill whole int32 words")
            }
            let width = groupSize == -1 ? cols : min(groupSize, cols)
            let groups = (cols + width - 1) / width
            let qwName = l.base + ".qweight", qzName = l.base + ".qzeros", sName = l.base + ".scales"
            let gName = l.base + ".g_idx"
            try reader.check(qwName, [.i32], [cols * bits / 32, rows])
            try reader.check(qzName, [.i32], [groups, rows * bits / 32])
            try reader.check(sName, [.f16, .f32, .bf16], [groups, rows])
            let qw = try reader.words(qwName), qz = try reader.words(qzName)
            var codes = [UInt8](repeating: 0, count: rows * cols)
            qw.withUnsafeBufferPointer { w in
                codes.withUnsafeMutableBufferPointer { c in
                    let wp = w.baseAddress!, cp = c.baseAddress!
                    parallelFor(rows, minChunk: 16) { range in
                        for r in range {
                            for i in 0..<cols {
                                cp[r * cols + i] = UInt8(Int32Stream.code(at: i, bits: bits, words: wp + r, stride: rows))
                            }
                        }
                    }
                }
            }
            var zeros = [Int32](repeating: 0, count: rows * groups)
            try qz.withUnsafeBufferPointer { w in
                for g in 0..<groups {
                    for r in 0..<rows {
                        let stored = Int(Int32Stream.code(at: r, bits: bits, words: w.baseAddress! + g * (rows * bits / 32), stride: 1))
                        if v1 && stored == top {
                            throw reader.fail(qzName, "zero-point of group \(g), column \(r) is stored as \(stored): v1 stores "
                                + "zero − 1, so the zero-point \(top + 1) lies outside 0...\(top) (GPTQ kernels add 1 to every "
                                + "\(bits)-bit field and would carry into the next)")
                        }
                        let z = v1 ? stored + 1 : stored
                        if sym && z != half {
                            throw reader.fail(qzName, "zero-point of group \(g), column \(r) is \(z); sym is true, so every "
                                + "zero-point must be \(half)")
                        }
                        zeros[r * groups + g] = Int32(z)
                    }
                }
            }
            let s = try reader.finiteFloats(sName)
            var scales = [Float](repeating: 0, count: rows * groups)
            for g in 0..<groups { for r in 0..<rows { scales[r * groups + g] = s[g * rows + r] } }
            var gIdx: [Int32]?
            if reader.has(gName) {
                try reader.check(gName, [.i32], [cols])
                let gi = try reader.words(gName).map { Int32(bitPattern: $0) }
                if let c = gi.firstIndex(where: { $0 < 0 || Int($0) >= groups }) {
                    throw reader.fail(gName, "g_idx[\(c)] = \(gi[c]) is not a group of 0..<\(groups)")
                }
                if gi != (0..<cols).map({ Int32($0 / width) }) { gIdx = gi }
                hidden.insert(gName)
            }
            let config = QuantizerConfig(format: .int(bits: bits), groupSize: width == cols ? .perRow : .columns(width),
                                         symmetric: sym, policy: sym ? .gptq : .minmax)
            do {
                tensors[l.name] = try QuantizedTensor(rows: rows, cols: cols, config: config, codes: codes, scales: scales,
                                                      zeros: zeros, groupIndex: gIdx)
            } catch {
                throw reader.fail(qwName, "\(error)")
            }
            hidden.formUnion([qwName, qzName, sName])
        }
        let first = tensors[linears[0].name]!.config
        let state = QuantizationState(method: "gptq-checkpoint", weights: QuantizerConfig(
            format: .int(bits: bits), groupSize: groupSize == -1 ? .perRow : .columns(groupSize), symmetric: sym,
            policy: first.policy), tensors: tensors)
        return (state, hidden)
    }

    // MARK: compressed-tensors

    static func readCompressedTensors(_ qc: [String: Any], source: StoredTensorSource, model: TransformerModel,
                                      configPath: String) throws -> (QuantizationState, Set<String>)
    {
        func bad(_ what: String) -> SwiftQuantError { .format("\(configPath): quantization_config.\(what)") }
        func unsupported(_ what: String) -> SwiftQuantError { .unsupported("\(configPath): quantization_config.\(what)") }
        let format = qc["format"] as? String ?? "pack-quantized"
        guard format == "pack-quantized" else {
            throw unsupported("format '\(format)' is not supported (SwiftQuant reads pack-quantized)")
        }
        guard let groups = qc["config_groups"] as? [String: Any], !groups.isEmpty else {
            throw bad("config_groups must be a non-empty object")
        }
        if let kv = qc["kv_cache_scheme"], !(kv is NSNull) {
            throw unsupported("kv_cache_scheme: KV-cache quantization is not supported in compressed-tensors imports")
        }
        var weights: [String: Any]?
        for name in groups.keys.sorted() {
            guard let g = groups[name] as? [String: Any] else { throw bad("config_groups.\(name) is not an object") }
            for a in ["input_activations", "output_activations"] {
                if let v = g[a], !(v is NSNull) {
                    throw unsupported("config_groups.\(name).\(a): activation quantization is not supported in compressed-tensors imports")
                }
            }
            if let f = g["format"] as? String, f != "pack-quantized" {
                throw unsupported("config_groups.\(name).format '\(f)' is not supported (pack-quantized)")
            }
            guard let w = g["weights"] as? [String: Any] else { throw bad("config_groups.\(name).weights is not an object") }
            if let prev = weights, !NSDictionary(dictionary: prev).isEqual(to: w) {
                throw unsupported("config_groups: groups with different weight schemes are not supported (one format per model)")
            }
            weights = w
        }
        let w = weights!
        guard (w["type"] as? String ?? "int") == "int" else { throw unsupported("weights.type '\(w["type"]!)': only int weights are read") }
        guard let bits = w["num_bits"].flatMap(jsonInt), CompressedTensorsExport.supportedBits.contains(bits) else {
            throw unsupported("weights.num_bits must be 4 or 8, got \(w["num_bits"] ?? "nothing")")
        }
        let sym = (w["symmetric"] as? Bool) ?? true
        if let d = w["dynamic"] as? Bool, d { throw unsupported("weights.dynamic: dynamic weight quantization has no stored scales") }
        if let a = w["actorder"] as? String, a == "group" || a == "dynamic" {
            throw unsupported("weights.actorder '\(a)' (a group index) is not supported")
        }
        let groupSize = w["group_size"].flatMap(jsonInt)
        let strategy = (w["strategy"] as? String) ?? (groupSize.map { $0 > 0 ? "group" : "channel" } ?? "tensor")
        guard strategy == "group" || strategy == "channel" else {
            throw unsupported("weights.strategy '\(strategy)' is not supported (group, channel)")
        }
        if strategy == "group" {
            guard let g = groupSize, g > 0 else { throw bad("weights.group_size must be positive for the group strategy") }
        }
        let reader = CheckpointReader(source: source)
        let linears = try PackedLinear.find(in: model, source: source, marker: ".weight_packed")
        guard !linears.isEmpty else {
            throw SwiftQuantError.format("\(configPath): quant_method is compressed-tensors but no block linear has a .weight_packed tensor")
        }
        let half = 1 << (bits - 1)
        var tensors: [String: QuantizedTensor] = [:]
        var hidden = Set<String>()
        for l in linears {
            let rows = l.rows, cols = l.cols
            let pName = l.base + ".weight_packed", sName = l.base + ".weight_scale", zName = l.base + ".weight_zero_point"
            let shName = l.base + ".weight_shape"
            let width: Int
            if strategy == "group" {
                width = groupSize!
                guard cols % width == 0 else {
                    throw reader.fail(pName, "\(cols) input features are not a multiple of group_size \(width)")
                }
            } else {
                width = cols
            }
            let groups = cols / width
            if reader.has(shName) {
                try reader.check(shName, [.i64, .i32], [2])
                let shape = try reader.integers(shName)
                guard shape == [Int64(rows), Int64(cols)] else {
                    throw reader.fail(shName, "says \(shape); config.json makes this linear [\(rows), \(cols)]")
                }
                hidden.insert(shName)
            }
            let perRow = Int32Stream.wordCount(cols, bits: bits)
            try reader.check(pName, [.i32], [rows, perRow])
            try reader.check(sName, [.f32, .f16, .bf16], [rows, groups])
            let packed = try reader.words(pName)
            var codes = [UInt8](repeating: 0, count: rows * cols)
            packed.withUnsafeBufferPointer { p in
                codes.withUnsafeMutableBufferPointer { c in
                    let pp = p.baseAddress!, cp = c.baseAddress!
                    parallelFor(rows, minChunk: 16) { range in
                        for r in range {
                            for i in 0..<cols {
                                cp[r * cols + i] = UInt8(Int32Stream.code(at: i, bits: bits, words: pp + r * perRow, stride: 1))
                            }
                        }
                    }
                }
            }
            var zeros = [Int32](repeating: Int32(half), count: rows * groups)
            if !sym {
                let zRows = Int32Stream.wordCount(rows, bits: bits)
                try reader.check(zName, [.i32], [zRows, groups])
                let zp = try reader.words(zName)
                zp.withUnsafeBufferPointer { z in
                    for g in 0..<groups {
                        for r in 0..<rows {
                            zeros[r * groups + g] = Int32(Int32Stream.code(at: r, bits: bits, words: z.baseAddress! + g, stride: groups))
                        }
                    }
                }
                hidden.insert(zName)
            } else if reader.has(zName) {
                throw reader.fail(zName, "is present but the scheme is symmetric (zero-point 0)")
            }
            let scales = try reader.finiteFloats(sName)
            let config = QuantizerConfig(format: .int(bits: bits), groupSize: width == cols ? .perRow : .columns(width),
                                         symmetric: sym, policy: sym ? .gptq : .minmax)
            do {
                tensors[l.name] = try QuantizedTensor(rows: rows, cols: cols, config: config, codes: codes, scales: scales,
                                                      zeros: zeros)
            } catch {
                throw reader.fail(pName, "\(error)")
            }
            hidden.formUnion([pName, sName])
        }
        let state = QuantizationState(method: "compressed-tensors", weights: QuantizerConfig(
            format: .int(bits: bits), groupSize: strategy == "group" ? .columns(groupSize!) : .perRow, symmetric: sym,
            policy: sym ? .gptq : .minmax), tensors: tensors)
        return (state, hidden)
    }
}
