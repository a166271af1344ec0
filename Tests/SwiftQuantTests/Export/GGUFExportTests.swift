import Foundation
import SwiftQuant
import XCTest

/// GGUF export: quantized linears written from their codes read back (through this repository's GGUF reader,
/// which undoes llama.cpp's q/k row permutation) as SwiftQuant's dequantization with FP16-rounded scales, bit for
/// bit; what cannot be written exactly is refused, or re-quantized with a reported error under `requantize`.
/// llama.cpp itself loads the exports in python/tests/test_gguf_export.py.
final class GGUFExportTests: XCTestCase {
    /// The independent FP16 rounding (Swift's `Float16`, not the library's `HalfConv`).
    func fp16(_ x: Float) -> Float { Float(Float16(x)) }

    func tiny() throws -> LoadedModel { try LoadedModel.load(path: Fixtures.url("tiny/llama_gqa").path) }

    func windows(_ model: TransformerModel, _ r: QuantRecipe) throws -> [[Int32]] {
        var rng = SplitMix64(seed: 5)
        let tokens = (0..<2000).map { _ in Int32(rng.next() % UInt64(model.vocabSize)) }
        return try Calibration.windows(tokens: tokens, count: r.nsamples, length: r.seqlen, seed: 2)
    }

    /// The tiny Llama (GQA; linears 64 → 64/32/96 and 96 → 64) quantized by `recipe`, with its quantization state.
    func quantized(_ recipe: QuantRecipe) throws -> LoadedModel {
        let loaded = try tiny()
        let pipeline = try CalibrationPipeline(recipe: recipe, workDir: nil, progress: false)
        let w = recipe.needsCalibrationData ? try windows(loaded.model, recipe) : []
        let r = try pipeline.run(model: loaded.model, windows: w)
        loaded.quantization = QuantizationState(method: recipe.method.rawValue, weights: try recipe.quantizerConfig,
                                                tensors: r.quantized, activations: r.activations, lowRank: r.lowRank)
        loaded.model.activations = r.activations
        return loaded
    }

    final class Log: @unchecked Sendable {
        var lines: [String] = []
        let lock = NSLock()
        func add(_ s: String) { lock.lock(); lines.append(s); lock.unlock() }
    }

    func export(_ loaded: LoadedModel, requantize: Bool = false, log: Log = Log()) throws -> (String, GGUFExport.Report) {
        let path = (try makeTempDir(self) as NSString).appendingPathComponent("model.gguf")
        let report = try GGUFExport.writeReporting(loaded, to: path,
                                                   options: ExportOptions(requantize: requantize, progress: false, log: { log.add($0) }))
        return (path, report)
    }

    /// What the reader must return for `q` written as `type`: Q4_0/Q8_0 give `(code − zero)·fp16(scale)` (the
    /// library's own dequantization of the codes with FP16-rounded scales); Q4_1 gives `fp16(h)·code + fp16(−z·h)`
    /// (two roundings, as ggml's Q4_1 decoder computes it).
    func expected(_ q: QuantizedTensor, _ type: GGMLType) throws -> [Float] {
        if type == .q4_1 {
            let g = q.groupCount, width = q.config.groupWidth(cols: q.cols)
            var out = [Float](repeating: 0, count: q.rows * q.cols)
            for r in 0..<q.rows {
                for c in 0..<q.cols {
                    let k = r * g + c / width
                    let d = fp16(q.scales[k]), m = fp16(-Float(q.zeros[k]) * q.scales[k])
                    let p = d * Float(q.codes[r * q.cols + c])
                    out[r * q.cols + c] = p + m
                }
            }
            return out
        }
        let rounded = try QuantizedTensor(rows: q.rows, cols: q.cols, config: q.config, codes: q.codes,
                                          scales: q.scales.map(fp16), zeros: q.zeros)
        return rounded.dequantized().array
    }

