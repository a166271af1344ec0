import Foundation

/// Everything that defines a quantization run, in one Codable value: the CLI, the C ABI (`sq_model_quantize`,
/// JSON) and Python all pass it, and presets and validation live here only.
///
/// JSON keys are snake_case (`group_size`, `aug_loss`). Missing budget fields (`epochs`, `nsamples`, `seqlen`,
/// `lr`) are taken from `preset`; `group_size` is a number of columns or `"per-row"` (null or absent: per row),
/// the `GroupSize` spelling of every layer.
///
/// Activations (weight-activation modes, ALGORITHMS.md §2b): `aformat` (or `abits: N` for `"intN"`) quantizes
/// every block linear's input per token; `kv_format` (or `kv_bits`) Q/K/V per head per token. Absent KV keys
/// follow the activation setting; `kv_bits: "none"` or `kv_format: null` leaves attention FP.
public struct QuantRecipe: Codable, Sendable, Equatable {
    public enum Method: String, Codable, Sendable, CaseIterable {
        /// Round-to-nearest, no calibration data.
        case rtn
        /// OmniQuant weight-only: Learnable Weight Clipping trained block by block (ALGORITHMS.md §1, §3).
        case omniquant
        /// GPTQ (ALGORITHMS.md §5) with INT (GPTQ's min/max policy) or minifloat grids, block by block.
        case gptq
        /// SmoothQuant: α-scales from the calibration statistics folded into norm → q/k/v and norm → gate/up
        /// (fc1), then RTN weights; no training, no shifts.
        case smoothquant
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
    /// Activation format of every block linear's input ("int4" … "int8", "e4m3fn", "e5m2"); nil: FP.
    public var aformat: String?
    /// Q/K/V format, per head per token; nil: attention FP.
    public var kvFormat: String?
    /// GPTQ: quantize columns in order of decreasing Hessian diagonal (`g_idx` records the groups).
    public var actOrder: Bool
    /// Low-rank compensation rank (ALGORITHMS.md §6) of every quantized linear; 0: off.
    public var lorcRank: Int
    /// OmniQuant: train the Learnable Equivalent Transformation with LWC (ALGORITHMS.md §2); default: with
    /// activation quantization, as the paper's weight-activation runs.
    public var let_: Bool
    /// LET and SmoothQuant shifts (δ); nil: the family's default (on for OPT, off for Llama/Qwen2).
    public var letShifts: Bool?
    /// LET also on the up → down pair (`down_scale`, gated MLPs): an extension beyond the paper (AWQ's pair),
    /// off by default.
    public var letDown: Bool
    /// SmoothQuant / LET initialisation migration strength α; default 0.5, and 0.75 for OmniQuant with INT
    /// activations of 4 bits or fewer (W4A4), as the paper's scripts (ALGORITHMS.md §2).
    public var alpha: Float
    /// LET's AdamW learning rate (LWC's is `lr`).
    public var letLr: Float
    /// OmniQuant: what training minimises per block (`mse`, the paper's; `relative`, beyond it).
    public var loss: CalibrationLoss
    /// OmniQuant with activations quantized: how training differentiates the activation and KV quantizers
    /// (`scale`, the paper's code and ALGORITHMS.md §1; `ste`, straight-through, beyond it).
    public var activationGradient: ActivationGradient
    /// OmniQuant: end each block with the LWC (and LET) parameters of the epoch whose mean training loss was the
    /// lowest, instead of the last epoch's (beyond the paper, whose code keeps the last; off by default).
    public var keepBest: Bool
    /// SmoothQuant and OmniQuant: how the (transformed) weights are finally rounded: `rtn` (to nearest on the grid,
    /// LWC's learned clipping included; the papers') or `gptq` (GPTQ's error-feedback sweep on the same grid, with
    /// Hessians of the transformed block's quantized-path inputs; llm-compressor's SmoothQuant → GPTQ recipe).
    public var weightRounding: WeightRounding
    /// Arithmetic of the matrix products while OmniQuant trains a block: `fp32`, or `bf16` (bf16 operands, fp32
    /// accumulation, on CPUs with AVX512-BF16 or AMX-BF16); parameters, norms, softmax and the loss stay fp32. The fused result
    /// is computed in fp32 either way.
    public var precision: GEMMPrecision

