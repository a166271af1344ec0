import Foundation

/// How scale and zero-point are chosen from a group's range (ALGORITHMS.md §1).
public enum QParamsPolicy: String, Sendable, CaseIterable {
    /// OmniQuant: the range is [min, max] of the group (0 not forced in), optionally clipped by LWC's
    /// multipliers; `h` clamped to [1e-5, 1e4]; symmetric uses `absmax / (2^(N-1) - 1)` and `z = 2^(N-1) - 1`.
    case minmax
    /// GPTQ: 0 is forced into the range; symmetric uses `2·absmax / (2^N - 1)` and `z = 2^(N-1)`.
    case gptq
}

/// Power-of-two constraints on minifloat scales (ZeroQuant-FP; ALGORITHMS.md §4) that make an FP4 → FP8
/// conversion an exponent shift.
public enum ScaleConstraint: String, Sendable, CaseIterable {
    case none
    /// `ŝ = 2^⌈log2 s⌉` per group.
    case m1
    /// `c = max_g s` per row, `ŝ = c · 2^⌈log2(s / c)⌉`, exponent not below −8.
    case m2
}

/// How many consecutive input columns share one scale (and zero-point): a positive number of columns, or one
/// group per output row. The one type for group sizes; every layer spells the two cases the same way:
///
/// | layer | one group per row | groups of 128 columns |
/// |---|---|---|
/// | Swift | `GroupSize.perRow` (or `nil` as a literal) | `.columns(128)` (or `128` as a literal) |
/// | C ABI (`swiftquant.h`) | `SQ_GROUP_PER_ROW` (the value 0) | `128` |
/// | Python | `group_size=None` or `"per-row"` | `group_size=128` |
/// | CLI | `--group-size per-row` | `--group-size 128` |
/// | `swiftquant.json`, `config.json`'s `swiftquant` entry | `"per-row"` | `128` |
///
/// Zero and negative sizes are errors everywhere except as the C encoding of `.perRow` (`init(abi:)`), so a 0 never
/// silently means "per row" where a user typed it. A size that does not divide the row leaves a shorter last
/// group whose range is taken over its real elements only (no padding).
public enum GroupSize: Hashable, Sendable, CustomStringConvertible, ExpressibleByIntegerLiteral,
    ExpressibleByNilLiteral
{
    case perRow
    case columns(Int)

    public init(integerLiteral value: Int) { self = .columns(value) }
    public init(nilLiteral: ()) { self = .perRow }

    /// `nil` → `.perRow`, `n` → `.columns(n)` (checked by `validate(cols:)`).
    public init(_ columns: Int?) { self = columns.map { .columns($0) } ?? .perRow }

    /// The C ABI's encoding: `SQ_GROUP_PER_ROW` (0) or a positive size; negative values are an error.
    public init(abi value: Int64) throws {
        try require(value >= 0, "group size must be positive (or SQ_GROUP_PER_ROW, 0, for one group per row), got \(value)")
        self = value == 0 ? .perRow : .columns(Int(value))
    }

    /// `"per-row"` or a positive number of columns (the CLI's and the files' spelling).
    public static func parse(_ text: String) throws -> GroupSize {
        let t = text.trimmingCharacters(in: .whitespaces).lowercased()
        if t == "per-row" { return .perRow }
        guard let n = Int(t) else {
            throw SwiftQuantError.invalidArgument("group size must be a positive number of columns or 'per-row', got '\(text)'")
        }
        let g = GroupSize.columns(n)
        try g.validateSize()
        return g
    }

    /// The number of columns, or nil for one group per row.
    public var columns: Int? { if case .columns(let n) = self { return n } else { return nil } }

    /// `SQ_GROUP_PER_ROW` (0) or the size, for the C ABI.
    public var abiValue: Int64 { Int64(columns ?? 0) }

    /// `"per-row"` or the size in decimal.
    public var description: String { columns.map(String.init) ?? "per-row" }

    /// Group width for rows of `cols` elements (a size larger than the row is one group per row).
    public func width(cols: Int) -> Int { Swift.min(columns ?? cols, Swift.max(cols, 1)) }

    /// Groups per row of `cols` elements: `ceil(cols / width)`.
    public func count(cols: Int) -> Int {
        let g = width(cols: cols)
        return g <= 0 ? 0 : (cols + g - 1) / g
    }

    /// The size alone: positive, or `.perRow`.
    public func validateSize() throws {
        if let n = columns {
            try require(n > 0, "group size must be positive, got \(n) (use per-row for one group per row)")
        }
    }

    /// The size against rows of `cols` columns: positive and not larger than the row. The one place that checks it.
    public func validate(cols: Int) throws {
        try validateSize()
        if let n = columns { try require(n <= cols, "group size \(n) is larger than the row (\(cols) columns)") }
    }
}

/// Everything that defines a weight quantizer: format, granularity and policy.
public struct QuantizerConfig: Sendable, Hashable, CustomStringConvertible {
    public var format: NumberFormat
    /// Consecutive input columns sharing a scale, or one group per row.
    public var groupSize: GroupSize
    /// Symmetric INT grid (ignored by minifloats, which are always symmetric).
    public var symmetric: Bool
    public var policy: QParamsPolicy
    public var scaleConstraint: ScaleConstraint

    public init(format: NumberFormat, groupSize: GroupSize = 128, symmetric: Bool = false,
                policy: QParamsPolicy = .minmax, scaleConstraint: ScaleConstraint = .none) {
        self.format = format
        self.groupSize = groupSize
        self.symmetric = symmetric
        self.policy = policy
        self.scaleConstraint = scaleConstraint
    }

    /// The former spelling (`nil` = one group per row), for callers still holding an `Int?`.
    @_disfavoredOverload
    public init(format: NumberFormat, groupSize: Int?, symmetric: Bool = false, policy: QParamsPolicy = .minmax,
                scaleConstraint: ScaleConstraint = .none) {
        self.init(format: format, groupSize: GroupSize(groupSize), symmetric: symmetric, policy: policy,
                  scaleConstraint: scaleConstraint)
    }

    /// Group width for rows of `cols` elements.
    public func groupWidth(cols: Int) -> Int { groupSize.width(cols: cols) }

    public func groupCount(cols: Int) -> Int { groupSize.count(cols: cols) }

    public var isInteger: Bool { if case .int = format { return true } else { return false } }

    /// The integer grid of an INT format (nil for minifloats).
    public var intGrid: IntGrid? {
        if case .int(let bits) = format { return IntGrid(bits: bits, symmetric: symmetric, policy: policy) }
        return nil
    }

    public var description: String {
        var s = format.name + (groupSize.columns.map { " g\($0)" } ?? " per-row")
        if isInteger { s += symmetric ? " sym" : " asym" }
        if policy != .minmax { s += " \(policy.rawValue)" }
        if scaleConstraint != .none { s += " \(scaleConstraint.rawValue)" }
        return s
    }

    /// Checks the settings against a [rows, cols] matrix; every impossible combination is an error here.
    public func validate(rows: Int, cols: Int) throws {
        try format.validate()
        try require(rows > 0 && cols > 0, "the matrix is empty: [\(rows), \(cols)]")
        try groupSize.validate(cols: cols)
        if isInteger {
            try require(scaleConstraint == .none, "scale constraints (m1, m2) apply to floating-point formats only")
        } else {
            try require(policy == .minmax, "the \(policy.rawValue) policy applies to integer formats only")
        }
    }
}
