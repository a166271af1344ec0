import Foundation

extension DType {
    /// Bytes per element for the element types a safetensors file can hold; nil for GGUF block types.
    public var safetensorsElementSize: Int? {
        switch self {
        case .f64, .i64: return 8
        case .f32, .i32: return 4
        case .f16, .bf16, .i16: return 2
        case .i8, .u8, .bool: return 1
        case .q8_0, .q4_0, .q4_1: return nil
        }
    }
}

/// A `.safetensors` file, memory-mapped.
///
/// Layout: 8-byte little-endian header length `n`, `n` bytes of UTF-8 JSON
/// (`{"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}`),
/// then the data section; offsets are relative to the data section. Tensors are listed in data order.
public final class SafetensorsFile: TensorSource {
    /// Largest JSON header accepted (guards against a lying length field).
    public static let maxHeaderBytes = 100 * 1024 * 1024

    public let path: String
    /// The string-to-string `__metadata__` map (empty when absent).
    public let metadata: [String: String]
    public let tensorInfos: [TensorInfo]

    private let bytes: MappedBytes
    private let dataStart: Int
    /// name → (index into tensorInfos, absolute begin, byte length)
    private let entries: [String: (index: Int, begin: Int, length: Int)]

    /// Maps and validates the file at `path`. Bad contents throw `SwiftQuantError.format("<path>: <problem>")`,
    /// OS failures `SwiftQuantError.io`.
    public convenience init(path: String) throws {
        try self.init(mapped: MappedBytes(path: path), name: path)
    }

    /// Parses an in-memory copy of `bytes`; `name` stands for the path in error messages.
    public convenience init(bytes: UnsafeRawBufferPointer, name: String) throws {
        try self.init(mapped: MappedBytes(copying: bytes), name: name)
    }

