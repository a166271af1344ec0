import Foundation

// Pieces shared by the runtime checkpoint formats that store INT codes in int32 words (GPTQ, compressed-tensors
// `pack-quantized`): the bit stream, the zero-point refit that keeps a grid while moving its zero into the range a
// format can store, the checks every exporter makes, and the source that serves dequantized weights of an
// imported checkpoint to the model code.

/// `b`-bit codes in little-endian int32 words as one LSB-first bit stream: code `i` of a stream occupies bits
/// `[i·b, (i+1)·b)` of the stream, word `k` holds stream bits `[32k, 32k+32)`, so a code may straddle two words
/// (3-bit: 32 codes in exactly 3 words). GPTQ packs `qweight` along the input dimension (one stream per output
/// column of `[in·b/32, out]`) and `qzeros` along the output dimension (one stream per group row); compressed-tensors
/// packs `weight_packed` along the input dimension of `[out, ⌈in·b/32⌉]` (one stream per row) and
/// `weight_zero_point` along the output dimension.
public enum Int32Stream {
    /// The words as little-endian bytes (an I32 safetensors payload).
    static func data(_ words: [UInt32]) -> Data {
        let le = words.map { $0.littleEndian }
        return le.withUnsafeBytes { Data($0) }
    }

    /// Words needed for `count` codes of `bits` bits.
    public static func wordCount(_ count: Int, bits: Int) -> Int { (count * bits + 31) / 32 }

    /// Packs `count` codes, `code(i)` for stream position `i`, into `words[i0 + k·stride]`, k = 0 ..< wordCount
    /// (the words of a stream may be strided in the output tensor). The words must start as zero.
    @inline(__always)
    static func pack(count: Int, bits: Int, into words: UnsafeMutablePointer<UInt32>, stride: Int,
                     code: (Int) -> UInt32) {
        for i in 0..<count {
            let bit = i * bits, w = bit >> 5, off = bit & 31
            let v = code(i)
            words[w * stride] |= v << UInt32(off)
            if off + bits > 32 { words[(w + 1) * stride] |= v >> UInt32(32 - off) }
        }
    }

    /// Stream position `i` of the stream whose words are `words[k·stride]`.
    @inline(__always)
    static func code(at i: Int, bits: Int, words: UnsafePointer<UInt32>, stride: Int) -> UInt32 {
        let bit = i * bits, w = bit >> 5, off = bit & 31
        var v = words[w * stride] >> UInt32(off)
        if off + bits > 32 { v |= words[(w + 1) * stride] << UInt32(32 - off) }
        return v & ((1 << UInt32(bits)) - 1)
    }
}

/// Moves each group's zero-point into the range a format can store without changing the group's grid: with codes
/// `q` and zero `z`, the values `(q − z)·h` stay the same for codes `q + (z′ − z)` and zero `z′`, as long as every
/// code the group uses stays in `[0, 2^N − 1]` (ALGORITHMS.md §1, export edge case).
public enum ZeroPointRefit {
    /// What a refit changed, for the report.
    public struct Outcome {
        public var codes: [UInt8]
        public var zeros: [Int32]
        /// Groups moved without loss.
        public var shifted = 0
        /// Groups whose used codes did not fit (only with `allowClamp`): codes clamped to the grid's ends.
        public var clamped = 0
        /// Largest |change| of a dequantized weight in those groups (0 when none was clamped).
        public var maxError: Float = 0
    }

    /// `refit` as an exporter runs it: clamping only with `options.requantize`; a clamped tensor is reported
    /// through `options.log` and its name appended to `clamped`.
    static func refit(_ q: QuantizedTensor, name: String, allowed: ClosedRange<Int>, format: String,
                      options: ExportOptions, clamped: inout [String]) throws -> Outcome {
        let fit = try refit(q, name: name, allowed: allowed, format: format, allowClamp: options.requantize)
        if fit.clamped > 0 {
            clamped.append(name)
            options.log("requantized \(name): \(fit.clamped) groups clamped to \(format), max |ΔW| \(fit.maxError)")
        }
        return fit
    }

