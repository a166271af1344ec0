import Foundation
import SwiftQuant
import XCTest

/// OmniQuant's block-wise LWC calibration on a tiny Llama (GQA) model from the fixtures, and on a real SmolLM2
/// block when the model is available.
final class OmniQuantTests: XCTestCase {
    static let families = ["tiny/llama_gqa", "tiny/qwen2", "tiny/opt"]

    func tinyModel(_ name: String = "tiny/llama_gqa") throws -> LoadedModel {
        try LoadedModel.load(path: Fixtures.url(name).path)
    }

    func windows(_ model: TransformerModel, count: Int = 4, length: Int = 32) throws -> [[Int32]] {
        var rng = SplitMix64(seed: 9)
        let tokens = (0..<2000).map { _ in Int32(rng.next() % UInt64(model.vocabSize)) }
        return try Calibration.windows(tokens: tokens, count: count, length: length, seed: 2)
    }

    func recipe(group: Int? = 16) -> QuantRecipe {
        QuantRecipe(method: .omniquant, wformat: "int3", groupSize: GroupSize(group), epochs: 4, nsamples: 4, seqlen: 32, lr: 5e-2)
    }

    func tempDir() -> String {
        let d = NSTemporaryDirectory() + "sq-omni-\(UUID().uuidString)"
        addTeardownBlock { try? FileManager.default.removeItem(atPath: d) }
        return d
    }

    /// Runs on a fresh model and returns the fused weights of every block linear.
    func run(_ r: QuantRecipe, family: String = "tiny/llama_gqa", workDir: String?, resume: Bool = false,
             export: Bool = false) throws -> ([String: [Float]], QuantizationResult, TransformerModel)
    {
        let loaded = try tinyModel(family)
        let pipeline = try CalibrationPipeline(recipe: r, workDir: workDir, progress: false)
        let w = r.needsCalibrationData ? try windows(loaded.model, count: r.nsamples, length: r.seqlen) : []
        let result = try pipeline.run(model: loaded.model, windows: w, resume: resume)
        var fused: [String: [Float]] = [:]
        for i in 0..<loaded.model.numBlocks {
            for (name, lin) in try loaded.model.block(i).linears { fused["\(i).\(name)"] = lin.weight.array }
        }
        // For python/tests/test_families.py (transformers loads the output, when it is installed).
        if export, let out = ProcessInfo.processInfo.environment["SWIFTQUANT_TINY_EXPORT_OUT"], !out.isEmpty {
            let dir = out + "/" + (family as NSString).lastPathComponent
            try? FileManager.default.removeItem(atPath: dir)
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            loaded.quantization = QuantizationState(method: r.method.rawValue, weights: try r.quantizerConfig,
                                                    tensors: result.quantized)
            try QuantizedExport.write(loaded, to: dir, info: ["recipe": r.json])
        }
        return (fused, result, loaded.model)
    }

    /// One pipeline, one block definition: Llama (GQA), Qwen2 (q/k/v biases) and OPT (LayerNorm with bias,
    /// biased linears, ReLU, learned positions) all calibrate; the loss falls and fused weights lie on the grid.
    func testTrainingLowersTheLossAndFusedWeightsLieOnTheGrid() throws {
        for family in Self.families {
            let (fused, result, model) = try run(recipe(), family: family, workDir: tempDir(), export: true)
            XCTAssertEqual(result.reports.count, model.numBlocks)
            for r in result.reports {
                XCTAssertLessThan(r.lossLastEpoch!, r.lossFirstEpoch!, "\(family) block \(r.block): loss did not fall")
                XCTAssertLessThanOrEqual(r.fusedLoss!, r.rtnLoss! * 1.05, "\(family) block \(r.block): fused worse than RTN")
                XCTAssertEqual(r.skippedSteps, 0)
            }
            let names = model.blockLinearNames
            XCTAssertEqual(result.quantized.count, names.count * model.numBlocks, family)
            for i in 0..<model.numBlocks {
                for name in names {
                    let q = try XCTUnwrap(result.quantized[model.blockPrefix(i) + name + ".weight"], "\(family) \(name)")
                    // Exactly (code − zero)·scale: the fused weight is the dequantized QuantizedTensor.
                    XCTAssertEqual(q.dequantized().array.map(\.bitPattern), fused["\(i).\(name)"]!.map(\.bitPattern),
                                   "\(family) block \(i) \(name)")
                    XCTAssertTrue(q.codes.allSatisfy { $0 < 8 })
                }
            }
        }
    }

