import Foundation
import SwiftQuant
import XCTest

/// The dynamic activation quantizers (ALGORITHMS.md §1, §2b, §4): bit-exact parity with the NumPy / ml_dtypes
/// fixtures (Fixtures/make_activation_fixtures.py), the SIMD paths against their scalar twins, groups, NaN/Inf,
/// and the factory's errors.
final class ActivationQuantizerTests: XCTestCase {
    struct Case { let name: String; let format: String; let width: Int? }

    /// The fixture file: the input rows, each case's expected output (as float32 bit patterns) and the row kinds.
    final class Fixture {
        static let shared: Fixture = {
            do { return try Fixture() } catch { fatalError("cannot load activation fixtures: \(error)") }
        }()

        let file: SafetensorsFile
        let cases: [Case]
        let kinds: [String]
        let rows: Int, features: Int

        init() throws {
            file = try SafetensorsFile(path: Fixtures.url("activation_fixtures.safetensors").path)
            guard let c = file.metadata["cases"]?.data(using: .utf8),
                  let list = try JSONSerialization.jsonObject(with: c) as? [[String: Any]],
                  let r = file.metadata["rows"]?.data(using: .utf8),
                  let k = try JSONSerialization.jsonObject(with: r) as? [String]
            else { throw SwiftQuantError.format("activation fixtures: no \"cases\"/\"rows\" metadata") }
            cases = list.map { Case(name: $0["name"] as! String, format: $0["format"] as! String, width: $0["width"] as? Int) }
            kinds = k
            let shape = file.info("input")!.shape
            rows = shape[0]; features = shape[1]
        }

        func bits(_ name: String) throws -> [UInt32] {
            let raw = try file.rawBytes(name)
            XCTAssertEqual(raw.count, rows * features * 4, name)
            return (0..<(rows * features)).map { raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self).littleEndian }
        }

