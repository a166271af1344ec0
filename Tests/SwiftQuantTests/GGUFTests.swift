import Foundation
import SwiftQuant
import SwiftQuantFuzz
import XCTest

/// Little-endian byte builder for hand-made (often deliberately broken) GGUF files.
private struct Bytes {
    var data = Data()
    mutating func u8(_ v: UInt8) { data.append(v) }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { data.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { data.append(contentsOf: $0) } }
    mutating func str(_ s: String) { u64(UInt64(s.utf8.count)); data.append(contentsOf: Array(s.utf8)) }
    mutating func pad(_ a: Int) { while data.count % a != 0 { data.append(0) } }
}

/// Checksum shared with make_gguf_fixtures.py: sum of float32 bit patterns · (i % 65521 + 1) mod 2^64.
private func checksum(_ a: UnsafeMutableBufferPointer<Float>) -> UInt64 {
    var s: UInt64 = 0
    for i in 0..<a.count { s = s &+ UInt64(a[i].bitPattern) &* UInt64(i % 65521 + 1) }
    return s
}

private func fixture(_ name: String, _ ext: String) throws -> String {
    guard let url = Bundle.module.url(forResource: name, withExtension: ext, subdirectory: "Fixtures") else {
        throw XCTSkip("fixture \(name).\(ext) missing")
    }
    return url.path
}

final class GGUFTests: XCTestCase {
    func testSmallFixtureMetadata() throws {
        let g = try GGUFFile(path: try fixture("gguf_small", "ggufbin"))
        XCTAssertEqual(g.version, 3)
        XCTAssertEqual(g.alignment, 32)
        XCTAssertEqual(g.dataOffset % 32, 0)
        let m = g.metadata
        XCTAssertEqual(m["general.architecture"]?.string, "llama")
        XCTAssertEqual(m["test.u8"], .uint8(250))
        XCTAssertEqual(m["test.i8"], .int8(-100))
        XCTAssertEqual(m["test.u16"], .uint16(65000))
        XCTAssertEqual(m["test.i16"], .int16(-32000))
        XCTAssertEqual(m["test.i32"], .int32(-2_000_000_000))
        XCTAssertEqual(m["test.f32"], .float32(1.5))
        XCTAssertEqual(m["test.bool"], .bool(true))
        XCTAssertEqual(m["test.str"]?.string, "héllo\nworld")
        XCTAssertEqual(m["test.u64"], .uint64(1 << 63 + 5))
        XCTAssertNil(m["test.u64"]?.int)
        XCTAssertEqual(m["test.i64"]?.int, -(1 << 62))
        XCTAssertEqual(m["test.f64"]?.double, -0.1)
        XCTAssertEqual(m["test.arr_str"]?.stringArray, ["a", "", "ünï"])
        XCTAssertEqual(m["test.arr_i32"]?.array?.compactMap(\.int), [1, -2, 3])
        XCTAssertEqual(m["test.arr_nested"]?.array?.map { $0.array?.compactMap(\.int) ?? [] }, [[1, 2], [3]])
        XCTAssertEqual(g.keys.first, "general.architecture")
        XCTAssertEqual(Set(g.keys), Set(m.keys))
        XCTAssertEqual(g.tensor("quant.q4_1")?.dims, [64, 8])
        XCTAssertEqual(g.tensor("quant.q4_1")?.type, .q4_1)
        XCTAssertEqual(g.tensor("quant.q4_1")?.shape, [8, 64])
    }

    /// Every tensor decodes bit-exactly to what `gguf.quants.dequantize` gives.
    func testDequantizationParityWithGGUFPackage() throws {
        let g = try GGUFFile(path: try fixture("gguf_small", "ggufbin"))
        let exp = try SafetensorsFile(path: try fixture("gguf_small_expected", "safetensors"))
        var checked = 0
        for name in exp.names where !name.contains(":") && name != "enc_in" {
            let want = try exp.float32(name)
            let got = try g.float32(name)
            XCTAssertEqual(got.count, want.count, name)
            XCTAssertEqual(got.array.map(\.bitPattern), want.array.map(\.bitPattern), name)
            checked += 1
        }
        XCTAssertEqual(checked, 10)
        XCTAssertTrue(g.isZeroCopy("plain.f32"))
        XCTAssertFalse(g.isZeroCopy("quant.q8_0"))
    }

