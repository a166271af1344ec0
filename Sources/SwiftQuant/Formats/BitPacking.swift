/// Packing of b-bit codes (1 ≤ b ≤ 8) into one little-endian bit stream: code i occupies bits
/// [i·b, (i+1)·b), least significant bit first, and the stream is zero-padded to a whole byte.
///
/// `Reference` holds the bit-by-bit definition; the fast kernels below handle 2, 3, 4 and 8 bits with whole
/// words and fall back to the reference for other widths and for tails. Tests check they agree.
public enum BitPacking {
    public static func packedByteCount(count: Int, bits: Int) -> Int { (count * bits + 7) / 8 }

    static func check(bits: Int) throws {
        try require((1...8).contains(bits), "bits must be in 1...8, got \(bits)")
    }

    /// Packs `codes` (only their low `bits` bits are used; higher bits are an error) into `dst`.
    public static func pack(_ codes: UnsafeBufferPointer<UInt8>, bits: Int, into dst: UnsafeMutableBufferPointer<UInt8>) throws {
        try check(bits: bits)
        let need = packedByteCount(count: codes.count, bits: bits)
        try require(dst.count >= need, "pack: output holds \(dst.count) bytes, \(need) needed")
        if bits < 8, let bad = firstOutOfRange(codes, bits: bits) {
            throw SwiftQuantError.invalidArgument("code \(codes[bad]) at index \(bad) does not fit in \(bits) bits")
        }
        packUnchecked(codes.baseAddress!, count: codes.count, bits: bits, into: dst.baseAddress!)
    }

    /// Unpacks `count` codes.
    public static func unpack(_ packed: UnsafeBufferPointer<UInt8>, bits: Int, count: Int,
                              into dst: UnsafeMutableBufferPointer<UInt8>) throws {
        try check(bits: bits)
        let need = packedByteCount(count: count, bits: bits)
        try require(packed.count >= need, "unpack: \(count) codes of \(bits) bits need \(need) bytes, got \(packed.count)")
        try require(dst.count >= count, "unpack: output holds \(dst.count) codes, \(count) needed")
        if count == 0 { return }
        unpackUnchecked(packed.baseAddress!, count: count, bits: bits, into: dst.baseAddress!)
    }

    /// Packs each row of a [rows, cols] code matrix on its own; each row starts on a byte boundary
    /// (row stride `packedByteCount(count: cols, bits: bits)`).
    public static func packRows(_ codes: UnsafeBufferPointer<UInt8>, rows: Int, cols: Int, bits: Int,
                                into dst: UnsafeMutableBufferPointer<UInt8>) throws {
        try check(bits: bits)
        try require(codes.count >= rows * cols, "packRows: \(codes.count) codes for [\(rows), \(cols)]")
        let stride = packedByteCount(count: cols, bits: bits)
        try require(dst.count >= rows * stride, "packRows: output holds \(dst.count) bytes, \(rows * stride) needed")
        if bits < 8, let bad = firstOutOfRange(codes, bits: bits) {
            throw SwiftQuantError.invalidArgument("code \(codes[bad]) at index \(bad) does not fit in \(bits) bits")
        }
        let src = codes.baseAddress!, out = dst.baseAddress!
        parallelFor(rows, minChunk: max(1, 1 << 16 / max(cols, 1))) { range in
            for r in range { packUnchecked(src + r * cols, count: cols, bits: bits, into: out + r * stride) }
        }
    }

    static func firstOutOfRange(_ codes: UnsafeBufferPointer<UInt8>, bits: Int) -> Int? {
        let limit = UInt8(1 << bits)
        return codes.firstIndex { $0 >= limit }
    }

    // MARK: fast kernels