        func input() throws -> [Float] { try bits("input").map(Float.init(bitPattern:)) }
    }

    /// Compares bit patterns; reports the first few mismatches with their row kind. Returns the mismatch count.
    @discardableResult
    func compare(_ got: [Float], _ expected: [UInt32], features: Int, label: String, kinds: [String]? = nil,
                 input: [Float]? = nil, file: StaticString = #filePath, line: UInt = #line) -> Int {
        var bad = 0
        for i in 0..<expected.count where got[i].bitPattern != expected[i] {
            if bad < 5 {
                let r = i / features
                XCTFail("\(label) [\(r), \(i % features)] (\(kinds?[r] ?? "row \(r)")): input \(input.map { "\($0[i])" } ?? "?")"
                    + ", got \(got[i]) (0x\(String(got[i].bitPattern, radix: 16))), expected \(Float(bitPattern: expected[i]))"
                    + " (0x\(String(expected[i], radix: 16)))", file: file, line: line)
            }
            bad += 1
        }
        if bad > 0 { XCTFail("\(label): \(bad) mismatches of \(expected.count)", file: file, line: line) }
        return bad
    }

    // MARK: parity with the NumPy / ml_dtypes reference

    /// Every fixture case (int8/6/4/3/2 and e4m3fn/e5m2 per token, int4 per 8 and per 24 features (ragged last
    /// group), e4m3fn per 16), through the factory: the SIMD path and the scalar twin, 0 mismatching bits.
    func testFixtureParityBitExact() throws {
        let fx = Fixture.shared
        let x = try fx.input()
        XCTAssertGreaterThanOrEqual(fx.cases.count, 6)
        for c in fx.cases {
            let expected = try fx.bits("expected.\(c.name)")
            let q = try XCTUnwrap(ActivationQuantization.make(format: c.format, width: c.width) as? DynamicActivationQuantizer)
            var fast = x
            fast.withUnsafeMutableBufferPointer { q.quantize($0.baseAddress!, rows: fx.rows, features: fx.features) }
            compare(fast, expected, features: fx.features, label: "\(c.name) fast", kinds: fx.kinds, input: x)
            var ref = x
            ref.withUnsafeMutableBufferPointer { q.quantizeReference($0.baseAddress!, rows: fx.rows, features: fx.features) }
            compare(ref, expected, features: fx.features, label: "\(c.name) reference", kinds: fx.kinds, input: x)
        }
    }

    /// The fixture holds the cases the brief names and the awkward rows (ties, constants, zeros, extremes).
    func testFixtureCoversTheEdgeCases() throws {
        let fx = Fixture.shared
        let names = Set(fx.cases.map(\.name))
        for n in ["int8", "int6", "int4", "e4m3fn", "e5m2", "int4_w8"] { XCTAssertTrue(names.contains(n), n) }
        for kind in ["ties", "all zero", "all equal", "negative only", "huge", "tiny", "subnormals", "a/s > Fmax",
                     "absmax = Fmax", "signed zeros"] {
            XCTAssertTrue(fx.kinds.contains { $0.contains(kind) }, kind)
        }
    }

    // MARK: SIMD paths against their scalar twins

    func stressRows(rows: Int, features: Int, seed: UInt64) -> [Float] {
        var rng = SplitMix64(seed: seed)
        var x = [Float](repeating: 0, count: rows * features)
        for r in 0..<rows {
            let scale = Float(sign: .plus, exponent: Int.random(in: -30...30, using: &rng), significand: 1)
            let kind = r % 6
            for c in 0..<features {
                let g = rng.gaussian() * scale
                switch kind {
                case 0: x[r * features + c] = g
                case 1: x[r * features + c] = -abs(g)
                case 2: x[r * features + c] = c % 5 == 0 ? g * 100 : g
                case 3: x[r * features + c] = (g / scale).rounded() * 0.5 * scale  // many halves: ties
                case 4: x[r * features + c] = c % 3 == 0 ? 0 : (c % 3 == 1 ? -0.0 : g)
                default: x[r * features + c] = scale
                }
            }
        }
        return x
    }

    static let allFormats: [String] = ["int2", "int3", "int4", "int5", "int6", "int7", "int8"]
        + MinifloatFormat.all.map(\.name)

    /// `quantize` (SIMD) equals `quantizeReference` bit for bit: every INT width and minifloat, per token and
    /// several group widths (1, odd, ragged, larger than the row), features not a multiple of 8.
    func testFastPathMatchesScalarTwin() throws {
        for features in [67, 128] {
            let rows = 48
            let x = stressRows(rows: rows, features: features, seed: UInt64(features))
            for name in Self.allFormats {
                for width in [nil, 1, 3, 8, 13, 32, 64, 1000] as [Int?] {
                    let q = try DynamicActivationQuantizer(format: NumberFormat.parse(name), width: width)
                    var fast = x, ref = x
                    fast.withUnsafeMutableBufferPointer { q.quantize($0.baseAddress!, rows: rows, features: features) }
                    ref.withUnsafeMutableBufferPointer { q.quantizeReference($0.baseAddress!, rows: rows, features: features) }
                    if compare(fast, ref.map(\.bitPattern), features: features, label: "\(q) F=\(features)", input: x) > 0 {
                        return
                    }
                }
            }
        }
    }

    /// The backward's SIMD path against its scalar twin on the same stress rows (ties, constant and huge-range
    /// groups, every width): the pass-through mask is identical (every value off a group's max and min equal bit
    /// for bit), and the max/min values, which receive `∂L/∂h` summed in another order, agree to 1e-5.
    func testBackwardFastPathMatchesScalarTwin() throws {
        for features in [67, 128] {
            let rows = 48
            let x = stressRows(rows: rows, features: features, seed: UInt64(features) + 5)
            var rng = SplitMix64(seed: 11)
            let g = (0..<(rows * features)).map { _ in Float(rng.nextUnit() * 2 - 1) }
            for name in Self.allFormats {
                for width in [nil, 1, 3, 8, 13, 32, 64, 1000] as [Int?] {
                    let q = try DynamicActivationQuantizer(format: NumberFormat.parse(name), width: width)
                    var fast = g, ref = g
                    fast.withUnsafeMutableBufferPointer { q.backward(input: x, gradient: $0.baseAddress!, rows: rows, features: features) }
                    ref.withUnsafeMutableBufferPointer { q.backwardReference(input: x, gradient: $0.baseAddress!, rows: rows, features: features) }
                    let w = min(width ?? features, features)
                    var worst: Float = 0
                    for r in 0..<rows {
                        var lo = 0
                        while lo < features {
                            let group = (r * features + lo)..<(r * features + min(lo + w, features))
                            let values = group.map { x[$0] }
                            let (mn, mx) = (values.min()!, values.max()!)
                            for i in group where fast[i].bitPattern != ref[i].bitPattern && !(fast[i].isNaN && ref[i].isNaN) {
                                XCTAssertTrue(x[i] == mn || x[i] == mx || abs(x[i]) == max(abs(mn), abs(mx)),
                                              "\(q) F=\(features): element \(i) off the group's extremes differs")
                                worst = max(worst, abs(fast[i] - ref[i]) / max(1, abs(ref[i])))
                            }
                            lo += w
                        }
                    }
                    XCTAssertLessThanOrEqual(worst, 1e-5, "\(q) F=\(features)")
                }
            }
        }
    }

    /// The minifloat SIMD rounding against the cast on dense inputs at s = 1: every finite value of each
    /// format, the midpoints between neighbours, one float32 ulp either side of both, and the subnormal range.
    func testMinifloatFastRoundingOnEveryTieAndNeighbour() throws {
        for f in MinifloatFormat.all {
            let values = f.decodeTable.filter(\.isFinite).sorted()
            var x: [Float] = []
            for (a, b) in zip(values, values.dropFirst()) where a != b {
                let mid = Float((Double(a) + Double(b)) / 2)
                x += [a, mid, mid.nextUp, mid.nextDown, a.nextUp, a.nextDown]
            }
            x += [f.maxFinite, -f.maxFinite, 0, -0.0, .leastNonzeroMagnitude, -.leastNonzeroMagnitude]
            x = x.filter { abs($0) <= f.maxFinite }  // keeps every row's absmax at Fmax
            // Each row keeps ±Fmax so that s = 1 exactly and the rest is cast as it is.
            let features = 64, body = features - 1
            let rows = (x.count + body - 1) / body
            var input = [Float](repeating: 0, count: rows * features)
            for r in 0..<rows {
                input[r * features] = r % 2 == 0 ? f.maxFinite : -f.maxFinite
                for c in 0..<body where r * body + c < x.count { input[r * features + 1 + c] = x[r * body + c] }
            }
            let q = try DynamicActivationQuantizer(format: .minifloat(f))
            var fast = input, ref = input
            fast.withUnsafeMutableBufferPointer { q.quantize($0.baseAddress!, rows: rows, features: features) }
            ref.withUnsafeMutableBufferPointer { q.quantizeReference($0.baseAddress!, rows: rows, features: features) }
            compare(fast, ref.map(\.bitPattern), features: features, label: "\(f) dense", input: input)
            // At s = 1 the output is the cast itself.
            for i in 0..<input.count {
                let y = min(max(input[i], -f.maxFinite), f.maxFinite)
                XCTAssertEqual(ref[i].bitPattern, f.decode(f.encode(y)).bitPattern, "\(f) \(input[i])")
            }
        }
    }

    // MARK: semantics

    /// Groups are independent: a row quantized with width w equals each of its groups quantized as a row of its
    /// own; rows are independent of the batch; nil, features and anything larger are all per token.
    func testGroupsAndRowsAreIndependent() throws {
        let rows = 40, features = 72
        let x = stressRows(rows: rows, features: features, seed: 9)
        for name in ["int4", "int8", "e4m3fn", "e5m2"] {
            let format = try NumberFormat.parse(name)
            for width in [8, 20] {
                let q = try DynamicActivationQuantizer(format: format, width: width)
                let perRow = try DynamicActivationQuantizer(format: format)
                var all = x
                all.withUnsafeMutableBufferPointer { q.quantize($0.baseAddress!, rows: rows, features: features) }
                for r in 0..<rows {
                    var lo = 0
                    while lo < features {
                        let n = min(width, features - lo)
                        var g = Array(x[(r * features + lo)..<(r * features + lo + n)])
                        g.withUnsafeMutableBufferPointer { perRow.quantize($0.baseAddress!, rows: 1, features: n) }
                        XCTAssertEqual(g.map(\.bitPattern), all[(r * features + lo)..<(r * features + lo + n)].map(\.bitPattern),
                                       "\(q) row \(r) group at \(lo)")
                        lo += n
                    }
                }
            }
            var a = x, b = x, c = x
            try DynamicActivationQuantizer(format: format).quantize(&a, rows: rows, features: features)
            try DynamicActivationQuantizer(format: format, width: features).quantize(&b, rows: rows, features: features)
            try DynamicActivationQuantizer(format: format, width: 10 * features).quantize(&c, rows: rows, features: features)
            XCTAssertEqual(a.map(\.bitPattern), b.map(\.bitPattern), name)
            XCTAssertEqual(a.map(\.bitPattern), c.map(\.bitPattern), name)
            var one = Array(x[(7 * features)..<(8 * features)])
            try DynamicActivationQuantizer(format: format).quantize(&one, rows: 1, features: features)
            XCTAssertEqual(one.map(\.bitPattern), a[(7 * features)..<(8 * features)].map(\.bitPattern), name)
        }
    }

    /// Error bounds of the definitions: INT values move by about h/2 at most (0.51·h: float32 rounding of h and
    /// the clamp at the top code); minifloat outputs never exceed the row's absmax (up to the float32 rounding of s).
    func testErrorBounds() throws {
        let rows = 24, features = 96
        var rng = SplitMix64(seed: 5)
        let x = (0..<(rows * features)).map { _ in rng.gaussian() * 3 }
        for bits in 2...8 {
            var y = x
            try DynamicActivationQuantizer(format: .int(bits: bits)).quantize(&y, rows: rows, features: features)
            for r in 0..<rows {
                let row = x[(r * features)..<((r + 1) * features)]
                let h = (row.max()! - row.min()!) / Float((1 << bits) - 1)
                for i in row.indices {
                    XCTAssertLessThanOrEqual(abs(y[i] - x[i]), h * 0.51 + 1e-6, "int\(bits) [\(r)]")
                }
            }
        }
        for f in MinifloatFormat.all {
            var y = x
            try DynamicActivationQuantizer(format: .minifloat(f)).quantize(&y, rows: rows, features: features)
            for r in 0..<rows {
                let absmax = x[(r * features)..<((r + 1) * features)].map(abs).max()!
                for i in (r * features)..<((r + 1) * features) {
                    XCTAssertLessThanOrEqual(abs(y[i]), absmax * 1.0001, "\(f) [\(r)]")
                    XCTAssertEqual(y[i].sign, x[i].sign, "\(f) keeps the sign")
                }
            }
        }
    }

    /// All-zero rows stay zero (INT: h clamps to 1e-5; FP: s = 1); an all-equal row follows OmniQuant's clamps
    /// literally (h = 1e-5, z = −1e4 for 3.7: every value becomes (qmax + 1e4)·1e-5).
    func testConstantRows() throws {
        for name in Self.allFormats {
            var z = [Float](repeating: 0, count: 16)
            try ActivationQuantization.make(format: name).quantize(&z, rows: 2, features: 8)
            XCTAssertEqual(z, [Float](repeating: 0, count: 16), name)
        }
        var c = [Float](repeating: 3.7, count: 8)
        try ActivationQuantization.make(format: "int8").quantize(&c, rows: 1, features: 8)
        XCTAssertEqual(c, [Float](repeating: (255 - -1e4) * Float(1e-5), count: 8))
        // x/h overflows to ±inf: the code still clamps (SIMD path and twin alike).
        for (value, expected) in [(Float(3e38), (255 - -1e4) * Float(1e-5)), (-1e38, (0 - 1e4) * Float(1e-5))] {
            let q = try DynamicActivationQuantizer(format: .int(bits: 8))
            var fast = [Float](repeating: value, count: 19), ref = fast
            q.quantize(&fast, rows: 1, features: 19)
            q.quantizeReference(&ref, rows: 1, features: 19)
            XCTAssertEqual(fast, [Float](repeating: expected, count: 19), "\(value)")
            XCTAssertEqual(ref, fast, "\(value)")
        }
    }

    // MARK: non-finite inputs

    /// A group holding NaN, +Inf or −Inf comes out all NaN (fast path and twin); the other groups and rows are
    /// quantized as if it were absent. `check` throws `.nonFinite` naming the first one.
    func testNonFiniteGroupsBecomeNaN() throws {
        let features = 24, rows = 3
        for name in ["int8", "int4", "e4m3fn", "e5m2", "e2m1"] {
            for bad in [Float.nan, .infinity, -.infinity] {
                for width in [nil, 8] as [Int?] {
                    let q = try DynamicActivationQuantizer(format: NumberFormat.parse(name), width: width)
                    var x = stressRows(rows: rows, features: features, seed: 3)
                    let clean = x
                    x[features + 10] = bad  // row 1, feature 10 (group 1 of width 8)
                    for reference in [false, true] {
                        var y = x, expected = clean
                        y.withUnsafeMutableBufferPointer { p in
                            reference ? q.quantizeReference(p.baseAddress!, rows: rows, features: features)
                                : q.quantize(p.baseAddress!, rows: rows, features: features)
                        }
                        expected.withUnsafeMutableBufferPointer { q.quantizeReference($0.baseAddress!, rows: rows, features: features) }
                        let poisoned = width == nil ? features..<(2 * features) : (features + 8)..<(features + 16)
                        for i in 0..<(rows * features) {
                            if poisoned.contains(i) {
                                XCTAssertTrue(y[i].isNaN, "\(q) \(bad) reference=\(reference) [\(i)] should be NaN")
                            } else {
                                XCTAssertEqual(y[i].bitPattern, expected[i].bitPattern, "\(q) \(bad) [\(i)]")
                            }
                        }
                    }
                    XCTAssertThrowsSwiftQuantError(try ActivationQuantization.check(x, rows: rows, features: features),
                                                   contains: "[1, 10]")
                    do {
                        try ActivationQuantization.check(x, rows: rows, features: features)
                    } catch let e as SwiftQuantError {
                        guard case .nonFinite = e else { return XCTFail("expected .nonFinite, got \(e)") }
                    }
                    XCTAssertNoThrow(try ActivationQuantization.check(clean, rows: rows, features: features))
                }
            }
        }
    }

    // MARK: the factory

    func testFactoryNamesAndErrors() throws {
        for (name, expected) in [("int8", "int8 per token"), ("INT4", "int4 per token"), ("int2", "int2 per token"),
                                 ("e4m3fn", "e4m3fn per token"), ("fp8", "e4m3fn per token"), ("e5m2", "e5m2 per token"),
                                 ("e2m1", "e2m1 per token"), ("e3m2", "e3m2 per token"), ("e2m3", "e2m3 per token")] {
            let q = try ActivationQuantization.make(format: name)
            XCTAssertEqual("\(q)", expected)
        }
        XCTAssertEqual("\(try ActivationQuantization.make(format: "int4", width: 64))", "int4 per 64 features")
        XCTAssertThrowsSwiftQuantError(try ActivationQuantization.make(format: "int1"), contains: "2 to 8 bits")
        XCTAssertThrowsSwiftQuantError(try ActivationQuantization.make(format: "int9"), contains: "2 to 8 bits")
        XCTAssertThrowsSwiftQuantError(try ActivationQuantization.make(format: "int16"), contains: "2 to 8 bits")
        XCTAssertThrowsSwiftQuantError(try ActivationQuantization.make(format: "int"), contains: "unknown format")
        XCTAssertThrowsSwiftQuantError(try ActivationQuantization.make(format: "bf16"), contains: "unknown format")
        XCTAssertThrowsSwiftQuantError(try ActivationQuantization.make(format: "int8", width: 0), contains: "positive")
        XCTAssertThrowsSwiftQuantError(try ActivationQuantization.make(format: "e4m3fn", width: -4), contains: "positive")
        XCTAssertThrowsSwiftQuantError(try DynamicActivationQuantizer(format: .int(bits: 12)), contains: "2 to 8 bits")
        // Empty inputs are a no-op.
        var empty: [Float] = []
        try ActivationQuantization.make(format: "int8").quantize(&empty, rows: 0, features: 16)
        try ActivationQuantization.check(empty, rows: 0, features: 16)
    }

    /// The quantizer's backward (through its scale, ALGORITHMS.md §1: `h` not detached) against PyTorch autograd
    /// of OmniQuant's `Q_a` (`Fixtures/make_let_fixtures.py`, `actgrad.*`): INT4 / INT8 per token, INT4 per 16
    /// features (a ragged last group), E4M3 per token; a row with a tie for its max and a constant row. The
    /// forward matches bit for bit and the gradient within 1e-5 of the largest.
    func testBackwardMatchesPyTorch() throws {
        let file = try SafetensorsFile(path: Fixtures.url("let_fixtures.safetensors").path)
        for (name, format, width) in [("int4", "int4", nil), ("int8", "int8", nil), ("int4_g16", "int4", 16),
                                      ("e4m3fn", "e4m3fn", nil)] as [(String, String, Int?)] {
            func t(_ k: String) throws -> Tensor { try file.float32("actgrad.\(name).\(k)") }
            let x = try t("x"), rows = x.shape[0], features = x.shape[1]
            let q = try ActivationQuantization.make(format: format, width: width)
            let y = x.copy()
            q.quantize(y.pointer, rows: rows, features: features)
            XCTAssertEqual(y.array, try t("y").array, "\(name): forward")
            let g = try t("g").copy()
            q.backward(input: x.pointer, gradient: g.pointer, rows: rows, features: features)
            let want = try t("dx")
            let big = want.array.map(abs).max()!
            var err: Float = 0
            for k in 0..<want.count { err = max(err, abs(g.pointer[k] - want.pointer[k])) }
            XCTAssertLessThanOrEqual(err, 1e-5 * big, "\(name): max diff \(err), max |dx| \(big)")
            // The scale's path is there: a straight-through gradient differs from PyTorch's.
            let ste = try t("g")
            var steErr: Float = 0
            for k in 0..<want.count { steErr = max(steErr, abs(ste.pointer[k] - want.pointer[k])) }
            XCTAssertGreaterThan(steErr, 1e-2 * big, "\(name): the fixture exercises the scale's gradient")
        }
    }
}
