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

/// Everything that defines a weight quantizer: format, granularity and policy.
public struct QuantizerConfig: Sendable, Hashable, CustomStringConvertible {
    public var format: NumberFormat
    /// Consecutive input columns sharing a scale; `nil` = one group per row. A size not dividing the row
    /// leaves a shorter last group whose range is taken over its real elements only (no padding).
    public var groupSize: Int?
    /// Symmetric INT grid (ignored by minifloats, which are always symmetric).
    public var symmetric: Bool
    public var policy: QParamsPolicy
    public var scaleConstraint: ScaleConstraint

    public init(format: NumberFormat, groupSize: Int? = 128, symmetric: Bool = false, policy: QParamsPolicy = .minmax,
                scaleConstraint: ScaleConstraint = .none) {
        self.format = format
        self.groupSize = groupSize
        self.symmetric = symmetric
        self.policy = policy
        self.scaleConstraint = scaleConstraint
    }

    /// Group width for rows of `cols` elements.
    public func groupWidth(cols: Int) -> Int { min(groupSize ?? cols, max(cols, 1)) }

    public func groupCount(cols: Int) -> Int {
        let g = groupWidth(cols: cols)
        return g == 0 ? 0 : (cols + g - 1) / g
    }

    public var isInteger: Bool { if case .int = format { return true } else { return false } }

    public var description: String {
        var s = format.name + (groupSize.map { " g\($0)" } ?? " per-row")
        if isInteger { s += symmetric ? " sym" : " asym" }
        if policy != .minmax { s += " \(policy.rawValue)" }
        if scaleConstraint != .none { s += " \(scaleConstraint.rawValue)" }
        return s
    }

    /// Checks the settings against a [rows, cols] matrix; every impossible combination is an error here.
    public func validate(rows: Int, cols: Int) throws {
        try format.validate()
        try require(rows > 0 && cols > 0, "the matrix is empty: [\(rows), \(cols)]")
        if let g = groupSize {
            try require(g > 0, "group size must be positive, got \(g) (use nil for one group per row)")
            try require(g <= cols, "group size \(g) is larger than the row (\(cols) columns)")
        }
        if isInteger {
            try require(scaleConstraint == .none, "scale constraints (m1, m2) apply to floating-point formats only")
        } else {
            try require(policy == .minmax, "the \(policy.rawValue) policy applies to integer formats only")
        }
    }
}
