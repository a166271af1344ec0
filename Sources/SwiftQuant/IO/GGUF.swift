import Foundation

// GGUF (the llama.cpp model container), versions 2 and 3, little-endian.
//
//   "GGUF" u32 version, u64 tensor_count, u64 kv_count
//   kv_count × (string key, u32 value_type, value)        string = u64 length + UTF-8 bytes (no NUL)
//   tensor_count × (string name, u32 n_dims, n_dims × u64 dim (innermost first), u32 ggml_type, u64 offset)
//   padding to `general.alignment` (default 32), then the data section; tensor offsets are relative to it and
//   multiples of the alignment.

/// A metadata value. Arrays hold values of one type (possibly arrays again).
public enum GGUFValue: Sendable, Equatable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case float32(Float), bool(Bool), string(String), array([GGUFValue])
    case uint64(UInt64), int64(Int64), float64(Double)

    /// The GGUF value-type code.
    public var typeCode: UInt32 {
        switch self {
        case .uint8: return 0
        case .int8: return 1
        case .uint16: return 2
        case .int16: return 3
        case .uint32: return 4
        case .int32: return 5
        case .float32: return 6
        case .bool: return 7
        case .string: return 8
        case .array: return 9
        case .uint64: return 10
        case .int64: return 11
        case .float64: return 12
        }
    }

    /// Any integer value that fits in `Int` (nil for other types or out of range).
    public var int: Int? {
        switch self {
        case .uint8(let v): return Int(v)
        case .int8(let v): return Int(v)
        case .uint16(let v): return Int(v)
        case .int16(let v): return Int(v)
        case .uint32(let v): return Int(v)
        case .int32(let v): return Int(v)
        case .uint64(let v): return Int(exactly: v)
        case .int64(let v): return Int(exactly: v)
        default: return nil
        }
    }

    /// Any numeric value as Double.
    public var double: Double? {
        switch self {
        case .float32(let v): return Double(v)
        case .float64(let v): return v
        case .uint64(let v): return Double(v)
        case .int64(let v): return Double(v)
        default: return int.map(Double.init)
        }
    }

    public var bool: Bool? { if case .bool(let b) = self { return b } else { return nil } }
    public var string: String? { if case .string(let s) = self { return s } else { return nil } }
    public var array: [GGUFValue]? { if case .array(let a) = self { return a } else { return nil } }
    /// An array whose elements are all strings.
    public var stringArray: [String]? {
        guard let a = array else { return nil }
        var out: [String] = []
        out.reserveCapacity(a.count)
        for v in a { guard let s = v.string else { return nil }; out.append(s) }
        return out
    }
}

/// A ggml tensor element type (block-quantized or plain).
public struct GGMLType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let f32 = GGMLType(rawValue: 0)
    public static let f16 = GGMLType(rawValue: 1)
    public static let q4_0 = GGMLType(rawValue: 2)
    public static let q4_1 = GGMLType(rawValue: 3)
    public static let q8_0 = GGMLType(rawValue: 8)
    public static let bf16 = GGMLType(rawValue: 30)

    /// (name, values per block, bytes per block) for every type id this reader knows the size of.
    static let table: [UInt32: (String, Int, Int)] = [
        0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
        7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40), 10: ("Q2_K", 256, 84),
        11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210),
        15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
        19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82),
        23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8),
        28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54),
        35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
    ]

    public var isKnown: Bool { Self.table[rawValue] != nil }
    public var name: String { Self.table[rawValue]?.0 ?? "type\(rawValue)" }
    /// Values per block (1 for plain types).
    public var blockSize: Int { Self.table[rawValue]?.1 ?? 0 }
    /// Bytes per block.
    public var typeSize: Int { Self.table[rawValue]?.2 ?? 0 }
    public var description: String { name }

    /// The matching `DType` for the types this library decodes (F32, F16, BF16, Q8_0, Q4_0, Q4_1).
    public var dtype: DType? {
        switch rawValue {
        case 0: return .f32
        case 1: return .f16
        case 30: return .bf16
        case 8: return .q8_0
        case 2: return .q4_0
        case 3: return .q4_1
        default: return nil
        }
    }

    public init?(_ dtype: DType) {
        switch dtype {
        case .f32: self = .f32
        case .f16: self = .f16
        case .bf16: self = .bf16
        case .q8_0: self = .q8_0
        case .q4_0: self = .q4_0
        case .q4_1: self = .q4_1
        default: return nil
        }
    }

    /// Bytes taken by `count` values; nil when `count` is not a whole number of blocks or overflows.
    public func byteCount(values count: Int) -> Int? {
        guard blockSize > 0, count >= 0, count % blockSize == 0 else { return nil }
        let (b, o) = (count / blockSize).multipliedReportingOverflow(by: typeSize)
        return o ? nil : b
    }
}

