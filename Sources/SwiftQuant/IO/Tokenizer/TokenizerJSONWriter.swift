import Foundation

/// Tokenizer settings a saved model carries besides the tokenizer itself: what `tokenizer_config.json` and
/// `generation_config.json` say and a `TokenizerSpec` does not hold (for a GGUF source: `tokenizer.chat_template`,
/// `tokenizer.ggml.padding_token_id`).
public struct TokenizerExtras: Sendable, Equatable {
    public var chatTemplate: String?
    public var padId: Int32?
    /// `tokenizer_config.json`'s `model_max_length` (the model's context length).
    public var modelMaxLength: Int?

    public init(chatTemplate: String? = nil, padId: Int32? = nil, modelMaxLength: Int? = nil) {
        self.chatTemplate = chatTemplate
        self.padId = padId
        self.modelMaxLength = modelMaxLength
    }
}

/// Writes a `TokenizerSpec` as the Hugging Face files `tokenizer.json` (read by the `tokenizers` library, by
/// `transformers`' `PreTrainedTokenizerFast` and by `Tokenizer.fromJSON`), `tokenizer_config.json` and
/// `special_tokens_map.json`, so that they encode and decode exactly as `Tokenizer(spec:)` does.
///
/// The mapping, step by step (tokenizers' names on the right):
///
/// | spec | tokenizer.json |
/// |---|---|
/// | vocabulary, merges | `model`: `BPE` with `vocab` (token → id) and `merges` as `["a", "b"]` pairs, best first; `byte_fallback`, `fuse_unk`, `ignore_merges`, `unk_token` |
/// | SentencePiece `scores` (GGUF "llama") | merges derived from the scores: every split `l + r` of a token `t` (not an added or byte token) whose parts are tokens, ordered by `t`'s score, best first, then by `t`'s id — the pairs `Tokenizer` merges by score |
/// | added tokens (GGUF types 3 and 4) | `added_tokens` with `special`, `lstrip`, `rstrip`, `normalized`, `single_word` |
/// | normalizer steps | `NFC`, `Prepend`, `Replace` (in a `Sequence` when more than one) |
/// | pre-tokenizer steps | `Split` (regex, `Isolated`), `ByteLevel`, `Digits`, `Metaspace` |
/// | decode (kind) | byte level: `ByteLevel`; SentencePiece: `Replace` "▁" → " ", `ByteFallback`, `Fuse`, `Strip` of one leading space when a "▁" prefix is added |
/// | `addBOS` / `addEOS` | `TemplateProcessing` around `$A` (and `$B`); otherwise `ByteLevel` (byte level) or none |
///
/// Not representable (refused by `tokenizerJSON` with `.unsupported`): an empty token that is an added token, and
/// a token string present twice with the second occurrence an added token. A vocabulary with an empty or
/// repeated plain token loses that id from `model.vocab` (its first occurrence keeps the string), as a JSON object
/// cannot hold a key twice.
///
/// One known difference: with SentencePiece scores, two different merges whose tokens have equal scores share a
/// rank in `Tokenizer` (the leftmost pair in a word merges first, as llama.cpp does), while a merges list orders
/// them (by token id). Vocabularies with distinct scores, the usual case, are unaffected.
public enum TokenizerJSONWriter {
    /// `tokenizer.json` text for `spec`.
    public static func tokenizerJSON(_ spec: TokenizerSpec) throws -> String {
        let byteLevel = spec.kind == .byteLevelBPE
        var root: [(String, JSONOut)] = [("version", .string("1.0")), ("truncation", .null), ("padding", .null)]

        // added_tokens
        var addedIds = Set<Int32>()
        var added: [JSONOut] = []
        for a in spec.addedTokens.sorted(by: { $0.id < $1.id }) {
            guard addedIds.insert(a.id).inserted else {
                throw SwiftQuantError.unsupported("tokenizer.json: id \(a.id) is two added tokens")
            }
            guard !a.content.isEmpty else {
                throw SwiftQuantError.unsupported("tokenizer.json: added token \(a.id) is empty")
            }
            added.append(.object([
                ("id", .int(Int(a.id))), ("content", .string(a.content)), ("single_word", .bool(a.singleWord)),
                ("lstrip", .bool(a.lstrip)), ("rstrip", .bool(a.rstrip)), ("normalized", .bool(a.normalized)),
                ("special", .bool(a.special)),
            ]))
        }
        root.append(("added_tokens", .array(added)))

        // normalizer
        var norm: [JSONOut] = []
        for step in spec.normalizer {
            switch step {
            case .nfc: norm.append(.object([("type", .string("NFC"))]))
            case .prepend(let p): norm.append(.object([("type", .string("Prepend")), ("prepend", .string(p))]))
            case .replace(let from, let to):
                norm.append(.object([("type", .string("Replace")), ("pattern", .object([("String", .string(from))])),
                                     ("content", .string(to))]))
            }
        }
        root.append(("normalizer", sequence(norm, type: "Sequence", key: "normalizers")))

        // pre_tokenizer
        var pre: [JSONOut] = []
        for step in spec.preTokenizer {
            switch step {
            case .split(let pattern, let behavior, let invert):
                pre.append(.object([("type", .string("Split")), ("pattern", .object([("Regex", .string(pattern))])),
                                    ("behavior", .string(behavior)), ("invert", .bool(invert))]))
            case .byteLevel(let addPrefixSpace, let useRegex):
                pre.append(.object([("type", .string("ByteLevel")), ("add_prefix_space", .bool(addPrefixSpace)),
                                    ("trim_offsets", .bool(true)), ("use_regex", .bool(useRegex))]))
            case .digits(let individual):
                pre.append(.object([("type", .string("Digits")), ("individual_digits", .bool(individual))]))
            case .metaspace(let replacement, let scheme, let split):
                pre.append(.object([("type", .string("Metaspace")), ("replacement", .string(replacement)),
                                    ("prepend_scheme", .string(scheme)), ("split", .bool(split))]))
            }
        }
        root.append(("pre_tokenizer", sequence(pre, type: "Sequence", key: "pretokenizers")))

        // post_processor
        func name(_ id: Int32) throws -> String {
            try require(id >= 0 && Int(id) < spec.vocab.count, "tokenizer.json: special id \(id) outside the vocabulary")
            return spec.vocab[Int(id)]
        }
        let bos = spec.addBOS ? try spec.bosId.map(name) : nil
        let eos = spec.addEOS ? try spec.eosId.map(name) : nil
        if bos != nil || eos != nil {
            func special(_ n: String, _ typeId: Int) -> JSONOut {
                .object([("SpecialToken", .object([("id", .string(n)), ("type_id", .int(typeId))]))])
            }
            func seq(_ n: String, _ typeId: Int) -> JSONOut {
                .object([("Sequence", .object([("id", .string(n)), ("type_id", .int(typeId))]))])
            }
            var single: [JSONOut] = [], pair: [JSONOut] = []
            if let b = bos { single.append(special(b, 0)); pair.append(special(b, 0)) }
            single.append(seq("A", 0)); pair.append(seq("A", 0))
            if let e = eos { single.append(special(e, 0)); pair.append(special(e, 0)) }
            if let b = bos { pair.append(special(b, 1)) }
            pair.append(seq("B", 1))
            if let e = eos { pair.append(special(e, 1)) }
            var specials: [(String, JSONOut)] = []
            for (n, id) in [(bos, spec.bosId), (eos, spec.eosId)] {
                guard let n = n, let id = id, !specials.contains(where: { $0.0 == n }) else { continue }
                specials.append((n, .object([("id", .string(n)), ("ids", .array([.int(Int(id))])),
                                             ("tokens", .array([.string(n)]))])))
            }
            root.append(("post_processor", .object([("type", .string("TemplateProcessing")), ("single", .array(single)),
                                                    ("pair", .array(pair)), ("special_tokens", .object(specials))])))
        } else if byteLevel {
            root.append(("post_processor", .object([("type", .string("ByteLevel")), ("add_prefix_space", .bool(true)),
                                                    ("trim_offsets", .bool(false)), ("use_regex", .bool(true))])))
        } else {
            root.append(("post_processor", .null))
        }

        // decoder: what `Tokenizer.decode` does for this kind
        if byteLevel {
            root.append(("decoder", .object([("type", .string("ByteLevel")), ("add_prefix_space", .bool(true)),
                                             ("trim_offsets", .bool(true)), ("use_regex", .bool(true))])))
        } else {
            var steps: [JSONOut] = [.object([("type", .string("Replace")), ("pattern", .object([("String", .string("▁"))])),
                                             ("content", .string(" "))])]
            if spec.byteFallback { steps.append(.object([("type", .string("ByteFallback"))])) }
            steps.append(.object([("type", .string("Fuse"))]))
            if stripsPrefixOnDecode(spec) {
                steps.append(.object([("type", .string("Strip")), ("content", .string(" ")), ("start", .int(1)),
                                      ("stop", .int(0))]))
            }
            root.append(("decoder", .object([("type", .string("Sequence")), ("decoders", .array(steps))])))
        }

        // model
        var seen = Set<String>()
        var vocab: [(String, JSONOut)] = []
        vocab.reserveCapacity(spec.vocab.count)
        for (i, t) in spec.vocab.enumerated() {
            if t.isEmpty || !seen.insert(t).inserted {
                if addedIds.contains(Int32(i)) {
                    throw SwiftQuantError.unsupported(
                        "tokenizer.json: added token \(i) (\(t.debugDescription)) repeats an earlier token")
                }
                continue
            }
            vocab.append((t, .int(i)))
        }
        let merges = try mergePairs(spec).map { JSONOut.array([.string($0.0), .string($0.1)]) }
        let unk: JSONOut = try spec.unkId.map { .string(try name($0)) } ?? .null
        root.append(("model", .object([
            ("type", .string("BPE")), ("dropout", .null), ("unk_token", unk), ("continuing_subword_prefix", .null),
            ("end_of_word_suffix", .null), ("fuse_unk", .bool(spec.fuseUnk)), ("byte_fallback", .bool(spec.byteFallback)),
            ("ignore_merges", .bool(spec.ignoreMerges)), ("vocab", .object(vocab)), ("merges", .array(merges)),
        ])))
        var out = ""
        JSONOut.object(root).render(into: &out, indent: 0)
        return out + "\n"
    }

