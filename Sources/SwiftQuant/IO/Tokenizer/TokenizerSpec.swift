/// A model-agnostic description of a BPE tokenizer: everything `Tokenizer` needs, whether it came from a
/// Hugging Face `tokenizer.json` or from GGUF `tokenizer.ggml.*` metadata.
public struct TokenizerSpec: Sendable {
    /// The two BPE families this library implements.
    public enum Kind: String, Sendable, Equatable {
        /// GPT-2 style: text is turned into UTF-8 bytes, each byte shown as a printable character, BPE by merges.
        case byteLevelBPE
        /// SentencePiece style (Llama-2, Mistral): spaces become "▁", BPE over characters, optional
        /// `<0xNN>` byte fallback for characters outside the vocabulary.
        case sentencePieceBPE
    }

    /// A token matched in the raw text before normalization and pre-tokenization.
    public struct AddedToken: Sendable, Equatable {
        public var content: String
        public var id: Int32
        /// Special tokens are dropped by `decode(_:skipSpecialTokens: true)`.
        public var special: Bool
        /// Also absorb whitespace to the left / right of the match (tokenizers' `lstrip` / `rstrip`).
        public var lstrip: Bool
        public var rstrip: Bool
        /// Matched in the normalized text (its content normalized too) rather than in the raw text; tokenizers'
        /// `normalized` flag. Without a normalizer the two are the same.
        public var normalized: Bool
        /// Matches only when no word character (UTS #18 `\w`: alphabetic, mark, decimal digit, connector
        /// punctuation, joiner) touches it.
        public var singleWord: Bool

        public init(content: String, id: Int32, special: Bool, lstrip: Bool = false, rstrip: Bool = false,
                    normalized: Bool = false, singleWord: Bool = false) {
            self.singleWord = singleWord
            self.content = content
            self.id = id
            self.special = special
            self.lstrip = lstrip
            self.rstrip = rstrip
            self.normalized = normalized
        }
    }

    /// One normalizer step; steps run in order on each piece of text between added tokens.
    public enum NormalizerStep: Sendable, Equatable {
        /// Unicode canonical composition (NFC).
        case nfc
        /// Prepend a string to every non-empty piece (SentencePiece: "▁").
        case prepend(String)
        /// Replace every occurrence of a literal string (SentencePiece: " " → "▁").
        case replace(String, String)
    }

    /// One pre-tokenizer step; steps run in order, each splitting the pieces the previous one produced.
    public enum PreTokenizerStep: Sendable, Equatable {
        /// A regex split, as in tokenizers' `Split`. Only the known patterns (GPT-2, Llama-3 / cl100k, Qwen2)
        /// are implemented; `Tokenizer.init(spec:)` refuses any other.
        case split(pattern: String, behavior: String, invert: Bool)
        /// tokenizers' `ByteLevel`: optional prefix space, optional GPT-2 regex split, byte → character map.
        case byteLevel(addPrefixSpace: Bool, useRegex: Bool)
        /// tokenizers' `Digits`: numeric characters isolated one by one (`individual`) or as runs.
        case digits(individual: Bool)
        /// tokenizers' `Metaspace`: " " → replacement, prefix per `prependScheme` ("always"/"first"/"never"),
        /// optional split before each replacement character.
        case metaspace(replacement: String, prependScheme: String, split: Bool)
    }

    public var kind: Kind
    /// Token strings; a token's id is its index.
    public var vocab: [String]
    /// BPE merges, best (lowest rank) first.
    public var merges: [(String, String)]
    /// SentencePiece scores (GGUF "llama" vocabularies). When `merges` is empty and `scores` is present,
    /// two adjacent symbols merge when their concatenation is a token, the highest-scoring one first.
    public var scores: [Float]?
    public var addedTokens: [AddedToken]
    public var normalizer: [NormalizerStep]
    public var preTokenizer: [PreTokenizerStep]
    /// SentencePiece: characters missing from the vocabulary become `<0xNN>` byte tokens.
    public var byteFallback: Bool
    /// tokenizers' `ignore_merges`: a word that is itself a token is not split (Llama-3).
    public var ignoreMerges: Bool
    public var bosId: Int32?
    public var eosId: Int32?
    public var unkId: Int32?
    /// Consecutive unknown symbols of a word become one `unkId` (tokenizers' `fuse_unk`).
    public var fuseUnk: Bool
    /// The post-processor prepends `bosId` / appends `eosId` in `encode`.
    public var addBOS: Bool
    public var addEOS: Bool

    public init(kind: Kind, vocab: [String], merges: [(String, String)], scores: [Float]? = nil,
                addedTokens: [AddedToken] = [], normalizer: [NormalizerStep] = [],
                preTokenizer: [PreTokenizerStep] = [], byteFallback: Bool = false, ignoreMerges: Bool = false,
                bosId: Int32? = nil, eosId: Int32? = nil, unkId: Int32? = nil, fuseUnk: Bool = true,
                addBOS: Bool = false, addEOS: Bool = false) {
        self.fuseUnk = fuseUnk
        self.kind = kind
        self.vocab = vocab
        self.merges = merges
        self.scores = scores
        self.addedTokens = addedTokens
        self.normalizer = normalizer
        self.preTokenizer = preTokenizer
        self.byteFallback = byteFallback
        self.ignoreMerges = ignoreMerges
        self.bosId = bosId
        self.eosId = eosId
        self.unkId = unkId
        self.addBOS = addBOS
        self.addEOS = addEOS
    }
}

