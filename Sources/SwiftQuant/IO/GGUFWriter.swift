import Foundation

// GGUF writer (version 3, little-endian), the layout `GGUFFile` reads:
//
//   "GGUF" u32 version=3, u64 tensor_count, u64 kv_count
//   kv_count × (string key, u32 value_type, value)      string = u64 byte length + UTF-8 (no NUL);
//                                                        array = u32 element type, u64 count, elements
//   tensor_count × (string name, u32 n_dims, n_dims × u64 dim (innermost first), u32 ggml_type, u64 offset)
//   zero padding to the alignment, then the data section: each tensor at its offset (relative to the section,
//   a multiple of the alignment), zero padding after each tensor up to the next multiple.
//
// The alignment is `general.alignment` (a uint32 power of two) when the metadata has it, else 32. Offsets
// depend only on the declared types and dims, so the header is written first and the tensors' bytes are then
// streamed one tensor at a time (`GGUFWriter.write(metadata:declarations:to:data:)`): a model is never held
// in memory twice.

/// A tensor announced in the header before its bytes are written: dims in GGUF order (innermost first).
public struct GGUFTensorDeclaration: Sendable, Equatable {
    public let name: String
    public let type: GGMLType
    public let dims: [Int]

    public init(name: String, type: GGMLType, dims: [Int]) {
        self.name = name
        self.type = type
        self.dims = dims
    }

    /// Values in the tensor (nil when the dims overflow or one is negative).
    public var elementCount: Int? {
        var count = 1
        for d in dims {
            guard d >= 0 else { return nil }
            let (c, o) = count.multipliedReportingOverflow(by: d)
            if o { return nil }
            count = c
        }
        return count
    }

    /// Bytes of the encoded tensor (nil when the dims do not hold whole blocks of the type).
    public var byteCount: Int? {
        guard let n = elementCount, let first = dims.first, type.blockSize > 0, first % type.blockSize == 0 else {
            return nil
        }
        return type.byteCount(values: n)
    }
}

/// One tensor to write to GGUF with its encoded bytes in memory: dims in GGUF order (innermost first).
public struct GGUFWriterTensor {
    public let name: String
    public let type: GGMLType
    public let dims: [Int]
    public let bytes: Data
    public init(name: String, type: GGMLType, dims: [Int], bytes: Data) {
        self.name = name
        self.type = type
        self.dims = dims
        self.bytes = bytes
    }

    /// A float32 tensor (row-major shape, outermost first) encoded as `type`; dims are the reversed shape.
    public init(name: String, tensor: Tensor, type: GGMLType) throws {
        let bytes = try GGUFBlocks.quantize(UnsafeBufferPointer(tensor.buffer), type: type)
        self.init(name: name, type: type, dims: tensor.shape.reversed(), bytes: bytes)
    }

    public var declaration: GGUFTensorDeclaration { GGUFTensorDeclaration(name: name, type: type, dims: dims) }
}

public enum GGUFWriter {
    /// Writes a GGUF v3 file whose tensors are all in memory, atomically (temporary file, fsync, rename). See
    /// `write(metadata:declarations:to:data:)` for the rules.
    public static func write(metadata: [(String, GGUFValue)], tensors: [GGUFWriterTensor], to path: String) throws {
        try write(metadata: metadata, declarations: tensors.map(\.declaration), to: path) { i, emit in
            try tensors[i].bytes.withUnsafeBytes { try emit($0) }
        }
    }

