import Foundation
import XCTest
import SwiftQuant

/// Tiny transformers models (Fixtures/tiny, made by Fixtures/make_tiny_models.py) against their logits and loss,
/// plus config validation and internal consistency of the forward pass.
final class ModelTests: XCTestCase {
    static func fixture(_ name: String) throws -> String {
        let base = try XCTUnwrap(Bundle.module.url(forResource: "Fixtures", withExtension: nil))
        return base.appendingPathComponent("tiny").appendingPathComponent(name).path
    }

    static func int32s(_ raw: UnsafeRawBufferPointer) -> [Int32] {
        (0..<(raw.count / 4)).map { raw.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self) }
    }

    func checkParity(_ name: String, modelType: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = try Self.fixture(name)
        let model = try ArchitectureRegistry.model(directory: dir)
        XCTAssertEqual(model.modelType, modelType, file: file, line: line)
        let expected = try SafetensorsFile(path: dir + "/expected.safetensors")
        let ids = Self.int32s(try expected.rawBytes("input_ids"))
        let want = try expected.float32("logits")
        let got = try model.logits(ids: ids)
        XCTAssertEqual(got.shape, want.shape, file: file, line: line)
        var maxDiff: Float = 0, maxRef: Float = 0
        for i in 0..<want.count {
            maxDiff = max(maxDiff, abs(got.pointer[i] - want.pointer[i]))
            maxRef = max(maxRef, abs(want.pointer[i]))
        }
        print("\(name): logits rel diff \(maxDiff / maxRef)")
        XCTAssertLessThan(maxDiff / maxRef, 1e-4, "\(name): logits max |diff| \(maxDiff), max |logit| \(maxRef)",
                          file: file, line: line)

        let loss = try model.windowLoss(ids: ids)
        XCTAssertEqual(loss.count, ids.count - 1, file: file, line: line)
        let refLoss = Double(try expected.float32("loss").pointer[0])
        print("\(name): loss rel diff \(abs(loss.mean - refLoss) / refLoss)")
        XCTAssertLessThan(abs(loss.mean - refLoss) / refLoss, 1e-5, "\(name): loss \(loss.mean) vs \(refLoss)",
                          file: file, line: line)
        XCTAssertEqual(try model.nll(ids: ids), loss.nllSum, file: file, line: line)
    }

    func testLlamaGQAParity() throws { try checkParity("llama_gqa", modelType: "llama") }
    func testLlama3RopeScalingUntiedParity() throws { try checkParity("llama3_untied", modelType: "llama") }
    func testQwen2BiasParity() throws { try checkParity("qwen2", modelType: "qwen2") }
    func testOPTParity() throws { try checkParity("opt", modelType: "opt") }

    /// Running block by block (as calibration will) gives the same final hidden state as `logits`.
    func testBlockByBlockMatchesFullForward() throws {
        let model = try ArchitectureRegistry.model(directory: try Self.fixture("llama_gqa"))
        let ids: [Int32] = [5, 17, 99, 3, 64, 127, 0, 42]
        var hidden = try model.embed(ids)
        let before = hidden.copy()
        let first = try model.forwardBlock(0, hidden: hidden)
        XCTAssertEqual(hidden.array, before.array, "forwardBlock must not modify its input")
        hidden = first
        for i in 1..<model.numBlocks { hidden = try model.forwardBlock(i, hidden: hidden) }
        try model.applyFinalNorm(hidden)
        let full = try model.finalHidden(ids: ids)
        for i in 0..<full.count { XCTAssertEqual(hidden.pointer[i], full.pointer[i], accuracy: 1e-5) }

        // Blocks are data: named linears in HF layout, replaceable.
        let block = try model.block(0)
        XCTAssertEqual(block.linearNames, model.blockLinearNames)
        XCTAssertEqual(block.linear("self_attn.k_proj").weight.shape, [32, 64])
        let zeroed = block.copy()
        for name in zeroed.linearNames { zeroed.linears[name]!.weight.buffer.update(repeating: 0) }
        model.setBlock(0, zeroed)
        let out = try model.forwardBlock(0, hidden: before)
        XCTAssertEqual(out.array, before.array, "all-zero linears make the block the identity")
        model.setBlock(0, nil)
        XCTAssertNotEqual(try model.forwardBlock(0, hidden: before).array, before.array)
    }

    /// A random Llama-shaped model held in memory.
    static func randomLlama(_ c: LlamaConfig, seed: UInt64) throws -> LlamaModel {
        var rng = SplitMix64(seed: seed)
        func rand(_ shape: [Int], scale: Float) -> Tensor {
            let t = Tensor(zeros: shape)
            for i in 0..<t.count { t.pointer[i] = scale * rng.gaussian() }
            return t
        }
        let src = InMemoryTensorSource()
        let h = c.hiddenSize, q = c.numAttentionHeads * c.headDim, kv = c.numKeyValueHeads * c.headDim
        src.set("model.embed_tokens.weight", rand([c.vocabSize, h], scale: 0.5))
        src.set("model.norm.weight", rand([h], scale: 0.1))
        for i in 0..<c.numHiddenLayers {
            let p = "model.layers.\(i)."
            for (n, o, inF) in [("self_attn.q_proj", q, h), ("self_attn.k_proj", kv, h), ("self_attn.v_proj", kv, h),
                                ("self_attn.o_proj", h, q), ("mlp.gate_proj", c.intermediateSize, h),
                                ("mlp.up_proj", c.intermediateSize, h), ("mlp.down_proj", h, c.intermediateSize)] {
                src.set(p + n + ".weight", rand([o, inF], scale: 1 / Float(inF).squareRoot()))
            }
            let ones = Tensor(shape: [h], values: [Float](repeating: 1, count: h))
            src.set(p + "input_layernorm.weight", ones)
            src.set(p + "post_attention_layernorm.weight", ones)
        }
        let onesH = Tensor(shape: [h], values: [Float](repeating: 1, count: h))
        src.set("model.norm.weight", onesH)
        return try LlamaModel(config: c, source: src)
    }

    /// Windows longer than one attention tile (256) and one NLL chunk (128): causality across tiles, and the
    /// chunked NLL equals the NLL computed from full logits.
    func testLongWindowCausalityAndChunkedNLL() throws {
        let c = LlamaConfig(hiddenSize: 32, intermediateSize: 48, numHiddenLayers: 2, numAttentionHeads: 4,
                            numKeyValueHeads: 2, vocabSize: 50, tieWordEmbeddings: true)
        let model = try Self.randomLlama(c, seed: 7)
        var rng = SplitMix64(seed: 11)
        let ids = (0..<600).map { _ in Int32(rng.next() % 50) }
        let full = try model.logits(ids: ids)
        let prefix = try model.logits(ids: Array(ids[0..<300]))
        for i in 0..<prefix.count { XCTAssertEqual(prefix.pointer[i], full.pointer[i], accuracy: 2e-4) }

        var ref: Double = 0
        for t in 0..<(ids.count - 1) {
            let row = full.pointer + t * 50
            let m = (0..<50).map { Double(row[$0]) }.max()!
            let lse = m + log((0..<50).map { exp(Double(row[$0]) - m) }.reduce(0, +))
            ref += lse - Double(row[Int(ids[t + 1])])
        }
        let nll = try model.nll(ids: ids)
        XCTAssertEqual(nll, ref, accuracy: 1e-5 * abs(ref))

        let ppl = try model.perplexity(tokens: ids, windowLength: 200)
        XCTAssertEqual(ppl.windows, 3)
        XCTAssertEqual(ppl.tokens, 3 * 199)
        XCTAssertGreaterThan(ppl.perplexity, 1)
    }

    // MARK: - configs

    static let llamaDict: [String: Any] = [
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "vocab_size": 128, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": ["rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192],
    ]

    func testLlamaConfigDefaultsAndBothRopeSpellings() throws {
        let c = try LlamaConfig(dictionary: Self.llamaDict)
        XCTAssertEqual(c.numKeyValueHeads, 4)
        XCTAssertEqual(c.headDim, 16)
        XCTAssertFalse(c.tieWordEmbeddings)
        XCTAssertFalse(c.qkvBias)
        XCTAssertEqual(c.ropeTheta, 500000)
        XCTAssertEqual(c.ropeScaling, .llama3(factor: 8, lowFreqFactor: 1, highFreqFactor: 4,
                                              originalMaxPositionEmbeddings: 8192))
        // transformers ≥ 5 spelling.
        var v5 = Self.llamaDict
        v5["rope_scaling"] = nil
        v5["rope_theta"] = nil
        v5["rope_parameters"] = ["rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                 "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                 "original_max_position_embeddings": 8192]
        XCTAssertEqual(try LlamaConfig(dictionary: v5), c)
        // null rope_scaling and the "default" type mean no scaling.
        var plain = Self.llamaDict
        plain["rope_scaling"] = NSNull()
        XCTAssertNil(try LlamaConfig(dictionary: plain).ropeScaling)
        plain["rope_scaling"] = ["type": "default"]
        XCTAssertNil(try LlamaConfig(dictionary: plain).ropeScaling)
        // Qwen2: q/k/v biases implied, no o bias.
        var qwen = plain
        qwen["model_type"] = "qwen2"
        let q = try LlamaConfig(dictionary: qwen)
        XCTAssertTrue(q.qkvBias)
        XCTAssertFalse(q.outputBias)
        // Encodes back to config.json keys and decodes to the same value.
        let data = try JSONEncoder().encode(c)
        let back = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        XCTAssertEqual(back["num_key_value_heads"] as? Int, 4)
        XCTAssertEqual(try LlamaConfig(dictionary: back), c)
    }

    func assertError(_ expected: (String) -> SwiftQuantError, containing text: String,
                     file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Void) {
        do {
            try body()
            XCTFail("expected an error mentioning '\(text)'", file: file, line: line)
        } catch let e as SwiftQuantError {
            XCTAssertEqual(e, expected(e.message), "wrong error kind: \(e)", file: file, line: line)
            XCTAssertTrue(e.message.contains(text), "message '\(e.message)' lacks '\(text)'", file: file, line: line)
        } catch {
            XCTFail("unexpected error \(error)", file: file, line: line)
        }
    }

    func testBadConfigsGiveClearErrors() throws {
        let src = InMemoryTensorSource()
        var d = Self.llamaDict
        d["hidden_size"] = nil
        assertError(SwiftQuantError.format, containing: "hidden_size") { _ = try LlamaConfig(dictionary: d) }
        d = Self.llamaDict
        d["rope_scaling"] = ["rope_type": "yarn", "factor": 4.0]
        assertError(SwiftQuantError.unsupported, containing: "yarn") { _ = try LlamaConfig(dictionary: d) }
        d["rope_scaling"] = ["rope_type": "llama3", "factor": 8.0]
        assertError(SwiftQuantError.format, containing: "low_freq_factor") { _ = try LlamaConfig(dictionary: d) }
        d = Self.llamaDict
        d["num_key_value_heads"] = 3
        assertError(SwiftQuantError.format, containing: "num_key_value_heads") { _ = try LlamaConfig(dictionary: d) }
        d = Self.llamaDict
        d["hidden_act"] = "gelu"
        assertError(SwiftQuantError.unsupported, containing: "gelu") { _ = try LlamaConfig(dictionary: d) }
        d = Self.llamaDict
        d["vocab_size"] = "many"
        assertError(SwiftQuantError.format, containing: "vocab_size") { _ = try LlamaConfig(dictionary: d) }

        let opt: [String: Any] = ["model_type": "opt", "hidden_size": 64, "ffn_dim": 128, "num_hidden_layers": 2,
                                  "num_attention_heads": 4, "vocab_size": 128, "word_embed_proj_dim": 64]
        XCTAssertNoThrow(try OPTConfig(dictionary: opt))
        var o = opt
        o["word_embed_proj_dim"] = 32
        assertError(SwiftQuantError.unsupported, containing: "word_embed_proj_dim") {
            _ = try ArchitectureRegistry.model(config: o, source: src)
        }
        o = opt
        o["do_layer_norm_before"] = false
        assertError(SwiftQuantError.unsupported, containing: "do_layer_norm_before") { _ = try OPTConfig(dictionary: o) }
        o = opt
        o["activation_function"] = "gelu"
        assertError(SwiftQuantError.unsupported, containing: "gelu") { _ = try OPTConfig(dictionary: o) }

        var g = Self.llamaDict
        g["model_type"] = "gpt2"
        assertError(SwiftQuantError.unsupported, containing: "gpt2") {
            _ = try ArchitectureRegistry.model(config: g, source: src)
        }
        g["model_type"] = nil
        assertError(SwiftQuantError.format, containing: "model_type") {
            _ = try ArchitectureRegistry.model(config: g, source: src)
        }
        XCTAssertEqual(ArchitectureRegistry.supportedModelTypes, ["llama", "mistral", "opt", "qwen2"])
    }

    func testMissingOrMisshapenWeightsNameTheTensor() throws {
        let c = LlamaConfig(hiddenSize: 16, intermediateSize: 24, numHiddenLayers: 1, numAttentionHeads: 2,
                            vocabSize: 10, tieWordEmbeddings: true)
        let src = InMemoryTensorSource()
        assertError(SwiftQuantError.format, containing: "model.embed_tokens.weight") {
            _ = try LlamaModel(config: c, source: src)
        }
        let model = try Self.randomLlama(c, seed: 1)
        let s = model.source as! InMemoryTensorSource
        s.set("model.layers.0.self_attn.k_proj.weight", Tensor(zeros: [16, 15]))
        assertError(SwiftQuantError.format, containing: "model.layers.0.self_attn.k_proj.weight") {
            _ = try model.loadBlock(0)
        }
        assertError(SwiftQuantError.invalidArgument, containing: "token id 10") {
            _ = try model.logits(ids: [1, 10])
        }
        // The untied variant needs lm_head.weight.
        var untied = c
        untied.tieWordEmbeddings = false
        assertError(SwiftQuantError.format, containing: "lm_head.weight") {
            _ = try LlamaModel(config: untied, source: s)
        }
    }

    /// Throughput on SmolLM2-135M shapes with random weights. Prints only; set SWIFTQUANT_BENCH_MODELS=1.
    func testSmolLM2ShapedThroughput() throws {
        guard ProcessInfo.processInfo.environment["SWIFTQUANT_BENCH_MODELS"] != nil else {
            throw XCTSkip("set SWIFTQUANT_BENCH_MODELS=1 to time a SmolLM2-shaped 2048-token window")
        }
        let c = LlamaConfig(hiddenSize: 576, intermediateSize: 1536, numHiddenLayers: 30, numAttentionHeads: 9,
                            numKeyValueHeads: 3, rmsNormEps: 1e-5, ropeTheta: 100000, vocabSize: 49152,
                            tieWordEmbeddings: true)
        let model = try Self.randomLlama(c, seed: 3)
        var rng = SplitMix64(seed: 5)
        let ids = (0..<2048).map { _ in Int32(rng.next() % 49152) }
        _ = try model.nll(ids: Array(ids[0..<64]))  // warm up
        for label in ["nll", "logits", "nll"] {
            let t0 = Date()
            if label == "nll" { _ = try model.nll(ids: ids) } else { _ = try model.logits(ids: ids) }
            let dt = Date().timeIntervalSince(t0)
            print(String(format: "SmolLM2-shaped %@ on 2048 tokens: %.2f s, %.0f tokens/s (%@)", label, dt,
                         2048 / dt, BLAS.description))
        }
        let ws = Workspace()
        let hidden = try model.embed(ids)
        let block = try model.block(0)
        let t0 = Date()
        for _ in 0..<3 { try model.forward(block: block, hidden: hidden, workspace: ws) }
        print(String(format: "one block: %.1f ms", Date().timeIntervalSince(t0) / 3 * 1000))
        // The same run's GEMM peak, for a machine-independent ratio (≈ 700 GFLOP per 2048-token window).
        let n = 2048
        let a = Tensor(zeros: [n, n]), b = Tensor(zeros: [n, n]), out = Tensor(zeros: [n, n])
        let t1 = Date()
        for _ in 0..<2 { BLAS.sgemm(m: n, n: n, k: n, a: a.pointer, lda: n, b: b.pointer, ldb: n, c: out.pointer, ldc: n) }
        let peak = 2 * Double(n * n * n) / (Date().timeIntervalSince(t1) / 2) / 1e9
        print(String(format: "GEMM peak in this run: %.1f GFLOP/s", peak))
    }
}