    /// Exports `loaded`, checks every linear has `type` and reads back bit-exactly; other tensors unchanged.
    func checkRoundTrip(_ loaded: LoadedModel, _ type: GGMLType, requantize: Bool = false,
                        file: StaticString = #filePath, line: UInt = #line) throws {
        let (path, report) = try export(loaded, requantize: requantize)
        let g = try GGUFFile(path: path)
        XCTAssertEqual(g.metadata["general.architecture"]?.string, "llama", file: file, line: line)
        XCTAssertEqual(g.metadata["llama.attention.head_count_kv"]?.int, 2, file: file, line: line)
        XCTAssertEqual(g.metadata["tokenizer.ggml.model"]?.string, "none", file: file, line: line)
        XCTAssertNil(g.tensor("output.weight"), "tied embeddings: no output.weight", file: file, line: line)
        let src = try GGUFTensorSource(file: g)
        let state = try XCTUnwrap(loaded.quantization)
        XCTAssertEqual(state.tensors.count, 14)
        for (name, q) in state.tensors {
            let gname = try XCTUnwrap(src.ggufName(for: name), name)
            XCTAssertEqual(g.tensor(gname)?.type, type, name, file: file, line: line)
            let got = try src.float32(name)
            XCTAssertEqual(got.shape, [q.rows, q.cols], file: file, line: line)
            let want = try expected(q, type)
            let mismatches = zip(got.array, want).filter { $0.bitPattern != $1.bitPattern }.count
            XCTAssertEqual(mismatches, 0, "\(name) as \(type.name): \(mismatches) values differ", file: file, line: line)
            // And within FP16 rounding of what SwiftQuant runs: |Δ| ≤ (|code − z| + |z| + 1)·h·2⁻¹⁰.
            let w = try loaded.model.block(Int(name.split(separator: ".")[2])!).linears[
                name.split(separator: ".")[3...4].joined(separator: ".")]!.weight.array
            let g = q.groupCount, width = q.config.groupWidth(cols: q.cols)
            var worst: Float = 0
            for i in 0..<(q.rows * q.cols) {
                let k = (i / q.cols) * g + (i % q.cols) / width
                let z = Float(q.zeros[k]), h = q.scales[k]
                let bound = (abs(Float(q.codes[i]) - z) + abs(z) + 1) * h / 1024
                worst = max(worst, abs(got.array[i] - w[i]) / bound)
            }
            XCTAssertLessThanOrEqual(worst, 1, name, file: file, line: line)
        }
        XCTAssertEqual(report.tensors.filter { $0.how == "codes" }.count, 14, file: file, line: line)
        // Embedding and norms are the source's values exactly.
        for name in ["model.embed_tokens.weight", "model.norm.weight", "model.layers.1.input_layernorm.weight"] {
            XCTAssertEqual(try src.float32(name).array, try loaded.source.float32(name).array, name, file: file, line: line)
        }
    }

    func testINT4AsymmetricIsQ4_1FromTheCodes() throws {
        // g32: every group is one block; g64: the 96-wide down_proj rows end with a ragged group of 32.
        for group in [32, 64] {
            try checkRoundTrip(try quantized(QuantRecipe(method: .rtn, wformat: "int4", groupSize: .columns(group))), .q4_1)
        }
        // Per row: one group of 64 or 96 columns, which tiles the 32-wide blocks too.
        try checkRoundTrip(try quantized(QuantRecipe(method: .rtn, wformat: "int4", groupSize: .perRow)), .q4_1)
    }

    func testINT4SymmetricIsQ4_0AndINT8SymmetricIsQ8_0() throws {
        // OmniQuant's symmetric grid (zero 7, resp. 127: stored with d = −h) and GPTQ's (zero 8, resp. 128: d = h).
        let rtn4 = try quantized(QuantRecipe(method: .rtn, wformat: "int4", groupSize: 32, symmetric: true))
        XCTAssertEqual(Set(rtn4.quantization!.tensors.values.flatMap(\.zeros)), [7])
        try checkRoundTrip(rtn4, .q4_0)
        let gptq4 = try quantized(QuantRecipe(method: .gptq, wformat: "int4", groupSize: 32, symmetric: true,
                                              nsamples: 4, seqlen: 32))
        XCTAssertEqual(Set(gptq4.quantization!.tensors.values.flatMap(\.zeros)), [8])
        try checkRoundTrip(gptq4, .q4_0)
        try checkRoundTrip(try quantized(QuantRecipe(method: .rtn, wformat: "int8", groupSize: 32, symmetric: true)), .q8_0)
        try checkRoundTrip(try quantized(QuantRecipe(method: .rtn, wformat: "int8", groupSize: .perRow, symmetric: true)), .q8_0)
    }