/// One tensor of a GGUF file, in the file's own terms.
public struct GGUFTensorInfo: Sendable, Equatable {
    public let name: String
    /// Dimensions in GGUF order: innermost (contiguous) first.
    public let dims: [Int]
    public let type: GGMLType
    /// Offset relative to the data section.
    public let offset: Int
    public let byteCount: Int
    public var elementCount: Int { dims.reduce(1, *) }
    /// Row-major shape, outermost first (the reverse of `dims`).
    public var shape: [Int] { dims.reversed() }
}

/// A GGUF file, memory-mapped and fully validated at open.
public final class GGUFFile {
    public let path: String
    public let version: UInt32
    /// Metadata keys in file order.
    public let keys: [String]
    public let metadata: [String: GGUFValue]
    /// Tensors in file order.
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    /// Absolute offset of the data section.
    public let dataOffset: Int

    let bytes: MappedBytes
    private let index: [String: Int]

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
        var r = GGUFReader(base: UnsafeRawPointer(mapped.base), count: mapped.count, path: path)
        guard mapped.count >= 4 else { throw r.fail("file is \(mapped.count) bytes, too short for a GGUF header") }
        let magic = try r.u32()
        guard magic == 0x4655_4747 else { throw r.fail("not a GGUF file (bad magic)") }
        let ver = try r.u32()
        if ver == 1 { throw r.fail("GGUF version 1 is not supported (only versions 2 and 3)") }
        guard ver == 2 || ver == 3 else { throw r.fail("unsupported GGUF version \(ver) (only versions 2 and 3)") }
        version = ver
        let nTensors = try r.count(minBytesEach: 24, what: "tensor count")
        let nKV = try r.count(minBytesEach: 13, what: "metadata count")

        var keys: [String] = []
        var meta: [String: GGUFValue] = [:]
        keys.reserveCapacity(nKV)
        for _ in 0..<nKV {
            let key = try r.string(what: "metadata key")
            let t = try r.u32()
            let v = try r.value(type: t, depth: 0, key: key)
            guard meta[key] == nil else { throw r.fail("duplicate metadata key '\(key)'") }
            meta[key] = v
            keys.append(key)
        }
        self.keys = keys
        metadata = meta

        var align = 32
        if let a = meta["general.alignment"] {
            guard let ai = a.int, ai > 0, ai <= 1 << 30, ai & (ai - 1) == 0 else {
                throw r.fail("general.alignment \(a) is not a power of two")
            }
            align = ai
        }
        alignment = align

