import CSQSupport
import Foundation

/// A quantized Llama-family model as a GGUF file llama.cpp runs (`general.architecture = llama`).
///
/// **Block linears with SwiftQuant codes** (`QuantizationState.tensors`) are written from the codes, not
/// re-quantized, when the grid maps onto a ggml block type exactly. ggml blocks are 32 consecutive values of a
/// row; a block lies inside one SwiftQuant group when the rows and the group width are multiples of 32 (a ragged
/// last group, e.g. 576 = 4·128 + 64, still tiles), and then, with `h` the group's scale and `z` its zero-point:
///
/// | SwiftQuant grid | ggml type | block | value in llama.cpp |
/// |---|---|---|---|
/// | INT4 asymmetric | Q4_1 | `d = fp16(h)`, `m = fp16(−z·h)`, nibble = code | `d·nibble + m` |
/// | INT4 symmetric | Q4_0 | `d = ±fp16(h)`, nibble = `8 ± (code − z)` | `d·(nibble − 8)` = `fp16(h)·(code − z)` |
/// | INT8 symmetric | Q8_0 | `d = ±fp16(h)`, q = `±(code − z)` | `d·q` = `fp16(h)·(code − z)` |
///
/// The sign is chosen per block so the shifted codes fit: OmniQuant's symmetric grid has `z = 2^(N−1) − 1`
/// (7 for INT4, codes 0…15, so code − 7 ∈ [−7, 8]: `d = −h`, nibble = 15 − code), GPTQ's has `z = 2^(N−1)`
/// (code − 8 ∈ [−8, 7]: `d = h`, nibble = code). Q4_0 and Q8_0 are therefore exact up to the FP16 rounding
/// of `h` (bit for bit `(code − z)·fp16(h)`); Q4_1 also rounds `m` to FP16 (the value is `fp16(h)·code +
/// fp16(−z·h)`, within FP16 rounding of SwiftQuant's `(code − z)·h`).
///
/// **Refused unless `options.requantize`** (one error listing every reason before anything is written):
/// codes that fit only a wider block (W2/W3 into Q4_1 or Q4_0, W5–W7 into Q8_0: exact, but stored at 4 or 8
/// bits), grids no block holds (minifloats such as FP4, INT8 asymmetric zero-points outside int8, FP16 overflow
/// of `d` or `m`), group sizes or rows that do not tile 32, GPTQ act-order (`g_idx`), LoRC factors (the layer
/// adds `U·V`, which no GGUF tensor holds), and activation quantization (llama.cpp quantizes activations its own
/// way: Q8 inside its dot products). With the flag, codes that fit a wider block are written exactly; every
/// other such linear's effective weight (`Ŵ`, plus `U·V` with LoRC) is re-quantized with ggml's reference rule:
/// INT grids of ≤ 4 bits to Q4_1, everything else (INT5–8, minifloats) to Q8_0, rows that are not a multiple
/// of 32 to F16; each re-quantized tensor's relative Frobenius error against SwiftQuant's weight is printed.
///
/// **Other tensors** are written losslessly: from a GGUF source its own stored bytes (the token embedding of
/// SmolLM2 stays Q8_0; likewise for a SwiftQuant directory quantized from a GGUF file, whose whole-model tensors
/// are copied from that file when they are bit-identical to it), otherwise in the source's float type (F32, F16 or
/// BF16); norms, biases and RoPE factors F32. Tied embeddings have no `output.weight` (llama.cpp then uses `token_embd.weight`). q/k rows (and
/// biases) are permuted as llama.cpp's converter does (`GGUFTensorSource.permuteRows`, the inverse of the
/// reader's un-permutation).
///
/// **Metadata**: `llama.*` hyperparameters from the config the model runs with; `general.*` and `tokenizer.*`
/// copied from the source GGUF (also when the model is a SwiftQuant directory whose `swiftquant.json` names a
/// GGUF source), else built from the Hugging Face tokenizer (byte-level BPE only: `tokenizer.ggml.model = gpt2`,
/// `pre` from the pre-tokenizer, tokens padded to the embedding rows, chat template from
/// `tokenizer_config.json`); a model without a tokenizer gets `tokenizer.ggml.model = none` (token ids only).
///
/// Written tensor by tensor (one block's weights in memory at a time) to a temporary file renamed into place.
public enum GGUFExport {
    /// How one tensor of the file is produced.
    enum Source {
        /// The GGUF source's stored bytes (the tensor is unchanged; checked against the model's values).
        case sourceBytes(gguf: String)
        /// The model's float32 values encoded as the declared float type (F32/F16/BF16), exactly.
        case floats(exactCheck: Bool)
        /// SwiftQuant's codes mapped onto the declared block type.
        case codes(QuantizedTensor)
        /// The effective weight re-quantized with ggml's reference rule.
        case requantized(reason: String)
        /// llama.cpp's RoPE frequency factors (Llama-3 scaling).
        case ropeFactors([Float])
    }