    /// The codes and zeros of `q` with every zero in `allowed`. A group that cannot be moved without clipping a
    /// code throws (naming `name`, the row, the group and what it needs), or with `allowClamp` takes the allowed
    /// zero nearest its own and has its codes clamped.
    public static func refit(_ q: QuantizedTensor, name: String, allowed: ClosedRange<Int>, format: String,
                             allowClamp: Bool) throws -> Outcome {
        guard case .int(let bits) = q.config.format else {
            throw SwiftQuantError.unsupported("\(name): \(q.config.format.name) codes are not integers; \(format) stores INT weights only")
        }
        let top = (1 << bits) - 1, g = q.groupCount, rows = q.rows, cols = q.cols
        let width = q.config.groupWidth(cols: cols)
        var lo = [Int](repeating: Int.max, count: rows * g), hi = [Int](repeating: Int.min, count: rows * g)
        for r in 0..<rows {
            for c in 0..<cols {
                let k = r * g + (q.groupIndex.map { Int($0[c]) } ?? c / width)
                let v = Int(q.codes[r * cols + c])
                if v < lo[k] { lo[k] = v }
                if v > hi[k] { hi[k] = v }
            }
        }
        var out = Outcome(codes: q.codes, zeros: q.zeros)
        var shift = [Int](repeating: 0, count: rows * g)
        var anyShift = false
        for k in 0..<(rows * g) where lo[k] <= hi[k] {
            let z = Int(q.zeros[k])
            // z′ keeps every used code inside the grid: lo + z′ − z ≥ 0 and hi + z′ − z ≤ top.
            let from = max(allowed.lowerBound, z - lo[k]), to = min(allowed.upperBound, z + top - hi[k])
            var zNew: Int
            if from <= to {
                zNew = min(max(z, from), to)
                if zNew != z { out.shifted += 1 }
            } else {
                zNew = min(max(z, allowed.lowerBound), allowed.upperBound)
                guard allowClamp else {
                    let r = k / g, gi = k % g
                    throw SwiftQuantError.unsupported(
                        "\(name): row \(r), group \(gi) uses codes \(lo[k])...\(hi[k]) with zero-point \(z); "
                            + "\(format) stores zero-points in \(allowed.lowerBound)...\(allowed.upperBound) and codes in 0...\(top), "
                            + "which cannot hold this group's grid exactly (a group of one sign: the min/max policy gives it a "
                            + "zero-point outside the grid, and GPTQ v1 cannot store a zero-point of 0). Pass --requantize "
                            + "(Python: requantize=True) to clamp such groups and print the error, or quantize symmetrically "
                            + "(--symmetric), whose fixed zero-point every format stores")
                }
                out.clamped += 1
                let levelsLost = max(0, (lo[k] - z + zNew) < 0 ? -(lo[k] - z + zNew) : 0,
                                     (hi[k] - z + zNew) > top ? (hi[k] - z + zNew) - top : 0)
                out.maxError = max(out.maxError, Float(levelsLost) * abs(q.scales[k]))
            }
            shift[k] = zNew - z
            out.zeros[k] = Int32(zNew)
            if zNew != z { anyShift = true }
        }
        if anyShift {
            for r in 0..<rows {
                for c in 0..<cols {
                    let k = r * g + (q.groupIndex.map { Int($0[c]) } ?? c / width)
                    if shift[k] != 0 {
                        out.codes[r * cols + c] = UInt8(min(max(Int(q.codes[r * cols + c]) + shift[k], 0), top))
                    }
                }
            }
        }
        // Groups no code uses (cannot happen for a real tensor) still need a storable zero.
        for k in 0..<(rows * g) where lo[k] > hi[k] {
            out.zeros[k] = Int32(min(max(Int(q.zeros[k]), allowed.lowerBound), allowed.upperBound))
        }
        return out
    }
}