    /// `kvFormat`: not given (`.none`), the KV cache follows `aformat`; `.some(nil)` keeps attention FP.
    public init(method: Method, wformat: String, groupSize: GroupSize = 128, symmetric: Bool = false,
                preset: Preset = .paper, epochs: Int? = nil, nsamples: Int? = nil, seqlen: Int? = nil,
                lr: Float? = nil, augLoss: Bool? = nil, seed: UInt64 = 2, scaleConstraint: ScaleConstraint = .none,
                aformat: String? = nil, kvFormat: String?? = .none, actOrder: Bool = false, lorcRank: Int = 0,
                `let` let_: Bool? = nil, letShifts: Bool? = nil, letDown: Bool = false, alpha: Float? = nil, letLr: Float = 5e-3,
                precision: GEMMPrecision = .fp32, keepBest: Bool = false, loss: CalibrationLoss = .mse,
                activationGradient: ActivationGradient = .scale, weightRounding: WeightRounding = .rtn) {
        let b = preset.budget(method)
        self.method = method; self.wformat = wformat; self.groupSize = groupSize; self.symmetric = symmetric
        self.preset = preset; self.epochs = epochs ?? b.epochs; self.nsamples = nsamples ?? b.nsamples
        self.seqlen = seqlen ?? b.seqlen; self.lr = lr ?? b.lr; self.seed = seed
        self.scaleConstraint = scaleConstraint
        self.aformat = aformat
        switch kvFormat {
        case .none: self.kvFormat = aformat
        case .some(let k): self.kvFormat = k
        }
        self.actOrder = actOrder; self.lorcRank = lorcRank
        // OmniQuant's weight-activation mode is LWC + LET (ALGORITHMS.md §3); weight-only is LWC alone.
        self.let_ = let_ ?? (method == .omniquant && self.aformat != nil)
        self.letShifts = letShifts; self.letDown = letDown; self.letLr = letLr; self.precision = precision
        self.keepBest = keepBest; self.loss = loss; self.activationGradient = activationGradient
        self.weightRounding = weightRounding
        self.alpha = alpha ?? Self.paperAlpha(method: method, aformat: self.aformat)
        self.augLoss = augLoss ?? Self.paperAugLoss(method: method, preset: preset, wformat: wformat,
                                                    aformat: self.aformat)
    }

    /// `aug_loss` when not given: on where the paper's scripts turn it on (OmniQuant W2 weight-only and W4A4, at the
    /// paper's budget); off otherwise, and always at the CPU preset (its rows were measured without it).
    static func paperAugLoss(method: Method, preset: Preset, wformat: String, aformat: String?) -> Bool {
        guard method == .omniquant, preset == .paper else { return false }
        return aformat == nil ? wformat.lowercased() == "int2" : aformat!.lowercased() == "int4"
    }

    /// α when not given: 0.75 for OmniQuant's LET with INT activations of ≤ 4 bits (the paper's W4A4 scripts use it for
    /// OPT and Llama-2; SwiftQuant applies it to every family), 0.5 otherwise (SmoothQuant keeps its paper's 0.5).
    static func paperAlpha(method: Method, aformat: String?) -> Float {
        guard method == .omniquant, case .int(let bits)? = try? aformat.map(NumberFormat.parse), bits <= 4 else {
            return 0.5
        }
        return 0.75
    }

    /// Integer weights of `bits` bits.
    public init(method: Method, wbits: Int, groupSize: GroupSize = 128, preset: Preset = .paper) {
        self.init(method: method, wformat: "int\(wbits)", groupSize: groupSize, preset: preset)
    }