    /// Whether `Tokenizer.decode` strips one leading space (SentencePiece with a "▁" prefix).
    static func stripsPrefixOnDecode(_ spec: TokenizerSpec) -> Bool {
        guard spec.kind == .sentencePieceBPE else { return false }
        for s in spec.normalizer { if case .prepend(let p) = s, p == "▁" { return true } }
        for s in spec.preTokenizer { if case .metaspace(_, let scheme, _) = s, scheme != "never" { return true } }
        return false
    }

    /// The spec's merges, or (SentencePiece scores) the merges `Tokenizer` applies by score, best first.
    static func mergePairs(_ spec: TokenizerSpec) throws -> [(String, String)] {
        if !spec.merges.isEmpty { return spec.merges }
        guard let scores = spec.scores else { return [] }
        try require(scores.count == spec.vocab.count, "tokenizer: \(scores.count) scores for \(spec.vocab.count) tokens")
        var known = Set<String>()
        for t in spec.vocab where !t.isEmpty { known.insert(t) }
        for a in spec.addedTokens { known.insert(a.content) }
        let skip = Set(spec.addedTokens.map { Int($0.id) })
        var cands: [(score: Float, id: Int, split: Int, pair: (String, String))] = []
        for (i, t) in spec.vocab.enumerated() where !skip.contains(i) {
            if spec.byteFallback && Tokenizer.byteTokenValue(t) != nil { continue }
            let us = Array(t.unicodeScalars)
            if us.count < 2 { continue }
            let sc = scores[i].isNaN ? -Float.infinity : scores[i]
            for k in 1..<us.count {
                var l = String.UnicodeScalarView(), r = String.UnicodeScalarView()
                l.append(contentsOf: us[..<k]); r.append(contentsOf: us[k...])
                let ls = String(l), rs = String(r)
                if known.contains(ls) && known.contains(rs) { cands.append((sc, i, k, (ls, rs))) }
            }
        }
        cands.sort { a, b in
            a.score != b.score ? a.score > b.score : (a.id != b.id ? a.id < b.id : a.split < b.split)
        }
        var seenPairs = Set<String>()
        var out: [(String, String)] = []
        out.reserveCapacity(cands.count)
        for c in cands where seenPairs.insert(c.pair.0 + "\u{0}" + c.pair.1).inserted { out.append(c.pair) }
        return out
    }

