import Foundation

/// A BPE tokenizer (byte-level or SentencePiece) built from a `TokenizerSpec`. `encode` gives the ids that the
/// Hugging Face `tokenizers` library's `encode(text).ids` gives (special tokens added by the post-processor);
/// `decode` follows its decoders.
///
/// Thread safety: `encode` keeps a word cache behind a lock (calls on one instance run one at a time), so one
/// instance may be shared between threads.
public final class Tokenizer: @unchecked Sendable {
    public let spec: TokenizerSpec
    public var vocabSize: Int { spec.vocab.count }
    public var bosId: Int32? { spec.bosId }
    public var eosId: Int32? { spec.eosId }

    private enum Step {
        case split(SplitScanner)
        case digits(individual: Bool)
        case prefixSpace
        case metaspace(replacement: Unicode.Scalar, prependAlways: Bool, prependFirst: Bool, split: Bool)
    }

    private let steps: [Step]
    private let byteLevel: Bool
    private var tokenToId: [String: Int32] = [:]
    private var merges = MergeTable()
    // byte level
    private var byteToChar: [Unicode.Scalar] = []
    private var charToByte: [UInt32: UInt8] = [:]
    private var byteToId = [Int32](repeating: -1, count: 256)
    // SentencePiece
    private var scalarToId: [UInt32: Int32] = [:]
    private var byteTokenId = [Int32](repeating: -1, count: 256)
    private var byteTokenValue: [Int32: UInt8] = [:]
    // added tokens, matched leftmost-longest
    /// Tokens matched in the raw text, and (`normalized` ones) in the normalized text.
    private var rawAdded = AddedTokenMatcher()
    private var normalizedAdded = AddedTokenMatcher()
    /// Decoded text of normalized added tokens: their normalized content, as tokenizers' decode gives it.
    private var normalizedAddedText: [Int32: String] = [:]
    private var specialIds: Set<Int32> = []
    private let stripPrefixOnDecode: Bool

    private var cache: [String: [Int32]] = [:]
    private let cacheLock = NSLock()

