import SwiftQuant
import XCTest

final class QuantizerTests: XCTestCase {
    /// Weights with the awkward cases: an all-zero row, a constant row, an all-positive and an all-negative row.
    func weights(rows: Int = 12, cols: Int = 300, seed: UInt64 = 3) -> [Float] {
        var rng = SplitMix64(seed: seed)
        var w = [Float](repeating: 0, count: rows * cols)
        for r in 0..<rows {
            let scale = Float.random(in: 0.01...1, using: &rng)
            for c in 0..<cols { w[r * cols + c] = rng.gaussian() * scale }
        }
        for c in 0..<cols {
            if rows > 0 { w[c] = 0 }
            if rows > 1 { w[cols + c] = 0.25 }
            if rows > 2 { w[2 * cols + c] = abs(w[2 * cols + c]) + 0.1 }
            if rows > 3 { w[3 * cols + c] = -abs(w[3 * cols + c]) }
        }
        return w
    }

    let intConfigs: [QuantizerConfig] = {
        var out: [QuantizerConfig] = []
        for bits in [2, 3, 4, 8] {
            for group in [nil, 64, 128, 100] as [Int?] {
                for sym in [false, true] {
                    for policy in QParamsPolicy.allCases {
                        out.append(QuantizerConfig(format: .int(bits: bits), groupSize: group, symmetric: sym, policy: policy))
                    }
                }
            }
        }
        return out
    }()

    /// Codes, scales and zero-points equal the scalar definition (QuantKernels.Reference + intParams) element by element.
    func testIntMatchesScalarDefinition() throws {
        let rows = 12, cols = 300
        let w = weights(rows: rows, cols: cols)
        for cfg in intConfigs {
            guard case .int(let bits) = cfg.format else { continue }
            let q = try w.withUnsafeBufferPointer { try Quantizer.quantize($0, rows: rows, cols: cols, config: cfg) }
            let width = cfg.groupWidth(cols: cols), g = cfg.groupCount(cols: cols)
            for r in 0..<rows {
                for gi in 0..<g {
                    let lo = gi * width, hi = min(cols, lo + width)
                    let slice = w[(r * cols + lo)..<(r * cols + hi)]
                    let (h, z) = Quantizer.intParams(xmin: slice.min()!, xmax: slice.max()!, bits: bits,
                                                     symmetric: cfg.symmetric, policy: cfg.policy)
                    XCTAssertEqual(q.scales[r * g + gi], h, "\(cfg) row \(r) group \(gi)")
                    XCTAssertEqual(q.zeros[r * g + gi], Int32(z), "\(cfg) row \(r) group \(gi)")
                    XCTAssertTrue(h.isFinite && h > 0)
                    for i in lo..<hi {
                        let expected = QuantKernels.Reference.intCode(w[r * cols + i], h: h, z: z, qmax: Float((1 << bits) - 1))
                        if q.codes[r * cols + i] != expected {
                            XCTFail("\(cfg) [\(r), \(i)]: \(q.codes[r * cols + i]) vs \(expected)")
                            return
                        }
                    }
                }
            }
        }
    }

    /// fakeQuantize == dequantize(quantize), lies on the grid, and works in place.
    func testFakeQuantizeEqualsDequantizeAndLiesOnGrid() throws {
        let rows = 12, cols = 300
        let w = weights(rows: rows, cols: cols)
        let configs = intConfigs + MinifloatFormat.all.flatMap { f in
            ScaleConstraint.allCases.map { QuantizerConfig(format: .minifloat(f), groupSize: 128, scaleConstraint: $0) }
        }
        for cfg in configs {
            let q = try w.withUnsafeBufferPointer { try Quantizer.quantize($0, rows: rows, cols: cols, config: cfg) }
            let deq = q.dequantized().array
            var fake = [Float](repeating: 0, count: w.count)
            try fake.withUnsafeMutableBufferPointer { out in
                try w.withUnsafeBufferPointer {
                    try Quantizer.fakeQuantize($0.baseAddress!, rows: rows, cols: cols, config: cfg, out: out.baseAddress!)
                }
            }
            XCTAssertEqual(fake.map(\.bitPattern), deq.map(\.bitPattern), "\(cfg)")
            var inPlace = w
            try inPlace.withUnsafeMutableBufferPointer { p in
                try Quantizer.fakeQuantize(p.baseAddress!, rows: rows, cols: cols, config: cfg, out: p.baseAddress!)
            }
            XCTAssertEqual(inPlace.map(\.bitPattern), deq.map(\.bitPattern), "\(cfg) in place")
            // On the grid: every value is (k − z)·h for an integer k in range (INT), decode(code)·s (FP).
            let width = cfg.groupWidth(cols: cols), g = cfg.groupCount(cols: cols)
            let table: [Float]
            switch cfg.format {
            case .int(let bits): table = (0..<(1 << bits)).map(Float.init)
            case .minifloat(let f): table = f.decodeTable
            }
            for r in 0..<rows {
                for gi in 0..<g {
                    let h = q.scales[r * g + gi], z = Float(q.zeros[r * g + gi])
                    let grid = Set(table.filter(\.isFinite).map { ($0 - z) * h })
                    for i in (gi * width)..<min(cols, (gi + 1) * width) where !grid.contains(fake[r * cols + i]) {
                        XCTFail("\(cfg): \(fake[r * cols + i]) at [\(r), \(i)] is off the grid")
                        return
                    }
                }
            }
        }
    }

