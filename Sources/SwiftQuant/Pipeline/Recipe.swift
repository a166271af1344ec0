import Foundation

/// Everything that defines a quantization run, in one Codable value: the CLI, the C ABI (`sq_model_quantize`,
/// JSON) and Python all pass it, and presets and validation live here only.
///
/// JSON keys are snake_case (`group_size`, `aug_loss`). Missing budget fields (`epochs`, `nsamples`, `seqlen`,
/// `lr`) are taken from `preset`; `group_size` is a number of columns or `"per-row"` (null or absent: per row),
/// the `GroupSize` spelling of every layer.
public struct QuantRecipe: Codable, Sendable, Equatable {
    public enum Method: String, Codable, Sendable, CaseIterable {
        /// Round-to-nearest, no calibration data.
        case rtn
        /// OmniQuant weight-only: Learnable Weight Clipping trained block by block (ALGORITHMS.md §1, §3).
        case omniquant
        /// GPTQ (ALGORITHMS.md §5) with INT (GPTQ's min/max policy) or minifloat grids, block by block.
        case gptq
    }

    /// Calibration budgets. `paper`: 128 windows × 2048 tokens, 20 epochs, lr 1e-2 (the paper's scripts).
    /// `cpu`: 16 × 512 tokens, 5 epochs, lr 5e-2 — minutes on a 2-core CPU; the larger rate makes up for 32×
    /// fewer steps (on SmolLM2 W3 g128 it recovered 72% of RTN's perplexity gap where 32 × 512 at 1e-2
    /// recovered 46%).
    public enum Preset: String, Codable, Sendable, CaseIterable {
        case paper, cpu
        /// GPTQ trains nothing: its CPU budget is 32 × 512 tokens (about a minute on SmolLM2 on 2 cores).
        func budget(_ method: Method) -> (epochs: Int, nsamples: Int, seqlen: Int, lr: Float) {
            switch (self, method) {
            case (.paper, _): return (20, 128, 2048, 1e-2)
            case (.cpu, .gptq): return (1, 32, 512, 1e-2)
            case (.cpu, _): return (5, 16, 512, 5e-2)
            }
        }
    }

    public var method: Method
    /// Weight format name: "int2" … "int8" or a minifloat ("e2m1", …).
    public var wformat: String
    /// Consecutive input columns per scale, or one group per output row.
    public var groupSize: GroupSize
    public var symmetric: Bool
    public var preset: Preset
    public var epochs: Int
    public var nsamples: Int
    public var seqlen: Int
    public var lr: Float
    public var augLoss: Bool
    public var seed: UInt64
    /// Power-of-two scale constraint of minifloat weights (ZeroQuant-FP's M1/M2; ALGORITHMS.md §4), applied inside
    /// GPTQ's sweep and by RTN.
    public var scaleConstraint: ScaleConstraint

    public init(method: Method, wformat: String, groupSize: GroupSize = 128, symmetric: Bool = false,
                preset: Preset = .paper, epochs: Int? = nil, nsamples: Int? = nil, seqlen: Int? = nil,
                lr: Float? = nil, augLoss: Bool = false, seed: UInt64 = 2, scaleConstraint: ScaleConstraint = .none) {
        let b = preset.budget(method)
        self.method = method; self.wformat = wformat; self.groupSize = groupSize; self.symmetric = symmetric
        self.preset = preset; self.epochs = epochs ?? b.epochs; self.nsamples = nsamples ?? b.nsamples
        self.seqlen = seqlen ?? b.seqlen; self.lr = lr ?? b.lr; self.augLoss = augLoss; self.seed = seed
        self.scaleConstraint = scaleConstraint
    }

    /// Integer weights of `bits` bits.
    public init(method: Method, wbits: Int, groupSize: GroupSize = 128, preset: Preset = .paper) {
        self.init(method: method, wformat: "int\(wbits)", groupSize: groupSize, preset: preset)
    }

    enum CodingKeys: String, CodingKey {
        case method, wformat, wbits, groupSize = "group_size", symmetric, preset, epochs, nsamples, seqlen, lr
        case augLoss = "aug_loss", seed, scaleConstraint = "scale_constraint"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        // `wbits: N` is a spelling of `wformat: "intN"` (the CLI's --wbits, Python's wbits=).
        let format: String
        switch (try c.decodeIfPresent(String.self, forKey: .wformat), try c.decodeIfPresent(Int.self, forKey: .wbits)) {
        case (let f?, nil): format = f
        case (nil, let b?):
            guard (2...8).contains(b) else { throw SwiftQuantError.invalidArgument("wbits must be in 2...8, got \(b)") }
            format = "int\(b)"
        case (_?, _?): throw SwiftQuantError.invalidArgument("recipe: give wformat or wbits, not both")
        case (nil, nil): throw SwiftQuantError.invalidArgument("recipe: missing 'wformat' (or 'wbits')")
        }
        self.init(method: try c.decode(Method.self, forKey: .method), wformat: format,
                  groupSize: try Self.decodeGroupSize(c),
                  symmetric: try c.decodeIfPresent(Bool.self, forKey: .symmetric) ?? false,
                  preset: try c.decodeIfPresent(Preset.self, forKey: .preset) ?? .paper,
                  epochs: try c.decodeIfPresent(Int.self, forKey: .epochs),
                  nsamples: try c.decodeIfPresent(Int.self, forKey: .nsamples),
                  seqlen: try c.decodeIfPresent(Int.self, forKey: .seqlen),
                  lr: try c.decodeIfPresent(Float.self, forKey: .lr),
                  augLoss: try c.decodeIfPresent(Bool.self, forKey: .augLoss) ?? false,
                  seed: try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? 2,
                  scaleConstraint: try Self.decodeConstraint(c))
    }