    /// GPTQ through the same pipeline on every family: each block's output error is at most RTN's (same grid),
    /// INT and FP4 with M2, and the fused weights are the dequantized codes.
    func testGPTQThroughThePipeline() throws {
        for family in Self.families {
            for r in [QuantRecipe(method: .gptq, wformat: "int3", groupSize: 16, nsamples: 4, seqlen: 32),
                      QuantRecipe(method: .gptq, wformat: "e2m1", groupSize: 16, nsamples: 4, seqlen: 32,
                                  scaleConstraint: .m2)] {
                let (fused, result, model) = try run(r, family: family, workDir: tempDir())
                XCTAssertEqual(try r.quantizerConfig.policy, r.wformat.hasPrefix("int") ? .gptq : .minmax)
                for rep in result.reports {
                    XCTAssertLessThanOrEqual(rep.fusedLoss!, rep.rtnLoss!, "\(family) \(r.wformat) block \(rep.block)")
                }
                for i in 0..<model.numBlocks {
                    for name in model.blockLinearNames {
                        let q = try XCTUnwrap(result.quantized[model.blockPrefix(i) + name + ".weight"])
                        XCTAssertEqual(q.dequantized().array.map(\.bitPattern), fused["\(i).\(name)"]!.map(\.bitPattern))
                    }
                }
            }
        }
        XCTAssertThrowsSwiftQuantError(try QuantRecipe(method: .gptq, wformat: "int4", scaleConstraint: .m1).validate(),
                                       contains: "minifloat")
        let cpu = try QuantRecipe.fromJSON(#"{"method": "gptq", "wformat": "e2m1", "preset": "cpu", "scale_constraint": "m2"}"#)
        XCTAssertEqual([cpu.nsamples, cpu.seqlen], [32, 512])
        XCTAssertEqual(cpu.scaleConstraint, .m2)
    }

    /// RTN through the same pipeline equals quantizing each weight on its own.
    func testRTNThroughThePipeline() throws {
        let r = QuantRecipe(method: .rtn, wformat: "int4", groupSize: 32)
        let (fused, result, model) = try run(r, family: "tiny/qwen2", workDir: nil)
        let fresh = try tinyModel("tiny/qwen2").model
        for i in 0..<model.numBlocks {
            for name in model.blockLinearNames {
                let w = try fresh.loadBlock(i).linear(name).weight
                let (_, fake) = try RTN.quantizeWeight(w, config: try r.quantizerConfig, name: name)
                XCTAssertEqual(fake.array.map(\.bitPattern), fused["\(i).\(name)"]!.map(\.bitPattern))
                XCTAssertNotNil(result.quantized[model.blockPrefix(i) + name + ".weight"])
            }
        }
    }

    /// The ETA of a resumed run comes from the blocks it computed, not from the resumed ones (which cost only
    /// their propagation); before the first computed block, from the resumed blocks' recorded times.
    func testETAOfAResumedRunCountsOnlyComputedBlocks() throws {
        func report(_ i: Int, _ seconds: Double, resumed: Bool) throws -> BlockReport {
            try JSONDecoder().decode(BlockReport.self, from: Data(
                #"{"block": \#(i), "seconds": \#(seconds), "skippedSteps": 0, "resumed": \#(resumed)}"#.utf8))
        }
        // Nine blocks resumed (recorded 300 s each), then one computed in 330 s: 20 blocks left at 330 s.
        var reports = try (0..<9).map { try report($0, 300, resumed: true) }
        XCTAssertEqual(CalibrationPipeline.remainingSeconds(reports, total: 30), 21 * 300)
        reports.append(try report(9, 330, resumed: false))
        XCTAssertEqual(CalibrationPipeline.remainingSeconds(reports, total: 30), 20 * 330)
        reports.append(try report(10, 350, resumed: false))
        XCTAssertEqual(CalibrationPipeline.remainingSeconds(reports, total: 30), 19 * 340)
        XCTAssertEqual(CalibrationPipeline.remainingSeconds([], total: 30), 0)
        XCTAssertEqual(CalibrationPipeline.remainingSeconds(reports, total: 11), 0)
    }

    /// A run stopped after block 0 and resumed ends bit-identical to an uninterrupted run (every family).
    func testResumeIsBitIdentical() throws {
        for family in Self.families {
            let r = recipe()
            let (full, _, _) = try run(r, family: family, workDir: tempDir())
            let dir = tempDir()
            _ = try run(r, family: family, workDir: dir)
            // Simulate a kill after block 0: the last block's result never got written.
            try FileManager.default.removeItem(atPath: dir + "/block_001.safetensors")
            let (resumed, result, _) = try run(r, family: family, workDir: dir, resume: true)
            XCTAssertEqual(result.reports.map(\.resumed), [true, false])
            XCTAssertEqual(resumed.keys.sorted(), full.keys.sorted())
            for (k, v) in full { XCTAssertEqual(resumed[k]!.map(\.bitPattern), v.map(\.bitPattern), "\(family) \(k)") }
            // A torn block file is redone, not trusted.
            try Data([1, 2, 3]).write(to: URL(fileURLWithPath: dir + "/block_001.safetensors"))
            let (again, result2, _) = try run(r, family: family, workDir: dir, resume: true)
            XCTAssertEqual(result2.reports.map(\.resumed), [true, false])
            for (k, v) in full { XCTAssertEqual(again[k]!.map(\.bitPattern), v.map(\.bitPattern), k) }
            // Another recipe cannot resume this directory.
            var other = r
            other.epochs = 3
            XCTAssertThrowsSwiftQuantError(try run(other, family: family, workDir: dir, resume: true), contains: "another recipe")
        }
    }

    func testBadSettingsFailBeforeAnyWork() throws {
        let dir = tempDir()
        for (r, fragment) in [
            (QuantRecipe(method: .omniquant, wformat: "int0", groupSize: 32), "int0"),
            (QuantRecipe(method: .omniquant, wformat: "int9", groupSize: 32), "int9"),
            (QuantRecipe(method: .omniquant, wformat: "e2m1", groupSize: 32), "integer"),
            (QuantRecipe(method: .omniquant, wformat: "int3", groupSize: 0), "group size"),
            (QuantRecipe(method: .omniquant, wformat: "int3", groupSize: 32, epochs: 0), "epochs"),
            (QuantRecipe(method: .omniquant, wformat: "int3", groupSize: 32, nsamples: 0), "nsamples"),
        ] {
            XCTAssertThrowsSwiftQuantError(try CalibrationPipeline(recipe: r, workDir: dir), contains: fragment)
        }
        XCTAssertThrowsSwiftQuantError(try QuantRecipe.fromJSON(#"{"method": "awq", "wformat": "int4"}"#), contains: "method")
        XCTAssertThrowsSwiftQuantError(try QuantRecipe.fromJSON(#"{"method": "rtn"}"#), contains: "wformat")
        XCTAssertThrowsSwiftQuantError(try QuantRecipe.fromJSON(#"{"method": "rtn", "wbits": 9}"#), contains: "wbits")
        XCTAssertThrowsSwiftQuantError(try QuantRecipe.fromJSON(#"{"method": "rtn", "wbits": 4, "preset": "gpu"}"#),
                                       contains: "'preset'")
        XCTAssertEqual(try QuantRecipe.fromJSON(#"{"method": "rtn", "wbits": 4}"#).wformat, "int4")
        let loaded = try tinyModel()
        let p = try CalibrationPipeline(recipe: QuantRecipe(method: .omniquant, wformat: "int3", groupSize: 1024,
                                                            nsamples: 4, seqlen: 32), workDir: dir)
        XCTAssertThrowsSwiftQuantError(try p.run(model: loaded.model, windows: try windows(loaded.model)),
                                       contains: "larger than the row")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir), "no work started")
        XCTAssertThrowsSwiftQuantError(try Calibration.windows(tokens: [1, 2, 3], count: 4, length: 32, seed: 2),
                                       contains: "fewer than one window")
        let opt = try tinyModel("tiny/opt")
        let long = try CalibrationPipeline(recipe: QuantRecipe(method: .omniquant, wformat: "int3", groupSize: 16,
                                                               nsamples: 1, seqlen: 64), workDir: dir)
        XCTAssertThrowsSwiftQuantError(try long.run(model: opt.model, windows: try windows(opt.model, count: 1, length: 64)),
                                       contains: "positions")
        // An output directory that exists, holds files and is not ours.
        let out = tempDir()
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        try Data("x".utf8).write(to: URL(fileURLWithPath: out + "/notes.txt"))
        XCTAssertThrowsSwiftQuantError(try QuantizedExport.checkOutput(out), contains: "not written by SwiftQuant")
    }

    /// Presets live in the recipe; explicit budget fields override them; JSON round-trips.
    func testRecipePresetsAndJSON() throws {
        let cpu = try QuantRecipe.fromJSON(#"{"method": "omniquant", "wformat": "int3", "group_size": 128, "preset": "cpu"}"#)
        XCTAssertEqual([cpu.epochs, cpu.nsamples, cpu.seqlen], [5, 16, 512])
        XCTAssertEqual(cpu.lr, 5e-2)
        let paper = try QuantRecipe.fromJSON(#"{"method": "omniquant", "wformat": "int3", "epochs": 3}"#)
        XCTAssertEqual([paper.epochs, paper.nsamples, paper.seqlen], [3, 128, 2048])
        XCTAssertEqual(paper.groupSize, .perRow, "absent group_size is per-channel")
        XCTAssertEqual(try QuantRecipe.fromJSON(#"{"method": "rtn", "wbits": 4, "group_size": "per-row"}"#).groupSize, .perRow)
        XCTAssertThrowsSwiftQuantError(try QuantRecipe.fromJSON(#"{"method": "rtn", "wbits": 4, "group_size": "abc"}"#),
                                       contains: "per-row")
        XCTAssertEqual(try QuantRecipe.fromJSON(cpu.json), cpu)
        // Beyond the paper, written only when not the default (older work directories still resume).
        XCTAssertFalse(cpu.json.contains("keep_best") || cpu.json.contains("\"loss\""))
        let extra = try QuantRecipe.fromJSON(#"{"method": "omniquant", "wformat": "int3", "loss": "relative", "keep_best": true}"#)
        XCTAssertEqual(extra.loss, .relative)
        XCTAssertTrue(extra.keepBest)
        XCTAssertEqual(try QuantRecipe.fromJSON(extra.json), extra)
        XCTAssertThrowsSwiftQuantError(try QuantRecipe.fromJSON(#"{"method": "omniquant", "wformat": "int3", "loss": "l1"}"#),
                                       contains: "mse or relative")
        for key in [#""loss": "relative""#, #""keep_best": true"#] {
            XCTAssertThrowsSwiftQuantError(try QuantRecipe.fromJSON(#"{"method": "gptq", "wformat": "int4", "# + key + "}").validate(),
                                           contains: "OmniQuant")
        }
    }

    /// `loss: relative` trains every family through the pipeline, lowers its (relative) training loss, and ends
    /// elsewhere than MSE's training.
    func testRelativeLossTrainsThroughThePipeline() throws {
        for family in Self.families {
            var r = recipe()
            r.loss = .relative
            let (fused, result, _) = try run(r, family: family, workDir: nil)
            // Summed over the blocks (block 1 of the random-token Qwen2 fixture moves by under 1% either way).
            let first = try result.reports.map { try XCTUnwrap($0.lossFirstEpoch) }.reduce(0, +)
            let last = try result.reports.map { try XCTUnwrap($0.lossLastEpoch) }.reduce(0, +)
            XCTAssertLessThan(last, first, family)
            XCTAssertLessThan(try XCTUnwrap(result.reports[0].lossLastEpoch), try XCTUnwrap(result.reports[0].lossFirstEpoch), family)
            let (plain, _, _) = try run(recipe(), family: family, workDir: nil)
            XCTAssertNotEqual(fused, plain, family)
        }
    }

    /// The calibration text follows one rule whoever names the file: a WikiText line file has its rows rebuilt,
    /// any other text is read as it is.
    func testCalibrationTextRule() throws {
        let dir = tempDir()
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let wiki = dir + "/wiki.txt", plain = dir + "/plain.txt"
        try " \n = Title = \n \n text line\n".write(toFile: wiki, atomically: true, encoding: .utf8)
        try "Plain text.\nSecond line.\n".write(toFile: plain, atomically: true, encoding: .utf8)
        XCTAssertEqual(try Calibration.text(path: wiki), "\n\n = Title = \n\n\n\n\n text line\n")
        XCTAssertEqual(try Calibration.text(path: plain), "Plain text.\nSecond line.\n")
    }

    func testCalibrationWindowsAreSeededAndRowsRebuilt() throws {
        let tokens = (0..<1000).map(Int32.init)
        let a = try Calibration.windows(tokens: tokens, count: 5, length: 10, seed: 2)
        XCTAssertEqual(a, try Calibration.windows(tokens: tokens, count: 5, length: 10, seed: 2))
        XCTAssertNotEqual(a, try Calibration.windows(tokens: tokens, count: 5, length: 10, seed: 3))
        for w in a { XCTAssertEqual(w, Array(w.first!..<(w.first! + 10))) }
        XCTAssertEqual(Calibration.wikitextRows(" \n = Title = \n \n text line\n"), "\n\n = Title = \n\n\n\n\n text line\n")
    }

    /// On a real SmolLM2 block with real text, a few LWC steps lower the block loss.
    func testLossFallsOnARealSmolLM2Block() throws {
        guard let path = ProcessInfo.processInfo.environment["SWIFTQUANT_SMOLLM2"], !path.isEmpty,
              FileManager.default.fileExists(atPath: path) else {
            print("skip: SWIFTQUANT_SMOLLM2 is not set")
            throw XCTSkip("SWIFTQUANT_SMOLLM2 is not set")
        }
        let loaded = try LoadedModel.load(path: path)
        let text = "The tower is 324 metres tall, about the same height as an 81-storey building, and the tallest structure in Paris. "
        let ids = Array(try XCTUnwrap(loaded.tokenizer).encode(String(repeating: text, count: 8)).prefix(128))
        let model = loaded.model
        let block = try model.loadBlock(0)
        let x = try model.embed(ids)
        let target = try model.forwardBlock(0, hidden: x)
        let lwc = try model.blockSpec.linears.map {
            try LWCTransform(rows: $0.outFeatures, columns: $0.inFeatures, bits: 3, group: 128, symmetric: false)
        }
        let graph = try model.blockGraph(block, hooks: lwc.map { LinearHooks(weight: $0) }, maxRows: ids.count)
        let adam = try AdamW(parameters: lwc.map(\.u) + lwc.map(\.l), learningRate: 1e-2)
        var losses: [Float] = []
        for _ in 0..<15 {
            for t in lwc { t.zeroGradients() }
            losses.append(try graph.trainStep(input: x, target: target))
            try adam.step(gradients: lwc.map(\.gradU) + lwc.map(\.gradL))
        }
        print("SmolLM2 block 0 LWC loss: \(losses.first!) → \(losses.last!)")
        XCTAssertLessThan(losses.last!, losses.first!)
    }
}
