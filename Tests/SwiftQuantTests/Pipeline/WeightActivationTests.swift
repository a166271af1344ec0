import Foundation
import SwiftQuant
import XCTest

/// Activation and KV quantization in the block and at inference, LoRC terms, act-order, SmoothQuant's folding,
/// and the save → load round trip of all of them.
final class WeightActivationTests: XCTestCase {
    func tiny(_ name: String = "tiny/llama_gqa") throws -> LoadedModel {
        try LoadedModel.load(path: Fixtures.url(name).path)
    }

    func windows(_ model: TransformerModel, count: Int = 4, length: Int = 32, seed: UInt64 = 9) throws -> [[Int32]] {
        var rng = SplitMix64(seed: seed)
        let tokens = (0..<2000).map { _ in Int32(rng.next() % UInt64(model.vocabSize)) }
        return try Calibration.windows(tokens: tokens, count: count, length: length, seed: 2)
    }

    func tempDir() -> String {
        let d = NSTemporaryDirectory() + "sq-wa-\(UUID().uuidString)"
        addTeardownBlock { try? FileManager.default.removeItem(atPath: d) }
        return d
    }

    static func bits(_ t: Tensor) -> [UInt32] { t.array.map(\.bitPattern) }

    static func maxRelative(_ a: Tensor, _ b: Tensor) -> Float {
        var num: Float = 0, den: Float = 0
        for k in 0..<a.count { num = max(num, abs(a.pointer[k] - b.pointer[k])); den = max(den, abs(b.pointer[k])) }
        return num / max(den, 1e-30)
    }

    /// Records what it is asked to quantize (and quantizes nothing).
    final class Spy: ActivationQuantizer {
        var seen: [(features: Int, values: [Float])] = []
        func quantize(_ x: UnsafeMutablePointer<Float>, rows: Int, features: Int) {
            seen.append((features, Array(UnsafeBufferPointer(start: x, count: rows * features))))
        }
    }

    // MARK: KV cache

    /// The KV quantizer sees Q and K after RoPE and V (in that order), with their head layouts, and nothing else.
    func testKVQuantizerSeesQAndKAfterRoPEAndV() throws {
        let loaded = try tiny()
        let m = loaded.model, spec = m.blockSpec, T = 12
        let x = try m.embed(Array(try windows(m, count: 1, length: T)[0]))
        let block = try m.block(0)
        let spy = Spy()
        let graph = try m.blockGraph(block, maxRows: T)
        graph.kvQuantizer = spy
        _ = try graph.forward(x)
        XCTAssertEqual(spy.seen.map(\.features), [spec.qDim, spec.kvDim, spec.kvDim])
        // Reference q, k, v: norm, projections, RoPE on q and k.
        let n1 = Tensor(zeros: [T, spec.hidden])
        Kernels.rmsNorm(x.pointer, rows: T, dim: spec.hidden, weight: try XCTUnwrap(block.norms[spec.attentionNorm.name]?.weight).pointer,
                        eps: spec.attentionNorm.eps, n1.pointer)
        func project(_ name: String, _ out: Int) -> Tensor {
            let y = Tensor(zeros: [T, out])
            BLAS.sgemm(transB: true, m: T, n: out, k: spec.hidden, a: n1.pointer, lda: spec.hidden,
                       b: block.linear(name).weight.pointer, ldb: spec.hidden, c: y.pointer, ldc: out)
            return y
        }
        let q = project(spec.linears[spec.index(of: .q)!].name, spec.qDim)
        let k = project(spec.linears[spec.index(of: .k)!].name, spec.kvDim)
        let v = project(spec.linears[spec.index(of: .v)!].name, spec.kvDim)
        let r = try XCTUnwrap(m.rotaryTables(rows: T))
        Autodiff.Rope.forward(x: q.pointer, y: q.pointer, cos: r.cos.pointer, sin: r.sin.pointer, rows: T, heads: spec.heads,
                              headDim: spec.headDim)
        Autodiff.Rope.forward(x: k.pointer, y: k.pointer, cos: r.cos.pointer, sin: r.sin.pointer, rows: T,
                              heads: spec.kvHeads, headDim: spec.headDim)
        for (got, want) in zip(spy.seen.map(\.values), [q, k, v]) {
            let g = Tensor(shape: want.shape, values: got)
            XCTAssertLessThan(Self.maxRelative(g, want), 1e-5)
        }
    }