    enum CodingKeys: String, CodingKey {
        case method, wformat, wbits, groupSize = "group_size", symmetric, preset, epochs, nsamples, seqlen, lr
        case augLoss = "aug_loss", seed, scaleConstraint = "scale_constraint"
        case aformat, abits, kvFormat = "kv_format", kvBits = "kv_bits", actOrder = "act_order", lorcRank = "lorc_rank"
        case let_ = "let", letShifts = "let_shifts", letDown = "let_down", alpha, letLr = "let_lr", precision
        case keepBest = "keep_best", loss, activationGradient = "activation_gradient", weightRounding = "weight_rounding"
    }

    /// `abits: N` is a spelling of `aformat: "intN"`; both together are refused.
    private static func decodeActivationFormat(_ c: KeyedDecodingContainer<CodingKeys>) throws -> String? {
        let f = try c.decodeIfPresent(String.self, forKey: .aformat)
        let b = try c.decodeIfPresent(Int.self, forKey: .abits)
        switch (f, b) {
        case (let f?, nil): return f
        case (nil, let b?):
            guard (2...8).contains(b) else {
                throw SwiftQuantError.invalidArgument("abits must be in 2...8 (INT activations), got \(b)")
            }
            return "int\(b)"
        case (_?, _?):
            throw SwiftQuantError.invalidArgument("recipe: give abits (INT activations) or aformat (a format name), not both")
        case (nil, nil): return nil
        }
    }

    /// `.none`: not given (follows the activations); `.some(nil)`: attention FP.
    private static func decodeKV(_ c: KeyedDecodingContainer<CodingKeys>) throws -> String?? {
        let hasFormat = c.contains(.kvFormat), hasBits = c.contains(.kvBits)
        if hasFormat && hasBits {
            throw SwiftQuantError.invalidArgument("recipe: give kv_bits or kv_format, not both")
        }
        if hasFormat { return .some(try c.decodeNil(forKey: .kvFormat) ? nil : try c.decode(String.self, forKey: .kvFormat)) }
        if hasBits {
            if try c.decodeNil(forKey: .kvBits) { return .some(nil) }
            if let b = try? c.decode(Int.self, forKey: .kvBits) {
                guard (2...8).contains(b) else {
                    throw SwiftQuantError.invalidArgument("kv_bits must be in 2...8 or \"none\", got \(b)")
                }
                return .some("int\(b)")
            }
            let s = try c.decode(String.self, forKey: .kvBits)
            guard s.lowercased() == "none" else {
                throw SwiftQuantError.invalidArgument("kv_bits must be in 2...8 or \"none\", got '\(s)'")
            }
            return .some(nil)
        }
        return .none
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
                  augLoss: try c.decodeIfPresent(Bool.self, forKey: .augLoss),
                  seed: try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? 2,
                  scaleConstraint: try Self.decodeChoice(c, .scaleConstraint, default: ScaleConstraint.none,
                                                         choices: "m1, m2 or none"),
                  aformat: try Self.decodeActivationFormat(c), kvFormat: try Self.decodeKV(c),
                  actOrder: try c.decodeIfPresent(Bool.self, forKey: .actOrder) ?? false,
                  lorcRank: try c.decodeIfPresent(Int.self, forKey: .lorcRank) ?? 0,
                  let: try c.decodeIfPresent(Bool.self, forKey: .let_),
                  letShifts: try c.decodeIfPresent(Bool.self, forKey: .letShifts),
                  letDown: try c.decodeIfPresent(Bool.self, forKey: .letDown) ?? false,
                  alpha: try c.decodeIfPresent(Float.self, forKey: .alpha),
                  letLr: try c.decodeIfPresent(Float.self, forKey: .letLr) ?? 5e-3,
                  precision: try Self.decodeChoice(c, .precision, default: GEMMPrecision.fp32, choices: "fp32 or bf16"),
                  keepBest: try c.decodeIfPresent(Bool.self, forKey: .keepBest) ?? false,
                  loss: try Self.decodeChoice(c, .loss, default: CalibrationLoss.mse, choices: "mse or relative"),
                  activationGradient: try Self.decodeChoice(c, .activationGradient, default: ActivationGradient.scale,
                                                            choices: "scale or ste"),
                  weightRounding: try Self.decodeChoice(c, .weightRounding, default: WeightRounding.rtn,
                                                        choices: "rtn or gptq"))
    }