/// The regex texts of the pre-tokenizer patterns this library knows, exactly as they appear in tokenizer.json.
public enum KnownSplitPattern {
    /// GPT-2 (also what `ByteLevel(use_regex: true)` uses).
    public static let gpt2 = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    /// Llama-3 (tiktoken cl100k): case-insensitive contractions, numbers in groups of up to three.
    public static let llama3 =
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    /// Qwen2: as Llama-3 but every digit on its own.
    public static let qwen2 =
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
}

extension TokenizerSpec {
    /// Builds a spec from GGUF tokenizer metadata (`tokenizer.ggml.model`, `.pre`, `.tokens`, `.token_type`,
    /// `.scores`, `.merges`, `.bos_token_id`, `.eos_token_id`, `.unknown_token_id`, `.add_bos_token`,
    /// `.add_eos_token`).
    ///
    /// - `model == "gpt2"`: byte-level BPE by `merges`; `pre` picks the pre-tokenizer the matching Hugging Face
    ///   tokenizer uses ("default"/"gpt2"/nil: GPT-2 regex; "llama3"/"llama-bpe"/"dbrx"/"smaug-bpe": Llama-3
    ///   regex; "qwen2": Qwen2 regex; "smollm": individual digits + GPT-2 regex). Other names are refused.
    /// - `model == "llama"`: SentencePiece BPE by `scores`, `<0xNN>` byte fallback, " " → "▁", and a "▁" prefix on
    ///   each stretch of text between added tokens unless `addSpacePrefix` (`tokenizer.ggml.add_space_prefix`)
    ///   is false.
    ///
    /// Token types (GGUF): 3 = control (special added token), 4 = user-defined (non-special added token).
    public static func fromGGUF(model: String, pre: String?, tokens: [String], tokenTypes: [Int32]?,
                                scores: [Float]?, merges: [String]?, bos: Int?, eos: Int?, unk: Int?,
                                addBOS: Bool?, addEOS: Bool? = nil,
                                addSpacePrefix: Bool? = nil) throws -> TokenizerSpec {
        try require(!tokens.isEmpty, "GGUF tokenizer: tokenizer.ggml.tokens is empty")
        if let t = tokenTypes {
            try require(t.count == tokens.count,
                        "GGUF tokenizer: \(t.count) token types for \(tokens.count) tokens")
        }
        if let s = scores {
            try require(s.count == tokens.count, "GGUF tokenizer: \(s.count) scores for \(tokens.count) tokens")
        }
        func checkedId(_ v: Int?) -> Int32? {
            guard let v = v else { return nil }
            // Some converters write -1 (or a huge value) for "none".
            if v < 0 || v >= tokens.count { return nil }
            return Int32(v)
        }
        var added: [AddedToken] = []
        if let types = tokenTypes {
            for (i, t) in types.enumerated() where t == 3 || t == 4 {
                if tokens[i].isEmpty { continue }
                added.append(AddedToken(content: tokens[i], id: Int32(i), special: t == 3))
            }
        }
        let bosId = checkedId(bos), eosId = checkedId(eos), unkId = checkedId(unk)
        switch model {
        case "gpt2":
            guard let mergeLines = merges else {
                throw SwiftQuantError.format("GGUF tokenizer: model gpt2 without tokenizer.ggml.merges")
            }
            var pairs: [(String, String)] = []
            pairs.reserveCapacity(mergeLines.count)
            for line in mergeLines {
                guard let sp = line.firstIndex(of: " ") else {
                    throw SwiftQuantError.format("GGUF tokenizer: merge without a space: \(line.debugDescription)")
                }
                pairs.append((String(line[..<sp]), String(line[line.index(after: sp)...])))
            }
            let preSteps: [PreTokenizerStep]
            var ignoreMerges = false
            switch pre ?? "default" {
            case "default", "gpt2", "gpt-2":
                preSteps = [.byteLevel(addPrefixSpace: false, useRegex: true)]
            case "llama3", "llama-bpe", "llama-v3", "dbrx", "smaug-bpe":
                preSteps = [.split(pattern: KnownSplitPattern.llama3, behavior: "Isolated", invert: false),
                            .byteLevel(addPrefixSpace: false, useRegex: false)]
                ignoreMerges = true
            case "qwen2":
                preSteps = [.split(pattern: KnownSplitPattern.qwen2, behavior: "Isolated", invert: false),
                            .byteLevel(addPrefixSpace: false, useRegex: false)]
            case "smollm":
                preSteps = [.digits(individual: true), .byteLevel(addPrefixSpace: false, useRegex: true)]
            case let other:
                throw SwiftQuantError.unsupported(
                    "GGUF tokenizer: pre-tokenizer \(other.debugDescription) is not implemented")
            }
            return TokenizerSpec(kind: .byteLevelBPE, vocab: tokens, merges: pairs, addedTokens: added,
                                 preTokenizer: preSteps, ignoreMerges: ignoreMerges, bosId: bosId, eosId: eosId,
                                 unkId: unkId, addBOS: addBOS ?? false, addEOS: addEOS ?? false)
        case "llama":
            guard let sc = scores else {
                throw SwiftQuantError.format("GGUF tokenizer: model llama without tokenizer.ggml.scores")
            }
            return TokenizerSpec(kind: .sentencePieceBPE, vocab: tokens, merges: [], scores: sc,
                                 addedTokens: added,
                                 normalizer: (addSpacePrefix ?? true) ? [.prepend("▁"), .replace(" ", "▁")]
                                     : [.replace(" ", "▁")],
                                 byteFallback: true, bosId: bosId, eosId: eosId, unkId: unkId,
                                 addBOS: addBOS ?? true, addEOS: addEOS ?? false)
        default:
            throw SwiftQuantError.unsupported("GGUF tokenizer: model \(model.debugDescription) is not implemented")
        }
    }
}