    struct Entry {
        var declaration: GGUFTensorDeclaration
        /// Hugging Face name (nil for rope factors).
        var hfName: String?
        /// Block index for block tensors.
        var block: Int?
        /// Heads of llama.cpp's row permutation (q/k weights and biases).
        var permuteHeads: Int?
        var source: Source
    }

    /// What the export did, for tests and reports.
    public struct Report: Sendable {
        public struct Tensor: Sendable {
            public var name: String
            public var type: GGMLType
            /// "codes" (exact mapping), "requantized", "source" (bytes copied) or "float".
            public var how: String
            /// Relative Frobenius error of the written weight against SwiftQuant's (quantized linears only).
            public var relativeError: Double?
            public var reason: String?
        }
        public var tensors: [Tensor] = []
        public var fileType: UInt32 = 0
        public var bytes: Int = 0
    }

    public static func write(_ loaded: LoadedModel, to path: String, options: ExportOptions) throws {
        _ = try writeReporting(loaded, to: path, options: options)
    }

    /// Writes the file and returns what was written (per-tensor types and errors).
    @discardableResult
    public static func writeReporting(_ loaded: LoadedModel, to path: String, options: ExportOptions) throws -> Report {
        let start = sqs_now()
        guard let llama = loaded.model as? LlamaModel, ["llama", "mistral"].contains(llama.config.modelType) else {
            throw SwiftQuantError.unsupported(
                "GGUF export writes the llama architecture (Llama and Mistral models); this model is '\(loaded.model.modelType)'")
        }
        let c = llama.config
        if let s = c.slidingWindow, s < c.maxPositionEmbeddings {
            options.log("gguf: note: llama.cpp's llama architecture has no sliding window; outputs agree with SwiftQuant for windows up to \(s) tokens")
        }
        let wasCaching = loaded.source.enabled
        loaded.source.enabled = false  // converted source tensors are not kept: one tensor (one block) at a time
        defer { loaded.source.enabled = wasCaching }
        let ggufSource = loaded.source.base as? GGUFTensorSource
        // A SwiftQuant directory quantized from a GGUF file: that file gives the tokenizer, and its bytes for the
        // whole-model tensors the directory holds unchanged (its float32 copy of a Q8_0 embedding, say).
        let origin = originGGUF(loaded, options: options)
        let originTensors = ggufSource == nil ? origin.flatMap { try? GGUFTensorSource(file: $0) } : nil
        let plan = try makePlan(loaded, llama: llama, ggufSource: ggufSource, origin: originTensors, options: options)
        let meta = try metadata(loaded, llama: llama, plan: plan, sourceFile: origin, options: options)

        var report = Report()
        report.fileType = fileType(plan)
        let bar = ProgressBar(total: plan.count, label: "gguf export", unit: "", enabled: options.progress)
        var current: (Int, TransformerBlock)?
        func block(_ i: Int) throws -> TransformerBlock {
            if let (j, b) = current, j == i { return b }
            current = nil
            let b = try llama.block(i)
            current = (i, b)
            return b
        }
        /// The float32 values SwiftQuant runs for `e` (HF layout, not permuted).
        func values(_ e: Entry) throws -> Tensor {
            guard let name = e.hfName else { throw SwiftQuantError.invalidArgument("no values for \(e.declaration.name)") }
            if let i = e.block {
                let b = try block(i), rel = String(name.dropFirst(llama.blockPrefix(i).count))
                let (stem, kind) = split(rel)
                if let l = b.linears[stem] {
                    if kind == "weight" { return l.weight }
                    if let bias = l.bias { return bias }
                } else if let n = b.norms[stem] {
                    if kind == "weight", let w = n.weight { return w }
                    if kind == "bias", let w = n.bias { return w }
                }
                throw SwiftQuantError.invalidArgument("block \(i) has no tensor '\(rel)'")
            }
            return try loaded.source.float32(name)
        }
        try GGUFWriter.write(metadata: meta, declarations: plan.map(\.declaration), to: path) { index, emit in
            let e = plan[index]
            let d = e.declaration
            var line = Report.Tensor(name: d.name, type: d.type, how: "float")
            switch e.source {
            case .sourceBytes(let g):
                let file = (ggufSource ?? originTensors!).file
                // Unchanged by quantization? (The model's values must be the source's, bit for bit.)
                if e.block != nil {
                    let mine = try values(e), theirs = try (ggufSource ?? originTensors!).float32(e.hfName!)
                    guard mine.shape == theirs.shape, mine.buffer.elementsEqual(theirs.buffer, by: { $0.bitPattern == $1.bitPattern }) else {
                        throw SwiftQuantError.invalidArgument(
                            "\(e.hfName!) differs from its source tensor but has no quantization codes: export the model SwiftQuant quantized (with its quantization state)")
                    }
                }
                try emit(try file.data(g))
                line.how = "source"
            case .floats(let check):
                var t = try values(e)
                if let h = e.permuteHeads { t = permute(t, heads: h) }
                let bytes = try GGUFBlocks.quantize(UnsafeBufferPointer(t.buffer), type: d.type)
                if check {
                    let back = Tensor(zeros: [t.count])
                    try bytes.withUnsafeBytes { try GGUFBlocks.dequantize($0, type: d.type, into: back.buffer) }
                    guard back.buffer.elementsEqual(t.buffer, by: { $0.bitPattern == $1.bitPattern }) else {
                        throw SwiftQuantError.invalidArgument("\(e.hfName!): its values are not exactly representable in \(d.type.name)")
                    }
                }
                try bytes.withUnsafeBytes { try emit($0) }
            case .ropeFactors(let f):
                try f.withUnsafeBufferPointer { try emit(UnsafeRawBufferPointer($0)) }
                line.how = "float"
            case .codes(let q):
                let w = try values(e)
                // The codes must be what the model runs: Ŵ = (code − zero)·scale, bit for bit.
                let deq = q.dequantized()
                guard deq.shape == w.shape, deq.buffer.elementsEqual(w.buffer, by: { $0.bitPattern == $1.bitPattern }) else {
                    throw SwiftQuantError.invalidArgument(
                        "\(e.hfName!): the block's weight is not the dequantized codes of its quantization state; cannot write the codes")
                }
                let bytes = encodeCodes(q, type: d.type, heads: e.permuteHeads)
                line.relativeError = try relativeError(bytes, type: d.type, reference: w, heads: e.permuteHeads)
                line.how = "codes"
                try bytes.withUnsafeBytes { try emit($0) }
            case .requantized(let reason):
                var w = try values(e)
                if let r = loaded.quantization?.lowRank[e.hfName!] {
                    w = w.copy()
                    BLAS.sgemm(m: w.shape[0], n: w.shape[1], k: r.rank, a: r.u.pointer, lda: r.rank, b: r.v.pointer,
                               ldb: w.shape[1], beta: 1, c: w.pointer, ldc: w.shape[1])
                }
                if let h = e.permuteHeads { w = permute(w, heads: h) }
                let bytes = try GGUFBlocks.quantize(UnsafeBufferPointer(w.buffer), type: d.type)
                line.relativeError = try relativeError(bytes, type: d.type, reference: w, heads: nil)
                line.how = "requantized"
                line.reason = reason
                options.log(String(format: "gguf: requantized %@ → %@: relative Frobenius error %.3e (%@)",
                                   e.hfName!, d.type.name, line.relativeError!, reason))
                try bytes.withUnsafeBytes { try emit($0) }
            }
            report.tensors.append(line)
            report.bytes += d.byteCount!
            bar.advance()
        }
        let exact = report.tensors.filter { $0.how == "codes" }
        let types = Dictionary(grouping: exact, by: \.type.name).map { "\($0.value.count) \($0.key)" }.sorted()
        var summary = String(format: "gguf: wrote %@ (%.1f MiB, %d tensors, file type %u) in %.1f s", path,
                             Double(report.bytes) / 1_048_576, plan.count, report.fileType, sqs_now() - start)
        if !exact.isEmpty {
            let worst = exact.compactMap(\.relativeError).max() ?? 0
            summary += String(format: "; %@ linears from their codes (largest relative error, from FP16 scales: %.2e)",
                              types.joined(separator: ", "), worst)
        }
        let requant = report.tensors.filter { $0.how == "requantized" }.count
        if requant > 0 { summary += "; \(requant) re-quantized (errors above)" }
        options.log(summary)
        return report
    }

