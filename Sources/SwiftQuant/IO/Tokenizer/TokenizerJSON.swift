import Foundation

extension Tokenizer {
    /// Reads a Hugging Face `tokenizer.json` (model type BPE). Throws `.io` when the file cannot be read,
    /// `.format("<file>: <problem>")` when it is not a valid tokenizer.json, `.unsupported` for a model,
    /// normalizer, pre-tokenizer or post-processor this library does not implement.
    public static func fromJSON(path: String) throws -> Tokenizer {
        let spec = try TokenizerSpec.fromJSON(path: path)
        do {
            return try Tokenizer(spec: spec)
        } catch SwiftQuantError.invalidArgument(let m) {
            // An inconsistent file (merge of an unknown token, id out of range) is a format problem of the file.
            throw SwiftQuantError.format("\(path): \(m)")
        }
    }
}

extension TokenizerSpec {
    /// Reads a Hugging Face `tokenizer.json` into a spec (see `Tokenizer.fromJSON(path:)`).
    ///
    /// bos/eos: taken from the post-processor template when it adds them; otherwise (tokenizer.json does not
    /// name them) from `bos_token` / `eos_token` of a `tokenizer_config.json` beside the file, else the first of the
    /// usual names present ("<s>", "<|begin_of_text|>", "<|im_start|>", "<|endoftext|>" / "</s>", "<|end_of_text|>",
    /// "<|im_end|>", "<|endoftext|>", "<|eot_id|>").
    /// The decoder section is not read: decoding follows the kind (ByteLevel, or SentencePiece's
    /// "▁" → " " + byte fallback + one leading space stripped when a "▁" prefix is added).
    public static func fromJSON(path: String) throws -> TokenizerSpec {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw SwiftQuantError.io("\(path): cannot read: \(error.localizedDescription)")
        }
        var spec = try fromJSON(data: data, name: path)
        let cfgPath = ((path as NSString).deletingLastPathComponent as NSString)
            .appendingPathComponent("tokenizer_config.json")
        if let cd = FileManager.default.contents(atPath: cfgPath),
           let cfg = (try? JSONSerialization.jsonObject(with: cd)) as? [String: Any] {
            func named(_ key: String) -> Int32? {
                let v = cfg[key]
                guard let s = (v as? String) ?? ((v as? [String: Any])?["content"] as? String) else { return nil }
                if let a = spec.addedTokens.first(where: { $0.content == s }) { return a.id }
                return spec.vocab.firstIndex(of: s).map { Int32($0) }
            }
            if !spec.addBOS, let b = named("bos_token") { spec.bosId = b }
            if !spec.addEOS, let e = named("eos_token") { spec.eosId = e }
        }
        return spec
    }

    /// Parses the contents of a `tokenizer.json`; `name` is used in error messages.
    public static func fromJSON(data: Data, name: String = "tokenizer.json") throws -> TokenizerSpec {
        func bad(_ m: String) -> SwiftQuantError { .format("\(name): \(m)") }
        func unsupported(_ m: String) -> SwiftQuantError { .unsupported("\(name): \(m)") }
        let rootAny: Any
        do {
            rootAny = try JSONSerialization.jsonObject(with: data)
        } catch {
            throw bad("not valid JSON (\(error.localizedDescription))")
        }
        guard let root = rootAny as? [String: Any] else { throw bad("top level is not an object") }
        guard let model = root["model"] as? [String: Any] else { throw bad("no \"model\" object") }
        let mtype = model["type"] as? String ?? "BPE"
        guard mtype == "BPE" else { throw unsupported("model type \(mtype) is not implemented (only BPE)") }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let s = model[key] as? String, !s.isEmpty { throw unsupported("BPE \(key) is not implemented") }
        }
        if let d = model["dropout"] as? Double, d > 0 { throw unsupported("BPE dropout is not implemented") }
        guard let vocabObj = model["vocab"] as? [String: Any] else { throw bad("model.vocab is not an object") }

        // Vocabulary: model vocab plus added tokens, id = index.
        var byId: [Int: String] = [:]
        byId.reserveCapacity(vocabObj.count + 64)
        var maxId = -1
        for (tok, v) in vocabObj {
            guard let id = (v as? NSNumber)?.intValue, id >= 0 else { throw bad("vocab entry \(tok) has no valid id") }
            byId[id] = tok
            maxId = max(maxId, id)
        }
        var added: [AddedToken] = []
        if let list = root["added_tokens"] as? [[String: Any]] {
            for a in list {
                guard let id = (a["id"] as? NSNumber)?.intValue, id >= 0, let content = a["content"] as? String else {
                    throw bad("added token without id/content")
                }
                let special = a["special"] as? Bool ?? false
                added.append(AddedToken(content: content, id: Int32(id), special: special,
                                        lstrip: a["lstrip"] as? Bool ?? false, rstrip: a["rstrip"] as? Bool ?? false,
                                        normalized: a["normalized"] as? Bool ?? !special,
                                        singleWord: a["single_word"] as? Bool ?? false))
                byId[id] = content
                maxId = max(maxId, id)
            }
        }
        guard maxId < 50_000_000 else { throw bad("token id \(maxId) is implausibly large") }
        var vocab = [String](repeating: "", count: maxId + 1)
        for (id, t) in byId { vocab[id] = t }

        // Merges: "a b" strings (older files) or ["a", "b"] pairs (newer files).
        var merges: [(String, String)] = []
        if let ml = model["merges"] as? [Any] {
            merges.reserveCapacity(ml.count)
            for m in ml {
                if let s = m as? String {
                    let parts = s.split(separator: " ", omittingEmptySubsequences: false)
                    guard parts.count == 2 else { throw bad("merge \(s.debugDescription) is not two tokens") }
                    merges.append((String(parts[0]), String(parts[1])))
                } else if let p = m as? [String], p.count == 2 {
                    merges.append((p[0], p[1]))
                } else {
                    throw bad("a merge is neither \"a b\" nor [\"a\", \"b\"]")
                }
            }
        } else if model["merges"] != nil && !(model["merges"] is NSNull) {
            throw bad("model.merges is not an array")
        }

        // Normalizer.
        var norm: [NormalizerStep] = []
        func addNormalizer(_ n: [String: Any]) throws {
            switch n["type"] as? String ?? "" {
            case "Sequence":
                for s in n["normalizers"] as? [[String: Any]] ?? [] { try addNormalizer(s) }
            case "NFC": norm.append(.nfc)
            case "Prepend":
                guard let p = n["prepend"] as? String else { throw bad("Prepend normalizer without prepend") }
                norm.append(.prepend(p))
            case "Replace":
                guard let pat = n["pattern"] as? [String: Any], let from = pat["String"] as? String,
                      let to = n["content"] as? String else {
                    throw unsupported("Replace normalizer with a regex pattern is not implemented")
                }
                norm.append(.replace(from, to))
            case let t:
                throw unsupported("normalizer \(t) is not implemented")
            }
        }
        if let n = root["normalizer"] as? [String: Any] { try addNormalizer(n) }

        // Pre-tokenizer.
        var pre: [PreTokenizerStep] = []
        func addPre(_ p: [String: Any]) throws {
            switch p["type"] as? String ?? "" {
            case "Sequence":
                for s in p["pretokenizers"] as? [[String: Any]] ?? [] { try addPre(s) }
            case "Split":
                guard let pat = p["pattern"] as? [String: Any], let rx = pat["Regex"] as? String else {
                    throw unsupported("Split pre-tokenizer with a non-regex pattern is not implemented")
                }
                pre.append(.split(pattern: rx, behavior: p["behavior"] as? String ?? "Isolated",
                                  invert: p["invert"] as? Bool ?? false))
            case "ByteLevel":
                pre.append(.byteLevel(addPrefixSpace: p["add_prefix_space"] as? Bool ?? true,
                                      useRegex: p["use_regex"] as? Bool ?? true))
            case "Digits":
                pre.append(.digits(individual: p["individual_digits"] as? Bool ?? false))
            case "Metaspace":
                var scheme = (p["prepend_scheme"] as? String)?.lowercased()
                if scheme == nil { scheme = (p["add_prefix_space"] as? Bool ?? true) ? "always" : "never" }
                pre.append(.metaspace(replacement: p["replacement"] as? String ?? "▁", prependScheme: scheme!,
                                      split: p["split"] as? Bool ?? true))
            case let t:
                throw unsupported("pre-tokenizer \(t) is not implemented")
            }
        }
        if let p = root["pre_tokenizer"] as? [String: Any] { try addPre(p) }

        let byteLevel = pre.contains { if case .byteLevel = $0 { return true } else { return false } }
        let byteFallback = model["byte_fallback"] as? Bool ?? false
        let kind: Kind = byteLevel ? .byteLevelBPE : .sentencePieceBPE

        func idOf(_ tok: String) -> Int32? {
            if let a = added.first(where: { $0.content == tok }) { return a.id }
            if let v = (vocabObj[tok] as? NSNumber)?.intValue { return Int32(v) }
            return nil
        }
        var unkId: Int32? = nil
        if let u = model["unk_token"] as? String { unkId = idOf(u) }

        // Post-processor: which special tokens surround a single sequence.
        var prefix: [Int32] = [], suffix: [Int32] = []
        func addPost(_ p: [String: Any]) throws {
            switch p["type"] as? String ?? "" {
            case "Sequence":
                for s in p["processors"] as? [[String: Any]] ?? [] { try addPost(s) }
            case "ByteLevel":
                break   // offsets only
            case "TemplateProcessing":
                guard let single = p["single"] as? [[String: Any]] else { throw bad("template without single") }
                let specials = p["special_tokens"] as? [String: Any] ?? [:]
                var seenA = false
                for piece in single {
                    if piece["Sequence"] != nil { seenA = true; continue }
                    guard let st = piece["SpecialToken"] as? [String: Any], let name = st["id"] as? String else {
                        throw bad("template piece is neither Sequence nor SpecialToken")
                    }
                    var ids: [Int32] = []
                    if let e = specials[name] as? [String: Any], let l = e["ids"] as? [NSNumber] {
                        ids = l.map { Int32($0.intValue) }
                    } else if let id = idOf(name) {
                        ids = [id]
                    } else {
                        throw bad("template special token \(name) is unknown")
                    }
                    if seenA { suffix += ids } else { prefix += ids }
                }
            case "RobertaProcessing", "BertProcessing":
                guard let cls = p["cls"] as? [Any], cls.count == 2, let c = (cls[1] as? NSNumber)?.intValue,
                      let sep = p["sep"] as? [Any], sep.count == 2, let s = (sep[1] as? NSNumber)?.intValue else {
                    throw bad("post-processor without cls/sep")
                }
                prefix = [Int32(c)]
                suffix = [Int32(s)]
            case let t:
                throw unsupported("post-processor \(t) is not implemented")
            }
        }
        if let p = root["post_processor"] as? [String: Any] { try addPost(p) }
        guard prefix.count <= 1, suffix.count <= 1 else {
            throw unsupported("post-processor adding more than one token on a side is not implemented")
        }

        // bos/eos: from the template when present, otherwise by the usual token names.
        func firstKnown(_ names: [String]) -> Int32? {
            for n in names { if let id = idOf(n) { return id } }
            return nil
        }
        let bos = prefix.first ?? firstKnown(["<s>", "<|begin_of_text|>", "<|im_start|>", "<|endoftext|>"])
        let eos = suffix.first ?? firstKnown(["</s>", "<|end_of_text|>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>"])

        return TokenizerSpec(kind: kind, vocab: vocab, merges: merges, addedTokens: added, normalizer: norm,
                             preTokenizer: pre, byteFallback: byteFallback,
                             ignoreMerges: model["ignore_merges"] as? Bool ?? false, bosId: bos, eosId: eos,
                             unkId: unkId, fuseUnk: model["fuse_unk"] as? Bool ?? false, addBOS: !prefix.isEmpty,
                             addEOS: !suffix.isEmpty)
    }
}