    private init(mapped: MappedBytes, name path: String) throws {
        self.path = path
        self.bytes = mapped
        func fail(_ what: String) -> SwiftQuantError { .format("\(path): \(what)") }

        let size = mapped.count
        guard size >= 8 else { throw fail("file is \(size) bytes, shorter than the 8-byte header length") }
        let n64 = UInt64(littleEndian: mapped.base.loadUnaligned(as: UInt64.self))
        guard n64 <= UInt64(Self.maxHeaderBytes) else {
            throw fail("header length \(n64) exceeds the \(Self.maxHeaderBytes)-byte limit")
        }
        let n = Int(n64)
        guard n <= size - 8 else { throw fail("header length \(n) is larger than the file (\(size) bytes)") }
        dataStart = 8 + n
        let dataSize = size - dataStart

        let headerData = Data(bytes: mapped.base + 8, count: n)
        guard String(data: headerData, encoding: .utf8) != nil else { throw fail("header is not valid UTF-8") }
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: headerData, options: [])
        } catch {
            throw fail("header is not valid JSON")
        }
        guard let top = json as? [String: Any] else { throw fail("header is not a JSON object") }

        var meta: [String: String] = [:]
        if let m = top["__metadata__"] {
            guard let dict = m as? [String: Any] else { throw fail("__metadata__ is not an object") }
            for (k, v) in dict {
                guard let s = v as? String else { throw fail("__metadata__ value for '\(k)' is not a string") }
                meta[k] = s
            }
        }
        metadata = meta

        var parsed: [(info: TensorInfo, begin: Int, end: Int)] = []
        for (name, value) in top where name != "__metadata__" {
            guard let obj = value as? [String: Any] else { throw fail("tensor '\(name)': entry is not an object") }
            guard let dtName = obj["dtype"] as? String else { throw fail("tensor '\(name)': missing dtype") }
            guard let dtype = DType(rawValue: dtName), let elem = dtype.safetensorsElementSize else {
                throw fail("tensor '\(name)': unknown dtype '\(dtName)'")
            }
            guard let shapeAny = obj["shape"] as? [Any] else { throw fail("tensor '\(name)': missing shape") }
            var shape: [Int] = []
            var count = 1
            for d in shapeAny {
                guard let di = jsonInt(d), di >= 0 else {
                    throw fail("tensor '\(name)': shape \(shapeAny) has an invalid dimension")
                }
                shape.append(di)
                let (c, o) = count.multipliedReportingOverflow(by: di)
                if o { throw fail("tensor '\(name)': shape \(shape) element count overflows") }
                count = c
            }
            let (nbytes, o) = count.multipliedReportingOverflow(by: elem)
            if o { throw fail("tensor '\(name)': shape \(shape) byte size overflows") }
            guard let offs = obj["data_offsets"] as? [Any], offs.count == 2,
                  let b = jsonInt(offs[0]), let e = jsonInt(offs[1]) else {
                throw fail("tensor '\(name)': data_offsets must be two integers")
            }
            guard b >= 0, e >= b else { throw fail("tensor '\(name)': data_offsets [\(b), \(e)] are invalid") }
            guard e - b == nbytes else {
                throw fail("tensor '\(name)': data_offsets [\(b), \(e)] span \(e - b) bytes but shape \(shape) of \(dtName) needs \(nbytes)")
            }
            guard e <= dataSize else {
                throw fail("tensor '\(name)': data_offsets [\(b), \(e)] lie outside the data section (\(dataSize) bytes)")
            }
            parsed.append((TensorInfo(name: name, dtype: dtype, shape: shape), b, e))
        }
        parsed.sort { ($0.begin, $0.end, $0.info.name) < ($1.begin, $1.end, $1.info.name) }
        var prevEnd = 0
        var prevName = ""
        for p in parsed {
            // Zero-byte tensors occupy no bytes and cannot overlap anything.
            if p.end > p.begin {
                if p.begin < prevEnd {
                    throw fail("tensors '\(prevName)' and '\(p.info.name)' overlap in the data section")
                }
                prevEnd = p.end
                prevName = p.info.name
            }
        }
        tensorInfos = parsed.map(\.info)
        var ent: [String: (index: Int, begin: Int, length: Int)] = [:]
        for (i, p) in parsed.enumerated() { ent[p.info.name] = (i, dataStart + p.begin, p.end - p.begin) }
        entries = ent
    }

    public func info(_ name: String) -> TensorInfo? { entries[name].map { tensorInfos[$0.index] } }

    private func entry(_ name: String) throws -> (info: TensorInfo, begin: Int, length: Int) {
        guard let e = entries[name] else { throw SwiftQuantError.format("\(path): no tensor named '\(name)'") }
        return (tensorInfos[e.index], e.begin, e.length)
    }

    /// The stored bytes of a tensor (any dtype), little-endian as in the file. Valid while this object lives.
    public func rawBytes(_ name: String) throws -> UnsafeRawBufferPointer {
        let e = try entry(name)
        return UnsafeRawBufferPointer(start: bytes.base + e.begin, count: e.length)
    }

    /// True when `float32(name)` returns a view of the mapping (F32 data at a 4-byte aligned address) rather
    /// than a converted copy. False for unknown names.
    public func isZeroCopy(_ name: String) -> Bool {
        guard let e = entries[name] else { return false }
        return tensorInfos[e.index].dtype == .f32 && (Int(bitPattern: bytes.base) + e.begin) % 4 == 0
    }

    /// The tensor as float32: a zero-copy view for aligned F32 data, else a converted copy (F16 and BF16
    /// exactly; integer types and F64 rounded to nearest float). Views keep the mapping alive.
    public func float32(_ name: String) throws -> Tensor {
        let e = try entry(name)
        if isZeroCopy(name) {
            return Tensor(shape: e.info.shape, storage: bytes.makeStorage(), byteOffset: e.begin)
        }
        let out = Tensor(zeros: e.info.shape)
        try convertToFloat32(UnsafeRawBufferPointer(start: bytes.base + e.begin, count: e.length),
                             dtype: e.info.dtype, into: out.buffer, context: "\(path): tensor '\(name)'")
        return out
    }
}

