import Foundation
import SwiftQuant
import XCTest

/// OmniQuant's block-wise LWC calibration on a tiny Llama (GQA) model from the fixtures, and on a real SmolLM2
/// block when the model is available.
final class OmniQuantTests: XCTestCase {
    func tinyModel() throws -> LoadedModel {
        try LoadedModel.load(path: Fixtures.url("tiny/llama_gqa").path)
    }

    func windows(_ model: TransformerModel, count: Int = 4, length: Int = 32) throws -> [[Int32]] {
        var rng = SplitMix64(seed: 9)
        let tokens = (0..<2000).map { _ in Int32(rng.next() % UInt64(model.vocabSize)) }
        return try Calibration.windows(tokens: tokens, count: count, length: length, seed: 2)
    }

    func options() -> OmniQuantOptions {
        OmniQuantOptions(wbits: 3, groupSize: 32, epochs: 4, nsamples: 4, seqlen: 32, lr: 5e-2)
    }

    func tempDir() -> String {
        let d = NSTemporaryDirectory() + "sq-omni-\(UUID().uuidString)"
        addTeardownBlock { try? FileManager.default.removeItem(atPath: d) }
        return d
    }

    /// Runs on a fresh model and returns the fused weights of every block linear.
    func run(_ opts: OmniQuantOptions, workDir: String, resume: Bool = false) throws
        -> ([String: [Float]], OmniQuant, TransformerModel)
    {
        let loaded = try tinyModel()
        let runner = try OmniQuant(options: opts, workDir: workDir)
        runner.log = { _ in }
        try runner.run(model: loaded.model, calibration: try windows(loaded.model, count: opts.nsamples, length: opts.seqlen),
                       resume: resume)
        var fused: [String: [Float]] = [:]
        for i in 0..<loaded.model.numBlocks {
            for (name, lin) in try loaded.model.block(i).linears { fused["\(i).\(name)"] = lin.weight.array }
        }
        return (fused, runner, loaded.model)
    }

    func testTrainingLowersTheLossAndFusedWeightsLieOnTheGrid() throws {
        let (fused, runner, model) = try run(options(), workDir: tempDir())
        XCTAssertEqual(runner.reports.count, model.numBlocks)
        for r in runner.reports {
            XCTAssertLessThan(r.lossLastEpoch, r.lossFirstEpoch, "block \(r.block): loss did not fall")
            XCTAssertEqual(r.skippedSteps, 0)
        }
        let quantized = try runner.quantizedTensors()
        XCTAssertEqual(quantized.count, 7 * model.numBlocks)
        for i in 0..<model.numBlocks {
            for name in LlamaModel.linearNames {
                let q = try XCTUnwrap(quantized[model.blockPrefix(i) + name + ".weight"])
                // Exactly (code − zero)·scale: the fused weight is the dequantized QuantizedTensor.
                XCTAssertEqual(q.dequantized().array.map(\.bitPattern), fused["\(i).\(name)"]!.map(\.bitPattern),
                               "block \(i) \(name)")
                XCTAssertTrue(q.codes.allSatisfy { $0 < 8 })
            }
        }
    }