    /// Builds the tables. Throws `.unsupported` for a pre-tokenizer pattern this library does not implement and
    /// `.invalidArgument` for an inconsistent spec (merge of unknown tokens, id out of range).
    public init(spec: TokenizerSpec) throws {
        self.spec = spec
        var steps: [Step] = []
        var byteLevel = spec.kind == .byteLevelBPE
        var stripPrefix = false
        for s in spec.normalizer { if case .prepend(let p) = s, p == "▁" { stripPrefix = true } }
        for st in spec.preTokenizer {
            switch st {
            case .split(let pattern, let behavior, let invert):
                guard let sc = SplitScanner(pattern: pattern) else {
                    throw SwiftQuantError.unsupported("tokenizer: pre-tokenizer regex `\(pattern)` is not "
                        + "implemented (known: GPT-2, Llama-3, Qwen2 patterns)")
                }
                guard behavior == "Isolated", !invert else {
                    throw SwiftQuantError.unsupported(
                        "tokenizer: Split behavior \(behavior) with invert=\(invert) is not implemented")
                }
                steps.append(.split(sc))
            case .byteLevel(let addPrefixSpace, let useRegex):
                byteLevel = true
                if addPrefixSpace { steps.append(.prefixSpace) }
                if useRegex { steps.append(.split(.gpt2)) }
            case .digits(let individual):
                steps.append(.digits(individual: individual))
            case .metaspace(let replacement, let scheme, let split):
                let rs = Array(replacement.unicodeScalars)
                guard rs.count == 1 else {
                    throw SwiftQuantError.unsupported("tokenizer: Metaspace replacement must be one character")
                }
                guard ["always", "first", "never"].contains(scheme) else {
                    throw SwiftQuantError.unsupported("tokenizer: Metaspace prepend_scheme \(scheme)")
                }
                if scheme != "never" { stripPrefix = true }
                steps.append(.metaspace(replacement: rs[0], prependAlways: scheme == "always",
                                        prependFirst: scheme == "first", split: split))
            }
        }
        try require(!(byteLevel && spec.kind == .sentencePieceBPE),
                    "tokenizer: a ByteLevel pre-tokenizer in a SentencePiece spec")
        self.steps = steps
        self.byteLevel = byteLevel
        self.stripPrefixOnDecode = stripPrefix && !byteLevel

        let n = spec.vocab.count
        tokenToId.reserveCapacity(n)
        for (i, t) in spec.vocab.enumerated() where !t.isEmpty && tokenToId[t] == nil { tokenToId[t] = Int32(i) }
        for a in spec.addedTokens {
            try require(a.id >= 0 && Int(a.id) < n, "tokenizer: added token id \(a.id) outside the vocabulary")
            tokenToId[a.content] = a.id
        }
        for id in [spec.bosId, spec.eosId, spec.unkId] {
            if let id = id { try require(id >= 0 && Int(id) < n, "tokenizer: special id \(id) outside the vocabulary") }
        }
        try require(!spec.addBOS || spec.bosId != nil, "tokenizer: addBOS without a bos id")
        try require(!spec.addEOS || spec.eosId != nil, "tokenizer: addEOS without an eos id")

        if byteLevel {
            // GPT-2's printable byte map: printable Latin-1 bytes map to themselves, the rest to U+0100 + k.
            var map = [UInt32](repeating: 0, count: 256)
            var k: UInt32 = 0
            for b in 0..<256 {
                if (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b) {
                    map[b] = UInt32(b)
                } else {
                    map[b] = 256 + k
                    k += 1
                }
            }
            byteToChar = map.map { Unicode.Scalar($0)! }
            for b in 0..<256 {
                charToByte[map[b]] = UInt8(b)
                if let id = tokenToId[String(byteToChar[b])] { byteToId[b] = id }
            }
        } else {
            for (i, t) in spec.vocab.enumerated() {
                let us = t.unicodeScalars
                if us.count == 1, scalarToId[us.first!.value] == nil { scalarToId[us.first!.value] = Int32(i) }
                if spec.byteFallback, let b = Tokenizer.byteTokenValue(t) {
                    if byteTokenId[Int(b)] < 0 { byteTokenId[Int(b)] = Int32(i) }
                    byteTokenValue[Int32(i)] = b
                }
            }
        }

        if !spec.merges.isEmpty {
            merges.table.reserveCapacity(spec.merges.count)
            for (rank, (a, b)) in spec.merges.enumerated() {
                guard let ia = tokenToId[a], let ib = tokenToId[b], let ic = tokenToId[a + b] else {
                    throw SwiftQuantError.invalidArgument(
                        "tokenizer: merge \(rank) (\(a.debugDescription), \(b.debugDescription)) uses a token "
                        + "missing from the vocabulary")
                }
                merges.insert(ia, ib, rank: Int32(rank), id: ic)
            }
        } else if let scores = spec.scores {
            try require(scores.count == n, "tokenizer: \(scores.count) scores for \(n) tokens")
            // Rank = position of the merged token's score among the distinct scores, best first; equal scores
            // share a rank so the leftmost pair wins, as in SentencePiece / llama.cpp.
            let distinct = Array(Set(scores.map { $0.isNaN ? -Float.infinity : $0 })).sorted(by: >)
            var rankOf: [Float: Int32] = [:]
            for (r, s) in distinct.enumerated() { rankOf[s] = Int32(r) }
            let skip = Set(spec.addedTokens.map { $0.id })
            for (i, t) in spec.vocab.enumerated() where !skip.contains(Int32(i)) && byteTokenValue[Int32(i)] == nil {
                let us = Array(t.unicodeScalars)
                if us.count < 2 { continue }
                let sc = scores[i].isNaN ? -Float.infinity : scores[i]
                for k in 1..<us.count {
                    var l = String.UnicodeScalarView(), r = String.UnicodeScalarView()
                    l.append(contentsOf: us[..<k]); r.append(contentsOf: us[k...])
                    if let il = tokenToId[String(l)], let ir = tokenToId[String(r)] {
                        merges.insert(il, ir, rank: rankOf[sc]!, id: Int32(i))
                    }
                }
            }
        }

        for (idx, a) in spec.addedTokens.enumerated() {
            let sc = Array(a.content.unicodeScalars)
            if a.normalized && !spec.normalizer.isEmpty {
                // As tokenizers does: the token's content goes through the normalizer too.
                let n = normalize(sc[...])
                normalizedAdded.add(n, index: idx)
                var v = String.UnicodeScalarView()
                v.append(contentsOf: n)
                normalizedAddedText[a.id] = String(v)
            } else {
                rawAdded.add(sc, index: idx)
            }
            if a.special { specialIds.insert(a.id) }
        }
    }