    func testEncoderParityWithGGUFPackage() throws {
        let exp = try SafetensorsFile(path: try fixture("gguf_small_expected", "safetensors"))
        let input = try exp.float32("enc_in")
        for (t, key) in [(GGMLType.q8_0, "Q8_0"), (.q4_0, "Q4_0"), (.q4_1, "Q4_1"), (.f16, "F16"), (.bf16, "BF16")] {
            let got = try GGUFBlocks.quantize(UnsafeBufferPointer(input.buffer), type: t)
            let want = Data(try exp.rawBytes("enc:\(key)"))
            XCTAssertEqual(got, want, key)
        }
    }

    func testHuggingFaceView() throws {
        let src = try GGUFTensorSource(path: try fixture("gguf_small", "ggufbin"))
        let exp = try SafetensorsFile(path: try fixture("gguf_small_expected", "safetensors"))
        XCTAssertEqual(src.architecture, "llama")
        XCTAssertTrue(src.undoesRopePermutation)
        XCTAssertTrue(src.names.contains("model.embed_tokens.weight"))
        XCTAssertTrue(src.names.contains("model.norm.weight"))
        XCTAssertTrue(src.names.contains("model.layers.0.input_layernorm.weight"))
        XCTAssertFalse(src.names.contains("lm_head.weight"))
        XCTAssertTrue(src.names.contains("quant.q8_0"))  // unmapped names pass through
        XCTAssertEqual(src.info("model.embed_tokens.weight")?.shape, [10, 64])
        XCTAssertEqual(src.info("model.layers.0.self_attn.k_proj.weight"), TensorInfo(
            name: "model.layers.0.self_attn.k_proj.weight", dtype: .q8_0, shape: [32, 64]))
        for hf in ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
                   "model.layers.0.self_attn.v_proj.weight"] {
            XCTAssertEqual(try src.float32(hf).array.map(\.bitPattern), try exp.float32("hf:" + hf).array.map(\.bitPattern), hf)
        }
        XCTAssertFalse(src.isZeroCopy("model.layers.0.self_attn.q_proj.weight"))  // F32 but permuted
        XCTAssertTrue(src.isZeroCopy("model.layers.0.input_layernorm.weight"))
        XCTAssertEqual(src.ggufName(for: "model.layers.0.self_attn.q_proj.weight"), "blk.0.attn_q.weight")
        // Without un-permutation the raw GGUF rows come back.
        let raw = try GGUFTensorSource(path: try fixture("gguf_small", "ggufbin"), undoRopePermutation: false)
        XCTAssertEqual(try raw.float32("model.layers.0.self_attn.q_proj.weight").array,
                       try exp.float32("blk.0.attn_q.weight").array)
    }

    func testNameMapping() {
        let cases = [
            ("blk.3.attn_q.weight", "model.layers.3.self_attn.q_proj.weight"),
            ("blk.3.attn_q.bias", "model.layers.3.self_attn.q_proj.bias"),
            ("blk.12.attn_k.weight", "model.layers.12.self_attn.k_proj.weight"),
            ("blk.0.attn_v.bias", "model.layers.0.self_attn.v_proj.bias"),
            ("blk.0.attn_output.weight", "model.layers.0.self_attn.o_proj.weight"),
            ("blk.1.ffn_gate.weight", "model.layers.1.mlp.gate_proj.weight"),
            ("blk.1.ffn_up.weight", "model.layers.1.mlp.up_proj.weight"),
            ("blk.1.ffn_down.weight", "model.layers.1.mlp.down_proj.weight"),
            ("blk.1.attn_norm.weight", "model.layers.1.input_layernorm.weight"),
            ("blk.1.ffn_norm.weight", "model.layers.1.post_attention_layernorm.weight"),
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("output_norm.weight", "model.norm.weight"),
            ("output.weight", "lm_head.weight"),
            ("rope_freqs.weight", "rope_freqs.weight"),
            ("blk.x.attn_q.weight", "blk.x.attn_q.weight"),
        ]
        for (g, hf) in cases { XCTAssertEqual(LlamaModel.ggufNaming.hfName(g), hf) }
    }

    func testPermutationInverse() {
        let t = Tensor(shape: [12, 3], values: (0..<36).map(Float.init))
        let p = GGUFTensorSource.permuteRows(t, heads: 3)
        XCTAssertNotEqual(p.array, t.array)
        // head 0 (rows 0..3, half = 2): GGUF row order is HF rows 0, 2, 1, 3
        XCTAssertEqual(Array(p.array[0..<12]), [0, 1, 2, 6, 7, 8, 3, 4, 5, 9, 10, 11])
        XCTAssertEqual(GGUFTensorSource.unpermuteRows(p, heads: 3).array, t.array)
    }

    func testWriterRoundTrip() throws {
        let g = try GGUFFile(path: try fixture("gguf_small", "ggufbin"))
        let dir = try makeTempDir(self)
        let out = ProcessInfo.processInfo.environment["SWIFTQUANT_GGUF_ROUNDTRIP_OUT"]
            ?? (dir as NSString).appendingPathComponent("copy.gguf")
        let meta = g.keys.map { ($0, g.metadata[$0]!) }
        let tensors = try g.tensors.map {
            GGUFWriterTensor(name: $0.name, type: $0.type, dims: $0.dims, bytes: Data(try g.data($0.name)))
        }
        try GGUFWriter.write(metadata: meta, tensors: tensors, to: out)
        let h = try GGUFFile(path: out)
        XCTAssertEqual(h.keys, g.keys)
        XCTAssertEqual(h.metadata, g.metadata)
        XCTAssertEqual(h.tensors.map(\.name), g.tensors.map(\.name))
        for t in g.tensors {
            XCTAssertEqual(h.tensor(t.name)?.dims, t.dims)
            XCTAssertEqual(h.tensor(t.name)?.type, t.type)
            XCTAssertEqual(Data(try h.data(t.name)), Data(try g.data(t.name)), t.name)
        }
        // The file written by the gguf package and ours are byte-identical (same layout rules).
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out)),
                       try Data(contentsOf: URL(fileURLWithPath: try fixture("gguf_small", "ggufbin"))))
        if out.hasPrefix(dir) {
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["copy.gguf"])
        }
    }

    func testEncodeDecodeEveryType() throws {
        let dir = try makeTempDir(self)
        let path = (dir as NSString).appendingPathComponent("enc.gguf")
        var rng = SystemRandomNumberGenerator()
        let x = Tensor(shape: [3, 64], values: (0..<192).map { _ in Float.random(in: -2...2, using: &rng) })
        let types: [GGMLType] = [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1]
        try GGUFWriter.write(metadata: [("general.alignment", .uint32(64)), ("general.architecture", .string("test"))],
                             tensors: try types.map { try GGUFWriterTensor(name: "t.\($0.name)", tensor: x, type: $0) },
                             to: path)
        let g = try GGUFFile(path: path)
        XCTAssertEqual(g.alignment, 64)
        for t in types {
            let got = try g.float32("t.\(t.name)")
            XCTAssertEqual(got.shape, [3, 64])
            let bytes = try GGUFBlocks.quantize(UnsafeBufferPointer(x.buffer), type: t)
            let want = Tensor(zeros: [3, 64])
            try bytes.withUnsafeBytes { try GGUFBlocks.dequantize($0, type: t, into: want.buffer) }
            XCTAssertEqual(got.array, want.array, t.name)
            // Error bound: half a step of the block scale.
            let tol: Float = t == .f32 ? 0 : t == .f16 ? 1e-3 : t == .bf16 ? 1e-2 : t == .q8_0 ? 0.01 : 0.3
            for (a, b) in zip(got.array, x.array) { XCTAssertLessThanOrEqual(abs(a - b), tol, t.name) }
        }
        XCTAssertTrue(g.isZeroCopy("t.F32"))
        XCTAssertEqual(try g.float32("t.F32").array, x.array)
    }

    func testWriterRejectsBadInputAndCleansUp() throws {
        let dir = try makeTempDir(self)
        let path = (dir as NSString).appendingPathComponent("bad.gguf")
        XCTAssertThrowsError(try GGUFWriter.write(metadata: [], tensors: [
            GGUFWriterTensor(name: "a", type: .q4_0, dims: [32], bytes: Data(count: 17))], to: path))
        XCTAssertThrowsError(try GGUFWriter.write(metadata: [], tensors: [
            GGUFWriterTensor(name: "a", type: .q4_0, dims: [16, 2], bytes: Data(count: 18))], to: path))
        XCTAssertThrowsError(try GGUFWriter.write(metadata: [("k", .array([.uint8(1), .string("x")]))], tensors: [],
                                                  to: path))
        // rename(2) onto a non-empty directory fails after the data were written.
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        try Data([1]).write(to: URL(fileURLWithPath: (path as NSString).appendingPathComponent("x")))
        XCTAssertThrowsError(try GGUFWriter.write(metadata: [("a", .uint8(1))], tensors: [], to: path)) { e in
            guard case SwiftQuantError.io? = e as? SwiftQuantError else { return XCTFail("\(e)") }
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["bad.gguf"])
    }

    /// A valid file with one KV (string) and one F32 tensor [32, 2] at offset 0.
    private func validFile(version: UInt32 = 3, alignment: Int = 32,
                           tensor: (inout Bytes) -> Void = { b in
                               b.str("w"); b.u32(2); b.u64(32); b.u64(2); b.u32(0); b.u64(0)
                           }, dataBytes: Int = 256, kv: ((inout Bytes) -> Void)? = nil, kvCount: UInt64 = 1) -> Data {
        var b = Bytes()
        b.u32(0x4655_4747); b.u32(version); b.u64(1); b.u64(kvCount)
        if let kv { kv(&b) } else { b.str("general.architecture"); b.u32(8); b.str("llama") }
        tensor(&b)
        b.pad(alignment)
        b.data.append(Data(count: dataBytes))
        return b.data
    }

    func testHostileFiles() throws {
        let dir = try makeTempDir(self)
        var k = 0
        func check(_ bytes: Data, _ fragment: String, line: UInt = #line) throws {
            k += 1
            let path = (dir as NSString).appendingPathComponent("bad\(k).gguf")
            try bytes.write(to: URL(fileURLWithPath: path))
            assertFormatError([path, fragment], line: line) { _ = try GGUFFile(path: path) }
            assertFormatError(["mem", fragment], line: line) {
                _ = try bytes.withUnsafeBytes { try GGUFFile(bytes: $0, name: "mem") }
            }
        }
        let good = validFile()
        let ok = try good.withUnsafeBytes { try GGUFFile(bytes: $0, name: "mem") }
        XCTAssertEqual(ok.tensors.first?.dims, [32, 2])
        // Every truncation of a valid file is rejected cleanly (header part) or parses (only padding/data cut).
        for n in 0..<(good.count - 256) {
            let prefix = good.prefix(n)
            XCTAssertThrowsError(try prefix.withUnsafeBytes { try GGUFFile(bytes: $0, name: "mem") }, "prefix \(n)")
        }
        try check(Data("GGU".utf8), "too short")
        try check(Data("GGML0000000000000000000000".utf8), "bad magic")
        try check(validFile(version: 1), "version 1 is not supported")
        try check(validFile(version: 4), "unsupported GGUF version 4")
        try check(validFile(dataBytes: 100), "outside the data section")
        try check(validFile(tensor: { b in b.str("w"); b.u32(1); b.u64(32); b.u32(0); b.u64(8) }), "not a multiple of the alignment")
        try check(validFile(tensor: { b in b.str("w"); b.u32(1); b.u64(32); b.u32(0); b.u64(256) }), "outside the data section")
        try check(validFile(tensor: { b in b.str("w"); b.u32(1); b.u64(32); b.u32(0); b.u64(UInt64.max - 31) }), "too large")
        try check(validFile(tensor: { b in b.str("w"); b.u32(5); for _ in 0..<5 { b.u64(1) }; b.u32(0); b.u64(0) }),
                  "5 dimensions")
        try check(validFile(tensor: { b in b.str("w"); b.u32(0); b.u32(0); b.u64(0) }), "0 dimensions")
        try check(validFile(tensor: { b in b.str("w"); b.u32(2); b.u64(1 << 40); b.u64(1 << 40); b.u32(0); b.u64(0) }),
                  "overflow")
        try check(validFile(tensor: { b in b.str("w"); b.u32(1); b.u64(UInt64.max); b.u32(0); b.u64(0) }), "too large")
        try check(validFile(tensor: { b in b.str("w"); b.u32(1); b.u64(32); b.u32(5); b.u64(0) }), "unknown ggml type 5")
        try check(validFile(tensor: { b in b.str("w"); b.u32(1); b.u64(32); b.u32(1000); b.u64(0) }), "unknown ggml type 1000")
        try check(validFile(tensor: { b in b.str("w"); b.u32(1); b.u64(16); b.u32(2); b.u64(0) }), "block size")
        try check(validFile(tensor: { b in b.u64(1 << 40) }), "runs past the end")
        try check(validFile(tensor: { b in b.u64(2); b.data.append(contentsOf: [0xff, 0xfe]); b.u32(1); b.u64(4); b.u32(0); b.u64(0) }),
                  "not valid UTF-8")
        try check(validFile(kv: { b in b.str("k"); b.u32(9); b.u32(0); b.u64(1 << 50) }), "array length")
        try check(validFile(kv: { b in b.str("k"); b.u32(9); b.u32(8); b.u64(1000) }), "array length")
        try check(validFile(kv: { b in b.str("k"); b.u32(9); b.u32(77); b.u64(1) }), "unknown array element type 77")
        try check(validFile(kv: { b in b.str("k"); b.u32(13); b.u8(0) }), "unknown value type 13")
        try check(validFile(kv: { b in b.str("k"); b.u32(7); b.u8(2) }), "invalid bool")
        try check(validFile(kv: { b in b.str("k"); b.u32(8); b.u64(UInt64.max) }), "runs past the end")
        try check(validFile(kv: { b in b.str("k"); b.u32(9); for _ in 0..<20 { b.u32(9); b.u64(1) }; b.u32(0); b.u64(0) }),
                  "nested too deeply")
        try check(validFile(kv: { b in b.str("general.alignment"); b.u32(4); b.u32(24) }), "not a power of two")
        try check(validFile(kv: { b in b.str("a"); b.u32(0); b.u8(1); b.str("a"); b.u32(0); b.u8(1) }, kvCount: 2),
                  "duplicate metadata key 'a'")
        try check(validFile(kvCount: 1 << 60), "metadata count")
        var hugeTensors = validFile()
        hugeTensors.replaceSubrange(8..<16, with: withUnsafeBytes(of: UInt64(1 << 40).littleEndian) { Data($0) })
        try check(hugeTensors, "tensor count")
        // Two tensors overlapping.
        var b = Bytes()
        b.u32(0x4655_4747); b.u32(3); b.u64(2); b.u64(0)
        b.str("a"); b.u32(1); b.u64(32); b.u32(0); b.u64(0)
        b.str("b"); b.u32(1); b.u64(32); b.u32(0); b.u64(96)
        b.pad(32); b.data.append(Data(count: 256))
        try check(b.data, "overlap")
        // Version 2 is accepted; a non-decodable known type opens but float32 says unsupported.
        let v2 = validFile(version: 2, tensor: { b in b.str("w"); b.u32(1); b.u64(256); b.u32(14); b.u64(0) })
        let f = try v2.withUnsafeBytes { try GGUFFile(bytes: $0, name: "mem") }
        XCTAssertEqual(f.version, 2)
        XCTAssertThrowsError(try f.float32("w")) { e in
            guard case SwiftQuantError.unsupported(let m)? = e as? SwiftQuantError else { return XCTFail("\(e)") }
            XCTAssertTrue(m.contains("Q6_K"))
        }
        XCTAssertThrowsError(try GGUFTensorSource(file: f))
        assertFormatError(["mem", "no tensor named 'zz'"]) { _ = try f.float32("zz") }
    }

    /// The real SmolLM2-135M-Instruct Q4_1 GGUF (set SWIFTQUANT_SMOLLM2 to its path).
    func testSmolLM2RealFile() throws {
        guard let path = ProcessInfo.processInfo.environment["SWIFTQUANT_SMOLLM2"] else {
            print("GGUFTests.testSmolLM2RealFile skipped: set SWIFTQUANT_SMOLLM2 to SmolLM2-135M-Instruct.Q4_1.gguf")
            throw XCTSkip("SWIFTQUANT_SMOLLM2 not set")
        }
        let exp = try HFDirectorySource.readJSON(path: try fixture("smollm2_expected", "json"))
        let g = try GGUFFile(path: path)
        XCTAssertEqual(g.tensors.count, exp["tensor_count"] as? Int)
        XCTAssertEqual(Array(g.tensors.prefix(10).map(\.name)), exp["names_sample"] as? [String])
        XCTAssertEqual(g.metadata["general.architecture"]?.string, "llama")
        XCTAssertEqual(g.metadata["llama.attention.head_count"]?.int, 9)
        XCTAssertEqual(g.metadata["tokenizer.ggml.tokens"]?.stringArray?.count, 49152)
        let tensors = try XCTUnwrap(exp["tensors"] as? [String: [String: Any]])
        XCTAssertGreaterThanOrEqual(tensors.count, 5)
        for (name, e) in tensors {
            let t = try XCTUnwrap(g.tensor(name), name)
            XCTAssertEqual(t.dims, e["dims"] as? [Int], name)
            XCTAssertEqual(t.type.name, e["type"] as? String, name)
            let v = try g.float32(name)
            XCTAssertEqual(String(checksum(v.buffer)), e["checksum"] as? String, name)
            let first = (e["first"] as? [Double])?.map(Float.init)
            XCTAssertEqual(Array(v.array.prefix(8)), first, name)
        }
        let src = try GGUFTensorSource(file: g)
        XCTAssertEqual(src.info("model.embed_tokens.weight")?.shape, [49152, 576])
        XCTAssertEqual(src.info("model.layers.0.self_attn.k_proj.weight")?.shape, [192, 576])
        XCTAssertEqual(src.info("model.layers.29.mlp.down_proj.weight")?.shape, [576, 1536])
        XCTAssertNil(src.info("lm_head.weight"))
        let k = try src.float32("model.layers.0.self_attn.k_proj.weight")
        XCTAssertEqual(GGUFTensorSource.permuteRows(k, heads: 3).array, try g.float32("blk.0.attn_k.weight").array)
    }
}