    // MARK: - Plan

    static func split(_ rel: String) -> (stem: String, kind: String) {
        guard let dot = rel.lastIndex(of: ".") else { return (rel, "") }
        return (String(rel[..<dot]), String(rel[rel.index(after: dot)...]))
    }

    /// llama.cpp's block tensor names, in the order its converter writes them.
    static let blockOrder: [(gguf: String, hf: String)] = [
        ("attn_norm", "input_layernorm"), ("attn_q", "self_attn.q_proj"), ("attn_k", "self_attn.k_proj"),
        ("attn_v", "self_attn.v_proj"), ("attn_output", "self_attn.o_proj"), ("ffn_norm", "post_attention_layernorm"),
        ("ffn_gate", "mlp.gate_proj"), ("ffn_up", "mlp.up_proj"), ("ffn_down", "mlp.down_proj"),
    ]

    static func makePlan(_ loaded: LoadedModel, llama: LlamaModel, ggufSource: GGUFTensorSource?,
                         origin: GGUFTensorSource?, options: ExportOptions) throws -> [Entry] {
        let c = llama.config
        let state = loaded.quantization
        var plan: [Entry] = []
        var refusals: [String: [String]] = [:]  // reason → tensors
        func refuse(_ reason: String, _ name: String) { refusals[reason, default: []].append(name) }
        if let a = state?.activations, a.isActive {
            if options.requantize {
                options.log("gguf: warning: the model quantizes activations (\(a)); GGUF holds weights only and llama.cpp quantizes activations its own way (Q8 inside its dot products)")
            } else {
                refuse("activation quantization (\(a)) cannot be stored in GGUF: llama.cpp runs its own (Q8 inside its dot products)", "the model")
            }
        }
        /// A non-block tensor (or an unquantized linear): the source's bytes or float type.
        func plain(_ hf: String, gguf: String, block: Int?, heads: Int?) throws -> Entry {
            guard let info = loaded.source.info(hf) else {
                throw SwiftQuantError.format("\(loaded.path): missing tensor '\(hf)'")
            }
            let dims = Array(info.shape.reversed())
            if let g = ggufSource, let gname = g.ggufName(for: hf), let t = g.file.tensor(gname),
               heads == nil || g.undoesRopePermutation {
                return Entry(declaration: GGUFTensorDeclaration(name: gguf, type: t.type, dims: t.dims), hfName: hf,
                             block: block, permuteHeads: heads, source: .sourceBytes(gguf: gname))
            }
            // A whole-model tensor equal, bit for bit, to the one in the GGUF file the model was quantized from.
            if block == nil, let o = origin, let gname = o.ggufName(for: hf), let t = o.file.tensor(gname),
               t.type != .f32, heads == nil || o.undoesRopePermutation,
               let theirs = try? o.float32(hf), let mine = try? loaded.source.float32(hf), theirs.shape == mine.shape,
               theirs.buffer.elementsEqual(mine.buffer, by: { $0.bitPattern == $1.bitPattern }) {
                return Entry(declaration: GGUFTensorDeclaration(name: gguf, type: t.type, dims: t.dims), hfName: hf,
                             block: block, permuteHeads: heads, source: .sourceBytes(gguf: gname))
            }
            let type: GGMLType = [DType.f16, .bf16].contains(info.dtype) ? GGMLType(info.dtype)! : .f32
            return Entry(declaration: GGUFTensorDeclaration(name: gguf, type: type, dims: dims), hfName: hf,
                         block: block, permuteHeads: heads, source: .floats(exactCheck: type != .f32))
        }

        plan.append(try plain("model.embed_tokens.weight", gguf: "token_embd.weight", block: nil, heads: nil))
        if let factors = try ropeFactors(llama) {
            plan.append(Entry(declaration: GGUFTensorDeclaration(name: "rope_freqs.weight", type: .f32, dims: [factors.count]),
                              hfName: nil, block: nil, permuteHeads: nil, source: .ropeFactors(factors)))
        }
        let spec = llama.blockSpec
        let heads: [String: Int] = ["self_attn.q_proj": c.numAttentionHeads, "self_attn.k_proj": c.numKeyValueHeads]
        let linearSpecs = Dictionary(uniqueKeysWithValues: spec.linears.map { ($0.name, $0) })
        for i in 0..<llama.numBlocks {
            let p = llama.blockPrefix(i)
            // Biases present on the installed block (the spec's, or ones an equivalent transformation added).
            let installed = try llama.block(i)
            for (g, hf) in blockOrder {
                let h = heads[hf]
                if let l = linearSpecs[hf] {
                    let name = p + hf + ".weight"
                    let dims = [l.inFeatures, l.outFeatures]
                    if let q = state?.tensors[name] {
                        let (source, type) = decide(q, name: name, lowRank: state?.lowRank[name] != nil,
                                                    requantize: options.requantize, refuse: refuse)
                        plan.append(Entry(declaration: GGUFTensorDeclaration(name: "blk.\(i).\(g).weight", type: type, dims: dims),
                                          hfName: name, block: i, permuteHeads: h, source: source))
                    } else {
                        if let s = state, !s.tensors.isEmpty {
                            options.log("gguf: note: \(name) has no quantization codes; written as its source stores it")
                        }
                        plan.append(try plain(name, gguf: "blk.\(i).\(g).weight", block: i, heads: h))
                    }
                    if let b = installed.linears[hf]?.bias {
                        plan.append(Entry(declaration: GGUFTensorDeclaration(name: "blk.\(i).\(g).bias", type: .f32, dims: [b.count]),
                                          hfName: p + hf + ".bias", block: i, permuteHeads: h, source: .floats(exactCheck: false)))
                    }
                } else if let n = installed.norms[hf] {
                    if let w = n.weight {
                        plan.append(Entry(declaration: GGUFTensorDeclaration(name: "blk.\(i).\(g).weight", type: .f32, dims: [w.count]),
                                          hfName: p + hf + ".weight", block: i, permuteHeads: nil, source: .floats(exactCheck: false)))
                    }
                    if let b = n.bias {
                        guard [spec.attentionNorm, spec.mlpNorm].first(where: { $0.name == hf })?.bias ?? false else {
                            throw SwiftQuantError.unsupported(
                                "GGUF export: \(p + hf) carries a bias (LET shifts folded into an RMSNorm family), which "
                                    + "llama.cpp's RMSNorm has no place for; quantize without let_shifts to export")
                        }
                        plan.append(Entry(declaration: GGUFTensorDeclaration(name: "blk.\(i).\(g).bias", type: .f32, dims: [b.count]),
                                          hfName: p + hf + ".bias", block: i, permuteHeads: nil, source: .floats(exactCheck: false)))
                    }
                }
            }
        }
        plan.append(try plain("model.norm.weight", gguf: "output_norm.weight", block: nil, heads: nil))
        if !c.tieWordEmbeddings {
            plan.append(try plain("lm_head.weight", gguf: "output.weight", block: nil, heads: nil))
        }
        if !refusals.isEmpty {
            let lines = refusals.keys.sorted().map { reason -> String in
                let names = refusals[reason]!
                let shown = names.prefix(3).joined(separator: ", ") + (names.count > 3 ? ", … (\(names.count) tensors)" : "")
                return "  - \(reason): \(shown)"
            }
            throw SwiftQuantError.invalidArgument(
                "GGUF export: the model cannot be written exactly in a GGUF block type:\n" + lines.joined(separator: "\n")
                    + "\npass --requantize (Python: requantize=True) to re-quantize these to the nearest GGUF type with a per-tensor error report")
        }
        return plan
    }