    /// A model with KV quantization at 4 bits gives the block outputs of quantizing Q, K, V per head per token
    /// (the quantizer of width head_dim), and differs from the FP model.
    func testKVQuantizationChangesTheOutputPerHead() throws {
        let loaded = try tiny()
        let m = loaded.model
        let ids = try windows(m, count: 1, length: 16)[0]
        let fp = try m.logits(ids: ids)
        m.activations = try ActivationScheme(linear: nil, kv: "int4")
        let kv4 = try m.logits(ids: ids)
        XCTAssertNotEqual(Self.bits(fp), Self.bits(kv4))
        m.activations = try ActivationScheme(linear: nil, kv: "int8")
        let kv8 = try m.logits(ids: ids)
        XCTAssertLessThan(Self.maxRelative(kv8, fp), Self.maxRelative(kv4, fp))
        m.activations = nil
        XCTAssertEqual(Self.bits(try m.logits(ids: ids)), Self.bits(fp))
    }

    // MARK: save and load

    /// RTN W4 with INT6 activations and INT4 KV, saved and loaded back: the settings come back and the logits are
    /// bit-identical; `config.json` records them.
    func testWeightActivationModelReloadsBitIdentically() throws {
        for family in ["tiny/llama_gqa", "tiny/opt"] {
            let loaded = try tiny(family)
            let r = QuantRecipe(method: .rtn, wformat: "int4", groupSize: 16, aformat: "int6", kvFormat: .some("int4"))
            _ = try CalibrationPipeline(recipe: r, progress: false).run(loaded, windows: [])
            let ids = try windows(loaded.model, count: 1, length: 24)[0]
            let before = try loaded.model.logits(ids: ids)
            let dir = tempDir()
            try QuantizedExport.write(loaded, to: dir)
            let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/config.json")))
            let sq = try XCTUnwrap((config as? [String: Any])?["swiftquant"] as? [String: Any])
            XCTAssertEqual(sq["aformat"] as? String, "int6")
            XCTAssertEqual(sq["kv_format"] as? String, "int4")
            let back = try LoadedModel.load(path: dir)
            XCTAssertEqual(back.model.activations, try ActivationScheme(linear: "int6", kv: "int4"), family)
            XCTAssertEqual(Self.bits(try back.model.logits(ids: ids)), Self.bits(before), family)
            let state = try XCTUnwrap(back.quantization)
            XCTAssertEqual(state.tensors.count, try XCTUnwrap(loaded.quantization).tensors.count)
            for (name, q) in try XCTUnwrap(loaded.quantization).tensors {
                let b = try XCTUnwrap(state.tensors[name], name)
                XCTAssertEqual(b.codes, q.codes, name)
                XCTAssertEqual(b.scales.map(\.bitPattern), q.scales.map(\.bitPattern), name)
                XCTAssertEqual(b.zeros, q.zeros, name)
            }
        }
    }

    // MARK: LoRC