    private static func decodeConstraint(_ c: KeyedDecodingContainer<CodingKeys>) throws -> ScaleConstraint {
        guard try c.contains(.scaleConstraint) && !c.decodeNil(forKey: .scaleConstraint) else { return .none }
        let name = try c.decode(String.self, forKey: .scaleConstraint)
        guard let v = ScaleConstraint(rawValue: name.lowercased()) else {
            throw SwiftQuantError.invalidArgument("recipe: scale_constraint must be m1, m2 or none, got '\(name)'")
        }
        return v
    }

    private static func decodeGroupSize(_ c: KeyedDecodingContainer<CodingKeys>) throws -> GroupSize {
        if try !c.contains(.groupSize) || c.decodeNil(forKey: .groupSize) { return .perRow }
        if let n = try? c.decode(Int.self, forKey: .groupSize) { return .columns(n) }
        guard let text = try? c.decode(String.self, forKey: .groupSize) else {
            throw SwiftQuantError.invalidArgument("recipe: group_size must be a number of columns or \"per-row\"")
        }
        return try GroupSize.parse(text)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(method, forKey: .method); try c.encode(wformat, forKey: .wformat)
        if let n = groupSize.columns { try c.encode(n, forKey: .groupSize) } else { try c.encode("per-row", forKey: .groupSize) }
        try c.encode(symmetric, forKey: .symmetric)
        try c.encode(preset, forKey: .preset); try c.encode(epochs, forKey: .epochs)
        try c.encode(nsamples, forKey: .nsamples); try c.encode(seqlen, forKey: .seqlen); try c.encode(lr, forKey: .lr)
        try c.encode(augLoss, forKey: .augLoss); try c.encode(seed, forKey: .seed)
        try c.encode(scaleConstraint.rawValue, forKey: .scaleConstraint)
    }

    /// Parses a recipe from JSON, naming the bad field on failure.
    public static func fromJSON(_ json: String) throws -> QuantRecipe {
        do {
            return try JSONDecoder().decode(QuantRecipe.self, from: Data(json.utf8))
        } catch let DecodingError.dataCorrupted(ctx) {
            let field = ctx.codingPath.map(\.stringValue).joined(separator: ".")
            throw SwiftQuantError.invalidArgument(field.isEmpty ? "recipe: not valid JSON (\(ctx.debugDescription))"
                                                  : "recipe: invalid value for '\(field)' (\(ctx.debugDescription))")
        } catch let DecodingError.keyNotFound(key, _) {
            throw SwiftQuantError.invalidArgument("recipe: missing '\(key.stringValue)'")
        } catch let DecodingError.typeMismatch(_, ctx) {
            throw SwiftQuantError.invalidArgument("recipe: wrong type for '\(ctx.codingPath.map(\.stringValue).joined(separator: "."))'")
        } catch let DecodingError.valueNotFound(_, ctx) {
            throw SwiftQuantError.invalidArgument("recipe: no value for '\(ctx.codingPath.map(\.stringValue).joined(separator: "."))'")
        }
    }

    /// Canonical JSON (sorted keys): what a work directory is fingerprinted with, and what the C ABI returns.
    public var json: String {
        let e = JSONEncoder()
        e.outputFormatting = .sortedKeys
        return String(decoding: (try? e.encode(self)) ?? Data(), as: UTF8.self)
    }

    public var weightFormat: NumberFormat { get throws { try NumberFormat.parse(wformat) } }

    public var quantizerConfig: QuantizerConfig {
        get throws {
            let f = try weightFormat
            var isInt = false
            if case .int = f { isInt = true }
            // GPTQ's INT grid forces 0 into the range (§1); OmniQuant and RTN use the min/max policy.
            return QuantizerConfig(format: f, groupSize: groupSize, symmetric: symmetric,
                                   policy: method == .gptq && isInt ? .gptq : .minmax, scaleConstraint: scaleConstraint)
        }
    }

    /// Does the method read calibration text?
    public var needsCalibrationData: Bool { method != .rtn }

    /// Checks every setting before any work starts (`model`: also against its shapes).
    public func validate(model: TransformerModel? = nil) throws {
        let fmt = try weightFormat
        try fmt.validate()
        try groupSize.validateSize()
        if case .int = fmt {
            try require(scaleConstraint == .none,
                        "scale_constraint \(scaleConstraint.rawValue) applies to minifloat weights (e2m1, …), not \(wformat)")
        }
        if needsCalibrationData {
            try require(nsamples > 0, "nsamples must be positive, got \(nsamples)")
            try require(seqlen >= 2, "seqlen must be at least 2, got \(seqlen)")
        }
        if method == .omniquant {
            guard case .int(let bits) = fmt else {
                throw SwiftQuantError.invalidArgument("omniquant quantizes to integer formats (int2…int8), not \(wformat)")
            }
            try require((2...8).contains(bits), "omniquant: wbits must be in 2...8, got \(bits)")
            try require(epochs > 0, "epochs must be positive, got \(epochs)")
            try require(nsamples > 0, "nsamples must be positive, got \(nsamples)")
            try require(seqlen >= 2, "seqlen must be at least 2, got \(seqlen)")
            try require(lr > 0 && lr.isFinite, "lr must be a positive number, got \(lr)")
        }
        if let m = model {
            if needsCalibrationData {
                try require(seqlen <= m.maxSequenceLength,
                            "seqlen \(seqlen) is longer than this model's \(m.maxSequenceLength) positions")
            }
            let cfg = try quantizerConfig
            for l in m.blockSpec.linears { try cfg.validate(rows: l.outFeatures, cols: l.inFeatures) }
        }
    }
}