    /// The ggml type a linear's codes map onto exactly, if any (the first that fits, smallest first).
    static func exactTarget(_ q: QuantizedTensor) -> GGMLType? {
        guard q.config.isInteger, q.groupIndex == nil, q.cols % 32 == 0, q.config.groupWidth(cols: q.cols) % 32 == 0 else {
            return nil
        }
        let bits = q.config.format.bitWidth
        let candidates: [GGMLType] = bits <= 4 ? (q.config.symmetric ? [.q4_0, .q4_1] : [.q4_1]) : bits <= 8 ? [.q8_0] : []
        return candidates.first { codesFit(q, type: $0) }
    }

    /// Why a linear's codes have no exact ggml type (for the refusal message).
    static func whyNotExact(_ q: QuantizedTensor) -> String {
        let cfg = q.config
        if !cfg.isInteger { return "\(cfg.format.name) weights: no GGUF block type holds a minifloat grid" }
        if q.groupIndex != nil { return "act-order groups (g_idx): a 32-wide GGUF block needs consecutive columns in one group" }
        if q.cols % 32 != 0 { return "rows of \(q.cols) values are not a multiple of the 32-wide GGUF block" }
        let w = cfg.groupWidth(cols: q.cols)
        if w % 32 != 0 { return "group size \(cfg.groupSize) does not tile the 32-wide GGUF blocks" }
        if cfg.format.bitWidth == 8 && !cfg.symmetric {
            return "INT8 asymmetric: code − zero-point does not fit Q8_0's int8 range"
        }
        return "\(cfg) scales or zero-points overflow FP16 (|scale| or |zero·scale| > 65504)"
    }