        var infos: [GGUFTensorInfo] = []
        var idx: [String: Int] = [:]
        infos.reserveCapacity(nTensors)
        for _ in 0..<nTensors {
            let name = try r.string(what: "tensor name")
            let nd = try r.u32()
            guard nd >= 1 && nd <= 4 else { throw r.fail("tensor '\(name)': \(nd) dimensions (1 to 4 allowed)") }
            var dims: [Int] = []
            var count = 1
            for _ in 0..<nd {
                let d = try r.u64()
                guard d <= UInt64(Int.max) else { throw r.fail("tensor '\(name)': dimension \(d) is too large") }
                let (c, o) = count.multipliedReportingOverflow(by: Int(d))
                if o { throw r.fail("tensor '\(name)': dimensions overflow") }
                count = c
                dims.append(Int(d))
            }
            let type = GGMLType(rawValue: try r.u32())
            guard type.isKnown else { throw r.fail("tensor '\(name)': unknown ggml type \(type.rawValue)") }
            guard dims[0] % type.blockSize == 0, let nbytes = type.byteCount(values: count) else {
                throw r.fail("tensor '\(name)': innermost dimension \(dims[0]) is not a multiple of the \(type.name) block size \(type.blockSize)")
            }
            let off = try r.u64()
            guard off <= UInt64(Int.max / 2) else { throw r.fail("tensor '\(name)': offset \(off) is too large") }
            guard Int(off) % align == 0 else {
                throw r.fail("tensor '\(name)': offset \(off) is not a multiple of the alignment \(align)")
            }
            guard idx[name] == nil else { throw r.fail("duplicate tensor name '\(name)'") }
            idx[name] = infos.count
            infos.append(GGUFTensorInfo(name: name, dims: dims, type: type, offset: Int(off), byteCount: nbytes))
        }
        let start = (r.pos + align - 1) / align * align
        dataOffset = start
        let dataSize = mapped.count - start
        for t in infos {
            let (end, o) = t.offset.addingReportingOverflow(t.byteCount)
            guard !o, dataSize >= 0, end <= dataSize else {
                throw r.fail("tensor '\(t.name)': data [\(t.offset), \(o ? -1 : end)) lie outside the data section (\(max(dataSize, 0)) bytes)")
            }
        }
        let sorted = infos.filter { $0.byteCount > 0 }.sorted { $0.offset < $1.offset }
        for i in sorted.indices.dropFirst() where sorted[i].offset < sorted[i - 1].offset + sorted[i - 1].byteCount {
            throw r.fail("tensors '\(sorted[i - 1].name)' and '\(sorted[i].name)' overlap in the data section")
        }
        tensors = infos
        index = idx
    }

    public func tensor(_ name: String) -> GGUFTensorInfo? { index[name].map { tensors[$0] } }

    func require(_ name: String) throws -> GGUFTensorInfo {
        guard let t = tensor(name) else { throw SwiftQuantError.format("\(path): no tensor named '\(name)'") }
        return t
    }

    /// The stored bytes of a tensor. Valid while this object lives.
    public func data(_ name: String) throws -> UnsafeRawBufferPointer {
        let t = try require(name)
        return UnsafeRawBufferPointer(start: bytes.base + dataOffset + t.offset, count: t.byteCount)
    }

    /// True when `float32(name)` returns a view of the mapping (F32 at a 4-byte aligned address).
    public func isZeroCopy(_ name: String) -> Bool {
        guard let t = tensor(name) else { return false }
        return t.type == .f32 && (Int(bitPattern: bytes.base) + dataOffset + t.offset) % 4 == 0
    }

    /// The tensor as float32 with row-major shape `dims.reversed()`: a view for aligned F32, else a decoded
    /// copy (F16, BF16, Q8_0, Q4_0, Q4_1; bit-exact with the `gguf` Python package's dequantization). Other
    /// types throw `unsupported`.
    public func float32(_ name: String) throws -> Tensor {
        let t = try require(name)
        if isZeroCopy(name) {
            return Tensor(shape: t.shape, storage: bytes.makeStorage(), byteOffset: dataOffset + t.offset)
        }
        guard t.type.dtype != nil else {
            throw SwiftQuantError.unsupported("\(path): tensor '\(name)': cannot decode ggml type \(t.type.name)")
        }
        let out = Tensor(zeros: t.shape)
        try GGUFBlocks.dequantize(try data(name), type: t.type, into: out.buffer)
        return out
    }
}

/// Bounds-checked little-endian cursor over a GGUF file.
struct GGUFReader {
    let base: UnsafeRawPointer
    let count: Int
    let path: String
    var pos = 0

    init(base: UnsafeRawPointer, count: Int, path: String) {
        self.base = base
        self.count = count
        self.path = path
    }

    func fail(_ what: String) -> SwiftQuantError { .format("\(path): \(what)") }

    var remaining: Int { count - pos }

    mutating func take(_ n: Int) throws -> UnsafeRawPointer {
        guard n <= remaining else { throw fail("unexpected end of file at offset \(pos) (need \(n) bytes)") }
        defer { pos += n }
        return base + pos
    }

    mutating func load<T: FixedWidthInteger>(_: T.Type) throws -> T {
        T(littleEndian: try take(MemoryLayout<T>.size).loadUnaligned(as: T.self))
    }

    mutating func u32() throws -> UInt32 { try load(UInt32.self) }
    mutating func u64() throws -> UInt64 { try load(UInt64.self) }

    /// A u64 count that cannot exceed what the remaining bytes could hold at `minBytesEach` per item.
    mutating func count(minBytesEach: Int, what: String) throws -> Int {
        let n = try u64()
        guard n <= UInt64(remaining / max(minBytesEach, 1)) else {
            throw fail("\(what) \(n) is larger than the remaining \(remaining) bytes can hold")
        }
        return Int(n)
    }