    /// A named choice (`loss`, `precision`, `scale_constraint`), case-insensitive; absent or null: `default`.
    private static func decodeChoice<V: RawRepresentable>(_ c: KeyedDecodingContainer<CodingKeys>, _ key: CodingKeys,
                                                          default d: V, choices: String) throws -> V
        where V.RawValue == String {
        guard try c.contains(key) && !c.decodeNil(forKey: key) else { return d }
        let name = try c.decode(String.self, forKey: key)
        guard let v = V(rawValue: name.lowercased()) else {
            throw SwiftQuantError.invalidArgument("recipe: \(key.stringValue) must be \(choices), got '\(name)'")
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
        try c.encode(aformat, forKey: .aformat); try c.encode(kvFormat, forKey: .kvFormat)
        try c.encode(actOrder, forKey: .actOrder); try c.encode(lorcRank, forKey: .lorcRank)
        try c.encode(let_, forKey: .let_); try c.encode(letShifts, forKey: .letShifts)
        if letDown { try c.encode(letDown, forKey: .letDown) }  // written only when on: older work dirs still resume
        try c.encode(alpha, forKey: .alpha); try c.encode(letLr, forKey: .letLr)
        try c.encode(precision.rawValue, forKey: .precision)
        if keepBest { try c.encode(keepBest, forKey: .keepBest) }  // written only when on, as let_down
        if loss != .mse { try c.encode(loss.rawValue, forKey: .loss) }
        if activationGradient != .scale { try c.encode(activationGradient.rawValue, forKey: .activationGradient) }
        if weightRounding != .rtn { try c.encode(weightRounding.rawValue, forKey: .weightRounding) }
    }

    /// The activation quantization of the quantized path and of the result's inference (nil: FP).
    public var activationScheme: ActivationScheme? {
        get throws {
            let s = try ActivationScheme(linear: aformat, kv: kvFormat)
            return s.isActive ? s : nil
        }
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

    /// Whether LET / SmoothQuant shifts are used on `model`'s family (OPT: on unless turned off).
    public func usesShifts(_ model: TransformerModel) -> Bool { letShifts ?? (model.modelType == "opt") }

    /// Checks every setting before any work starts (`model`: also against its shapes).
    public func validate(model: TransformerModel? = nil) throws {
        let fmt = try weightFormat
        try fmt.validate()
        try groupSize.validateSize()
        if case .int = fmt {
            try require(scaleConstraint == .none,
                        "scale_constraint \(scaleConstraint.rawValue) applies to minifloat weights (e2m1, …), not \(wformat)")
        }
        do { _ = try activationScheme } catch SwiftQuantError.invalidArgument(let m) {
            throw SwiftQuantError.invalidArgument("activation format: \(m)")
        }
        try require(lorcRank >= 0, "lorc_rank must be 0 (off) or a positive rank, got \(lorcRank)")
        try require(!actOrder || method == .gptq, "act_order is a GPTQ option (method \(method.rawValue))")
        try require(!let_ || method == .omniquant, "let (the learnable equivalent transformation) is an OmniQuant option")
        try require(!letDown || let_, "let_down adds a pair to LET: it needs let (OmniQuant with let true)")
        try require(loss == .mse || method == .omniquant, "loss \(loss.rawValue) is what OmniQuant's training minimises (method \(method.rawValue))")
        try require(!keepBest || method == .omniquant, "keep_best chooses among OmniQuant's training epochs (method \(method.rawValue))")
        try require(activationGradient == .scale || (method == .omniquant && (aformat != nil || kvFormat != nil)),
                    "activation_gradient says how OmniQuant trains through activation quantizers; this recipe has none")
        try require(weightRounding == .rtn || method == .omniquant || method == .smoothquant,
                    "weight_rounding gptq rounds SmoothQuant's or OmniQuant's transformed weights; for GPTQ alone use "
                        + "method gptq (method \(method.rawValue))")
        try require(method != .smoothquant || aformat != nil,
                    "smoothquant moves activation outliers into weights: give abits or aformat")
        try require(alpha > 0 && alpha < 1, "alpha must lie in (0, 1), got \(alpha)")
        try require(letLr > 0 && letLr.isFinite, "let_lr must be a positive number, got \(letLr)")
        if precision == .bf16 {
            try require(method == .omniquant,
                        "precision bf16 applies to OmniQuant's training (the block's products while LWC/LET learn); "
                            + "\(method.rawValue) trains nothing")
            try require(precision.isSupported,
                        "precision bf16 needs a CPU with AVX512-BF16 or AMX-BF16 (this one: \(SwiftQuantInfo.cpu)); "
                            + "use precision fp32")
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
            for l in m.blockSpec.linears {
                try cfg.validate(rows: l.outFeatures, cols: l.inFeatures)
                try require(lorcRank <= min(l.outFeatures, l.inFeatures),
                            "lorc_rank \(lorcRank) is larger than \(l.name)'s \(l.outFeatures) × \(l.inFeatures) matrix allows "
                                + "(at most \(min(l.outFeatures, l.inFeatures)))")
            }
            if let_ || method == .smoothquant {
                try require(!m.letPairs.isEmpty,
                            "\(method == .smoothquant ? "smoothquant" : "let") needs norm → linear pairs; \(m.modelType) declares none")
            }
            if letDown {
                let spec = m.blockSpec
                try require(spec.index(of: .gate) != nil && spec.index(of: .down) != nil,
                            "let_down: the up → down pair is exact only for gated MLPs (silu(gate) ⊙ up → down); "
                                + "\(m.modelType) has none")
            }
        }
    }
}

/// What OmniQuant's block-wise training minimises between the quantized block's output and its target.
/// How OmniQuant's training differentiates the dynamic activation and KV quantizers.
/// How SmoothQuant and OmniQuant round their (transformed) weights at the end of a block.
public enum WeightRounding: String, Sendable, CaseIterable {
    /// To nearest on the grid (LWC's learned clipping included): the papers'.
    case rtn
    /// GPTQ's sweep (ALGORITHMS.md §5) on the same grid, beyond the papers.
    case gptq
}

public enum ActivationGradient: String, Sendable, CaseIterable {
    /// As PyTorch autograd differentiates OmniQuant's `Q_a` (ALGORITHMS.md §1, "its `h` is not detached"):
    /// `round_ste`, plus the path through each token's scale to its largest and smallest values
    /// (`DynamicActivationQuantizer.backward`). The default.
    case scale
    /// Straight-through: the gradient passes every quantizer unchanged (beyond the paper; how SwiftQuant trained
    /// until 2026-12-07).
    case ste
}

public enum CalibrationLoss: String, Sendable, CaseIterable {
    /// Mean squared error over every element (the paper's, ALGORITHMS.md §3).
    case mse
    /// Each token's squared error rescaled to the window's mean token energy (`Autodiff.RelativeMSELoss`): beyond
    /// the paper. Under plain MSE a window's massive-activation tokens own the loss (SmolLM2's first token holds 98%
    /// of it from block 12 on); here every token's relative error counts alike.
    case relative
}