    static func decide(_ q: QuantizedTensor, name: String, lowRank: Bool, requantize: Bool,
                       refuse: (String, String) -> Void) -> (Source, GGMLType) {
        let fallback = requantTarget(q)
        if lowRank {
            let reason = "LoRC factors: the layer adds U·V to Ŵ, which no GGUF tensor holds"
            if !requantize { refuse(reason, name) }
            return (.requantized(reason: "Ŵ + U·V; " + reason), fallback)
        }
        if let t = exactTarget(q) {
            let nominal = (t == .q8_0) == (q.config.format.bitWidth == 8) && q.config.format.bitWidth >= 4
            if !nominal {
                let reason = "\(q.config.format.name) codes fit \(t.name) exactly but are stored at \(t == .q8_0 ? 8 : 4) bits per weight"
                if !requantize { refuse(reason, name) }
            }
            return (.codes(q), t)
        }
        let reason = whyNotExact(q)
        if !requantize { refuse(reason, name) }
        return (.requantized(reason: reason), fallback)
    }

    /// The GGUF type a non-representable linear is re-quantized to: Q4_1 for INT grids of ≤ 4 bits, Q8_0 for
    /// everything else, F16 for rows that are not a multiple of 32.
    static func requantTarget(_ q: QuantizedTensor) -> GGMLType {
        if q.cols % 32 != 0 { return .f16 }
        if q.config.isInteger && q.config.format.bitWidth <= 4 { return .q4_1 }
        return .q8_0
    }

    /// Whether every 32-wide block of `q` maps onto `type` exactly (see the table above).
    static func codesFit(_ q: QuantizedTensor, type: GGMLType) -> Bool {
        let cols = q.cols, g = q.groupCount, width = q.config.groupWidth(cols: cols)
        func finite16(_ x: Float) -> Bool { HalfConv.f16ToF32(HalfConv.f32ToF16(x)).isFinite }
        for r in 0..<q.rows {
            for b in 0..<(cols / 32) {
                let k = r * g + (32 * b) / width
                let h = q.scales[k], z = q.zeros[k]
                guard finite16(h) else { return false }
                var lo = Int.max, hi = Int.min
                for j in 0..<32 {
                    let v = Int(q.codes[r * cols + 32 * b + j]) - Int(z)
                    lo = min(lo, v); hi = max(hi, v)
                }
                switch type {
                case .q4_1:
                    guard finite16(-Float(z) * h), lo + Int(z) >= 0, hi + Int(z) <= 15 else { return false }
                case .q4_0:
                    guard (lo >= -8 && hi <= 7) || (lo >= -7 && hi <= 8) else { return false }
                case .q8_0:
                    guard (lo >= -128 && hi <= 127) || (lo >= -127 && hi <= 128) else { return false }
                default:
                    return false
                }
            }
        }
        return true
    }