    /// A run stopped after block 0 and resumed ends bit-identical to an uninterrupted run.
    func testResumeIsBitIdentical() throws {
        let opts = options()
        let (full, _, _) = try run(opts, workDir: tempDir())
        let dir = tempDir()
        _ = try run(opts, workDir: dir)
        // Simulate a kill after block 0: the last block's result never got written.
        try FileManager.default.removeItem(atPath: dir + "/block_001.safetensors")
        let (resumed, runner, _) = try run(opts, workDir: dir, resume: true)
        XCTAssertEqual(runner.reports.map(\.resumed), [true, false])
        XCTAssertEqual(resumed.keys.sorted(), full.keys.sorted())
        for (k, v) in full { XCTAssertEqual(resumed[k]!.map(\.bitPattern), v.map(\.bitPattern), k) }
        // A torn block file is redone, not trusted.
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: dir + "/block_001.safetensors"))
        let (again, runner2, _) = try run(opts, workDir: dir, resume: true)
        XCTAssertEqual(runner2.reports.map(\.resumed), [true, false])
        for (k, v) in full { XCTAssertEqual(again[k]!.map(\.bitPattern), v.map(\.bitPattern), k) }
        // Other options cannot resume this directory.
        var other = opts
        other.epochs = 3
        XCTAssertThrowsSwiftQuantError(try run(other, workDir: dir, resume: true), contains: "other options")
    }

    func testBadSettingsFailBeforeAnyWork() throws {
        let dir = tempDir()
        for (opts, fragment) in [
            (OmniQuantOptions(wbits: 0, groupSize: 32), "wbits"), (OmniQuantOptions(wbits: 9, groupSize: 32), "wbits"),
            (OmniQuantOptions(wbits: 3, groupSize: 0), "group size"),
            (OmniQuantOptions(wbits: 3, groupSize: 32, epochs: 0), "epochs"),
            (OmniQuantOptions(wbits: 3, groupSize: 32, nsamples: 0), "nsamples"),
        ] {
            XCTAssertThrowsSwiftQuantError(try OmniQuant(options: opts, workDir: dir), contains: fragment)
        }
        let loaded = try tinyModel()
        let runner = try OmniQuant(options: OmniQuantOptions(wbits: 3, groupSize: 1024, nsamples: 4, seqlen: 32), workDir: dir)
        XCTAssertThrowsSwiftQuantError(try runner.run(model: loaded.model, calibration: try windows(loaded.model), resume: false),
                                       contains: "larger than the rows")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir), "no work started")
        XCTAssertThrowsSwiftQuantError(try Calibration.windows(tokens: [1, 2, 3], count: 4, length: 32, seed: 2),
                                       contains: "fewer than one window")
        let opt = try XCTUnwrap(LoadedModel.load(path: Fixtures.url("tiny/opt").path))
        let r2 = try OmniQuant(options: options(), workDir: dir)
        XCTAssertThrowsSwiftQuantError(try r2.run(model: opt.model, calibration: try windows(opt.model), resume: false),
                                       contains: "Llama-family")
        // An output directory that exists, holds files and is not ours.
        let out = tempDir()
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        try Data("x".utf8).write(to: URL(fileURLWithPath: out + "/notes.txt"))
        XCTAssertThrowsSwiftQuantError(try QuantizedExport.checkOutput(out), contains: "not written by SwiftQuant")
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
        let llama = try XCTUnwrap(loaded.model as? LlamaModel)
        let c = llama.config
        let block = try llama.loadBlock(0)
        let x = try llama.embed(ids)
        let target = try llama.forwardBlock(0, hidden: x)
        let names = LlamaModel.linearNames
        let w = names.map { block.linear($0).weight }
        let grad = try LlamaBlockGrad(
            config: LlamaBlockConfig(hidden: c.hiddenSize, heads: c.numAttentionHeads, kvHeads: c.numKeyValueHeads,
                                     headDim: c.headDim, ffn: c.intermediateSize, rmsEps: Float(c.rmsNormEps),
                                     ropeTheta: c.ropeTheta),
            weights: LlamaBlockWeights(inputNorm: block.norms["input_layernorm"]!.weight!, q: w[0], k: w[1], v: w[2],
                                       o: w[3], postNorm: block.norms["post_attention_layernorm"]!.weight!, gate: w[4],
                                       up: w[5], down: w[6]),
            bits: 3, groupSize: 128, maxRows: ids.count)
        let adam = try AdamW(parameters: grad.u + grad.l, learningRate: 1e-2)
        var losses: [Float] = []
        for _ in 0..<15 {
            losses.append(try grad.trainStep(input: x, target: target))
            try adam.step(gradients: grad.gradU + grad.gradL)
        }
        print("SmolLM2 block 0 LWC loss: \(losses.first!) → \(losses.last!)")
        XCTAssertLessThan(losses.last!, losses.first!)
    }
}
