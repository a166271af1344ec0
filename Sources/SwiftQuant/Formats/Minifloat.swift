/// A small binary floating-point format ExMy (sign, E exponent bits, M mantissa bits), as ml_dtypes defines
/// them. One traits table describes all five; every operation is generic over the traits, so a new format is
/// one table line, and the tests iterate the table.
///
/// Rounding truth table for a float32 `x` cast to the format (round to nearest, ties to even):
///
/// | input                          | result                                                        |
/// |--------------------------------|---------------------------------------------------------------|
/// | ±0                             | ±0 (sign kept)                                                |
/// | below the smallest normal      | a subnormal code (or ±0), rounded on the subnormal grid         |
/// | finite, above the largest finite | `overflow` of the format: NaN (e4m3fn), ±inf (e5m2) or ±max |
/// | ±inf                           | NaN (e4m3fn), ±inf (e5m2), ±max (saturating formats)           |
/// | NaN                            | the format's NaN; formats without NaN give a zero (see `nanCode`) |
public struct MinifloatFormat: Sendable, Hashable, CustomStringConvertible {
    /// What a value larger than the largest finite value becomes.
    public enum Overflow: Sendable, Hashable {
        /// Rounds up into the NaN code (e4m3fn: the all-ones code is NaN, there is no infinity).
        case nan
        /// IEEE-style: the all-ones exponent holds ±inf and NaN.
        case infinity
        /// No inf, no NaN ("fn" formats of 6 and 4 bits): clamp to ±max.
        case saturate
    }

    public let name: String
    public let exponentBits: Int
    public let mantissaBits: Int
    public let bias: Int
    public let overflow: Overflow

    public var bitWidth: Int { 1 + exponentBits + mantissaBits }
    public var description: String { name }

    /// The five formats of ZeroQuant-FP / OCP (ALGORITHMS.md §4).
    public static let e4m3fn = MinifloatFormat(name: "e4m3fn", exponentBits: 4, mantissaBits: 3, bias: 7, overflow: .nan)
    public static let e5m2 = MinifloatFormat(name: "e5m2", exponentBits: 5, mantissaBits: 2, bias: 15, overflow: .infinity)
    public static let e3m2 = MinifloatFormat(name: "e3m2", exponentBits: 3, mantissaBits: 2, bias: 3, overflow: .saturate)
    public static let e2m3 = MinifloatFormat(name: "e2m3", exponentBits: 2, mantissaBits: 3, bias: 1, overflow: .saturate)
    public static let e2m1 = MinifloatFormat(name: "e2m1", exponentBits: 2, mantissaBits: 1, bias: 1, overflow: .saturate)

    /// The traits table.
    public static let all: [MinifloatFormat] = [.e4m3fn, .e5m2, .e3m2, .e2m3, .e2m1]

    /// Short names: `fp8` is E4M3 (the ZeroQuant-FP activation format), `fp6` E3M2, `fp4` E2M1.
    public static let aliases: [String: MinifloatFormat] = [
        "fp8": .e4m3fn, "fp8_e4m3": .e4m3fn, "e4m3": .e4m3fn, "fp8_e5m2": .e5m2, "fp6": .e3m2, "fp6_e3m2": .e3m2,
        "fp6_e2m3": .e2m3, "fp4": .e2m1, "fp4_e2m1": .e2m1,
    ]

    /// Looks a format up by name; accepts the ml_dtypes spellings (`float8_e4m3fn`, `float4_e2m1fn`, …) and
    /// the `aliases`.
    public static func named(_ name: String) throws -> MinifloatFormat {
        let key = name.lowercased()
        if let f = aliases[key] { return f }
        for f in all where key == f.name || key == "float\(f.bitWidth)_\(f.name)" || key == "float\(f.bitWidth)_\(f.name)fn"
            || key == f.name + "fn" {
            return f
        }
        throw SwiftQuantError.invalidArgument(
            "unknown floating-point format '\(name)'; expected one of \(all.map(\.name).joined(separator: ", "))")
    }

    var signShift: Int { exponentBits + mantissaBits }
    /// Largest code (without sign) that holds a finite value.
    public var maxFiniteCode: Int {
        switch overflow {
        case .nan: return (1 << signShift) - 2  // all ones is NaN
        case .infinity: return ((1 << exponentBits) - 1) << mantissaBits - 1  // below the inf/NaN exponent
        case .saturate: return (1 << signShift) - 1
        }
    }
    /// Largest finite value (448, 57344, 28, 7.5, 6).
    public var maxFinite: Float { decode(UInt8(maxFiniteCode)) }