    /// Encodes `q`'s codes as `type` blocks (the caller checked `codesFit`), rows in llama.cpp's order.
    static func encodeCodes(_ q: QuantizedTensor, type: GGMLType, heads: Int?) -> Data {
        let cols = q.cols, g = q.groupCount, width = q.config.groupWidth(cols: cols), nb = cols / 32
        let blockBytes = type.typeSize, rowBytes = nb * blockBytes
        var out = Data(count: q.rows * rowBytes)
        out.withUnsafeMutableBytes { raw in
            let o = raw.baseAddress!
            q.codes.withUnsafeBufferPointer { codes in
                parallelFor(q.rows, minChunk: 8) { range in
                    for r in range {
                        let src = heads.map { hfRow(ofGGUFRow: r, rows: q.rows, heads: $0) } ?? r
                        for b in 0..<nb {
                            let k = src * g + (32 * b) / width
                            let h = q.scales[k], z = Int(q.zeros[k])
                            let c = codes.baseAddress! + src * cols + 32 * b
                            let blk = o + r * rowBytes + b * blockBytes
                            func put16(_ v: UInt16, _ off: Int) { blk.storeBytes(of: v.littleEndian, toByteOffset: off, as: UInt16.self) }
                            var lo = Int.max, hi = Int.min
                            for j in 0..<32 { lo = min(lo, Int(c[j]) - z); hi = max(hi, Int(c[j]) - z) }
                            switch type {
                            case .q4_1:
                                put16(HalfConv.f32ToF16(h), 0)
                                put16(HalfConv.f32ToF16(-Float(z) * h), 2)
                                for j in 0..<16 { blk.storeBytes(of: c[j] | (c[j + 16] << 4), toByteOffset: 4 + j, as: UInt8.self) }
                            case .q4_0:
                                let s = lo >= -8 && hi <= 7 ? 1 : -1
                                put16(HalfConv.f32ToF16(Float(s) * h), 0)
                                func n(_ j: Int) -> UInt8 { UInt8(8 + s * (Int(c[j]) - z)) }
                                for j in 0..<16 { blk.storeBytes(of: n(j) | (n(j + 16) << 4), toByteOffset: 2 + j, as: UInt8.self) }
                            case .q8_0:
                                let s = lo >= -128 && hi <= 127 ? 1 : -1
                                put16(HalfConv.f32ToF16(Float(s) * h), 0)
                                for j in 0..<32 { blk.storeBytes(of: Int8(s * (Int(c[j]) - z)), toByteOffset: 2 + j, as: Int8.self) }
                            default:
                                preconditionFailure("encodeCodes: \(type.name) is not a code target")
                            }
                        }
                    }
                }
            }
        }
        return out
    }

    /// The Hugging Face row stored at GGUF row `r` of a q/k projection with `heads` heads: within a head of
    /// `hd` rows, GGUF row `2j + i` holds HF row `i·hd/2 + j` (llama.cpp's converter permutation).
    static func hfRow(ofGGUFRow r: Int, rows: Int, heads: Int) -> Int {
        let hd = rows / heads, half = hd / 2
        let h = r / hd, within = r % hd
        return h * hd + (within % 2) * half + within / 2
    }

    static func permute(_ t: Tensor, heads: Int) -> Tensor {
        if t.rank == 1 { return GGUFTensorSource.permuteRows(t.reshaped([t.count, 1]), heads: heads).reshaped([t.count]) }
        return GGUFTensorSource.permuteRows(t, heads: heads)
    }

    /// ‖decode(bytes) − reference‖_F / ‖reference‖_F, with `reference` un-permuted when `heads` is set (the
    /// bytes are in GGUF row order).
    static func relativeError(_ bytes: Data, type: GGMLType, reference: Tensor, heads: Int?) throws -> Double {
        let back = Tensor(zeros: reference.shape)
        try bytes.withUnsafeBytes { try GGUFBlocks.dequantize($0, type: type, into: back.buffer) }
        let mine = heads.map { GGUFTensorSource.unpermuteRows(back, heads: $0) } ?? back
        var num = 0.0, den = 0.0
        for (a, b) in zip(mine.buffer, reference.buffer) {
            let d = Double(a) - Double(b)
            num += d * d
            den += Double(b) * Double(b)
        }
        return den > 0 ? (num / den).squareRoot() : num.squareRoot()
    }

