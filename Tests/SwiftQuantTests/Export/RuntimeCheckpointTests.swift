import Foundation
import SwiftQuant
import SwiftQuantFuzz
import XCTest

/// GPTQ and compressed-tensors: export → import is bit-exact (codes and zero-points after the zero-point refit,
/// scales exactly for compressed-tensors and after FP16 rounding for GPTQ, g_idx), the imported model serves the
/// dequantized weights, what the formats cannot hold is refused, hostile checkpoints are refused naming file and
/// tensor, and the fuzz seeds of the importers are accepted.
final class RuntimeCheckpointTests: XCTestCase {
    let quiet = ExportOptions(progress: false, log: { _ in })

    func tempDir() -> String {
        let d = NSTemporaryDirectory() + "sq-rt-\(UUID().uuidString)"
        addTeardownBlock { try? FileManager.default.removeItem(atPath: d) }
        return d
    }

    /// A tiny fixture model quantized by `recipe` (GPTQ on random calibration windows).
    func quantized(_ family: String, _ recipe: QuantRecipe) throws -> LoadedModel {
        let loaded = try LoadedModel.load(path: Fixtures.url(family).path)
        var r = recipe
        if r.needsCalibrationData { r.nsamples = 4; r.seqlen = 16 }
        var rng = SplitMix64(seed: 5)
        let windows = r.needsCalibrationData
            ? (0..<r.nsamples).map { _ in (0..<r.seqlen).map { _ in Int32(rng.next() % UInt64(loaded.model.vocabSize)) } } : []
        let result = try CalibrationPipeline(recipe: r, workDir: nil, progress: false)
            .run(model: loaded.model, windows: windows, resume: false)
        loaded.quantization = QuantizationState(method: r.method.rawValue, weights: try r.quantizerConfig,
                                                tensors: result.quantized)
        return loaded
    }

    static func half(_ x: Float) -> Float { Float(Float16(x)) }

    /// The zero-point range each format stores (SwiftQuant's unsigned convention).
    static func allowed(_ format: ExportFormat, _ config: QuantizerConfig) -> ClosedRange<Int> {
        let bits = config.format.bitWidth, half = 1 << (bits - 1)
        if config.symmetric { return half...half }
        return format == .gptq ? 1...((1 << bits) - 1) : 0...((1 << bits) - 1)
    }