    /// Packs without checks. `dst` must hold `packedByteCount(count:bits:)` bytes; codes must fit.
    @inlinable
    public static func packUnchecked(_ src: UnsafePointer<UInt8>, count: Int, bits: Int, into dst: UnsafeMutablePointer<UInt8>) {
        var i = 0, o = 0
        switch bits {
        case 8:
            dst.update(from: src, count: count)
            return
        case 4:
            while i + 8 <= count {  // 8 codes (one per byte) → 4 bytes
                var x = UnsafeRawPointer(src + i).loadUnaligned(as: UInt64.self).littleEndian
                x = (x | x >> 4) & 0x00FF_00FF_00FF_00FF  // byte 2m = c[2m] | c[2m+1] << 4
                x = (x | x >> 8) & 0x0000_FFFF_0000_FFFF
                x = (x | x >> 16) & 0xFFFF_FFFF
                UnsafeMutableRawPointer(dst + o).storeBytes(of: UInt32(truncatingIfNeeded: x).littleEndian, as: UInt32.self)
                i += 8; o += 4
            }
        case 2:
            while i + 4 <= count {
                dst[o] = src[i] | src[i + 1] << 2 | src[i + 2] << 4 | src[i + 3] << 6
                i += 4; o += 1
            }
        case 3:
            while i + 8 <= count {  // 8 codes → 24 bits
                var w: UInt32 = 0
                for j in 0..<8 { w |= UInt32(src[i + j]) << UInt32(3 * j) }
                dst[o] = UInt8(truncatingIfNeeded: w)
                dst[o + 1] = UInt8(truncatingIfNeeded: w >> 8)
                dst[o + 2] = UInt8(truncatingIfNeeded: w >> 16)
                i += 8; o += 3
            }
        default:
            break
        }
        Reference.pack(src + i, count: count - i, bits: bits, into: dst + o)
    }

    @inlinable
    public static func unpackUnchecked(_ src: UnsafePointer<UInt8>, count: Int, bits: Int, into dst: UnsafeMutablePointer<UInt8>) {
        var i = 0, o = 0
        switch bits {
        case 8:
            dst.update(from: src, count: count)
            return
        case 4:
            while i + 2 <= count {
                dst[i] = src[o] & 0xF
                dst[i + 1] = src[o] >> 4
                i += 2; o += 1
            }
        case 2:
            while i + 4 <= count {
                let b = src[o]
                dst[i] = b & 3; dst[i + 1] = (b >> 2) & 3; dst[i + 2] = (b >> 4) & 3; dst[i + 3] = b >> 6
                i += 4; o += 1
            }
        case 3:
            while i + 8 <= count {
                let w = UInt32(src[o]) | UInt32(src[o + 1]) << 8 | UInt32(src[o + 2]) << 16
                for j in 0..<8 { dst[i + j] = UInt8(truncatingIfNeeded: (w >> UInt32(3 * j)) & 7) }
                i += 8; o += 3
            }
        default:
            break
        }
        Reference.unpack(src + o, count: count - i, bits: bits, into: dst + i)
    }

    /// Bit-by-bit definitions: the specification the fast kernels are tested against.
    public enum Reference {
        @inlinable
        public static func pack(_ src: UnsafePointer<UInt8>, count: Int, bits: Int, into dst: UnsafeMutablePointer<UInt8>) {
            let bytes = BitPacking.packedByteCount(count: count, bits: bits)
            dst.update(repeating: 0, count: bytes)
            for i in 0..<count {
                for j in 0..<bits where (src[i] >> j) & 1 != 0 {
                    let bit = i * bits + j
                    dst[bit >> 3] |= 1 << UInt8(bit & 7)
                }
            }
        }

        @inlinable
        public static func unpack(_ src: UnsafePointer<UInt8>, count: Int, bits: Int, into dst: UnsafeMutablePointer<UInt8>) {
            for i in 0..<count {
                var c: UInt8 = 0
                for j in 0..<bits {
                    let bit = i * bits + j
                    c |= ((src[bit >> 3] >> UInt8(bit & 7)) & 1) << UInt8(j)
                }
                dst[i] = c
            }
        }
    }
}