/// The checks and the tensor walk every runtime exporter shares.
enum RuntimeExport {
    /// The quantization of `loaded`, refused with a clear message when `format` cannot hold it: no quantization,
    /// minifloat weights, LoRC terms, activation quantization (`activations` names what the format would need),
    /// or a bit width outside `bits`.
    static func weightOnlyIntState(_ loaded: LoadedModel, format: String, bits allowed: Set<Int>,
                                   activations: String) throws -> (QuantizationState, Int) {
        guard let state = loaded.quantization, !state.tensors.isEmpty else {
            throw SwiftQuantError.invalidArgument(
                "\(loaded.path): the model carries no quantized weights; quantize it first (swiftquant quantize, sq.rtn, "
                    + "sq.gptq, sq.omniquant) and export that")
        }
        guard case .int(let bits) = state.weights.format else {
            throw SwiftQuantError.unsupported(
                "\(format) holds integer weights only; this model's weights are \(state.weights.format.name) "
                    + "(export FP4/FP8 models in SwiftQuant's own format)")
        }
        guard allowed.contains(bits) else {
            throw SwiftQuantError.unsupported(
                "\(format) export supports \(allowed.sorted().map { "\($0)" }.joined(separator: ", ")) bits; this model's weights are int\(bits)")
        }
        if !state.lowRank.isEmpty {
            throw SwiftQuantError.unsupported(
                "\(format) has no place for LoRC's low-rank terms (lorc_rank \(state.lowRank.values.map(\.rank).max() ?? 0)): "
                    + "the exported model would lose them; quantize without lorc_rank or save in SwiftQuant's format")
        }
        if let a = state.activations, a.isActive {
            throw SwiftQuantError.unsupported("\(format): this model quantizes activations (\(a.jsonObject)); " + activations)
        }
        return (state, bits)
    }

    /// The tensors of a block-quantized model in the source's order with the installed blocks' weights (norms and
    /// biases as the blocks run them). Quantized linears are handed to `packed`, which returns their entries; every
    /// other tensor is written as float32. Refuses tensors the source model has no place for.
    static func entries(_ loaded: LoadedModel, quantized: [String: QuantizedTensor],
                        progress: ProgressBar?, packed: (String, QuantizedTensor) throws -> [SafetensorsEntry]) throws
        -> [SafetensorsEntry]
    {
        let model = loaded.model
        var blockWeights: [String: Tensor] = [:]
        var entries: [SafetensorsEntry] = []
        var done = Set<String>()
        for i in 0..<model.numBlocks {
            let b = try model.block(i), p = model.blockPrefix(i)
            for (n, l) in b.linears {
                let name = p + n + ".weight"
                if let q = quantized[name] {
                    try require(q.rows == l.outFeatures && q.cols == l.inFeatures,
                                "\(name): quantized [\(q.rows), \(q.cols)] does not match the block's weight \(l.weight.shape)")
                    entries += try packed(name, q)
                    done.insert(name)
                } else {
                    blockWeights[name] = l.weight
                }
                if let bias = l.bias { blockWeights[p + n + ".bias"] = bias }
            }
            for (n, w) in b.norms {
                if let t = w.weight { blockWeights[p + n + ".weight"] = t }
                if let t = w.bias { blockWeights[p + n + ".bias"] = t }
            }
            progress?.advance()
        }
        let missing = quantized.keys.filter { !done.contains($0) }.sorted()
        if !missing.isEmpty {
            throw SwiftQuantError.invalidArgument("quantized tensors that are no block linear: \(missing.prefix(3).joined(separator: ", "))")
        }
        var written = done
        for t in loaded.source.tensorInfos where !written.contains(t.name) {
            if t.name == "lm_head.weight" && (loaded.config["tie_word_embeddings"] as? Bool ?? false) { continue }
            let tensor = try blockWeights[t.name] ?? loaded.source.float32(t.name)
            entries.append(SafetensorsEntry(name: t.name, tensor: tensor))
            written.insert(t.name)
        }
        let created = blockWeights.keys.filter { !written.contains($0) }.sorted()
        if !created.isEmpty {
            throw SwiftQuantError.unsupported(
                "the quantized blocks have tensors the source model has no place for (\(created.prefix(3).joined(separator: ", ")) …): "
                    + "LET shifts folded into an RMSNorm family (norm biases, biases on linears that had none) have no place in a "
                    + "\(model.modelType) checkpoint a runtime loads; quantize without let_shifts to export")
        }
        return entries
    }

    /// The Hugging Face config of the export: the source's, without any earlier `quantization_config` or
    /// `swiftquant` entry, float32, with `quantization_config`.
    static func config(_ loaded: LoadedModel, quantizationConfig: [String: Any]) -> [String: Any] {
        var cfg = loaded.config
        cfg["swiftquant"] = nil
        cfg["torch_dtype"] = "float32"
        if cfg["dtype"] != nil { cfg["dtype"] = "float32" }
        cfg["quantization_config"] = quantizationConfig
        return cfg
    }