    /// The code of NaN of the given sign. Formats without NaN follow ml_dtypes, which turns NaN into a zero
    /// whose sign is the opposite of the NaN's sign bit.
    func nanCode(negative: Bool) -> UInt32 {
        let s = UInt32(1) << UInt32(signShift)
        switch overflow {
        case .nan: return (negative ? s : 0) | (s - 1)
        case .infinity: return (negative ? s : 0) | UInt32(((1 << exponentBits) - 1) << mantissaBits) | UInt32(1 << (mantissaBits - 1))
        case .saturate: return negative ? 0 : s
        }
    }

    /// Encodes one float32 (the scalar definition; `encode(_:into:)` runs it over buffers).
    @inlinable
    public func encode(_ x: Float) -> UInt8 {
        UInt8(truncatingIfNeeded: encodeBits(x.bitPattern))
    }

    @usableFromInline
    func encodeBits(_ u: UInt32) -> UInt32 {
        let negative = u >> 31 != 0
        let sign: UInt32 = negative ? 1 << UInt32(signShift) : 0
        let a = u & 0x7FFF_FFFF
        if a > 0x7F80_0000 { return nanCode(negative: negative) }
        let m = UInt32(mantissaBits)
        let maxCode = UInt32(maxFiniteCode)
        var code: UInt32
        if a == 0x7F80_0000 {
            code = maxCode + 1  // infinity: handled by the overflow rule below
        } else {
            // Smallest normal of the format is 2^(1 - bias); float32 exponent field of it:
            let minNormalField = UInt32(127 + 1 - bias)
            if a >> 23 < minNormalField {
                // Subnormal range: count quanta of 2^(1 - bias - M), exactly (a power-of-two scaling), RNE.
                let x = Float(bitPattern: a)
                let scaled = x * Float(sign: .plus, exponent: bias - 1 + mantissaBits, significand: 1)
                code = UInt32(scaled.rounded(.toNearestOrEven))  // 2^M lands on the smallest normal's code
            } else if a >> 23 > minNormalField + UInt32((1 << exponentBits)) {
                code = maxCode + 1  // far beyond the range: overflow
            } else {
                // Normal: round the 23-bit mantissa to M bits, ties to even, then re-bias the exponent.
                let drop = 23 - m
                let half = (UInt32(1) << (drop - 1)) - 1
                let rounded = (a + half + ((a >> drop) & 1)) >> drop
                code = rounded - ((minNormalField - 1) << m)
            }
        }
        if code > maxCode {
            switch overflow {
            case .nan: return sign | (UInt32(1) << UInt32(signShift) - 1)
            case .infinity: return sign | UInt32(((1 << exponentBits) - 1) << mantissaBits)
            case .saturate: code = maxCode
            }
        }
        return sign | code
    }

    /// Decodes one code (bits above `bitWidth` are ignored).
    public func decode(_ code: UInt8) -> Float {
        let c = Int(code) & ((1 << bitWidth) - 1)
        let negative = c >> signShift != 0
        let e = (c >> mantissaBits) & ((1 << exponentBits) - 1)
        let f = c & ((1 << mantissaBits) - 1)
        let v: Float
        if overflow == .nan && (c & ((1 << signShift) - 1)) == (1 << signShift) - 1 {
            v = .nan
        } else if overflow == .infinity && e == (1 << exponentBits) - 1 {
            v = f == 0 ? .infinity : .nan
        } else if e == 0 {
            v = Float(f) * Float(sign: .plus, exponent: 1 - bias - mantissaBits, significand: 1)
        } else {
            v = Float(sign: .plus, exponent: e - bias, significand: 1 + Float(f) / Float(1 << mantissaBits))
        }
        return negative ? -v : v
    }

    /// All 2^bits decoded values, indexed by code.
    public var decodeTable: [Float] { (0..<(1 << bitWidth)).map { decode(UInt8($0)) } }

    public func encode(_ src: UnsafeBufferPointer<Float>, into dst: UnsafeMutableBufferPointer<UInt8>) {
        precondition(dst.count >= src.count)
        parallelFor(src.count, minChunk: 1 << 16) { range in
            for i in range { dst[i] = encode(src[i]) }
        }
    }

    public func decode(_ src: UnsafeBufferPointer<UInt8>, into dst: UnsafeMutableBufferPointer<Float>) {
        precondition(dst.count >= src.count)
        let table = decodeTable
        let mask = UInt8((1 << bitWidth) - 1)
        table.withUnsafeBufferPointer { t in
            for i in 0..<src.count { dst[i] = t[Int(src[i] & mask)] }
        }
    }
}