    /// llama.cpp's `rope_freqs.weight` for Llama-3 RoPE scaling: per frequency, base / scaled (the converter's
    /// factors); nil without scaling. Linear scaling is metadata (`rope.scaling.*`); other kinds are refused.
    static func ropeFactors(_ llama: LlamaModel) throws -> [Float]? {
        guard let s = llama.config.ropeScaling else { return nil }
        switch s.type {
        case "default", "linear": return nil
        case "llama3":
            let base = Autodiff.Rope.inverseFrequencies(headDim: llama.config.headDim, theta: llama.config.ropeTheta)
            let scaled = llama.inverseFrequencies()
            return zip(base, scaled).map { Float(Double($0) / Double($1)) }
        default:
            throw SwiftQuantError.unsupported("GGUF export: RoPE scaling '\(s.type)' is not written (default, linear, llama3)")
        }
    }

    /// llama.cpp's `general.file_type` (LLAMA_FTYPE_*) from the most common type of the block linears.
    static func fileType(_ plan: [Entry]) -> UInt32 {
        let linears = plan.filter { $0.block != nil && $0.declaration.dims.count == 2 }
        let counts = Dictionary(grouping: linears, by: \.declaration.type).mapValues(\.count)
        guard let (t, _) = counts.max(by: { $0.value < $1.value || ($0.value == $1.value && $0.key.rawValue > $1.key.rawValue) }) else { return 0 }
        switch t {
        case .f32: return 0
        case .f16: return 1
        case .q4_0: return 2
        case .q4_1: return 3
        case .q8_0: return 7
        case .bf16: return 32
        default: return 0
        }
    }

    // MARK: - Metadata

    static func metadata(_ loaded: LoadedModel, llama: LlamaModel, plan: [Entry], sourceFile: GGUFFile?,
                         options: ExportOptions) throws -> [(String, GGUFValue)]
    {
        let c = llama.config
        var kv: [(String, GGUFValue)] = [("general.architecture", .string("llama"))]
        var keys = Set(["general.architecture"])
        func add(_ k: String, _ v: GGUFValue) {
            if keys.insert(k).inserted { kv.append((k, v)) } else if let i = kv.firstIndex(where: { $0.0 == k }) { kv[i].1 = v }
        }
        let regenerated: Set<String> = ["general.architecture", "general.file_type", "general.quantization_version",
                                        "general.alignment"]
        if let f = sourceFile {
            for k in f.keys where k.hasPrefix("general.") && !regenerated.contains(k) { add(k, f.metadata[k]!) }
        }
        if !keys.contains("general.name") {
            let name = (loaded.config["_name_or_path"] as? String).map { ($0 as NSString).lastPathComponent }
                ?? ((loaded.path as NSString).lastPathComponent as NSString).deletingPathExtension
            add("general.name", .string(name))
        }
        add("general.type", .string("model"))
        add("general.quantized_by", .string("SwiftQuant \(SwiftQuantInfo.version)"))
        let u32 = { (v: Int) in GGUFValue.uint32(UInt32(clamping: v)) }
        add("llama.context_length", u32(c.maxPositionEmbeddings))
        add("llama.embedding_length", u32(c.hiddenSize))
        add("llama.block_count", u32(c.numHiddenLayers))
        add("llama.feed_forward_length", u32(c.intermediateSize))
        add("llama.attention.head_count", u32(c.numAttentionHeads))
        add("llama.attention.head_count_kv", u32(c.numKeyValueHeads))
        add("llama.rope.freq_base", .float32(Float(c.ropeTheta)))
        add("llama.attention.layer_norm_rms_epsilon", .float32(Float(c.rmsNormEps)))
        add("llama.rope.dimension_count", u32(c.headDim))
        if c.headDim * c.numAttentionHeads != c.hiddenSize {
            add("llama.attention.key_length", u32(c.headDim))
            add("llama.attention.value_length", u32(c.headDim))
        }
        add("llama.vocab_size", u32(c.vocabSize))
        if let s = c.ropeScaling, s.type == "linear", let f = s.factor {
            add("llama.rope.scaling.type", .string("linear"))
            add("llama.rope.scaling.factor", .float32(Float(f)))
        }
        add("general.file_type", .uint32(fileType(plan)))
        add("general.quantization_version", .uint32(2))
        if let s = loaded.quantization {
            add("swiftquant.method", .string(s.method))
            add("swiftquant.weights", .string(s.weights.description))
        }
        if let f = sourceFile {
            for k in f.keys where k.hasPrefix("tokenizer.") { add(k, f.metadata[k]!) }
        } else if let tok = loaded.tokenizer {
            for (k, v) in try tokenizerMetadata(tok, vocabSize: c.vocabSize, loaded: loaded) { add(k, v) }
        } else {
            options.log("gguf: warning: the model has no tokenizer; writing tokenizer.ggml.model = none (llama.cpp runs token ids only)")
            add("tokenizer.ggml.model", .string("none"))
        }
        return kv
    }