    mutating func string(what: String, strict: Bool = true) throws -> String {
        let n = try u64()
        guard n <= UInt64(remaining) else {
            throw fail("\(what): string length \(n) at offset \(pos - 8) runs past the end of the file")
        }
        let p = try take(Int(n))
        let buf = UnsafeRawBufferPointer(start: p, count: Int(n))
        if strict {
            guard let s = String(validating: buf, as: UTF8.self) else { throw fail("\(what) is not valid UTF-8") }
            return s
        }
        return String(decoding: buf, as: UTF8.self)
    }

    static func minSize(_ type: UInt32) -> Int? {
        switch type {
        case 0, 1, 7: return 1
        case 2, 3: return 2
        case 4, 5, 6: return 4
        case 10, 11, 12: return 8
        case 8: return 8
        case 9: return 12
        default: return nil
        }
    }

    mutating func value(type: UInt32, depth: Int, key: String) throws -> GGUFValue {
        switch type {
        case 0: return .uint8(try load(UInt8.self))
        case 1: return .int8(try load(Int8.self))
        case 2: return .uint16(try load(UInt16.self))
        case 3: return .int16(try load(Int16.self))
        case 4: return .uint32(try load(UInt32.self))
        case 5: return .int32(try load(Int32.self))
        case 6: return .float32(Float(bitPattern: try load(UInt32.self)))
        case 7:
            let b = try load(UInt8.self)
            guard b <= 1 else { throw fail("metadata '\(key)': invalid bool \(b)") }
            return .bool(b == 1)
        case 8: return .string(try string(what: "metadata '\(key)'", strict: false))
        case 9:
            guard depth < 8 else { throw fail("metadata '\(key)': arrays nested too deeply") }
            let et = try u32()
            guard let ms = Self.minSize(et) else { throw fail("metadata '\(key)': unknown array element type \(et)") }
            let n = try count(minBytesEach: ms, what: "metadata '\(key)': array length")
            var a: [GGUFValue] = []
            a.reserveCapacity(n)
            for _ in 0..<n { a.append(try value(type: et, depth: depth + 1, key: key)) }
            return .array(a)
        case 10: return .uint64(try load(UInt64.self))
        case 11: return .int64(try load(Int64.self))
        case 12: return .float64(Double(bitPattern: try load(UInt64.self)))
        default: throw fail("metadata '\(key)': unknown value type \(type)")
        }
    }
}

// MARK: - Block codecs

