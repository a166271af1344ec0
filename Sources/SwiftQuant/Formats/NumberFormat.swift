/// The element format of quantized values: an unsigned integer grid of 2–8 bits (with a zero-point), or a
/// minifloat (with a scale only).
public enum NumberFormat: Hashable, Sendable, CustomStringConvertible {
    case int(bits: Int)
    case minifloat(MinifloatFormat)

    /// `"int2"` … `"int8"`, or a minifloat name (`"e4m3fn"`, `"e5m2"`, `"e3m2"`, `"e2m3"`, `"e2m1"`).
    public static func parse(_ name: String) throws -> NumberFormat {
        let key = name.lowercased()
        if key.hasPrefix("int") || key.hasPrefix("uint") {
            let digits = key.drop { !$0.isNumber }
            guard let bits = Int(digits), !digits.isEmpty else {
                throw SwiftQuantError.invalidArgument("unknown format '\(name)'; integer formats are int2 … int8")
            }
            try require((2...8).contains(bits), "format '\(name)': integer formats have 2 to 8 bits, got \(bits)")
            return .int(bits: bits)
        }
        do {
            return .minifloat(try MinifloatFormat.named(key))
        } catch {
            throw SwiftQuantError.invalidArgument(
                "unknown format '\(name)'; expected int2 … int8 or one of "
                    + MinifloatFormat.all.map(\.name).joined(separator: ", "))
        }
    }

    public var bitWidth: Int {
        switch self {
        case .int(let bits): return bits
        case .minifloat(let f): return f.bitWidth
        }
    }

    public var name: String {
        switch self {
        case .int(let bits): return "int\(bits)"
        case .minifloat(let f): return f.name
        }
    }

    public var description: String { name }

    public func validate() throws {
        if case .int(let bits) = self {
            try require((2...8).contains(bits), "integer formats have 2 to 8 bits, got \(bits)")
        }
    }
}