    /// The GGUF file the model comes from: its own source, or the GGUF source a SwiftQuant directory was quantized
    /// from (`swiftquant.json`'s `source`, when that file exists and has the model's vocabulary size). Its
    /// `general.*` and `tokenizer.*` metadata are copied (llama.cpp's own vocabulary, pre-tokenizer name, token
    /// types and chat template, rather than a conversion of tokenizer.json).
    static func originGGUF(_ loaded: LoadedModel, options: ExportOptions) -> GGUFFile? {
        if let g = loaded.source.base as? GGUFTensorSource { return g.file }
        let marker = (loaded.path as NSString).appendingPathComponent(QuantizedExport.marker)
        guard let data = FileManager.default.contents(atPath: marker),
              let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let src = obj["source"] as? String, (try? LoadedModel.isGGUF(src)) == true,
              let f = try? GGUFFile(path: src),
              f.metadata["tokenizer.ggml.tokens"]?.array?.count == loaded.model.vocabSize
        else { return nil }
        options.log("gguf: tokenizer and general metadata from the GGUF source named in \(marker): \(src)")
        return f
    }

    /// `tokenizer.ggml.*` for a Hugging Face byte-level BPE tokenizer (llama.cpp's `gpt2` model).
    static func tokenizerMetadata(_ tok: Tokenizer, vocabSize: Int, loaded: LoadedModel) throws -> [(String, GGUFValue)] {
        let s = tok.spec
        guard s.kind == .byteLevelBPE else {
            throw SwiftQuantError.unsupported(
                "GGUF export: a SentencePiece tokenizer from tokenizer.json cannot be converted (llama.cpp's 'llama' vocabulary needs the scores of tokenizer.model); export from the model's GGUF file instead")
        }
        guard s.normalizer.isEmpty else {
            throw SwiftQuantError.unsupported("GGUF export: byte-level BPE tokenizers with a normalizer are not converted")
        }
        let pre: String
        switch s.preTokenizer {
        case [.byteLevel(addPrefixSpace: false, useRegex: true)]: pre = "gpt-2"
        case [.split(pattern: KnownSplitPattern.llama3, behavior: "Isolated", invert: false),
              .byteLevel(addPrefixSpace: false, useRegex: false)]: pre = "llama-bpe"
        case [.split(pattern: KnownSplitPattern.qwen2, behavior: "Isolated", invert: false),
              .byteLevel(addPrefixSpace: false, useRegex: false)]: pre = "qwen2"
        case [.digits(individual: true), .byteLevel(addPrefixSpace: false, useRegex: true)]: pre = "smollm"
        default:
            throw SwiftQuantError.unsupported("GGUF export: the tokenizer's pre-tokenizer \(s.preTokenizer) has no llama.cpp equivalent this exporter knows (gpt-2, llama-bpe, qwen2, smollm)")
        }
        try require(s.vocab.count <= vocabSize,
                    "GGUF export: the tokenizer has \(s.vocab.count) tokens, more than the model's \(vocabSize) embedding rows")
        var tokens = s.vocab
        var types = [Int32](repeating: 1, count: tokens.count)  // 1 normal
        for a in s.addedTokens where Int(a.id) < types.count { types[Int(a.id)] = a.special ? 3 : 4 }  // control / user-defined
        for i in tokens.count..<vocabSize {  // embedding rows without a token, as llama.cpp's converter pads them
            tokens.append("[PAD\(i)]")
            types.append(5)  // unused
        }
        var out: [(String, GGUFValue)] = [
            ("tokenizer.ggml.model", .string("gpt2")), ("tokenizer.ggml.pre", .string(pre)),
            ("tokenizer.ggml.tokens", .array(tokens.map { .string($0) })),
            ("tokenizer.ggml.token_type", .array(types.map { .int32($0) })),
            ("tokenizer.ggml.merges", .array(s.merges.map { .string($0.0 + " " + $0.1) })),
        ]
        if let b = s.bosId { out.append(("tokenizer.ggml.bos_token_id", .uint32(UInt32(b)))) }
        if let e = s.eosId { out.append(("tokenizer.ggml.eos_token_id", .uint32(UInt32(e)))) }
        if let u = s.unkId { out.append(("tokenizer.ggml.unknown_token_id", .uint32(UInt32(u)))) }
        if let p = loaded.config["pad_token_id"].flatMap(jsonInt), p >= 0, p < vocabSize {
            out.append(("tokenizer.ggml.padding_token_id", .uint32(UInt32(p))))
        }
        out.append(("tokenizer.ggml.add_bos_token", .bool(s.addBOS)))
        out.append(("tokenizer.ggml.add_eos_token", .bool(s.addEOS)))
        if let cfgPath = loaded.companionFiles.first(where: { ($0 as NSString).lastPathComponent == "tokenizer_config.json" }),
           let data = FileManager.default.contents(atPath: cfgPath),
           let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
           let template = obj["chat_template"] as? String {
            out.append(("tokenizer.chat_template", .string(template)))
        }
        return out
    }
}
