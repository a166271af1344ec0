import Foundation

/// How a model's activations are quantized (simulated, dynamic; ALGORITHMS.md §2b), at calibration on the
/// quantized path and at inference of the quantized model:
///
/// - `linear`: the input of every block linear, per token (q/k/v share one quantized input, gate/up another).
///   INT2…8: asymmetric MinMax (OmniQuant's `Q_a`); a minifloat: symmetric absmax (ZeroQuant-FP).
/// - `kv`: Q and K after RoPE, and V, per head per token (groups of `head_dim` features), the KV cache of a
///   runtime. The softmax probabilities, embeddings, norms, the final norm and the LM head stay FP.
///
/// Either may be nil (not quantized). `ActivationScheme()` quantizes nothing.
public struct ActivationScheme: Equatable, Sendable, CustomStringConvertible {
    public var linear: NumberFormat?
    public var kv: NumberFormat?

    public init(linear: NumberFormat? = nil, kv: NumberFormat? = nil) throws {
        try linear?.validate()
        try kv?.validate()
        self.linear = linear
        self.kv = kv
    }

    /// From format names ("int8", "e4m3fn"; nil = FP).
    public init(linear: String?, kv: String?) throws {
        try self.init(linear: try linear.map(Self.parse), kv: try kv.map(Self.parse))
    }

    /// An activation format name: "int2" … "int8" or a minifloat; the error names the setting.
    static func parse(_ name: String) throws -> NumberFormat {
        let f = try NumberFormat.parse(name)
        try f.validate()
        return f
    }

    public var isActive: Bool { linear != nil || kv != nil }

    /// E.g. `A8 int8 per token, KV int8 per head` or `FP activations`.
    public var description: String {
        guard isActive else { return "FP activations" }
        let a = linear.map { "A\($0.bitWidth) \($0.name) per token" } ?? "FP linear inputs"
        let k = kv.map { "KV \($0.name) per head" } ?? "FP attention"
        return a + ", " + k
    }

    /// The quantizer of every block linear's input (one instance: linears sharing an input quantize it once).
    public func linearQuantizer() -> ActivationQuantizer? {
        linear.map { try! DynamicActivationQuantizer(format: $0) }  // validated in init
    }

    /// The quantizer of Q, K (after RoPE) and V: groups of `headDim` features.
    public func kvQuantizer(headDim: Int) -> ActivationQuantizer? {
        kv.map { try! DynamicActivationQuantizer(format: $0, width: max(headDim, 1)) }
    }

    /// `hooks` (or empty hooks for `count` linears) with this scheme's input quantizer on every linear that has
    /// none of its own.
    func merged(into hooks: [LinearHooks]?, count: Int) -> [LinearHooks]? {
        guard let q = linearQuantizer() else { return hooks }
        var h = hooks ?? Array(repeating: LinearHooks(), count: count)
        for i in h.indices where h[i].input == nil { h[i].input = q }
        return h
    }

    // MARK: saved form

    /// The entries a saved model's `config.json` (`swiftquant` object) records: `aformat` and `kv_format`,
    /// each a format name or null.
    public var jsonObject: [String: Any] {
        ["aformat": linear?.name as Any? ?? NSNull(), "kv_format": kv?.name as Any? ?? NSNull()]
    }

    /// Reads `jsonObject`'s entries back (absent or null: FP).
    public init(jsonObject o: [String: Any]) throws {
        func name(_ key: String) throws -> String? {
            guard let v = o[key], !(v is NSNull) else { return nil }
            guard let s = v as? String else {
                throw SwiftQuantError.format("swiftquant.\(key) must be a format name or null, got \(v)")
            }
            return s
        }
        try self.init(linear: try name("aformat"), kv: try name("kv_format"))
    }
}