    private static func sequence(_ steps: [JSONOut], type: String, key: String) -> JSONOut {
        switch steps.count {
        case 0: return .null
        case 1: return steps[0]
        default: return .object([("type", .string(type)), (key, .array(steps))])
        }
    }

    /// `tokenizer_config.json` text: special tokens, `add_bos_token` / `add_eos_token` as the spec says, the chat
    /// template when known, `clean_up_tokenization_spaces: false` (decode gives the text back as it was) and
    /// `tokenizer_class: PreTrainedTokenizerFast` so `transformers` uses tokenizer.json as written.
    public static func tokenizerConfigJSON(_ spec: TokenizerSpec, extras: TokenizerExtras) throws -> String {
        var o: [(String, JSONOut)] = [("add_bos_token", .bool(spec.addBOS)), ("add_eos_token", .bool(spec.addEOS))]
        var decoderTable: [(String, JSONOut)] = []
        for a in spec.addedTokens.sorted(by: { $0.id < $1.id }) {
            decoderTable.append((String(a.id), .object([
                ("content", .string(a.content)), ("lstrip", .bool(a.lstrip)), ("normalized", .bool(a.normalized)),
                ("rstrip", .bool(a.rstrip)), ("single_word", .bool(a.singleWord)), ("special", .bool(a.special)),
            ])))
        }
        o.append(("added_tokens_decoder", .object(decoderTable)))
        for (key, value) in try specialTokens(spec, extras: extras) { o.append((key, .string(value))) }
        if let t = extras.chatTemplate { o.append(("chat_template", .string(t))) }
        o.append(("clean_up_tokenization_spaces", .bool(false)))
        if let n = extras.modelMaxLength { o.append(("model_max_length", .int(n))) }
        o.append(("tokenizer_class", .string("PreTrainedTokenizerFast")))
        var out = ""
        JSONOut.object(o).render(into: &out, indent: 0)
        return out + "\n"
    }