/// Converts little-endian elements of `dtype` to float32.
func convertToFloat32(_ src: UnsafeRawBufferPointer, dtype: DType, into dst: UnsafeMutableBufferPointer<Float>,
                      context: String) throws {
    let n = dst.count
    guard let s = src.baseAddress else { return }
    switch dtype {
    case .f32:
        for i in 0..<n { dst[i] = Float(bitPattern: UInt32(littleEndian: s.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
    case .f16:
        for i in 0..<n { dst[i] = HalfConv.f16ToF32(UInt16(littleEndian: s.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
    case .bf16:
        for i in 0..<n { dst[i] = HalfConv.bf16ToF32(UInt16(littleEndian: s.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
    case .f64:
        for i in 0..<n { dst[i] = Float(Double(bitPattern: UInt64(littleEndian: s.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)))) }
    case .i64:
        for i in 0..<n { dst[i] = Float(Int64(littleEndian: s.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self))) }
    case .i32:
        for i in 0..<n { dst[i] = Float(Int32(littleEndian: s.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self))) }
    case .i16:
        for i in 0..<n { dst[i] = Float(Int16(littleEndian: s.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self))) }
    case .i8:
        for i in 0..<n { dst[i] = Float(s.load(fromByteOffset: i, as: Int8.self)) }
    case .u8:
        for i in 0..<n { dst[i] = Float(s.load(fromByteOffset: i, as: UInt8.self)) }
    case .bool:
        for i in 0..<n { dst[i] = s.load(fromByteOffset: i, as: UInt8.self) != 0 ? 1 : 0 }
    case .q8_0, .q4_0, .q4_1:
        throw SwiftQuantError.format("\(context): \(dtype.rawValue) is not an element type")
    }
}

// MARK: - Writer

/// One tensor to write: name, element type, shape (outermost first) and its little-endian bytes, either given
/// (`bytes`) or produced by a closure when the writer reaches the tensor (`init(name:dtype:shape:deferred:)`), so
/// a model can be written tensor by tensor without holding all of it.
public struct SafetensorsEntry {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    /// The bytes of an entry made with them; empty for a deferred entry (see `data()`).
    public let bytes: Data
    /// The data size: `bytes.count`, or for a deferred entry shape × element size (-1 when that is not computable;
    /// the writer refuses it).
    public let byteCount: Int
    private let deferred: (() throws -> Data)?

    public init(name: String, dtype: DType, shape: [Int], bytes: Data) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.bytes = bytes
        byteCount = bytes.count
        deferred = nil
    }

    /// An entry whose bytes `produce` makes when the writer needs them (once); they are released once written.
    /// `produce` must return exactly shape × element size bytes.
    public init(name: String, dtype: DType, shape: [Int], deferred produce: @escaping () throws -> Data) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        bytes = Data()
        var n = dtype.safetensorsElementSize ?? -1
        for d in shape where n >= 0 {
            let (c, o) = n.multipliedReportingOverflow(by: d)
            n = o || d < 0 ? -1 : c
        }
        byteCount = n
        deferred = produce
    }

    /// The bytes: given, or produced now (checked against `byteCount`).
    public func data() throws -> Data {
        guard let produce = deferred else { return bytes }
        let d = try produce()
        try require(d.count == byteCount, "tensor '\(name)': \(d.count) bytes produced, \(byteCount) expected")
        return d
    }

    /// A float32 tensor as an F32 entry. The bytes are not copied: `tensor` must stay unchanged until written.
    public init(name: String, tensor: Tensor) {
        let t = tensor
        self.init(name: name, dtype: .f32, shape: t.shape,
                  bytes: Data(bytesNoCopy: UnsafeMutableRawPointer(t.pointer), count: t.count * 4,
                              deallocator: .custom({ _, _ in _ = t.storage })))
    }

    /// A float32 tensor converted to F16 or BF16 (round to nearest even) or kept as F32.
    public init(name: String, tensor: Tensor, as dtype: DType) throws {
        switch dtype {
        case .f32:
            self.init(name: name, tensor: tensor)
        case .f16, .bf16:
            var d = Data(count: tensor.count * 2)
            let src = tensor.buffer
            d.withUnsafeMutableBytes { raw in
                for i in 0..<src.count {
                    let h = dtype == .f16 ? HalfConv.f32ToF16(src[i]) : HalfConv.f32ToBF16(src[i])
                    raw.storeBytes(of: h.littleEndian, toByteOffset: 2 * i, as: UInt16.self)
                }
            }
            self.init(name: name, dtype: dtype, shape: tensor.shape, bytes: d)
        default:
            throw SwiftQuantError.invalidArgument("cannot store a float32 tensor as \(dtype.rawValue) in safetensors")
        }
    }

}

public enum SafetensorsWriter {
    /// Writes `tensors` and `metadata` to `path` atomically (temporary file in the same directory, fsync,
    /// rename). Data are laid out by element size (largest first), then by name, so every tensor is aligned to
    /// its element size; the JSON header lists the tensors in that order and is padded with spaces to a
    /// multiple of 8 bytes. Bad entries throw `invalidArgument` before anything is written; OS errors `io`.
    /// Deferred entries are produced one at a time, as their turn comes, and released once written; `progress`
    /// is called after each tensor with its byte count.
    public static func write(_ tensors: [SafetensorsEntry], metadata: [String: String] = [:], to path: String,
                             progress: ((Int) -> Void)? = nil) throws {
        let (header, ordered) = try makeHeader(tensors, metadata: metadata)
        try AtomicFileWriter.write(to: path) { w in
            var len = UInt64(header.count).littleEndian
            try withUnsafeBytes(of: &len) { try w.write($0) }
            try w.write(header)
            for t in ordered {
                try w.write(try t.data())
                progress?(t.byteCount)
            }
        }
    }

    /// Tuple form of `write(_:metadata:to:)`.
    public static func write(_ tensors: [(name: String, dtype: DType, shape: [Int], bytes: Data)],
                             metadata: [String: String] = [:], to path: String) throws {
        try write(tensors.map { SafetensorsEntry(name: $0.name, dtype: $0.dtype, shape: $0.shape, bytes: $0.bytes) },
                  metadata: metadata, to: path)
    }

    /// Float32 tensors as F32 (zero-copy from the tensors' memory).
    public static func write(float32 tensors: [(String, Tensor)], metadata: [String: String] = [:],
                             to path: String) throws {
        try write(tensors.map { SafetensorsEntry(name: $0.0, tensor: $0.1) }, metadata: metadata, to: path)
    }

    static func makeHeader(_ tensors: [SafetensorsEntry], metadata: [String: String]) throws
        -> (Data, [SafetensorsEntry]) {
        var seen = Set<String>()
        for t in tensors {
            try require(!t.name.isEmpty && t.name != "__metadata__", "invalid tensor name '\(t.name)'")
            try require(seen.insert(t.name).inserted, "duplicate tensor name '\(t.name)'")
            guard let elem = t.dtype.safetensorsElementSize else {
                throw SwiftQuantError.invalidArgument("tensor '\(t.name)': \(t.dtype.rawValue) cannot be stored in safetensors")
            }
            var count = 1
            for d in t.shape {
                try require(d >= 0, "tensor '\(t.name)': negative dimension in \(t.shape)")
                let (c, o) = count.multipliedReportingOverflow(by: d)
                try require(!o, "tensor '\(t.name)': shape \(t.shape) overflows")
                count = c
            }
            let (nb, o) = count.multipliedReportingOverflow(by: elem)
            try require(!o && nb == t.byteCount,
                        "tensor '\(t.name)': \(t.byteCount) bytes given, shape \(t.shape) of \(t.dtype.rawValue) needs \(o ? -1 : nb)")
        }
        let ordered = tensors.sorted {
            let a = $0.dtype.safetensorsElementSize!, b = $1.dtype.safetensorsElementSize!
            return a != b ? a > b : $0.name < $1.name
        }
        var parts: [String] = []
        if !metadata.isEmpty {
            let m = metadata.keys.sorted().map { "\(JSONText.quote($0)):\(JSONText.quote(metadata[$0]!))" }
            parts.append("\"__metadata__\":{\(m.joined(separator: ","))}")
        }
        var offset = 0
        for t in ordered {
            let end = offset + t.byteCount
            parts.append("\(JSONText.quote(t.name)):{\"dtype\":\"\(t.dtype.rawValue)\",\"shape\":[\(t.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(end)]}")
            offset = end
        }
        var header = "{" + parts.joined(separator: ",") + "}"
        while header.utf8.count % 8 != 0 { header += " " }
        return (Data(header.utf8), ordered)
    }

    /// Writes into `directory` (created if needed): a single `model.safetensors` when the tensors' data fit in
    /// `maxShardBytes`, else `model-00001-of-0000N.safetensors` … plus `model.safetensors.index.json`
    /// (`{"metadata": {"total_size": N}, "weight_map": {name: file}}`). Tensors fill shards in the given order;
    /// a tensor larger than the limit gets a shard of its own. `metadata` goes into every shard. Returns the
    /// file names written.
    @discardableResult
    public static func writeSharded(_ tensors: [SafetensorsEntry], metadata: [String: String] = [:],
                                    directory: String, maxShardBytes: Int,
                                    progress: ((Int) -> Void)? = nil) throws -> [String] {
        try require(maxShardBytes > 0, "maxShardBytes must be positive")
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw SwiftQuantError.io("\(directory): cannot create directory: \(error.localizedDescription)")
        }
        let total = tensors.reduce(0) { $0 + $1.byteCount }
        func join(_ f: String) -> String { (directory as NSString).appendingPathComponent(f) }
        if total <= maxShardBytes {
            try write(tensors, metadata: metadata, to: join("model.safetensors"), progress: progress)
            return ["model.safetensors"]
        }
        var shards: [[SafetensorsEntry]] = [[]]
        var current = 0
        for t in tensors {
            if current > 0 && current + t.byteCount > maxShardBytes {
                shards.append([])
                current = 0
            }
            shards[shards.count - 1].append(t)
            current += t.byteCount
        }
        let n = shards.count
        var names: [String] = []
        var weightMap: [String: String] = [:]
        for (i, shard) in shards.enumerated() {
            let file = String(format: "model-%05d-of-%05d.safetensors", i + 1, n)
            try write(shard, metadata: metadata, to: join(file), progress: progress)
            names.append(file)
            for t in shard { weightMap[t.name] = file }
        }
        let wm = weightMap.keys.sorted().map { "    \(JSONText.quote($0)): \(JSONText.quote(weightMap[$0]!))" }
        let index = "{\n  \"metadata\": {\n    \"total_size\": \(total)\n  },\n  \"weight_map\": {\n"
            + wm.joined(separator: ",\n") + "\n  }\n}\n"
        try AtomicFileWriter.write(to: join("model.safetensors.index.json")) { w in try w.write(Data(index.utf8)) }
        names.append("model.safetensors.index.json")
        return names
    }
}

// MARK: - Hugging Face directory

/// A Hugging Face model directory: `model.safetensors`, or `model.safetensors.index.json` plus its shards.
public final class HFDirectorySource: TensorSource {
    public let directory: String
    /// Every tensor of every shard, shards in file-name order, each in data order.
    public let tensorInfos: [TensorInfo]
    /// The open shard files.
    public let files: [SafetensorsFile]
    private let owner: [String: (file: Int, index: Int)]

    public init(directory: String) throws {
        self.directory = directory
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDir), isDir.boolValue else {
            throw SwiftQuantError.io("\(directory): no such directory")
        }
        func join(_ f: String) -> String { (directory as NSString).appendingPathComponent(f) }
        let indexPath = join("model.safetensors.index.json")
        let singlePath = join("model.safetensors")
        var opened: [SafetensorsFile] = []
        if FileManager.default.fileExists(atPath: indexPath) {
            let index = try Self.readJSON(path: indexPath)
            guard let wm = index["weight_map"] as? [String: Any] else {
                throw SwiftQuantError.format("\(indexPath): missing or invalid weight_map")
            }
            var map: [String: String] = [:]
            for (k, v) in wm {
                guard let f = v as? String, !f.contains("/"), !f.isEmpty, f != "..", f != "." else {
                    throw SwiftQuantError.format("\(indexPath): weight_map entry for '\(k)' is not a file name")
                }
                map[k] = f
            }
            let shardNames = Set(map.values).sorted()
            guard !shardNames.isEmpty else { throw SwiftQuantError.format("\(indexPath): weight_map is empty") }
            for s in shardNames {
                let p = join(s)
                guard FileManager.default.fileExists(atPath: p) else {
                    throw SwiftQuantError.format("\(indexPath): shard '\(s)' listed in weight_map is missing")
                }
                opened.append(try SafetensorsFile(path: p))
            }
            let fileIndex = Dictionary(uniqueKeysWithValues: shardNames.enumerated().map { ($1, $0) })
            for (name, f) in map where opened[fileIndex[f]!].info(name) == nil {
                throw SwiftQuantError.format("\(indexPath): tensor '\(name)' is not in shard '\(f)'")
            }
        } else if FileManager.default.fileExists(atPath: singlePath) {
            opened.append(try SafetensorsFile(path: singlePath))
        } else {
            throw SwiftQuantError.format("\(directory): no model.safetensors or model.safetensors.index.json")
        }
        var infos: [TensorInfo] = []
        var own: [String: (file: Int, index: Int)] = [:]
        for (fi, f) in opened.enumerated() {
            for t in f.tensorInfos {
                if own[t.name] != nil {
                    throw SwiftQuantError.format("\(directory): tensor '\(t.name)' appears in more than one shard")
                }
                own[t.name] = (fi, infos.count)
                infos.append(t)
            }
        }
        files = opened
        owner = own
        tensorInfos = infos
    }

    public func info(_ name: String) -> TensorInfo? { owner[name].map { tensorInfos[$0.index] } }

    /// The shard holding `name`.
    public func file(for name: String) -> SafetensorsFile? { owner[name].map { files[$0.file] } }

    public func float32(_ name: String) throws -> Tensor {
        guard let f = file(for: name) else {
            throw SwiftQuantError.format("\(directory): no tensor named '\(name)'")
        }
        return try f.float32(name)
    }

    public func rawBytes(_ name: String) throws -> UnsafeRawBufferPointer {
        guard let f = file(for: name) else {
            throw SwiftQuantError.format("\(directory): no tensor named '\(name)'")
        }
        return try f.rawBytes(name)
    }

    public func isZeroCopy(_ name: String) -> Bool { file(for: name)?.isZeroCopy(name) ?? false }

    /// `config.json` of the directory, or nil when there is none.
    public func config() throws -> [String: Any]? {
        let p = (directory as NSString).appendingPathComponent("config.json")
        guard FileManager.default.fileExists(atPath: p) else { return nil }
        return try Self.readJSON(path: p)
    }

    /// Reads a JSON object from a file. Missing file → `io`; bad JSON or not an object → `format`.
    public static func readJSON(path: String) throws -> [String: Any] {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw SwiftQuantError.io("\(path): cannot read: \(error.localizedDescription)")
        }
        let obj: Any
        do {
            obj = try JSONSerialization.jsonObject(with: data, options: [])
        } catch {
            throw SwiftQuantError.format("\(path): not valid JSON")
        }
        guard let dict = obj as? [String: Any] else { throw SwiftQuantError.format("\(path): not a JSON object") }
        return dict
    }
}