    /// Exports, imports and compares every quantized tensor; returns the imported model.
    @discardableResult
    func roundTrip(_ loaded: LoadedModel, _ format: ExportFormat, file: StaticString = #filePath, line: UInt = #line)
        throws -> LoadedModel
    {
        let dir = tempDir()
        try ModelExport.write(loaded, format: format, to: dir, options: quiet)
        let back = try LoadedModel.load(path: dir)
        let original = try XCTUnwrap(loaded.quantization)
        let state = try XCTUnwrap(back.quantization, file: file, line: line)
        XCTAssertNil(back.config["quantization_config"], "the imported config keeps no quantization_config", file: file, line: line)
        XCTAssertEqual(state.tensors.count, original.tensors.count, file: file, line: line)
        XCTAssertEqual(state.weights.format, original.weights.format, file: file, line: line)
        XCTAssertEqual(state.weights.groupSize, original.weights.groupSize, file: file, line: line)
        XCTAssertEqual(state.weights.symmetric, original.weights.symmetric, file: file, line: line)
        for (name, q) in original.tensors {
            let r = try XCTUnwrap(state.tensors[name], name, file: file, line: line)
            let fit = try ZeroPointRefit.refit(q, name: name, allowed: Self.allowed(format, q.config), format: "test",
                                               allowClamp: false)
            XCTAssertEqual(fit.clamped, 0, file: file, line: line)
            XCTAssertEqual(r.codes, fit.codes, "\(name) codes", file: file, line: line)
            XCTAssertEqual(r.zeros, fit.zeros, "\(name) zeros", file: file, line: line)
            XCTAssertEqual(r.scales, format == .gptq ? q.scales.map(Self.half) : q.scales, "\(name) scales", file: file, line: line)
            XCTAssertEqual(r.groupIndex, q.groupIndex, "\(name) g_idx", file: file, line: line)
            // The model reads the dequantized tensor; with exact scales it is the weight SwiftQuant ran.
            XCTAssertEqual(try back.source.float32(name).array, r.dequantized().array, name, file: file, line: line)
            if format == .compressedTensors {
                XCTAssertEqual(r.dequantized().array, q.dequantized().array, name, file: file, line: line)
            }
        }
        return back
    }

    func testRoundTripsAcrossBitsGroupsSymmetryAndFamilies() throws {
        let cases: [(String, QuantRecipe, [ExportFormat])] = [
            ("tiny/llama_gqa", QuantRecipe(method: .rtn, wformat: "int4", groupSize: 16), [.gptq, .compressedTensors]),
            ("tiny/llama_gqa", QuantRecipe(method: .rtn, wformat: "int4", groupSize: 32, symmetric: true), [.gptq, .compressedTensors]),
            ("tiny/llama_gqa", QuantRecipe(method: .rtn, wformat: "int8", groupSize: .perRow), [.gptq, .compressedTensors]),
            ("tiny/llama_gqa", QuantRecipe(method: .rtn, wformat: "int8", groupSize: .perRow, symmetric: true), [.gptq, .compressedTensors]),
            ("tiny/llama_gqa", QuantRecipe(method: .rtn, wformat: "int3", groupSize: 32), [.gptq]),
            ("tiny/llama_gqa", QuantRecipe(method: .gptq, wformat: "int2", groupSize: 16, symmetric: true), [.gptq]),
            ("tiny/llama_gqa", QuantRecipe(method: .gptq, wformat: "int3", groupSize: .perRow, symmetric: true), [.gptq]),
            ("tiny/qwen2", QuantRecipe(method: .gptq, wformat: "int4", groupSize: 16), [.gptq, .compressedTensors]),
            ("tiny/opt", QuantRecipe(method: .rtn, wformat: "int4", groupSize: 32, symmetric: true), [.gptq, .compressedTensors]),
        ]
        for (family, recipe, formats) in cases {
            let loaded = try quantized(family, recipe)
            // What the exporters read is what SwiftQuant runs: the installed weights are the dequantized codes.
            let name = loaded.model.blockPrefix(0) + loaded.model.blockSpec.linears[0].name
            XCTAssertEqual(try loaded.model.block(0).linears[loaded.model.blockSpec.linears[0].name]!.weight.array,
                           loaded.quantization!.tensors[name + ".weight"]!.dequantized().array)
            for f in formats {
                let back = try roundTrip(loaded, f)
                if f == .compressedTensors {
                    // Bit-exact weights: the imported model computes the same logits.
                    let ids: [Int32] = [1, 5, 9, 3, 7, 2]
                    XCTAssertEqual(try back.model.logits(ids: ids).array, try loaded.model.logits(ids: ids).array, "\(family) \(recipe.wformat)")
                }
            }
        }
    }

    func testActOrderIsKeptByGPTQAndRefusedByCompressedTensors() throws {
        var r = QuantRecipe(method: .gptq, wformat: "int4", groupSize: 16)
        r.actOrder = true
        let loaded = try quantized("tiny/llama_gqa", r)
        XCTAssertTrue(loaded.quantization!.tensors.values.contains { $0.groupIndex != nil })
        let dir = tempDir()
        try ModelExport.write(loaded, format: .gptq, to: dir, options: quiet)
        let cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/config.json"))) as! [String: Any]
        let qc = cfg["quantization_config"] as! [String: Any]
        XCTAssertEqual(qc["desc_act"] as? Bool, true)
        XCTAssertEqual(qc["quant_method"] as? String, "gptq")
        XCTAssertEqual(qc["checkpoint_format"] as? String, "gptq")
        try roundTrip(loaded, .gptq)
        XCTAssertThrowsSwiftQuantError(try ModelExport.write(loaded, format: .compressedTensors, to: tempDir(), options: quiet),
                                       contains: "act-order")
    }

    func testWhatTheFormatsCannotHoldIsRefused() throws {
        let ragged = try quantized("tiny/llama_gqa", QuantRecipe(method: .rtn, wformat: "int4", groupSize: 48))
        XCTAssertThrowsSwiftQuantError(try ModelExport.write(ragged, format: .gptq, to: tempDir(), options: quiet),
                                       contains: "--group-size 32")
        XCTAssertThrowsSwiftQuantError(try ModelExport.write(ragged, format: .compressedTensors, to: tempDir(), options: quiet),
                                       contains: "leaves a last group of 16")
        let fp4 = try quantized("tiny/llama_gqa", QuantRecipe(method: .rtn, wformat: "e2m1", groupSize: 16))
        for f in [ExportFormat.gptq, .compressedTensors] {
            XCTAssertThrowsSwiftQuantError(try ModelExport.write(fp4, format: f, to: tempDir(), options: quiet), contains: "e2m1")
        }
        let w3 = try quantized("tiny/llama_gqa", QuantRecipe(method: .rtn, wformat: "int3", groupSize: 32))
        XCTAssertThrowsSwiftQuantError(try ModelExport.write(w3, format: .compressedTensors, to: tempDir(), options: quiet),
                                       contains: "int3")
        let w5 = try quantized("tiny/llama_gqa", QuantRecipe(method: .rtn, wformat: "int5", groupSize: 32))
        XCTAssertThrowsSwiftQuantError(try ModelExport.write(w5, format: .gptq, to: tempDir(), options: quiet), contains: "int5")
        let lorc = QuantRecipe(method: .rtn, wformat: "int4", groupSize: 16, lorcRank: 2)
        let withLoRC = try LoadedModel.load(path: Fixtures.url("tiny/llama_gqa").path)
        _ = try CalibrationPipeline.quantize(withLoRC, recipe: lorc, calibrationPath: nil, workDir: nil, progress: false)
        XCTAssertFalse(withLoRC.quantization!.lowRank.isEmpty)
        for f in [ExportFormat.gptq, .compressedTensors] {
            XCTAssertThrowsSwiftQuantError(try ModelExport.write(withLoRC, format: f, to: tempDir(), options: quiet), contains: "LoRC")
        }
        let wa = QuantRecipe(method: .rtn, wformat: "int8", groupSize: .perRow, aformat: "int8", kvFormat: .some(nil))
        let act = try LoadedModel.load(path: Fixtures.url("tiny/llama_gqa").path)
        _ = try CalibrationPipeline.quantize(act, recipe: wa, calibrationPath: nil, workDir: nil, progress: false)
        XCTAssertThrowsSwiftQuantError(try ModelExport.write(act, format: .compressedTensors, to: tempDir(), options: quiet),
                                       contains: "forces 0 into each token's range")
        XCTAssertThrowsSwiftQuantError(try ModelExport.write(act, format: .gptq, to: tempDir(), options: quiet),
                                       contains: "weight-only")
        let plain = try LoadedModel.load(path: Fixtures.url("tiny/llama_gqa").path)
        XCTAssertThrowsSwiftQuantError(try ModelExport.write(plain, format: .gptq, to: tempDir(), options: quiet),
                                       contains: "no quantized weights")
    }

    /// A group whose grid has no storable zero-point (all-positive weights under the min/max policy) is refused,
    /// or clamped and reported with `requantize`.
    func testUnstorableZeroPointsAreRefusedOrClampedOnRequest() throws {
        let config = QuantizerConfig(format: .int(bits: 4), groupSize: 8)
        let w: [Float] = (0..<64).map { Float(3 + $0 % 8) * 0.25 }  // every group in [0.75, 2.5]
        let q = try w.withUnsafeBufferPointer { try Quantizer.quantize($0, rows: 8, cols: 8, config: config) }
        XCTAssertTrue(q.zeros.contains { $0 < 0 })
        XCTAssertThrowsSwiftQuantError(try ZeroPointRefit.refit(q, name: "w", allowed: 1...15, format: "GPTQ", allowClamp: false),
                                       contains: "row 0, group 0")
        let fit = try ZeroPointRefit.refit(q, name: "w", allowed: 1...15, format: "GPTQ", allowClamp: true)
        XCTAssertEqual(fit.clamped, 8)
        XCTAssertGreaterThan(fit.maxError, 0)
        XCTAssertTrue(fit.zeros.allSatisfy { (1...15).contains($0) })
        // A zero that only needs moving keeps the grid exactly.
        let sym = try w.withUnsafeBufferPointer {
            try Quantizer.quantize($0, rows: 8, cols: 8, config: QuantizerConfig(format: .int(bits: 4), groupSize: 8, symmetric: true))
        }
        let moved = try ZeroPointRefit.refit(sym, name: "w", allowed: 8...8, format: "GPTQ sym", allowClamp: false)
        XCTAssertEqual(moved.clamped, 0)
        XCTAssertEqual(moved.shifted, 8)
        let re = try QuantizedTensor(rows: 8, cols: 8, config: sym.config, codes: moved.codes, scales: sym.scales, zeros: moved.zeros)
        XCTAssertEqual(re.dequantized().array, sym.dequantized().array)
    }

    // MARK: hostile checkpoints

    /// Rewrites `dir/model.safetensors` through `edit` (entries by name).
    func rewrite(_ dir: String, _ edit: (inout [String: SafetensorsEntry]) -> Void) throws {
        let path = dir + "/model.safetensors"
        var entries: [String: SafetensorsEntry] = [:]
        do {
            let f = try SafetensorsFile(path: path)
            for t in f.tensorInfos {
                entries[t.name] = SafetensorsEntry(name: t.name, dtype: t.dtype, shape: t.shape, bytes: Data(try f.rawBytes(t.name)))
            }
        }
        edit(&entries)
        try SafetensorsWriter.write(Array(entries.values), to: path)
    }

    func exported(_ format: ExportFormat, _ recipe: QuantRecipe) throws -> String {
        let dir = tempDir()
        try ModelExport.write(try quantized("tiny/llama_gqa", recipe), format: format, to: dir, options: quiet)
        return dir
    }

    func testHostileCheckpointsAreRefusedNamingFileAndTensor() throws {
        let t = "model.layers.0.self_attn.q_proj"  // [64, 64]
        let asym = QuantRecipe(method: .gptq, wformat: "int4", groupSize: 16)
        func word(_ v: UInt32, count: Int) -> Data { Data((0..<count).flatMap { _ in withUnsafeBytes(of: v.littleEndian) { Array($0) } }) }
        let gptqCases: [(String, (inout [String: SafetensorsEntry]) -> Void, String)] = [
            ("lying shape", { e in
                let q = e[t + ".qweight"]!
                e[t + ".qweight"] = SafetensorsEntry(name: q.name, dtype: .i32, shape: [q.shape[1], q.shape[0]], bytes: q.bytes)
            }, t + ".qweight: is I32 [64, 8], expected I32 [8, 64]"),
            ("truncated qweight", { e in
                let q = e[t + ".qweight"]!
                e[t + ".qweight"] = SafetensorsEntry(name: q.name, dtype: .i32, shape: [q.shape[0] - 1, q.shape[1]],
                                                     bytes: q.bytes.prefix((q.shape[0] - 1) * q.shape[1] * 4))
            }, t + ".qweight: is I32 [7, 64]"),
            ("zero-point out of range", { e in
                let z = e[t + ".qzeros"]!
                e[t + ".qzeros"] = SafetensorsEntry(name: z.name, dtype: .i32, shape: z.shape, bytes: word(0xFFFF_FFFF, count: z.shape.reduce(1, *)))
            }, t + ".qzeros: zero-point of group 0, column 0 is stored as 15"),
            ("g_idx out of range", { e in
                let g = e[t + ".g_idx"]!
                var b = g.bytes
                b.replaceSubrange(0..<4, with: word(99, count: 1))
                e[t + ".g_idx"] = SafetensorsEntry(name: g.name, dtype: .i32, shape: g.shape, bytes: b)
            }, t + ".g_idx: g_idx[0] = 99 is not a group of 0..<4"),
            ("scale not finite", { e in
                let s = e[t + ".scales"]!
                var b = s.bytes
                b.replaceSubrange(0..<2, with: [0x00, 0x7C])  // FP16 +inf
                e[t + ".scales"] = SafetensorsEntry(name: s.name, dtype: .f16, shape: s.shape, bytes: b)
            }, t + ".scales: value 0 is inf"),
            ("missing qzeros", { e in e[t + ".qzeros"] = nil }, t + ".qzeros is missing"),
        ]
        for (what, edit, message) in gptqCases {
            let dir = try exported(.gptq, asym)
            try rewrite(dir, edit)
            XCTAssertThrowsSwiftQuantError(try LoadedModel.load(path: dir), contains: dir + "/model.safetensors: " + message)
            _ = what
        }
        let ctCases: [(String, (inout [String: SafetensorsEntry]) -> Void, String)] = [
            ("lying weight_shape", { e in
                e[t + ".weight_shape"] = SafetensorsEntry(name: t + ".weight_shape", dtype: .i64, shape: [2],
                                                          bytes: [Int64(64), Int64(65)].withUnsafeBytes { Data($0) })
            }, t + ".weight_shape: says [64, 65]"),
            ("truncated weight_packed", { e in
                let p = e[t + ".weight_packed"]!
                e[t + ".weight_packed"] = SafetensorsEntry(name: p.name, dtype: .i32, shape: [p.shape[0], p.shape[1] - 1],
                                                           bytes: p.bytes.prefix(p.shape[0] * (p.shape[1] - 1) * 4))
            }, t + ".weight_packed: is I32 [64, 7], expected I32 [64, 8]"),
            ("zero-point tensor of the wrong shape", { e in
                let z = e[t + ".weight_zero_point"]!
                e[t + ".weight_zero_point"] = SafetensorsEntry(name: z.name, dtype: .i32, shape: [64, 4], bytes: Data(count: 64 * 4 * 4))
            }, t + ".weight_zero_point: is I32 [64, 4], expected I32 [8, 4]"),
        ]
        for (_, edit, message) in ctCases {
            let dir = try exported(.compressedTensors, asym)
            try rewrite(dir, edit)
            XCTAssertThrowsSwiftQuantError(try LoadedModel.load(path: dir), contains: dir + "/model.safetensors: " + message)
        }
        // A config that lies about the bit width: every packed shape disagrees.
        let dir = try exported(.gptq, asym)
        var cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/config.json"))) as! [String: Any]
        var qc = cfg["quantization_config"] as! [String: Any]
        qc["bits"] = 8
        cfg["quantization_config"] = qc
        try JSONSerialization.data(withJSONObject: cfg).write(to: URL(fileURLWithPath: dir + "/config.json"))
        XCTAssertThrowsSwiftQuantError(try LoadedModel.load(path: dir), contains: ".qweight: is I32 [8, 64], expected I32 [16, 64]")
        qc["quant_method"] = "awq"
        cfg["quantization_config"] = qc
        try JSONSerialization.data(withJSONObject: cfg).write(to: URL(fileURLWithPath: dir + "/config.json"))
        XCTAssertThrowsSwiftQuantError(try LoadedModel.load(path: dir), contains: "quant_method 'awq' is not supported")
    }

    // MARK: fuzz seeds

    /// The importer seeds are accepted by their fuzz entry points (so fuzzing starts from checkpoints that get past
    /// the parsers), and byte flips of them never crash.
    func testImporterFuzzSeedsAreAcceptedAndMutationsNeverCrash() throws {
        let seeds = try FormatFuzz.importSeeds()
        XCTAssertEqual(seeds.count, 5)
        var rng = SplitMix64(seed: 11)
        for (name, bytes) in seeds {
            let body = Array(bytes.dropFirst())
            func run(_ b: [UInt8]) -> Bool {
                b.withUnsafeBytes { raw in
                    switch bytes[0] {
                    case 2: return FormatFuzz.importCheckpoint(raw, method: "gptq")
                    case 3: return FormatFuzz.importCheckpoint(raw, method: "compressed-tensors")
                    default: return FormatFuzz.readSavedQuantization(raw)
                    }
                }
            }
            XCTAssertTrue(run(body), name)
            for _ in 0..<150 {
                var d = body
                for _ in 0..<Int(rng.next() % 4 + 1) {
                    d[Int(rng.next() % UInt64(d.count))] = UInt8(truncatingIfNeeded: rng.next())
                }
                if rng.next() % 4 == 0 { d = Array(d.prefix(Int(rng.next() % UInt64(d.count)))) }
                _ = run(d)
            }
        }
    }

    // MARK: SmolLM2

    func testSmolLM2RoundTripsBitExact() throws {
        guard let path = ProcessInfo.processInfo.environment["SWIFTQUANT_SMOLLM2"], !path.isEmpty,
              FileManager.default.fileExists(atPath: path) else {
            print("skip: SWIFTQUANT_SMOLLM2 is not set")
            throw XCTSkip("SWIFTQUANT_SMOLLM2 is not set")
        }
        for (recipe, formats) in [(QuantRecipe(method: .rtn, wformat: "int4", groupSize: 64), [ExportFormat.gptq, .compressedTensors]),
                                  (QuantRecipe(method: .rtn, wformat: "int8", groupSize: .perRow, symmetric: true), [.gptq, .compressedTensors])] {
            let loaded = try LoadedModel.load(path: path)
            _ = try CalibrationPipeline.quantize(loaded, recipe: recipe, calibrationPath: nil, workDir: nil, progress: false)
            for f in formats { try roundTrip(loaded, f) }
        }
        // 576-wide rows with group 128 cannot be a GPTQ checkpoint: the refusal offers group 64.
        let g128 = try LoadedModel.load(path: path)
        _ = try CalibrationPipeline.quantize(g128, recipe: QuantRecipe(method: .rtn, wformat: "int4", groupSize: 128),
                                             calibrationPath: nil, workDir: nil, progress: false)
        XCTAssertThrowsSwiftQuantError(try ModelExport.write(g128, format: .gptq, to: tempDir(), options: quiet),
                                       contains: "has 576 inputs and group 128 leaves a last group of 64")
        XCTAssertThrowsSwiftQuantError(try ModelExport.write(g128, format: .gptq, to: tempDir(), options: quiet),
                                       contains: "--group-size 64")
    }
}