    static func byteTokenValue(_ t: String) -> UInt8? {
        let u = Array(t.utf8)
        guard u.count == 6, u[0] == 60, u[1] == 48, u[2] == 120, u[5] == 62 else { return nil }   // <0xNN>
        func hex(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: return c - 48
            case 65...70: return c - 55
            case 97...102: return c - 87
            default: return nil
            }
        }
        guard let h = hex(u[3]), let l = hex(u[4]) else { return nil }
        return h << 4 | l
    }

    /// Whether `id` is a special added token (dropped by `decode(_:skipSpecialTokens: true)`).
    public func isSpecialToken(_ id: Int32) -> Bool { specialIds.contains(id) }

    /// The id of a token string, if it is in the vocabulary.
    public func tokenId(_ token: String) -> Int32? { tokenToId[token] }

    /// The token string of an id.
    public func token(_ id: Int32) throws -> String {
        try require(id >= 0 && Int(id) < spec.vocab.count, "tokenizer: id \(id) outside 0..<\(spec.vocab.count)")
        return spec.vocab[Int(id)]
    }

    // MARK: - encode

    /// Encodes `text` like tokenizers' `encode(text).ids` (add_special_tokens=True): added tokens matched in the
    /// raw text first, then normalizer, pre-tokenizer and BPE on the rest, then bos/eos per the post-processor.
    public func encode(_ text: String) -> [Int32] {
        let scalars = Tokenizer.scalars(of: text)
        var out: [Int32] = []
        out.reserveCapacity(scalars.count / 3 + 2)
        if spec.addBOS, let b = spec.bosId { out.append(b) }
        cacheLock.lock()
        defer { cacheLock.unlock() }
        if cache.count > 262_144 { cache.removeAll() }   // bound memory on very varied input
        var utf8: [UInt8] = []
        walk(scalars, added: { out.append($0) }, piece: { buf, r in
            utf8.removeAll(keepingCapacity: true)
            for k in r { Tokenizer.appendUTF8(buf[k], to: &utf8) }
            let key = String(decoding: utf8, as: UTF8.self)
            if let ids = cache[key] {
                out.append(contentsOf: ids)
                return
            }
            let ids = bpeWord(buf[r], key: key)
            if r.count <= 64 { cache[key] = ids }
            out.append(contentsOf: ids)
        })
        if spec.addEOS, let e = spec.eosId { out.append(e) }
        return out
    }

    static func classes(_ buf: [Unicode.Scalar]) -> [UInt8] {
        var c = [UInt8](repeating: 0, count: buf.count)
        let ascii = CharClass.ascii
        for k in 0..<buf.count {
            let v = buf[k].value
            c[k] = v < 128 ? ascii[Int(v)] : CharClass.computeSlow(buf[k])
        }
        return c
    }

    static func scalars(of text: String) -> [Unicode.Scalar] {
        var a: [Unicode.Scalar] = []
        a.reserveCapacity(text.utf8.count)
        for s in text.unicodeScalars { a.append(s) }
        return a
    }

    @inline(__always)
    static func appendUTF8(_ s: Unicode.Scalar, to out: inout [UInt8]) {
        let v = s.value
        if v < 0x80 {
            out.append(UInt8(v))
        } else if v < 0x800 {
            out.append(UInt8(0xC0 | (v >> 6))); out.append(UInt8(0x80 | (v & 0x3F)))
        } else if v < 0x10000 {
            out.append(UInt8(0xE0 | (v >> 12))); out.append(UInt8(0x80 | ((v >> 6) & 0x3F)))
            out.append(UInt8(0x80 | (v & 0x3F)))
        } else {
            out.append(UInt8(0xF0 | (v >> 18))); out.append(UInt8(0x80 | ((v >> 12) & 0x3F)))
            out.append(UInt8(0x80 | ((v >> 6) & 0x3F))); out.append(UInt8(0x80 | (v & 0x3F)))
        }
    }

    /// The pieces BPE sees for `text`: added tokens as themselves, every other piece as its normalized,
    /// pre-tokenized text (before the byte-level character mapping). For inspection and tests.
    public func preTokenize(_ text: String) -> [String] {
        var out: [String] = []
        walk(Tokenizer.scalars(of: text), added: { out.append(spec.vocab[Int($0)]) }, piece: { buf, r in
            var v = String.UnicodeScalarView()
            v.append(contentsOf: buf[r])
            out.append(String(v))
        })
        return out
    }

    /// The encode pipeline up to BPE: raw added tokens, normalizer, normalized added tokens, pre-tokenizer.
    /// Calls `added` for each added token and `piece` for each non-empty piece (a range of `buf`), in order.
    private func walk(_ scalars: [Unicode.Scalar], added: (Int32) -> Void,
                      piece: (_ buf: [Unicode.Scalar], _ range: Range<Int>) -> Void) {
        for (range, id) in rawAdded.split(scalars, tokens: spec.addedTokens) {
            if let id = id {
                added(id)
                continue
            }
            let norm = spec.normalizer.isEmpty ? Array(scalars[range]) : normalize(scalars[range])
            let subs: [(range: Range<Int>, added: Int32?)] = normalizedAdded.isEmpty
                ? [(0..<norm.count, nil)] : normalizedAdded.split(norm, tokens: spec.addedTokens)
            for (sr, sid) in subs {
                if let sid = sid {
                    added(sid)
                    continue
                }
                let (buf, ranges) = preTokenizeSegment(norm[sr],
                                                       atTextStart: range.lowerBound == 0 && sr.lowerBound == 0)
                for r in ranges where !r.isEmpty { piece(buf, r) }
            }
        }
    }

    private func normalize(_ seg: ArraySlice<Unicode.Scalar>) -> [Unicode.Scalar] {
        var s = Array(seg)
        for step in spec.normalizer {
            switch step {
            case .nfc:
                var v = String.UnicodeScalarView()
                v.append(contentsOf: s)
                s = Array(String(v).precomposedStringWithCanonicalMapping.unicodeScalars)
            case .prepend(let p):
                if !s.isEmpty { s.insert(contentsOf: p.unicodeScalars, at: 0) }
            case .replace(let from, let to):
                let f = Array(from.unicodeScalars), t = Array(to.unicodeScalars)
                if f.count == 1 && t.count == 1 {
                    for k in s.indices where s[k] == f[0] { s[k] = t[0] }
                } else if !f.isEmpty {
                    var v = String.UnicodeScalarView()
                    v.append(contentsOf: s)
                    s = Array(String(v).replacingOccurrences(of: from, with: to).unicodeScalars)
                }
            }
        }
        return s
    }

    /// Splits one stretch of normalized text between added tokens into pieces (ranges of the returned buffer).
    private func preTokenizeSegment(_ seg: ArraySlice<Unicode.Scalar>, atTextStart: Bool)
        -> (buf: [Unicode.Scalar], ranges: [Range<Int>]) {
        var buf = Array(seg)
        if buf.isEmpty { return ([], []) }
        var ranges: [Range<Int>] = [0..<buf.count]
        var cls: [UInt8] = []
        var clsValid = false
        for step in steps {
            switch step {
            case .split(let sc):
                if !clsValid { cls = Tokenizer.classes(buf); clsValid = true }
                var nr: [Range<Int>] = []
                nr.reserveCapacity(ranges.count + buf.count / 4)
                buf.withUnsafeBufferPointer { b in
                    cls.withUnsafeBufferPointer { c in
                        for r in ranges { sc.split(b, c, r.lowerBound, r.upperBound, into: &nr) }
                    }
                }
                ranges = nr
            case .digits(let individual):
                if !clsValid { cls = Tokenizer.classes(buf); clsValid = true }
                var nr: [Range<Int>] = []
                for r in ranges {
                    var k = r.lowerBound
                    while k < r.upperBound {
                        let num = cls[k] & CharClass.number != 0
                        var e = k + 1
                        if !(num && individual) {
                            while e < r.upperBound && (cls[e] & CharClass.number != 0) == num { e += 1 }
                        }
                        nr.append(k..<e)
                        k = e
                    }
                }
                ranges = nr
            case .prefixSpace:
                var nb: [Unicode.Scalar] = []
                nb.reserveCapacity(buf.count + ranges.count)
                var nr: [Range<Int>] = []
                for r in ranges {
                    let s = nb.count
                    if buf[r.lowerBound] != " " { nb.append(" ") }
                    nb.append(contentsOf: buf[r])
                    nr.append(s..<nb.count)
                }
                buf = nb
                ranges = nr
                clsValid = false
            case .metaspace(let rep, let always, let first, let split):
                var nb: [Unicode.Scalar] = []
                nb.reserveCapacity(buf.count + ranges.count)
                var nr: [Range<Int>] = []
                for r in ranges {
                    let s = nb.count
                    if buf[r.lowerBound] != rep && buf[r.lowerBound] != " "
                        && (always || (first && atTextStart && r.lowerBound == 0)) {
                        nb.append(rep)
                    }
                    for c in buf[r] { nb.append(c == " " ? rep : c) }
                    if split {
                        var st = s
                        for k in (s + 1)..<max(nb.count, s + 1) where nb[k] == rep {
                            nr.append(st..<k)
                            st = k
                        }
                        nr.append(st..<nb.count)
                    } else {
                        nr.append(s..<nb.count)
                    }
                }
                buf = nb
                ranges = nr
                clsValid = false
            }
        }
        return (buf, ranges)
    }

    private func bpeWord(_ word: ArraySlice<Unicode.Scalar>, key: String) -> [Int32] {
        var syms: [Int32] = []
        syms.reserveCapacity(word.count * 2)
        if byteLevel {
            if spec.ignoreMerges {
                var m = String.UnicodeScalarView()
                for b in key.utf8 { m.append(byteToChar[Int(b)]) }
                if let id = tokenToId[String(m)] { return [id] }
            }
            var lastUnk = false
            for b in key.utf8 {
                let id = byteToId[Int(b)]
                if id >= 0 { syms.append(id); lastUnk = false } else if let u = spec.unkId, !(lastUnk && spec.fuseUnk) {
                    syms.append(u); lastUnk = true
                }
            }
        } else {
            if spec.ignoreMerges, let id = tokenToId[key] { return [id] }
            var lastUnk = false
            for s in word {
                if let id = scalarToId[s.value] { syms.append(id); lastUnk = false; continue }
                var usedBytes = false
                if spec.byteFallback {
                    let bytes = Array(String(s).utf8)
                    if bytes.allSatisfy({ byteTokenId[Int($0)] >= 0 }) {
                        for b in bytes { syms.append(byteTokenId[Int(b)]) }
                        usedBytes = true
                        lastUnk = false
                    }
                }
                if !usedBytes, let u = spec.unkId, !(lastUnk && spec.fuseUnk) { syms.append(u); lastUnk = true }
            }
        }
        merges.merge(&syms)
        return syms
    }

    // MARK: - decode

    /// Decodes ids to text like tokenizers' `decode` (ByteLevel decoder, or SentencePiece's
    /// "▁" → " " + byte fallback + strip of the prefix space). Throws `.invalidArgument` for an id outside the
    /// vocabulary.
    public func decode(_ ids: [Int32], skipSpecialTokens: Bool = false) throws -> String {
        var bytes: [UInt8] = []
        for id in ids {
            try require(id >= 0 && Int(id) < spec.vocab.count,
                        "tokenizer: id \(id) outside the vocabulary 0..<\(spec.vocab.count)")
        }
        let kept = skipSpecialTokens ? ids.filter { !specialIds.contains($0) } : ids
        if byteLevel {
            for id in kept {
                let t = normalizedAddedText[id] ?? spec.vocab[Int(id)]
                var tb: [UInt8] = []
                var ok = true
                for s in t.unicodeScalars {
                    guard let b = charToByte[s.value] else { ok = false; break }
                    tb.append(b)
                }
                bytes.append(contentsOf: ok ? tb : Array(t.utf8))
            }
            return String(decoding: bytes, as: UTF8.self)
        }
        var result = ""
        var pending: [UInt8] = []
        func flush() {
            if pending.isEmpty { return }
            if let s = String(validating: pending, as: UTF8.self) {
                result += s
            } else {
                result += String(repeating: "\u{FFFD}", count: pending.count)
            }
            pending.removeAll()
        }
        for id in kept {
            if let b = byteTokenValue[id] { pending.append(b); continue }
            flush()
            result += (normalizedAddedText[id] ?? spec.vocab[Int(id)]).replacingOccurrences(of: "▁", with: " ")
        }
        flush()
        // Scalar-wise: " " followed by a combining mark is one Character, so `hasPrefix(" ")` would miss it.
        if stripPrefixOnDecode && result.unicodeScalars.first == " " {
            result.unicodeScalars.removeFirst()
        }
        return result
    }
}