    /// A linear with a low-rank term computes `x·Ŵᵀ + (x·Vᵀ)·Uᵀ`: the block matches the one whose weight is
    /// `Ŵ + U·V`, within float rounding.
    func testLowRankTermIsAppliedAtInference() throws {
        let loaded = try tiny()
        let m = loaded.model
        let block = try m.block(0)
        var rng = SplitMix64(seed: 4)
        func random(_ shape: [Int], _ scale: Float) -> Tensor {
            let t = Tensor(zeros: shape)
            for k in 0..<t.count { t.pointer[k] = (Float(rng.next() % 2001) / 1000 - 1) * scale }
            return t
        }
        var withTerm = block.linears, folded = block.linears
        for name in block.linearNames {
            let l = block.linear(name)
            let u = random([l.outFeatures, 3], 0.05), v = random([3, l.inFeatures], 0.05)
            withTerm[name] = Linear(weight: l.weight, bias: l.bias, lowRank: try LowRank(u: u, v: v))
            let w = l.weight.copy()
            BLAS.sgemm(m: l.outFeatures, n: l.inFeatures, k: 3, a: u.pointer, lda: 3, b: v.pointer, ldb: l.inFeatures,
                       beta: 1, c: w.pointer, ldc: l.inFeatures)
            folded[name] = Linear(weight: w, bias: l.bias)
        }
        let x = try m.embed(try windows(m, count: 1, length: 20)[0])
        let a = x.copy(), b = x.copy(), plain = x.copy()
        try m.forward(block: TransformerBlock(index: 0, linearNames: block.linearNames, linears: withTerm, norms: block.norms),
                      hidden: a, workspace: Workspace())
        try m.forward(block: TransformerBlock(index: 0, linearNames: block.linearNames, linears: folded, norms: block.norms),
                      hidden: b, workspace: Workspace())
        try m.forward(block: block, hidden: plain, workspace: Workspace())
        XCTAssertLessThan(Self.maxRelative(a, b), 1e-5)
        XCTAssertGreaterThan(Self.maxRelative(plain, b), 1e-4, "the low-rank terms must change the output")
        // A recording graph (calibration) refuses low-rank terms instead of ignoring them in the backward pass.
        XCTAssertThrowsError(try m.blockGraph(TransformerBlock(index: 0, linearNames: block.linearNames, linears: withTerm,
                                                                norms: block.norms), maxRows: 20))
    }

    /// GPTQ W4 g16 with act-order and LoRC rank 4 through the pipeline: every linear gets FP16 factors that
    /// lower its residual, the output error of every linear is at most RTN's, and save → load gives back codes,
    /// scales, zeros, g_idx, factors and logits bit for bit.
    func testGPTQActOrderAndLoRCSaveAndReload() throws {
        let loaded = try tiny()
        let r = QuantRecipe(method: .gptq, wformat: "int4", groupSize: 16, nsamples: 4, seqlen: 32, actOrder: true,
                            lorcRank: 4)
        let result = try CalibrationPipeline(recipe: r, progress: false).run(loaded, windows: try windows(loaded.model))
        let m = loaded.model
        XCTAssertEqual(result.lowRank.count, m.numBlocks * m.blockSpec.linears.count)
        XCTAssertTrue(result.quantized.values.allSatisfy { $0.groupIndex != nil })
        for report in result.reports {
            let errors = try XCTUnwrap(report.linearErrors)
            XCTAssertEqual(errors.count, m.blockSpec.linears.count)
            for (name, e) in errors { XCTAssertLessThanOrEqual(e[0], e[1] * (1 + 1e-6), "block \(report.block) \(name)") }
        }
        for (name, lr) in result.lowRank {
            XCTAssertEqual(lr.rank, 4)
            for v in lr.u.array + lr.v.array { XCTAssertEqual(Float(Float16(v)), v, "\(name): factors are FP16 values") }
        }
        let ids = try windows(m, count: 1, length: 24, seed: 5)[0]
        let before = try m.logits(ids: ids)
        let dir = tempDir()
        try QuantizedExport.write(loaded, to: dir)
        let back = try LoadedModel.load(path: dir)
        let state = try XCTUnwrap(back.quantization)
        for (name, q) in result.quantized {
            let b = try XCTUnwrap(state.tensors[name])
            XCTAssertEqual(b.codes, q.codes, name)
            XCTAssertEqual(b.groupIndex, q.groupIndex, name)
            XCTAssertEqual(b.scales.map(\.bitPattern), q.scales.map(\.bitPattern), name)
            let lr = try XCTUnwrap(state.lowRank[name], name), want = try XCTUnwrap(result.lowRank[name])
            XCTAssertEqual(Self.bits(lr.u), Self.bits(want.u), name)
            XCTAssertEqual(Self.bits(lr.v), Self.bits(want.v), name)
        }
        XCTAssertEqual(Self.bits(try back.model.logits(ids: ids)), Self.bits(before))
    }

    // MARK: SmoothQuant