    /// quantizePacked (fused fast paths included) equals pack(quantize) for every format and odd sizes.
    func testQuantizePackedEqualsPackOfQuantize() throws {
        for (rows, cols) in [(5, 256), (4, 300), (3, 37), (2, 8)] {
            let w = weights(rows: rows, cols: cols, seed: UInt64(cols))
            var configs = [2, 3, 4, 8].flatMap { b in
                [nil, 8, 64, 100].filter { ($0 ?? 0) <= cols }.map { QuantizerConfig(format: .int(bits: b), groupSize: $0) }
            }
            configs += MinifloatFormat.all.map { QuantizerConfig(format: .minifloat($0), groupSize: nil) }
            for cfg in configs {
                let q = try w.withUnsafeBufferPointer { try Quantizer.quantize($0, rows: rows, cols: cols, config: cfg) }
                let g = cfg.groupCount(cols: cols)
                var packed = [UInt8](repeating: 0xEE, count: rows * BitPacking.packedByteCount(count: cols, bits: cfg.format.bitWidth))
                var s = [Float](repeating: 0, count: rows * g), z = [Int32](repeating: 7, count: rows * g)
                try w.withUnsafeBufferPointer { wp in
                    try packed.withUnsafeMutableBufferPointer { p in
                        try s.withUnsafeMutableBufferPointer { sp in
                            try z.withUnsafeMutableBufferPointer { zp in
                                try Quantizer.quantizePacked(wp, rows: rows, cols: cols, config: cfg, packed: p, scales: sp, zeros: zp)
                            }
                        }
                    }
                }
                XCTAssertEqual(packed, q.packed(), "\(cfg) [\(rows), \(cols)]")
                XCTAssertEqual(s, q.scales)
                XCTAssertEqual(z, q.zeros)
            }
        }
    }