    /// Writes the directory: weights (sharded past 2 GiB), config.json, the SwiftQuant marker and the tokenizer
    /// companions, through `QuantizedExport`'s atomic directory writer.
    static func writeDirectory(_ loaded: LoadedModel, to dir: String, entries: [SafetensorsEntry], config: [String: Any],
                               marker: [String: Any], shardBytes: Int = 2 << 30) throws {
        try QuantizedExport.writeDirectory(dir) { tmp in
            _ = try SafetensorsWriter.writeSharded(entries, metadata: ["format": "pt"], directory: tmp,
                                                   maxShardBytes: shardBytes)
            try QuantizedExport.writeJSON(config, to: tmp + "/config.json")
            var m = marker
            m["swiftquant_version"] = SwiftQuantInfo.version
            m["source"] = loaded.path
            try QuantizedExport.writeJSON(m, to: tmp + "/" + QuantizedExport.marker)
            try QuantizedExport.writeCompanions(loaded, into: tmp)
        }
    }

    /// The largest power of two ≤ `limit` (and ≥ 32) dividing every count, for a refusal's suggestion.
    static func dividingGroupSize(_ counts: [Int], atMost limit: Int) -> Int? {
        var g = 1
        while g * 2 <= limit { g *= 2 }
        while g >= 32 {
            if counts.allSatisfy({ $0 % g == 0 }) { return g }
            g /= 2
        }
        return nil
    }

    /// Float32 → IEEE half bits, refusing a scale the rounding would turn into 0 or infinity.
    static func halfScale(_ s: Float, name: String, index: Int) throws -> UInt16 {
        let h = HalfConv.f32ToF16(s)
        let back = HalfConv.f16ToF32(h)
        if !back.isFinite || (back == 0 && s != 0) {
            throw SwiftQuantError.unsupported(
                "\(name): scale \(s) at \(index) is \(back.isFinite ? "0" : "infinite") in FP16; GPTQ stores scales in FP16")
        }
        return h
    }
}

// MARK: - Import

/// Stored tensors with their bytes, as the checkpoint readers need them: a Hugging Face directory or one
/// safetensors file (the fuzz harness parses from memory).
public protocol StoredTensorSource: TensorSource {
    func rawBytes(_ name: String) throws -> UnsafeRawBufferPointer
    /// The file holding `name`, for messages.
    func filePath(for name: String) -> String
}

extension SafetensorsFile: StoredTensorSource {
    public func filePath(for name: String) -> String { path }
}

extension HFDirectorySource: StoredTensorSource {
    /// The shard holding `name`; for a name no shard holds, the only file (or the directory when sharded).
    public func filePath(for name: String) -> String {
        file(for: name)?.path ?? (files.count == 1 ? files[0].path : directory)
    }
}

/// Typed, shape-checked reads of one checkpoint's tensors; every refusal names the file and the tensor.
struct CheckpointReader {
    let source: StoredTensorSource

    func fail(_ tensor: String, _ what: String) -> SwiftQuantError {
        .format("\(source.filePath(for: tensor)): \(tensor): \(what)")
    }

    func has(_ name: String) -> Bool { source.info(name) != nil }

    /// The tensor's info after checking its dtype (one of `dtypes`) and shape.
    @discardableResult
    func check(_ name: String, _ dtypes: [DType], _ shape: [Int]) throws -> TensorInfo {
        guard let info = source.info(name) else {
            throw SwiftQuantError.format("\(source.filePath(for: name)): \(name) is missing")
        }
        guard dtypes.contains(info.dtype), info.shape == shape else {
            throw fail(name, "is \(info.dtype.rawValue) \(info.shape), expected \(dtypes.map(\.rawValue).joined(separator: " or ")) \(shape)")
        }
        return info
    }