    /// Folding any positive scales into norm → q/k/v and norm → gate/up leaves the FP block's output unchanged
    /// (1e-5 relative), on Llama-GQA, Qwen2 and OPT.
    func testSmoothingFoldIsExactInFP() throws {
        for family in ["tiny/llama_gqa", "tiny/qwen2", "tiny/opt"] {
            let loaded = try tiny(family)
            let m = loaded.model, spec = m.blockSpec
            let block = try m.block(0)
            var folded = block
            var rng = SplitMix64(seed: 11)
            for p in EquivalentTransform.normPairs(spec) {
                let s = (0..<spec.hidden).map { _ in Float(0.2) + Float(rng.next() % 1000) / 250 }
                folded = try EquivalentTransform.foldNormScale(folded, norm: p.norm, targets: p.targets.map { spec.linears[$0].name },
                                                               scale: s)
            }
            let x = try m.embed(try windows(m, count: 1, length: 24)[0])
            let a = x.copy(), b = x.copy()
            try m.forward(block: block, hidden: a, workspace: Workspace())
            try m.forward(block: folded, hidden: b, workspace: Workspace())
            XCTAssertLessThan(Self.maxRelative(b, a), 1e-5, family)
        }
    }

    /// SmoothQuant W8A8 through the pipeline on every family: the output directory reloads with its folded norms
    /// and activation settings, bit-identical logits.
    func testSmoothQuantRunsAndReloads() throws {
        for family in ["tiny/llama_gqa", "tiny/qwen2", "tiny/opt"] {
            let loaded = try tiny(family)
            let r = QuantRecipe(method: .smoothquant, wformat: "int8", groupSize: .perRow, nsamples: 4, seqlen: 32,
                                aformat: "int8")
            let result = try CalibrationPipeline(recipe: r, progress: false).run(loaded, windows: try windows(loaded.model))
            XCTAssertEqual(result.activations?.linear, .int(bits: 8))
            let ids = try windows(loaded.model, count: 1, length: 24, seed: 3)[0]
            let before = try loaded.model.logits(ids: ids)
            let dir = tempDir()
            try QuantizedExport.write(loaded, to: dir)
            let back = try LoadedModel.load(path: dir)
            XCTAssertEqual(Self.bits(try back.model.logits(ids: ids)), Self.bits(before), family)
        }
    }

    /// `weight_rounding: gptq` after SmoothQuant and after OmniQuant LWC + LET (W4A8, per row), on every family:
    /// block 0 (same inputs, same training) keeps the grid the inner algorithm chose (scales and zero-points
    /// bit-identical: per row, GPTQ fixes them before any error update) and only re-chooses codes; every block's
    /// GPTQ output error on the calibration inputs is below that grid's plain rounding; the result reloads.
    func testGPTQRoundingKeepsTheGridAndLowersTheOutputError() throws {
        for family in ["tiny/llama_gqa", "tiny/qwen2", "tiny/opt"] {
            for method in [QuantRecipe.Method.smoothquant, .omniquant] {
                func run(_ rounding: WeightRounding) throws -> (LoadedModel, QuantizationResult) {
                    let loaded = try tiny(family)
                    let r = QuantRecipe(method: method, wformat: "int4", groupSize: .perRow, epochs: 2, nsamples: 4,
                                        seqlen: 32, aformat: "int8", weightRounding: rounding)
                    return (loaded, try CalibrationPipeline(recipe: r, progress: false).run(loaded,
                                                                                         windows: try windows(loaded.model)))
                }
                let (_, plain) = try run(.rtn)
                let (loaded, rounded) = try run(.gptq)
                let m = loaded.model
                for name in m.blockSpec.linears.map(\.name) {
                    let key = m.blockPrefix(0) + name + ".weight"
                    let a = try XCTUnwrap(plain.quantized[key]), b = try XCTUnwrap(rounded.quantized[key])
                    XCTAssertEqual(a.scales.map(\.bitPattern), b.scales.map(\.bitPattern), "\(family) \(method) \(name)")
                    XCTAssertEqual(a.zeros, b.zeros, "\(family) \(method) \(name)")
                    XCTAssertNotEqual(a.codes, b.codes, "\(family) \(method) \(name): GPTQ re-chose no code")
                }
                XCTAssertNil(plain.reports[0].linearErrors)
                for rep in rounded.reports {
                    let e = try XCTUnwrap(rep.linearErrors, "\(family) \(method) block \(rep.block)")
                    XCTAssertEqual(Set(e.keys), Set(m.blockSpec.linears.map(\.name)))
                    let (g, p) = e.values.reduce((0.0, 0.0)) { ($0.0 + $1[0], $0.1 + $1[1]) }
                    XCTAssertLessThan(g, p, "\(family) \(method) block \(rep.block)")
                }
                let ids = try windows(m, count: 1, length: 24, seed: 3)[0]
                let dir = tempDir()
                try QuantizedExport.write(loaded, to: dir)
                XCTAssertEqual(Self.bits(try LoadedModel.load(path: dir).model.logits(ids: ids)),
                               Self.bits(try m.logits(ids: ids)), "\(family) \(method)")
            }
        }
    }

