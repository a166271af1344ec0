/// What a linear does inside its block. The block forward (`BlockGraph`) wires linears by role, never by name.
public enum LinearRole: String, Sendable, Codable, CaseIterable {
    case q, k, v, o
    /// The gated MLP's gate (Llama `mlp.gate_proj`).
    case gate
    /// The MLP's first projection: Llama `mlp.up_proj`, OPT `fc1`.
    case up
    /// The MLP's last projection: Llama `mlp.down_proj`, OPT `fc2`.
    case down
}

/// One decoder block described as data: every family adapter returns one, and a single forward (`BlockGraph`)
/// runs it for inference, evaluation, calibration (with a tape for the backward pass) and input capture.
///
/// The block is pre-norm: `h = x + o(attn(norm₁(x)))`, `y = h + mlp(norm₂(h))`, where `attn` is causal
/// softmax attention with grouped-query heads (optionally RoPE on q and k) and `mlp` is either
/// `down(SiLU(gate(x)) ⊙ up(x))` or `down(ReLU(up(x)))`.
public struct BlockSpec: Sendable, Equatable {
    public enum NormKind: String, Sendable, Equatable { case rms, layer }
    public enum MLPKind: String, Sendable, Equatable { case gatedSiLU, relu }

    public struct LinearSpec: Sendable, Equatable {
        /// Block-relative Hugging Face name, e.g. "self_attn.q_proj".
        public var name: String
        public var role: LinearRole
        public var outFeatures: Int
        public var inFeatures: Int
        public var bias: Bool
        public init(_ name: String, _ role: LinearRole, out: Int, in inFeatures: Int, bias: Bool) {
            self.name = name; self.role = role; self.outFeatures = out; self.inFeatures = inFeatures; self.bias = bias
        }
    }

    public struct NormSpec: Sendable, Equatable {
        public var name: String
        public var kind: NormKind
        public var eps: Float
        /// LayerNorm without `elementwise_affine` has neither weight nor bias.
        public var affine: Bool
        public var bias: Bool
        public init(_ name: String, _ kind: NormKind, eps: Float, affine: Bool = true, bias: Bool = false) {
            self.name = name; self.kind = kind; self.eps = eps; self.affine = affine; self.bias = bias
        }
    }

    public var hidden: Int
    public var heads: Int
    public var kvHeads: Int
    public var headDim: Int
    /// Width of the MLP's hidden layer.
    public var ffn: Int
    /// Rotary positions on q and k (Llama family); false when positions are added to the embeddings (OPT).
    public var rope: Bool
    public var mlp: MLPKind
    public var attentionNorm: NormSpec
    public var mlpNorm: NormSpec
    /// Every linear, in execution order.
    public var linears: [LinearSpec]
    /// Where LET scales fold, as data (ALGORITHMS.md §2).
    public var letPairs: [LETPair]

    public init(hidden: Int, heads: Int, kvHeads: Int, headDim: Int, ffn: Int, rope: Bool, mlp: MLPKind,
                attentionNorm: NormSpec, mlpNorm: NormSpec, linears: [LinearSpec], letPairs: [LETPair]) {
        self.hidden = hidden; self.heads = heads; self.kvHeads = kvHeads; self.headDim = headDim; self.ffn = ffn
        self.rope = rope; self.mlp = mlp; self.attentionNorm = attentionNorm; self.mlpNorm = mlpNorm
        self.linears = linears; self.letPairs = letPairs
    }

    public var qDim: Int { heads * headDim }
    public var kvDim: Int { kvHeads * headDim }
    public var linearNames: [String] { linears.map(\.name) }

    /// Index in `linears` of the linear with `role`.
    public func index(of role: LinearRole) -> Int? { linears.firstIndex { $0.role == role } }

    /// Checks that the description is a block the forward can run.
    public func validate() throws {
        try require(hidden > 0 && ffn > 0 && headDim > 0, "block: hidden, ffn and head_dim must be positive")
        try require(heads > 0 && kvHeads > 0 && heads % kvHeads == 0,
                    "block: heads (\(heads)) must be a positive multiple of kv heads (\(kvHeads))")
        try require(!rope || headDim % 2 == 0, "block: rotary positions need an even head_dim, got \(headDim)")
        let want: [LinearRole: (Int, Int)] = [
            .q: (qDim, hidden), .k: (kvDim, hidden), .v: (kvDim, hidden), .o: (hidden, qDim),
            .gate: (ffn, hidden), .up: (ffn, hidden), .down: (hidden, ffn),
        ]
        let roles: [LinearRole] = mlp == .gatedSiLU ? LinearRole.allCases : [.q, .k, .v, .o, .up, .down]
        try require(linears.count == roles.count && Set(linears.map(\.role)) == Set(roles),
                    "block: linears must have the roles \(roles.map(\.rawValue)), got \(linears.map(\.role.rawValue))")
        for l in linears {
            let (o, i) = want[l.role]!
            try require(l.outFeatures == o && l.inFeatures == i,
                        "block: \(l.name) is [\(l.outFeatures), \(l.inFeatures)], its role \(l.role) needs [\(o), \(i)]")
        }
    }
}