    /// The fused 4-bit kernel against the general path (per-element scalar codes, then the reference packer):
    /// sym and asym, group widths that do and do not divide the row (odd row lengths leave a half-filled last
    /// byte), exact ties (w/h = k + ½ must round to even), values far outside the grid, tiny and constant groups.
    func testFusedInt4MatchesGeneralPath() throws {
        var rng = SplitMix64(seed: 404)
        for (rows, cols) in [(6, 256), (5, 300), (4, 37), (3, 2), (7, 4096)] {
            var w = (0..<(rows * cols)).map { _ in Float(rng.gaussian()) * 0.02 }
            for c in 0..<cols {
                w[c] = Float(c % 16) + 0.5                       // row 0: group range [0.5, 15.5] → ties
                w[cols + c] = c % 7 == 0 ? 3e6 : -2e-7 * Float(c) // row 1: huge and tiny values
                w[2 * cols + c] = 0.25                           // row 2: constant
            }
            for sym in [false, true] {
                for group in [nil, 2, 32, 64, 128, 100, 36].filter({ ($0 ?? 0) <= cols }) {
                    let cfg = QuantizerConfig(format: .int(bits: 4), groupSize: group, symmetric: sym)
                    let q = try w.withUnsafeBufferPointer { try Quantizer.quantize($0, rows: rows, cols: cols, config: cfg) }
                    let g = cfg.groupCount(cols: cols)
                    var packed = [UInt8](repeating: 0xEE, count: rows * BitPacking.packedByteCount(count: cols, bits: 4))
                    var s = [Float](repeating: 0, count: rows * g), z = [Int32](repeating: 99, count: rows * g)
                    try w.withUnsafeBufferPointer { wp in
                        try packed.withUnsafeMutableBufferPointer { p in
                            try s.withUnsafeMutableBufferPointer { sp in
                                try z.withUnsafeMutableBufferPointer { zp in
                                    try Quantizer.quantizePacked(wp, rows: rows, cols: cols, config: cfg, packed: p,
                                                                 scales: sp, zeros: zp)
                                }
                            }
                        }
                    }
                    let stride = BitPacking.packedByteCount(count: cols, bits: 4)
                    var expected = [UInt8](repeating: 0, count: rows * stride)
                    q.codes.withUnsafeBufferPointer { c in
                        expected.withUnsafeMutableBufferPointer { e in
                            for r in 0..<rows {
                                BitPacking.Reference.pack(c.baseAddress! + r * cols, count: cols, bits: 4,
                                                          into: e.baseAddress! + r * stride)
                            }
                        }
                    }
                    XCTAssertEqual(packed, expected, "\(cfg) [\(rows), \(cols)]")
                    XCTAssertEqual(s.map(\.bitPattern), q.scales.map(\.bitPattern), "\(cfg) scales")
                    XCTAssertEqual(z, q.zeros, "\(cfg) zeros")
                }
            }
        }
        // NaN in the middle of a large matrix: refused, naming the position.
        var w = [Float](repeating: 0.5, count: 64 * 256)
        w[40 * 256 + 17] = .nan
        var packed = [UInt8](repeating: 0, count: 64 * 128), s = [Float](repeating: 0, count: 64 * 2)
        var z = [Int32](repeating: 0, count: 64 * 2)
        XCTAssertThrowsError(try w.withUnsafeBufferPointer { wp in
            try packed.withUnsafeMutableBufferPointer { p in
                try s.withUnsafeMutableBufferPointer { sp in
                    try z.withUnsafeMutableBufferPointer { zp in
                        try Quantizer.quantizePacked(wp, rows: 64, cols: 256, config: QuantizerConfig(format: .int(bits: 4)),
                                                     packed: p, scales: sp, zeros: zp)
                    }
                }
            }
        }) { XCTAssertTrue("\($0)".contains("[40, 17]"), "\($0)") }
    }

    func testSIMDKernelsMatchScalarReference() {
        var rng = SplitMix64(seed: 11)
        for n in [1, 7, 8, 9, 63, 128, 131] {
            let x = (0..<n).map { _ in rng.gaussian() * 3 }
            let mm = x.withUnsafeBufferPointer { QuantKernels.minMax($0.baseAddress!, n) }
            XCTAssertEqual(mm?.0, x.min())
            XCTAssertEqual(mm?.1, x.max())
            var bad = x
            bad[n / 2] = .nan
            XCTAssertNil(bad.withUnsafeBufferPointer { QuantKernels.minMax($0.baseAddress!, n) })
            bad[n / 2] = -.infinity
            XCTAssertNil(bad.withUnsafeBufferPointer { QuantKernels.minMax($0.baseAddress!, n) })
            for (h, z, qmax) in [(Float(0.37), Float(3), Float(7)), (1e-5, -40, 255), (0.5, 2, 3), (1e4, 0, 15)] {
                var codes = [UInt8](repeating: 0, count: n)
                x.withUnsafeBufferPointer { p in
                    codes.withUnsafeMutableBufferPointer { QuantKernels.intCodes(p.baseAddress!, n, h: h, z: z, qmax: qmax, into: $0.baseAddress!) }
                }
                XCTAssertEqual(codes, x.map { QuantKernels.Reference.intCode($0, h: h, z: z, qmax: qmax) }, "n \(n) h \(h)")
            }
        }
        // Exact ties round to even, as the specification's round does.
        let ties: [Float] = [0.5, 1.5, 2.5, 3.5, -0.5, 4.5, 5.5, 6.5]
        var codes = [UInt8](repeating: 0, count: 8)
        ties.withUnsafeBufferPointer { p in
            codes.withUnsafeMutableBufferPointer { QuantKernels.intCodes(p.baseAddress!, 8, h: 1, z: 1, qmax: 15, into: $0.baseAddress!) }
        }
        XCTAssertEqual(codes, [1, 3, 3, 5, 1, 5, 7, 7])
    }

