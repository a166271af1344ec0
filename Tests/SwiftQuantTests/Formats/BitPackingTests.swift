import SwiftQuant
import XCTest

final class BitPackingTests: XCTestCase {
    /// The fast kernels agree with the bit-by-bit reference for every width and many lengths (tails included).
    func testFastKernelsMatchReference() throws {
        var rng = SplitMix64(seed: 1)
        for bits in 1...8 {
            for count in Array(0...70) + [127, 128, 129, 4093] {
                let codes = (0..<count).map { _ in UInt8.random(in: 0...UInt8((1 << bits) - 1), using: &rng) }
                let n = BitPacking.packedByteCount(count: count, bits: bits)
                var fast = [UInt8](repeating: 0xAA, count: n), ref = [UInt8](repeating: 0x55, count: n)
                try codes.withUnsafeBufferPointer { c in
                    try fast.withUnsafeMutableBufferPointer { try BitPacking.pack(c, bits: bits, into: $0) }
                    ref.withUnsafeMutableBufferPointer {
                        BitPacking.Reference.pack(c.baseAddress ?? UnsafePointer(bitPattern: 8)!, count: count, bits: bits,
                                                  into: $0.baseAddress ?? UnsafeMutablePointer(bitPattern: 8)!)
                    }
                }
                XCTAssertEqual(fast, ref, "pack bits \(bits) count \(count)")
                var back = [UInt8](repeating: 0xFF, count: count)
                try fast.withUnsafeBufferPointer { p in
                    try back.withUnsafeMutableBufferPointer { try BitPacking.unpack(p, bits: bits, count: count, into: $0) }
                }
                XCTAssertEqual(back, codes, "unpack bits \(bits) count \(count)")
            }
        }
    }

    /// The stream layout by example: code i at bits [i·b, (i+1)·b), LSB first.
    func testLayout() throws {
        func pack(_ codes: [UInt8], _ bits: Int) throws -> [UInt8] {
            var out = [UInt8](repeating: 0, count: BitPacking.packedByteCount(count: codes.count, bits: bits))
            try codes.withUnsafeBufferPointer { c in
                try out.withUnsafeMutableBufferPointer { try BitPacking.pack(c, bits: bits, into: $0) }
            }
            return out
        }
        XCTAssertEqual(try pack([0x1, 0x2, 0x3], 4), [0x21, 0x03])
        XCTAssertEqual(try pack([1, 2, 3, 0, 1], 2), [0b0011_1001, 0b01])
        XCTAssertEqual(try pack([1, 2, 3, 4, 5, 6, 7, 0], 3), [0b1101_0001, 0b0101_1000, 0b0001_1111])
        XCTAssertThrowsSwiftQuantError(try pack([16], 4), contains: "does not fit in 4 bits")
        XCTAssertThrowsSwiftQuantError(try pack([1], 9), contains: "bits must be in 1...8")
    }

    func testPackRowsStartEachRowOnAByte() throws {
        let rows = 3, cols = 5, bits = 3
        let codes = (0..<(rows * cols)).map { UInt8($0 % 8) }
        let stride = BitPacking.packedByteCount(count: cols, bits: bits)
        var out = [UInt8](repeating: 0, count: rows * stride)
        try codes.withUnsafeBufferPointer { c in
            try out.withUnsafeMutableBufferPointer { try BitPacking.packRows(c, rows: rows, cols: cols, bits: bits, into: $0) }
        }
        for r in 0..<rows {
            var back = [UInt8](repeating: 0, count: cols)
            try out[(r * stride)..<((r + 1) * stride)].withUnsafeBufferPointer { p in
                try back.withUnsafeMutableBufferPointer { try BitPacking.unpack(p, bits: bits, count: cols, into: $0) }
            }
            XCTAssertEqual(back, Array(codes[(r * cols)..<((r + 1) * cols)]))
        }
    }
}