    /// Writes a GGUF v3 file atomically, streaming the tensors' bytes: after the header, `data(i, emit)` is
    /// called once per declared tensor, in order, and must pass exactly that tensor's `byteCount` bytes to
    /// `emit` (in one or several pieces, e.g. row by row). The alignment is `general.alignment` when present in
    /// `metadata` (a uint32 power of two), else 32. Arrays must be homogeneous (an empty array is written with
    /// element type uint8). Bad metadata or declarations throw `invalidArgument` before anything is written; any
    /// error (also one thrown by `data`) removes the temporary file and leaves `path` untouched.
    public static func write(metadata: [(String, GGUFValue)], declarations: [GGUFTensorDeclaration], to path: String,
                             data: (_ index: Int, _ emit: (UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws {
        let (head, align, sizes) = try header(metadata: metadata, declarations: declarations)
        try AtomicFileWriter.write(to: path) { w in
            try w.write(head)
            let zeros = Data(count: align)
            for (i, t) in declarations.enumerated() {
                var written = 0
                try data(i) { piece in
                    guard written + piece.count <= sizes[i] else {
                        throw SwiftQuantError.invalidArgument(
                            "tensor '\(t.name)': more than its \(sizes[i]) bytes of \(t.type.name) were written")
                    }
                    try w.write(piece)
                    written += piece.count
                }
                guard written == sizes[i] else {
                    throw SwiftQuantError.invalidArgument(
                        "tensor '\(t.name)': \(written) bytes were written, \(sizes[i]) declared (\(t.type.name) \(t.dims))")
                }
                let pad = (align - sizes[i] % align) % align
                if pad > 0 { try zeros.prefix(pad).withUnsafeBytes { try w.write($0) } }
            }
        }
    }

    /// The header bytes (padded to the alignment), the alignment, and each tensor's byte count.
    static func header(metadata: [(String, GGUFValue)], declarations: [GGUFTensorDeclaration]) throws
        -> (Data, Int, [Int])
    {
        var align = 32
        var seenKeys = Set<String>()
        for (k, v) in metadata {
            try require(seenKeys.insert(k).inserted, "duplicate metadata key '\(k)'")
            if k == "general.alignment" {
                guard let a = v.int, a > 0, a & (a - 1) == 0, case .uint32 = v else {
                    throw SwiftQuantError.invalidArgument("general.alignment must be a uint32 power of two")
                }
                align = a
            }
        }
        var seen = Set<String>()
        var offsets: [Int] = []
        var sizes: [Int] = []
        var offset = 0
        for t in declarations {
            try require(seen.insert(t.name).inserted, "duplicate tensor name '\(t.name)'")
            try require(!t.dims.isEmpty && t.dims.count <= 4, "tensor '\(t.name)': 1 to 4 dims required")
            try require(t.type.dtype != nil, "tensor '\(t.name)': cannot write ggml type \(t.type.name)")
            try require(t.dims.allSatisfy { $0 >= 0 }, "tensor '\(t.name)': negative dimension")
            try require(t.elementCount != nil, "tensor '\(t.name)': dims overflow")
            guard let size = t.byteCount else {
                throw SwiftQuantError.invalidArgument(
                    "tensor '\(t.name)': dims \(t.dims) do not hold whole \(t.type.name) blocks of \(t.type.blockSize)")
            }
            offsets.append(offset)
            sizes.append(size)
            offset += (size + align - 1) / align * align
        }
        var head = GGUFByteWriter()
        head.u32(0x4655_4747)
        head.u32(3)
        head.u64(UInt64(declarations.count))
        head.u64(UInt64(metadata.count))
        for (k, v) in metadata {
            head.string(k)
            head.u32(v.typeCode)
            try head.value(v, key: k)
        }
        for (t, off) in zip(declarations, offsets) {
            head.string(t.name)
            head.u32(UInt32(t.dims.count))
            for d in t.dims { head.u64(UInt64(d)) }
            head.u32(t.type.rawValue)
            head.u64(UInt64(off))
        }
        while head.data.count % align != 0 { head.data.append(0) }
        return (head.data, align, sizes)
    }
}

struct GGUFByteWriter {
    var data = Data()
    mutating func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { data.append(contentsOf: $0) } }
    mutating func u32(_ v: UInt32) { put(v) }
    mutating func u64(_ v: UInt64) { put(v) }
    mutating func string(_ s: String) {
        let u = Array(s.utf8)
        u64(UInt64(u.count))
        data.append(contentsOf: u)
    }
    mutating func value(_ v: GGUFValue, key: String) throws {
        switch v {
        case .uint8(let x): put(x)
        case .int8(let x): put(x)
        case .uint16(let x): put(x)
        case .int16(let x): put(x)
        case .uint32(let x): put(x)
        case .int32(let x): put(x)
        case .float32(let x): put(x.bitPattern)
        case .bool(let b): put(UInt8(b ? 1 : 0))
        case .string(let s): string(s)
        case .uint64(let x): put(x)
        case .int64(let x): put(x)
        case .float64(let x): put(x.bitPattern)
        case .array(let a):
            let et = a.first?.typeCode ?? 0
            try require(a.allSatisfy { $0.typeCode == et }, "metadata '\(key)': array elements of mixed types")
            u32(et)
            u64(UInt64(a.count))
            for e in a { try value(e, key: key) }
        }
    }
}