    func testFlatGroupsGiveFiniteScales() throws {
        let rows = 2, cols = 256
        var w = [Float](repeating: 0, count: rows * cols)
        for i in cols..<(2 * cols) { w[i] = -3.5 }
        for cfg in intConfigs + MinifloatFormat.all.map({ QuantizerConfig(format: .minifloat($0)) }) {
            let q = try w.withUnsafeBufferPointer { try Quantizer.quantize($0, rows: rows, cols: cols, config: cfg) }
            XCTAssertTrue(q.scales.allSatisfy { $0.isFinite && $0 > 0 }, "\(cfg)")
            XCTAssertTrue(q.dequantized().array.allSatisfy(\.isFinite), "\(cfg)")
        }
    }

    /// Clip multipliers of 1 (LWC with σ = 1) give plain RTN; smaller multipliers shrink the range.
    func testClipMultipliers() throws {
        let rows = 6, cols = 256
        let w = weights(rows: rows, cols: cols)
        let cfg = QuantizerConfig(format: .int(bits: 3), groupSize: 64)
        let g = cfg.groupCount(cols: cols)
        let ones = [Float](repeating: 1, count: rows * g), halves = [Float](repeating: 0.5, count: rows * g)
        let plain = try w.withUnsafeBufferPointer { try Quantizer.quantize($0, rows: rows, cols: cols, config: cfg) }
        let one = try w.withUnsafeBufferPointer { p in
            try ones.withUnsafeBufferPointer { try Quantizer.quantize(p, rows: rows, cols: cols, config: cfg, clipUp: $0, clipLow: $0) }
        }
        XCTAssertEqual(plain.codes, one.codes)
        XCTAssertEqual(plain.scales, one.scales)
        let half = try w.withUnsafeBufferPointer { p in
            try halves.withUnsafeBufferPointer { try Quantizer.quantize(p, rows: rows, cols: cols, config: cfg, clipUp: $0, clipLow: $0) }
        }
        for i in 4 * g..<rows * g { XCTAssertLessThan(half.scales[i], plain.scales[i]) }
    }

    /// M1/M2 scales make FP4 (E2M1) weights FP8 (E4M3) values by an exponent shift: every E2M1 value times
    /// ŝ / c (M2) or ŝ / 2^k (M1) is exact in E4M3.
    func testPowerOfTwoScaleConstraints() throws {
        let rows = 6, cols = 512
        let w = weights(rows: rows, cols: cols)
        for constraint in [ScaleConstraint.m1, .m2] {
            let cfg = QuantizerConfig(format: .minifloat(.e2m1), groupSize: 64, scaleConstraint: constraint)
            let q = try w.withUnsafeBufferPointer { try Quantizer.quantize($0, rows: rows, cols: cols, config: cfg) }
            let g = cfg.groupCount(cols: cols)
            for r in 0..<rows {
                let c = q.scales[(r * g)..<((r + 1) * g)].max()!
                for gi in 0..<g {
                    let s = q.scales[r * g + gi]
                    let ratio = constraint == .m1 ? s : s / c
                    XCTAssertEqual(ratio.significand, 1, "\(constraint): scale ratio \(ratio) is not a power of two")
                    if constraint == .m2 {
                        XCTAssertGreaterThanOrEqual(Int(ratio.exponent), -8)
                        for v in MinifloatFormat.e2m1.decodeTable {
                            let shifted = v * ratio
                            XCTAssertEqual(MinifloatFormat.e4m3fn.decode(MinifloatFormat.e4m3fn.encode(shifted)), shifted)
                        }
                    }
                    // The constrained scale still covers the group: no value is clamped beyond 6·ŝ.
                    let lo = gi * 64
                    let absmax = w[(r * cols + lo)..<(r * cols + lo + 64)].map(abs).max()!
                    XCTAssertGreaterThanOrEqual(6 * s * (1 + 1e-6), constraint == .m2 && absmax == 0 ? 0 : absmax)
                }
            }
        }
        XCTAssertEqual(Quantizer.ceilPowerOfTwo(3).value, 4)
        XCTAssertEqual(Quantizer.ceilPowerOfTwo(4).value, 4)
        XCTAssertEqual(Quantizer.ceilPowerOfTwo(Float.leastNonzeroMagnitude * 3).value, Float.leastNonzeroMagnitude * 4)
    }