    // MARK: bad settings

    func testBadWeightActivationSettingsFailBeforeAnyWork() throws {
        let m = try tiny().model
        func refused(_ json: String, _ needle: String, file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertThrowsError(try QuantRecipe.fromJSON(json).validate(model: m), json, file: file, line: line) { e in
                XCTAssertTrue("\(e)".contains(needle), "\(json): \(e)", file: file, line: line)
            }
        }
        refused(#"{"method":"rtn","wbits":4,"abits":1}"#, "abits must be in 2...8")
        refused(#"{"method":"rtn","wbits":4,"abits":17}"#, "abits must be in 2...8")
        refused(#"{"method":"rtn","wbits":4,"abits":8,"aformat":"e4m3fn"}"#, "not both")
        refused(#"{"method":"rtn","wbits":4,"aformat":"fp9"}"#, "activation format")
        refused(#"{"method":"rtn","wbits":4,"abits":8,"kv_bits":9}"#, "kv_bits")
        refused(#"{"method":"gptq","wbits":4,"lorc_rank":100000}"#, "lorc_rank")
        refused(#"{"method":"rtn","wbits":4,"act_order":true}"#, "act_order")
        refused(#"{"method":"smoothquant","wbits":8}"#, "abits or aformat")
        refused(#"{"method":"rtn","wbits":4,"weight_rounding":"gptq"}"#, "weight_rounding gptq")
        refused(#"{"method":"gptq","wbits":4,"weight_rounding":"gptq"}"#, "method gptq")
        refused(#"{"method":"omniquant","wbits":4,"weight_rounding":"adaround"}"#, "rtn or gptq")
        refused(#"{"method":"gptq","wformat":"int4","scale_constraint":"m1"}"#, "minifloat")
        refused(#"{"method":"gptq","wformat":"e2m1","wbits":4}"#, "not both")
        refused(#"{"method":"gptq","wformat":"e2m1","group_size":100000}"#, "larger than the row")
        XCTAssertEqual(try QuantRecipe.fromJSON(#"{"method":"rtn","wbits":4,"abits":8}"#).kvFormat, "int8",
                       "the KV cache follows the activations")
        XCTAssertNil(try QuantRecipe.fromJSON(#"{"method":"rtn","wbits":4,"abits":8,"kv_bits":"none"}"#).kvFormat)
        let canonical = try QuantRecipe.fromJSON(#"{"method":"rtn","wbits":4,"abits":8,"kv_bits":null}"#)
        XCTAssertEqual(try QuantRecipe.fromJSON(canonical.json), canonical, "canonical JSON round-trips")
        let rounded = try QuantRecipe.fromJSON(#"{"method":"smoothquant","wbits":6,"abits":6,"weight_rounding":"GPTQ"}"#)
        XCTAssertEqual(rounded.weightRounding, .gptq)
        XCTAssertEqual(try QuantRecipe.fromJSON(rounded.json), rounded, "weight_rounding round-trips")
        XCTAssertFalse(canonical.json.contains("weight_rounding"), "written only when gptq: older work dirs resume")
    }

    /// `aug_loss` and `let` follow the paper's scripts when not given (aug_loss: W4A4 and W2 weight-only OmniQuant at
    /// the paper's budget; LET: OmniQuant with activation quantization).
    func testAugLossAndLETDefaultsFollowThePapersScripts() throws {
        func aug(_ json: String) throws -> Bool { try QuantRecipe.fromJSON(json).augLoss }
        XCTAssertTrue(try aug(#"{"method":"omniquant","wbits":4,"abits":4,"let":true}"#))
        XCTAssertTrue(try aug(#"{"method":"omniquant","wbits":2,"group_size":64}"#))
        XCTAssertFalse(try aug(#"{"method":"omniquant","wbits":4,"abits":6,"let":true}"#))
        XCTAssertFalse(try aug(#"{"method":"omniquant","wbits":3}"#))
        XCTAssertFalse(try aug(#"{"method":"omniquant","wbits":4,"abits":4,"preset":"cpu"}"#), "CPU preset: off")
        XCTAssertFalse(try aug(#"{"method":"gptq","wbits":2}"#))
        XCTAssertFalse(try aug(#"{"method":"omniquant","wbits":4,"abits":4,"aug_loss":false}"#), "explicit wins")
        XCTAssertTrue(try aug(#"{"method":"omniquant","wbits":3,"aug_loss":true}"#))
        // LET follows the paper too: on with activation quantization, off for weight-only; explicit values win.
        XCTAssertTrue(try QuantRecipe.fromJSON(#"{"method":"omniquant","wbits":4,"abits":4}"#).let_)
        XCTAssertTrue(try QuantRecipe.fromJSON(#"{"method":"omniquant","wbits":8,"aformat":"e4m3fn"}"#).let_)
        XCTAssertFalse(try QuantRecipe.fromJSON(#"{"method":"omniquant","wbits":3}"#).let_)
        XCTAssertFalse(try QuantRecipe.fromJSON(#"{"method":"omniquant","wbits":4,"abits":4,"let":false}"#).let_)
        XCTAssertFalse(try QuantRecipe.fromJSON(#"{"method":"gptq","wbits":4,"abits":8}"#).let_)
        let r = try QuantRecipe.fromJSON(#"{"method":"omniquant","wbits":4,"abits":4}"#)
        XCTAssertEqual(try QuantRecipe.fromJSON(r.json), r, "the resolved value is written out")
        // α: 0.75 for OmniQuant W4A4 (INT activations of ≤ 4 bits), 0.5 otherwise and for SmoothQuant; explicit wins.
        func alpha(_ json: String) throws -> Float { try QuantRecipe.fromJSON(json).alpha }
        XCTAssertEqual(try alpha(#"{"method":"omniquant","wbits":4,"abits":4}"#), 0.75)
        XCTAssertEqual(try alpha(#"{"method":"omniquant","wbits":4,"abits":4,"preset":"cpu"}"#), 0.75)
        XCTAssertEqual(try alpha(#"{"method":"omniquant","wbits":4,"abits":6}"#), 0.5)
        XCTAssertEqual(try alpha(#"{"method":"omniquant","wbits":4,"aformat":"e4m3fn"}"#), 0.5)
        XCTAssertEqual(try alpha(#"{"method":"smoothquant","wbits":4,"abits":4}"#), 0.5)
        XCTAssertEqual(try alpha(#"{"method":"omniquant","wbits":4,"abits":4,"alpha":0.5}"#), 0.5)
        XCTAssertEqual(try alpha(#"{"method":"omniquant","wbits":3}"#), 0.5)
        // let_down (the up → down pair): off by default and then absent from the JSON (older work dirs resume);
        // it needs LET.
        let plain = try QuantRecipe.fromJSON(#"{"method":"omniquant","wbits":4,"abits":6}"#)
        XCTAssertFalse(plain.letDown)
        XCTAssertFalse(plain.json.contains("let_down"))
        let down = try QuantRecipe.fromJSON(#"{"method":"omniquant","wbits":4,"abits":6,"let_down":true}"#)
        XCTAssertTrue(down.letDown)
        XCTAssertEqual(try QuantRecipe.fromJSON(down.json), down)
        XCTAssertThrowsError(try QuantRecipe.fromJSON(#"{"method":"omniquant","wbits":4,"let":false,"let_down":true}"#)
            .validate()) { e in XCTAssertTrue("\(e)".contains("let_down"), "\(e)") }
    }
}