    /// `special_tokens_map.json` text (older readers take the special tokens from it).
    public static func specialTokensMapJSON(_ spec: TokenizerSpec, extras: TokenizerExtras) throws -> String {
        var out = ""
        JSONOut.object(try specialTokens(spec, extras: extras).map { ($0.0, .string($0.1)) }).render(into: &out, indent: 0)
        return out + "\n"
    }

    /// ("bos_token", content) … for the ids the spec and extras know.
    static func specialTokens(_ spec: TokenizerSpec, extras: TokenizerExtras) throws -> [(String, String)] {
        var out: [(String, String)] = []
        for (key, id) in [("bos_token", spec.bosId), ("eos_token", spec.eosId), ("unk_token", spec.unkId),
                          ("pad_token", extras.padId)] {
            guard let id = id else { continue }
            try require(id >= 0 && Int(id) < spec.vocab.count, "tokenizer: \(key) id \(id) outside the vocabulary")
            out.append((key, spec.vocab[Int(id)]))
        }
        return out
    }
}

/// A JSON value with ordered object keys, rendered with two-space indentation; arrays of scalars stay on one line
/// (merges as `["a", "b"]`, one per line), objects put one key per line.
indirect enum JSONOut {
    case null
    case bool(Bool)
    case int(Int)
    case string(String)
    case array([JSONOut])
    case object([(String, JSONOut)])

    private var isScalar: Bool {
        switch self {
        case .array, .object: return false
        default: return true
        }
    }

    func render(into out: inout String, indent: Int) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .string(let s): out += JSONText.quote(s)
        case .array(let a):
            if a.isEmpty { out += "[]"; return }
            if a.allSatisfy(\.isScalar) {
                out += "["
                for (k, v) in a.enumerated() {
                    if k > 0 { out += ", " }
                    v.render(into: &out, indent: indent)
                }
                out += "]"
                return
            }
            let pad = String(repeating: " ", count: indent + 2)
            out += "[\n"
            for (k, v) in a.enumerated() {
                out += pad
                v.render(into: &out, indent: indent + 2)
                out += k + 1 < a.count ? ",\n" : "\n"
            }
            out += String(repeating: " ", count: indent) + "]"
        case .object(let o):
            if o.isEmpty { out += "{}"; return }
            let pad = String(repeating: " ", count: indent + 2)
            out += "{\n"
            for (k, (key, v)) in o.enumerated() {
                out += pad + JSONText.quote(key) + ": "
                v.render(into: &out, indent: indent + 2)
                out += k + 1 < o.count ? ",\n" : "\n"
            }
            out += String(repeating: " ", count: indent) + "}"
        }
    }
}