    func testBadInputIsAClearError() throws {
        let w: [Float] = [1, 2, 3, 4, 5, 6]
        func q(_ cfg: QuantizerConfig, _ w: [Float] = w, rows: Int = 2, cols: Int = 3,
               up: [Float]? = nil, low: [Float]? = nil) throws -> QuantizedTensor {
            try w.withUnsafeBufferPointer { p in
                try (up ?? []).withUnsafeBufferPointer { u in
                    try (low ?? []).withUnsafeBufferPointer { l in
                        try Quantizer.quantize(p, rows: rows, cols: cols, config: cfg, clipUp: up == nil ? nil : u,
                                               clipLow: low == nil ? nil : l)
                    }
                }
            }
        }
        let int4 = QuantizerConfig(format: .int(bits: 4), groupSize: nil)
        XCTAssertThrowsSwiftQuantError(try q(QuantizerConfig(format: .int(bits: 4), groupSize: 0)), contains: "group size must be positive")
        XCTAssertThrowsSwiftQuantError(try q(QuantizerConfig(format: .int(bits: 4), groupSize: 4)), contains: "larger than the row")
        XCTAssertThrowsSwiftQuantError(try q(QuantizerConfig(format: .int(bits: 9))), contains: "2 to 8 bits")
        XCTAssertThrowsSwiftQuantError(try q(int4, [1, 2, .nan, 4, 5, 6]), contains: "at [0, 2]")
        XCTAssertThrowsSwiftQuantError(try q(int4, [1, 2, 3, 4, 5, .infinity]), contains: "at [1, 2]")
        XCTAssertThrowsSwiftQuantError(try q(int4, rows: 0, cols: 3), contains: "empty")
        XCTAssertThrowsSwiftQuantError(try q(int4, up: [1, 1], low: nil), contains: "pairs")
        XCTAssertThrowsSwiftQuantError(try q(int4, up: [1], low: [1]), contains: "[rows, groups] = [2, 1]")
        XCTAssertThrowsSwiftQuantError(try q(int4, up: [1, 1.5], low: [1, 1]), contains: "[0, 1]")
        XCTAssertThrowsSwiftQuantError(try q(QuantizerConfig(format: .int(bits: 4), groupSize: nil, scaleConstraint: .m1)), contains: "floating-point formats only")
        XCTAssertThrowsSwiftQuantError(try QuantizedTensor(rows: 1, cols: 2, config: int4, codes: [1, 16], scales: [1], zeros: [0]),
                                       contains: "does not fit int4")
    }

    /// The one group-size type: its spellings, its C encoding and its single validation.
    func testGroupSizeSpellingsAndValidation() throws {
        XCTAssertEqual(try GroupSize.parse("per-row"), .perRow)
        XCTAssertEqual(try GroupSize.parse("128"), .columns(128))
        XCTAssertThrowsError(try GroupSize.parse("0"))
        XCTAssertThrowsError(try GroupSize.parse("-1"))
        XCTAssertThrowsError(try GroupSize.parse("row"))
        XCTAssertEqual(try GroupSize(abi: 0), .perRow)
        XCTAssertEqual(try GroupSize(abi: 64), 64)
        XCTAssertThrowsError(try GroupSize(abi: -1))
        XCTAssertEqual(GroupSize.perRow.abiValue, 0)
        XCTAssertEqual(GroupSize.perRow.description, "per-row")
        XCTAssertEqual(GroupSize(nil), nil as GroupSize)
        XCTAssertEqual(GroupSize(128).count(cols: 300), 3)
        XCTAssertEqual(GroupSize.perRow.count(cols: 300), 1)
        XCTAssertEqual(GroupSize.perRow.width(cols: 300), 300)
        XCTAssertNoThrow(try GroupSize(300).validate(cols: 300))
        XCTAssertThrowsError(try GroupSize(301).validate(cols: 300))
        XCTAssertThrowsError(try GroupSize(0).validate(cols: 300))
        // LWC takes the same type; a size larger than the row is one group per row there.
        let lwc = try Autodiff.FakeQuantLWC(rows: 2, columns: 100, bits: 3, group: 128)
        XCTAssertEqual(lwc.groupsPerRow, 1)
        XCTAssertEqual(try Autodiff.FakeQuantLWC(rows: 2, columns: 100, bits: 3, groupSize: 0).groupsPerRow, 1)
        XCTAssertThrowsError(try Autodiff.FakeQuantLWC(rows: 2, columns: 100, bits: 3, groupSize: -1))
    }
}