    /// Little-endian int32 words of an I32 tensor (checked before).
    func words(_ name: String) throws -> [UInt32] {
        let raw = try source.rawBytes(name)
        var out = [UInt32](repeating: 0, count: raw.count / 4)
        for i in 0..<out.count { out[i] = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)) }
        return out
    }

    /// Little-endian signed integers of an I32 or I64 tensor.
    func integers(_ name: String) throws -> [Int64] {
        let info = try source.info(name).orThrow(fail(name, "is missing"))
        let raw = try source.rawBytes(name)
        switch info.dtype {
        case .i64: return (0..<(raw.count / 8)).map { Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self)) }
        case .i32: return (0..<(raw.count / 4)).map { Int64(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self))) }
        default: throw fail(name, "is \(info.dtype.rawValue), expected integers")
        }
    }

    /// Finite float32 values of a float tensor (F16/BF16 exactly).
    func finiteFloats(_ name: String) throws -> [Float] {
        let values = try source.float32(name).array
        if let i = values.firstIndex(where: { !$0.isFinite }) { throw fail(name, "value \(i) is \(values[i])") }
        return values
    }
}

extension Optional {
    func orThrow(_ error: @autoclosure () -> Error) throws -> Wrapped {
        guard let v = self else { throw error() }
        return v
    }
}

/// The linears of a model that a checkpoint stores in packed form, found by suffix, with their shapes.
struct PackedLinear {
    let name: String      // "<prefix><linear>.weight"
    let base: String      // without ".weight"
    let rows: Int
    let cols: Int
}

extension PackedLinear {
    /// Every block linear of `model` whose `base + marker` tensor `source` holds. Bounds the walk by the number of
    /// stored tensors (a config cannot make it loop over blocks the file cannot have) and checks sizes before use.
    static func find(in model: TransformerModel, source: StoredTensorSource, marker: String) throws -> [PackedLinear] {
        let stored = source.tensorInfos.count
        guard model.numBlocks <= stored else {
            throw SwiftQuantError.format("config.json declares \(model.numBlocks) blocks; the checkpoint holds only \(stored) tensors")
        }
        var out: [PackedLinear] = []
        for i in 0..<model.numBlocks {
            for l in model.blockSpec.linears {
                let base = model.blockPrefix(i) + l.name
                guard source.info(base + marker) != nil else { continue }
                guard l.outFeatures > 0, l.inFeatures > 0, l.outFeatures < 1 << 28, l.inFeatures < 1 << 28 else {
                    throw SwiftQuantError.format("config.json gives \(base) the shape [\(l.outFeatures), \(l.inFeatures)]")
                }
                out.append(PackedLinear(name: base + ".weight", base: base, rows: l.outFeatures, cols: l.inFeatures))
            }
        }
        return out
    }
}

/// A checkpoint whose block linears are stored packed, seen as the model code reads weights: every
/// `<linear>.weight` is float32 dequantized from the quantized tensor (`(code − zero)·scale`, exactly as
/// `QuantizedTensor.dequantized()`), the packed tensors themselves are hidden, every other tensor is the base's.
public final class DequantizedTensorSource: TensorSource, @unchecked Sendable {
    public let base: TensorSource
    public let quantized: [String: QuantizedTensor]
    public let tensorInfos: [TensorInfo]
    private let index: [String: Int]

    /// `hidden`: the stored names the quantized tensors replace.
    public init(base: TensorSource, quantized: [String: QuantizedTensor], hidden: Set<String>) {
        self.base = base
        self.quantized = quantized
        var infos: [TensorInfo] = []
        var added = Set<String>()
        for t in base.tensorInfos where !hidden.contains(t.name) && quantized[t.name] == nil {
            infos.append(t)
        }
        for name in quantized.keys.sorted() where !added.contains(name) {
            let q = quantized[name]!
            infos.append(TensorInfo(name: name, dtype: .f32, shape: [q.rows, q.cols]))
            added.insert(name)
        }
        tensorInfos = infos
        index = Dictionary(uniqueKeysWithValues: infos.enumerated().map { ($1.name, $0) })
    }

    public func info(_ name: String) -> TensorInfo? { index[name].map { tensorInfos[$0] } }

    public func float32(_ name: String) throws -> Tensor {
        if let q = quantized[name] { return q.dequantized() }
        guard index[name] != nil else { throw SwiftQuantError.format("no tensor named '\(name)'") }
        return try base.float32(name)
    }
}