final class FormatFuzzTests: XCTestCase {
    /// Cheap deterministic fuzzing: random byte flips and truncations of valid files never crash the parsers.
    func testMutatedFilesNeverCrash() throws {
        let gguf = try Data(contentsOf: URL(fileURLWithPath: try fixture("gguf_small", "ggufbin")))
        var st = Data()
        do {
            let dir = try makeTempDir(self)
            let p = (dir as NSString).appendingPathComponent("f.safetensors")
            try SafetensorsWriter.write([
                SafetensorsEntry(name: "a", dtype: .f16, shape: [2, 3], bytes: Data(count: 12)),
                SafetensorsEntry(name: "b", dtype: .i64, shape: [2], bytes: Data(count: 16)),
            ], metadata: ["k": "v"], to: p)
            st = try Data(contentsOf: URL(fileURLWithPath: p))
        }
        var rng = SplitMix64(seed: 42)
        for (base, parse) in [(gguf, FormatFuzz.parseGGUF), (st, FormatFuzz.parseSafetensors)] {
            base.withUnsafeBytes { parse($0) }
            let headerEnd = base == gguf ? 2048 : base.count
            for _ in 0..<400 {
                var d = base
                for _ in 0..<Int(rng.next() % 4 + 1) {
                    let i = Int(rng.next() % UInt64(min(headerEnd, d.count)))
                    d[i] = UInt8(truncatingIfNeeded: rng.next())
                }
                if rng.next() % 4 == 0 { d = d.prefix(Int(rng.next() % UInt64(d.count))) }
                d.withUnsafeBytes { parse($0) }
            }
        }
    }
}

