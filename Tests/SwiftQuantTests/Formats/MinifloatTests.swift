import Foundation
import SwiftQuant
import XCTest

/// Minifloat encode/decode against fixtures from ml_dtypes (Fixtures/make_minifloat_fixtures.py).
final class MinifloatTests: XCTestCase {
    func testDecodeEveryCode() throws {
        let table = try XCTUnwrap(Fixtures.json("minifloat_decode.json") as? [String: [Any]])
        for f in MinifloatFormat.all {
            let expected = try XCTUnwrap(table[f.name])
            XCTAssertEqual(expected.count, 1 << f.bitWidth)
            for (code, e) in expected.enumerated() {
                let got = f.decode(UInt8(code))
                if let s = e as? String {
                    XCTAssertEqual(s, "nan")
                    XCTAssertTrue(got.isNaN, "\(f.name) code \(code): \(got), expected NaN")
                } else {
                    let bits = try XCTUnwrap((e as? NSNumber)?.uint32Value)
                    XCTAssertEqual(got.bitPattern, bits, "\(f.name) code \(code): \(got) vs \(Float(bitPattern: bits))")
                }
            }
        }
    }

    func testEncodeEdgeSet() throws {
        for f in MinifloatFormat.all {
            let d = try Fixtures.data("minifloat_\(f.name).bin")
            let n = Int(d.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) })
            XCTAssertEqual(d.count, 4 + 5 * n)
            var mismatches = 0
            d.withUnsafeBytes { raw in
                for i in 0..<n {
                    let bits = raw.loadUnaligned(fromByteOffset: 4 + 4 * i, as: UInt32.self)
                    let expected = raw[4 + 4 * n + i]
                    let got = f.encode(Float(bitPattern: bits))
                    if got != expected {
                        mismatches += 1
                        if mismatches <= 5 {
                            XCTFail("\(f.name): encode(\(Float(bitPattern: bits)) [0x\(String(bits, radix: 16))]) = \(got), ml_dtypes \(expected)")
                        }
                    }
                }
            }
            XCTAssertEqual(mismatches, 0, "\(f.name): \(mismatches) of \(n) edge inputs differ")
        }
    }

    /// 2^20 inputs per format across the whole range, both signs, hashed per block of 65,536.
    func testEncodeSweep() throws {
        let info = try XCTUnwrap(Fixtures.json("minifloat_sweep.json") as? [String: Any])
        let count = try XCTUnwrap(info["count"] as? Int), blocks = try XCTUnwrap(info["blocks"] as? Int)
        let hashes = try XCTUnwrap(info["fnv1a64"] as? [String: [String]])
        XCTAssertGreaterThanOrEqual(count, 1 << 20)
        for f in MinifloatFormat.all {
            let table = f.decodeTable
            let minSub = table.filter { $0 > 0 && $0.isFinite }.min()!
            let lo = UInt64((minSub / 8).bitPattern), hi = UInt64((f.maxFinite * 4).bitPattern)
            let half = UInt64(count / 2)
            var inputs = [Float](repeating: 0, count: count)
            for k in 0..<half {
                let u = UInt32(lo + (k * (hi - lo)) / half)
                inputs[Int(k)] = Float(bitPattern: u)
                inputs[Int(k + half)] = Float(bitPattern: u | 0x8000_0000)
            }
            var codes = [UInt8](repeating: 0, count: count)
            inputs.withUnsafeBufferPointer { src in
                codes.withUnsafeMutableBufferPointer { dst in f.encode(src, into: dst) }
            }
            let per = count / blocks
            let expected = try XCTUnwrap(hashes[f.name])
            for b in 0..<blocks {
                var h: UInt64 = 0xCBF2_9CE4_8422_2325
                for c in codes[(b * per)..<((b + 1) * per)] { h = (h ^ UInt64(c)) &* 0x100_0000_01B3 }
                XCTAssertEqual(String(format: "%016lx", h), expected[b], "\(f.name): sweep block \(b) differs from ml_dtypes")
            }
        }
    }

    func testTraits() throws {
        XCTAssertEqual(MinifloatFormat.all.map(\.maxFinite), [448, 57344, 28, 7.5, 6])
        XCTAssertEqual(MinifloatFormat.all.map(\.bitWidth), [8, 8, 6, 6, 4])
        XCTAssertEqual(MinifloatFormat.e2m1.decodeTable.prefix(8), [0, 0.5, 1, 1.5, 2, 3, 4, 6])
        XCTAssertEqual(try MinifloatFormat.named("float8_e4m3fn"), .e4m3fn)
        XCTAssertThrowsSwiftQuantError(try MinifloatFormat.named("e9m9"), contains: "unknown floating-point format")
        for f in MinifloatFormat.all {  // decode ∘ encode is the identity on every finite code
            for code in 0..<(1 << f.bitWidth) {
                let v = f.decode(UInt8(code))
                if v.isFinite { XCTAssertEqual(f.encode(v), UInt8(code), "\(f.name) code \(code)") }
            }
        }
    }

    func testNumberFormatParsing() throws {
        XCTAssertEqual(try NumberFormat.parse("int4"), .int(bits: 4))
        XCTAssertEqual(try NumberFormat.parse("e2m1"), .minifloat(.e2m1))
        XCTAssertThrowsSwiftQuantError(try NumberFormat.parse("int9"), contains: "2 to 8 bits")
        XCTAssertThrowsSwiftQuantError(try NumberFormat.parse("int1"), contains: "2 to 8 bits")
        XCTAssertThrowsSwiftQuantError(try NumberFormat.parse("fp5"), contains: "unknown format")
    }
}