/// Decoders and encoders for the ggml block formats this library reads and writes.
///
/// Decoding follows the `gguf` Python package exactly (float32 arithmetic, no fused multiply-add):
/// - Q8_0 (34 bytes / 32 values): fp16 `d`, 32 × int8 `q`; value = `Float(q) * d`.
/// - Q4_0 (18 bytes / 32 values): fp16 `d`, 16 bytes; value j (0..<16) is the low nibble of byte j, value
///   j + 16 the high nibble; value = `d * Float(nibble − 8)`.
/// - Q4_1 (20 bytes / 32 values): fp16 `d`, fp16 `m`, nibbles as Q4_0; value = `(d * Float(nibble)) + m`,
///   rounded after the product and after the sum.
///
/// Encoding follows the `gguf` package's `quantize` (so encoded bytes match it):
/// - Q8_0: `d = max|x| / 127`, `id = d == 0 ? 0 : 1 / d`, `q = round(x · id)` with ties away from zero;
///   `d` stored as fp16 (round to nearest even).
/// - Q4_0: `m` = the element of largest magnitude (first one on ties), signed; `d = m / −8`,
///   `id = d == 0 ? 0 : 1 / d`, `q = min(15, trunc(x · id + 8.5))` (i.e. round half up of x/d + 8).
/// - Q4_1: `d = (max − min) / 15`, `id = d == 0 ? 0 : 1 / d`, `q = min(15, trunc((x − min) · id + 0.5))`;
///   `d` and `min` stored as fp16.
/// Non-finite inputs give unspecified (but memory-safe) blocks.
public enum GGUFBlocks {
    /// Decodes `src` (whole blocks / elements of `type`) into `dst`. Throws `unsupported` for other types and
    /// `invalidArgument` when the sizes disagree.
    public static func dequantize(_ src: UnsafeRawBufferPointer, type: GGMLType,
                                  into dst: UnsafeMutableBufferPointer<Float>) throws {
        guard type.dtype != nil else {
            throw SwiftQuantError.unsupported("cannot decode ggml type \(type.name)")
        }
        guard let need = type.byteCount(values: dst.count), need == src.count else {
            throw SwiftQuantError.invalidArgument("\(src.count) bytes of \(type.name) do not hold \(dst.count) values")
        }
        guard let s = src.baseAddress, let o = dst.baseAddress else { return }
        let nb = dst.count / max(type.blockSize, 1)
        @inline(__always) func h(_ off: Int) -> Float {
            HalfConv.f16ToF32(UInt16(littleEndian: s.loadUnaligned(fromByteOffset: off, as: UInt16.self)))
        }
        switch type {
        case .f32:
            for i in 0..<dst.count {
                o[i] = Float(bitPattern: UInt32(littleEndian: s.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
            }
        case .f16:
            for i in 0..<dst.count { o[i] = h(2 * i) }
        case .bf16:
            for i in 0..<dst.count {
                o[i] = HalfConv.bf16ToF32(UInt16(littleEndian: s.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
            }
        case .q8_0:
            for b in 0..<nb {
                let blk = 34 * b
                let d = h(blk)
                for j in 0..<32 { o[32 * b + j] = Float(s.load(fromByteOffset: blk + 2 + j, as: Int8.self)) * d }
            }
        case .q4_0:
            for b in 0..<nb {
                let blk = 18 * b
                let d = h(blk)
                for j in 0..<16 {
                    let q = s.load(fromByteOffset: blk + 2 + j, as: UInt8.self)
                    o[32 * b + j] = d * Float(Int(q & 0x0f) - 8)
                    o[32 * b + j + 16] = d * Float(Int(q >> 4) - 8)
                }
            }
        case .q4_1:
            for b in 0..<nb {
                let blk = 20 * b
                let d = h(blk), m = h(blk + 2)
                for j in 0..<16 {
                    let q = s.load(fromByteOffset: blk + 4 + j, as: UInt8.self)
                    let lo = d * Float(q & 0x0f), hi = d * Float(q >> 4)
                    o[32 * b + j] = separateAdd(lo, m)
                    o[32 * b + j + 16] = separateAdd(hi, m)
                }
            }
        default:
            throw SwiftQuantError.unsupported("cannot decode ggml type \(type.name)")
        }
    }

    /// Encodes float32 values (count a multiple of the block size) as `type` (F32, F16, BF16, Q8_0, Q4_0,
    /// Q4_1), little-endian.
    public static func quantize(_ values: UnsafeBufferPointer<Float>, type: GGMLType) throws -> Data {
        guard type.dtype != nil, let n = type.byteCount(values: values.count) else {
            throw SwiftQuantError.invalidArgument("cannot encode \(values.count) values as \(type.name)")
        }
        var out = Data(count: n)
        out.withUnsafeMutableBytes { raw in
            let o = raw.baseAddress!
            func put16(_ v: UInt16, _ off: Int) { o.storeBytes(of: v.littleEndian, toByteOffset: off, as: UInt16.self) }
            let nb = values.count / max(type.blockSize, 1)
            switch type {
            case .f32:
                for i in 0..<values.count { o.storeBytes(of: values[i].bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
            case .f16:
                for i in 0..<values.count { put16(HalfConv.f32ToF16(values[i]), 2 * i) }
            case .bf16:
                for i in 0..<values.count { put16(HalfConv.f32ToBF16(values[i]), 2 * i) }
            case .q8_0:
                for b in 0..<nb {
                    let x = UnsafeBufferPointer(rebasing: values[(32 * b)..<(32 * b + 32)])
                    var amax: Float = 0
                    for v in x { amax = max(amax, abs(v)) }
                    let d = amax / 127
                    let id: Float = d == 0 ? 0 : 1 / d
                    put16(HalfConv.f32ToF16(d), 34 * b)
                    for j in 0..<32 {
                        let q = (x[j] * id).rounded(.toNearestOrAwayFromZero)
                        let qi = q.isFinite ? Int8(clamping: Int(max(-128, min(127, q)))) : 0
                        o.storeBytes(of: qi, toByteOffset: 34 * b + 2 + j, as: Int8.self)
                    }
                }
            case .q4_0:
                for b in 0..<nb {
                    let x = UnsafeBufferPointer(rebasing: values[(32 * b)..<(32 * b + 32)])
                    var m: Float = 0, amax: Float = -1
                    for v in x where abs(v) > amax { amax = abs(v); m = v }
                    let d = m / -8
                    let id: Float = d == 0 ? 0 : 1 / d
                    put16(HalfConv.f32ToF16(d), 18 * b)
                    func q(_ v: Float) -> UInt8 {
                        let t = separateAdd(v * id, 8.5).rounded(.towardZero)
                        return t.isFinite ? UInt8(max(0, min(15, t))) : 0
                    }
                    for j in 0..<16 { o.storeBytes(of: q(x[j]) | (q(x[j + 16]) << 4), toByteOffset: 18 * b + 2 + j, as: UInt8.self) }
                }
            case .q4_1:
                for b in 0..<nb {
                    let x = UnsafeBufferPointer(rebasing: values[(32 * b)..<(32 * b + 32)])
                    var lo = x[0], hi = x[0]
                    for v in x { lo = min(lo, v); hi = max(hi, v) }
                    let d = (hi - lo) / 15
                    let id: Float = d == 0 ? 0 : 1 / d
                    put16(HalfConv.f32ToF16(d), 20 * b)
                    put16(HalfConv.f32ToF16(lo), 20 * b + 2)
                    func q(_ v: Float) -> UInt8 {
                        let t = separateAdd((v - lo) * id, 0.5).rounded(.towardZero)
                        return t.isFinite ? UInt8(max(0, min(15, t))) : 0
                    }
                    for j in 0..<16 { o.storeBytes(of: q(x[j]) | (q(x[j + 16]) << 4), toByteOffset: 20 * b + 4 + j, as: UInt8.self) }
                }
            default:
                break
            }
        }
        return out
    }
}

/// `a + b` rounded on its own: kept out of line so the compiler cannot fuse it with the product feeding `a`
/// (the reference computes the product and the sum as two float32 roundings).
@inline(never)
func separateAdd(_ a: Float, _ b: Float) -> Float { a + b }

// MARK: - Hugging Face view

/// How a family's tensors are named in GGUF files (llama.cpp) and in Hugging Face checkpoints, and which
/// projections llama.cpp stores with their rows permuted for its rotary kernel. Each family adapter declares
/// one (`LlamaModel.ggufNaming`); `ArchitectureRegistry` finds it by `general.architecture`.
public struct GGUFNaming: Sendable {
    /// Whole-model tensors: GGUF name → HF name (e.g. "token_embd.weight" → "model.embed_tokens.weight").
    public var global: [String: String]
    /// HF prefix of block `i`'s tensors, e.g. "model.layers.3.".
    public var blockPrefix: @Sendable (Int) -> String
    /// Block tensors: GGUF stem → HF block-relative name ("attn_q" → "self_attn.q_proj").
    public var block: [String: String]
    /// HF block-relative linears whose rows llama.cpp permuted, with the metadata key (after
    /// "<architecture>.") of the head count that undoes it.
    public var permutedRows: [String: String]

    public init(global: [String: String], blockPrefix: @escaping @Sendable (Int) -> String, block: [String: String],
                permutedRows: [String: String]) {
        self.global = global; self.blockPrefix = blockPrefix; self.block = block; self.permutedRows = permutedRows
    }

    /// Maps a GGUF tensor name to its Hugging Face name; names without a mapping are returned unchanged.
    public func hfName(_ g: String) -> String {
        if let n = global[g] { return n }
        let parts = g.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "blk", let layer = Int(parts[1]), layer >= 0,
              parts[3] == "weight" || parts[3] == "bias", let sub = block[String(parts[2])] else { return g }
        return blockPrefix(layer) + sub + "." + parts[3]
    }

    /// The head-count key that un-permutes HF tensor `name`, if its rows are permuted.
    func permutationKey(_ name: String) -> String? {
        guard name.hasSuffix(".weight") else { return nil }
        let stem = String(name.dropLast(".weight".count))
        for (linear, key) in permutedRows where stem.hasSuffix("." + linear) { return key }
        return nil
    }
}

/// A GGUF file seen as a Hugging Face checkpoint: tensor names mapped to HF names by the family's `GGUFNaming`,
/// shapes in HF order (`[out, in]`), and llama.cpp's rotary row permutation of q/k projections undone.
public final class GGUFTensorSource: TensorSource {
    public let file: GGUFFile
    public let architecture: String?
    public let naming: GGUFNaming
    public let tensorInfos: [TensorInfo]
    /// Whether q_proj/k_proj rows are un-permuted on read (llama.cpp's converter permutes them for
    /// `llama`-architecture files).
    public let undoesRopePermutation: Bool
    private let ggufName: [String: String]
    private let infoIndex: [String: Int]

    /// `undoRopePermutation`: nil = decide from `general.architecture` (true for "llama").
    public init(file: GGUFFile, naming: GGUFNaming, undoRopePermutation: Bool? = nil) throws {
        self.file = file
        self.naming = naming
        architecture = file.metadata["general.architecture"]?.string
        undoesRopePermutation = undoRopePermutation ?? (architecture == "llama")
        var infos: [TensorInfo] = []
        var map: [String: String] = [:]
        var idx: [String: Int] = [:]
        for t in file.tensors {
            guard let dt = t.type.dtype else {
                throw SwiftQuantError.unsupported("\(file.path): tensor '\(t.name)' has ggml type \(t.type.name), which this library cannot decode")
            }
            let hf = naming.hfName(t.name)
            guard map[hf] == nil else { throw SwiftQuantError.format("\(file.path): two tensors map to '\(hf)'") }
            map[hf] = t.name
            idx[hf] = infos.count
            infos.append(TensorInfo(name: hf, dtype: dt, shape: t.shape))
        }
        tensorInfos = infos
        ggufName = map
        infoIndex = idx
    }

    public func info(_ name: String) -> TensorInfo? { infoIndex[name].map { tensorInfos[$0] } }

    /// The GGUF name behind an HF name.
    public func ggufName(for hfName: String) -> String? { ggufName[hfName] }

    public func isZeroCopy(_ name: String) -> Bool {
        guard let g = ggufName[name], file.isZeroCopy(g) else { return false }
        return permutationHeads(name) == nil
    }

    private func permutationHeads(_ name: String) -> String? {
        guard undoesRopePermutation, let key = naming.permutationKey(name) else { return nil }
        return "\(architecture ?? "llama").\(key)"
    }

    public func float32(_ name: String) throws -> Tensor {
        guard let g = ggufName[name] else { throw SwiftQuantError.format("\(file.path): no tensor named '\(name)'") }
        let t = try file.float32(g)
        guard let key = permutationHeads(name) else { return t }
        let arch = architecture ?? "llama"
        guard let nHead = (file.metadata[key] ?? file.metadata["\(arch).attention.head_count"])?.int, nHead > 0 else {
            throw SwiftQuantError.format("\(file.path): missing \(key), needed to un-permute '\(name)'")
        }
        guard t.rank == 2, t.shape[0] % nHead == 0, (t.shape[0] / nHead) % 2 == 0 else {
            throw SwiftQuantError.format("\(file.path): tensor '\(name)' of shape \(t.shape) does not split into \(nHead) heads of even size")
        }
        return Self.unpermuteRows(t, heads: nHead)
    }

    /// Undoes llama.cpp's q/k row permutation: within each head, GGUF row `2j + i` holds HF row
    /// `i · headDim/2 + j` (the converter's reshape [heads, 2, headDim/2, in] → swap axes 1, 2).
    public static func unpermuteRows(_ t: Tensor, heads: Int) -> Tensor {
        let rows = t.shape[0], cols = t.shape[1]
        let hd = rows / heads, half = hd / 2
        let out = Tensor(zeros: t.shape)
        let src = t.pointer, dst = out.pointer
        for h in 0..<heads {
            for i in 0..<2 {
                for j in 0..<half {
                    let from = h * hd + 2 * j + i, to = h * hd + i * half + j
                    (dst + to * cols).update(from: src + from * cols, count: cols)
                }
            }
        }
        return out
    }

    /// The inverse of `unpermuteRows` (HF → GGUF order), for export.
    public static func permuteRows(_ t: Tensor, heads: Int) -> Tensor {
        let rows = t.shape[0], cols = t.shape[1]
        let hd = rows / heads, half = hd / 2
        let out = Tensor(zeros: t.shape)
        let src = t.pointer, dst = out.pointer
        for h in 0..<heads {
            for i in 0..<2 {
                for j in 0..<half {
                    let to = h * hd + 2 * j + i, from = h * hd + i * half + j
                    (dst + to * cols).update(from: src + from * cols, count: cols)
                }
            }
        }
        return out
    }
}