    /// Asserts the export is refused with a message naming every fragment, and writes nothing.
    func assertRefused(_ loaded: LoadedModel, _ fragments: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = try makeTempDir(self)
        let path = (dir as NSString).appendingPathComponent("refused.gguf")
        XCTAssertThrowsError(try GGUFExport.write(loaded, to: path, options: ExportOptions(progress: false, log: { _ in })),
                             file: file, line: line) { e in
            guard case SwiftQuantError.invalidArgument(let m)? = e as? SwiftQuantError else {
                return XCTFail("expected invalidArgument, got \(e)", file: file, line: line)
            }
            for f in fragments + ["--requantize"] {
                XCTAssertTrue(m.contains(f), "'\(m)' does not mention '\(f)'", file: file, line: line)
            }
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), [], file: file, line: line)
    }

    func testWiderGridsAreRefusedThenWrittenExactlyWithRequantize() throws {
        // W3 codes fit Q4_1 (and symmetric W3 fits Q4_0) exactly, but the file stores 4 bits: only on request.
        let w3 = try quantized(QuantRecipe(method: .rtn, wformat: "int3", groupSize: 32))
        try assertRefused(w3, ["int3 codes fit Q4_1 exactly but are stored at 4 bits", "model.layers.0.self_attn.q_proj.weight"])
        try checkRoundTrip(w3, .q4_1, requantize: true)
        let w3s = try quantized(QuantRecipe(method: .rtn, wformat: "int3", groupSize: 32, symmetric: true))
        try assertRefused(w3s, ["int3 codes fit Q4_0 exactly"])
        try checkRoundTrip(w3s, .q4_0, requantize: true)
    }

    /// Re-quantized tensors: the reported error is the relative Frobenius distance between what the reader
    /// returns and SwiftQuant's weight (recomputed here), and it is not zero.
    func checkRequantized(_ loaded: LoadedModel, _ type: GGMLType, reason: String, lowRank: Bool = false,
                          file: StaticString = #filePath, line: UInt = #line) throws {
        let log = Log()
        let (path, report) = try export(loaded, requantize: true, log: log)
        let src = try GGUFTensorSource(file: GGUFFile(path: path))
        let state = try XCTUnwrap(loaded.quantization)
        let requant = report.tensors.filter { $0.how == "requantized" }
        XCTAssertEqual(requant.count, 14, file: file, line: line)
        for t in requant {
            XCTAssertEqual(t.type, type, t.name, file: file, line: line)
            XCTAssertTrue(t.reason?.contains(reason) ?? false, "\(t.reason ?? "nil")", file: file, line: line)
            let hf = try XCTUnwrap(state.tensors.keys.first { src.ggufName(for: $0) == t.name })
            let parts = hf.split(separator: ".")
            var w = try loaded.model.block(Int(parts[2])!).linears[parts[3...4].joined(separator: ".")]!.weight.array
            if lowRank, let r = state.lowRank[hf] {
                let cols = r.v.shape[1]
                for i in w.indices {
                    var s: Float = 0
                    for k in 0..<r.rank { s += r.u.array[(i / cols) * r.rank + k] * r.v.array[k * cols + i % cols] }
                    w[i] += s
                }
            }
            let got = try src.float32(hf).array
            var num = 0.0, den = 0.0
            for (a, b) in zip(got, w) { num += Double(a - b) * Double(a - b); den += Double(b) * Double(b) }
            let err = (num / den).squareRoot()
            let reported = try XCTUnwrap(t.relativeError)
            XCTAssertGreaterThan(reported, 0, t.name, file: file, line: line)
            XCTAssertEqual(reported, err, accuracy: lowRank ? 1e-4 : 1e-9 + 1e-6 * err, t.name, file: file, line: line)
            XCTAssertTrue(log.lines.contains { $0.contains("requantized \(hf) → \(type.name): relative Frobenius error") },
                          file: file, line: line)
        }
    }

    func testUnrepresentableGridsAreRefusedOrRequantizedWithAReport() throws {
        let g16 = try quantized(QuantRecipe(method: .rtn, wformat: "int4", groupSize: 16))
        try assertRefused(g16, ["group size 16 does not tile the 32-wide GGUF blocks"])
        try checkRequantized(g16, .q4_1, reason: "group size 16")

        let fp4 = try quantized(QuantRecipe(method: .rtn, wformat: "e2m1", groupSize: 32))
        try assertRefused(fp4, ["e2m1 weights: no GGUF block type holds a minifloat grid"])
        try checkRequantized(fp4, .q8_0, reason: "e2m1")

        let w8a = try quantized(QuantRecipe(method: .rtn, wformat: "int8", groupSize: 32))
        try assertRefused(w8a, ["INT8 asymmetric"])

        let actOrder = try quantized(QuantRecipe(method: .gptq, wformat: "int4", groupSize: 32, nsamples: 4, seqlen: 32,
                                                 actOrder: true))
        try assertRefused(actOrder, ["act-order groups (g_idx)"])
        try checkRequantized(actOrder, .q4_1, reason: "act-order")

        let lorc = try quantized(QuantRecipe(method: .gptq, wformat: "int4", groupSize: 32, nsamples: 4, seqlen: 32,
                                             lorcRank: 4))
        try assertRefused(lorc, ["LoRC factors"])
        try checkRequantized(lorc, .q4_1, reason: "U·V", lowRank: true)

        let a8 = try quantized(QuantRecipe(method: .rtn, wformat: "int4", groupSize: 32, aformat: "int8"))
        try assertRefused(a8, ["activation quantization"])
        let log = Log()
        _ = try export(a8, requantize: true, log: log)
        XCTAssertTrue(log.lines.contains { $0.contains("GGUF holds weights only") })
    }

    /// A Hugging Face byte-level BPE tokenizer becomes llama.cpp's `gpt2` vocabulary: the reader rebuilds a
    /// tokenizer from the written metadata that encodes like the original; the chat template comes along.
    func testTokenizerFromHuggingFace() throws {
        let dir = try makeTempDir(self)
        let tinyDir = Fixtures.url("tiny/llama_gqa").path
        var config = try XCTUnwrap(try JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: tinyDir + "/config.json"))) as? [String: Any])
        config["vocab_size"] = 720
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: dir + "/config.json"))
        let src = try HFDirectorySource(directory: tinyDir)
        var rng = SplitMix64(seed: 3)
        let entries = try src.tensorInfos.map { info -> SafetensorsEntry in
            if info.name == "model.embed_tokens.weight" {
                return SafetensorsEntry(name: info.name, tensor: Tensor(shape: [720, 64], values: (0..<(720 * 64)).map { _ in rng.gaussian() }))
            }
            return SafetensorsEntry(name: info.name, tensor: try src.float32(info.name))
        }
        try SafetensorsWriter.write(entries, to: dir + "/model.safetensors")
        try FileManager.default.copyItem(atPath: Fixtures.url("tokenizer_gpt2.json").path, toPath: dir + "/tokenizer.json")
        let template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
        try JSONSerialization.data(withJSONObject: ["chat_template": template])
            .write(to: URL(fileURLWithPath: dir + "/tokenizer_config.json"))
        let loaded = try LoadedModel.load(path: dir)
        let (path, report) = try export(loaded)
        XCTAssertTrue(report.tensors.allSatisfy { $0.how == "float" })
        let g = try GGUFFile(path: path)
        let m = g.metadata
        XCTAssertEqual(m["tokenizer.ggml.model"]?.string, "gpt2")
        XCTAssertEqual(m["tokenizer.ggml.pre"]?.string, "gpt-2")
        XCTAssertEqual(m["tokenizer.ggml.tokens"]?.array?.count, 720)
        XCTAssertEqual(m["tokenizer.ggml.tokens"]?.stringArray?.last, "[PAD719]")
        XCTAssertEqual(m["tokenizer.ggml.token_type"]?.array?.count, 720)
        XCTAssertEqual(m["tokenizer.ggml.merges"]?.array?.count, 443)
        XCTAssertEqual(m["tokenizer.chat_template"]?.string, template)
        XCTAssertEqual(m["general.file_type"]?.int, 0)
        let original = try XCTUnwrap(loaded.tokenizer)
        let rebuilt = try XCTUnwrap(try GGUFModelConfig.tokenizer(g))
        for text in ["Hello world", " the quick brown fox, 1234!", "naïve café\n\ttabs"] {
            XCTAssertEqual(rebuilt.encode(text), original.encode(text), text)
        }
        // The model reads back as it was (F32: bit for bit), q/k permutation undone by the reader.
        let back = try LoadedModel.load(path: path)
        for name in ["model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight", "model.embed_tokens.weight"] {
            XCTAssertEqual(try back.source.float32(name).array, try loaded.source.float32(name).array, name)
        }
        XCTAssertEqual(try back.model.logits(ids: [5, 9, 700, 3]).array, try loaded.model.logits(ids: [5, 9, 700, 3]).array)
    }

    /// The real SmolLM2 file exported unquantized: every tensor's bytes are the source's (Q4_1 linears, Q8_0
    /// embedding, permuted q/k rows carried as they are) and the metadata is carried over.
    func testSmolLM2PlainExportCopiesEveryTensor() throws {
        guard let path = ProcessInfo.processInfo.environment["SWIFTQUANT_SMOLLM2"] else {
            print("GGUFExportTests.testSmolLM2PlainExportCopiesEveryTensor skipped: set SWIFTQUANT_SMOLLM2")
            throw XCTSkip("SWIFTQUANT_SMOLLM2 not set")
        }
        let loaded = try LoadedModel.load(path: path)
        let (out, _) = try export(loaded)
        let a = try GGUFFile(path: path), b = try GGUFFile(path: out)
        XCTAssertEqual(Set(b.tensors.map(\.name)), Set(a.tensors.map(\.name)))
        for t in a.tensors {
            XCTAssertEqual(b.tensor(t.name)?.type, t.type, t.name)
            XCTAssertEqual(b.tensor(t.name)?.dims, t.dims, t.name)
            XCTAssertTrue(try a.data(t.name).elementsEqual(try b.data(t.name)), t.name)
        }
        for k in a.keys where k.hasPrefix("tokenizer.") || k.hasPrefix("llama.") || k == "general.name" {
            XCTAssertEqual(b.metadata[k], a.metadata[k], k)
        }
        XCTAssertEqual(b.metadata["general.file_type"]?.int, 3)
    }
}
