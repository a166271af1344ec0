import CSQSupport
import Foundation

/// Settings of an OmniQuant weight-only run (ALGORITHMS.md §3). Defaults are the paper's scripts'.
public struct OmniQuantOptions: Sendable, Equatable, Codable {
    public var wbits: Int
    /// nil = one group per output row.
    public var groupSize: Int?
    public var symmetric = false
    public var epochs = 20
    public var nsamples = 128
    public var seqlen = 2048
    public var lr: Float = 1e-2
    public var augLoss = false
    public var seed: UInt64 = 2

    public init(wbits: Int, groupSize: Int? = 128, symmetric: Bool = false, epochs: Int = 20, nsamples: Int = 128,
                seqlen: Int = 2048, lr: Float = 1e-2, augLoss: Bool = false, seed: UInt64 = 2) {
        self.wbits = wbits; self.groupSize = groupSize; self.symmetric = symmetric; self.epochs = epochs
        self.nsamples = nsamples; self.seqlen = seqlen; self.lr = lr; self.augLoss = augLoss; self.seed = seed
    }

    /// A budget that runs in minutes on a 2-core CPU: 16 windows of 512 tokens, 5 epochs, learning rate 5e-2
    /// (the paper: 128 × 2048 tokens, 20 epochs, 1e-2). The larger rate makes up for 32× fewer steps: on
    /// SmolLM2 W3 g128 it recovered 72% of RTN's perplexity gap where 32 × 512 at 1e-2 recovered 46%.
    public static func cpuPreset(wbits: Int, groupSize: Int?) -> OmniQuantOptions {
        OmniQuantOptions(wbits: wbits, groupSize: groupSize, epochs: 5, nsamples: 16, seqlen: 512, lr: 5e-2)
    }

    public var quantizerConfig: QuantizerConfig {
        QuantizerConfig(format: .int(bits: wbits), groupSize: groupSize, symmetric: symmetric)
    }

    /// Checks every setting before any work starts.
    public func validate(hiddenSize: Int? = nil) throws {
        try require((2...8).contains(wbits), "wbits must be in 2...8, got \(wbits)")
        if let g = groupSize {
            try require(g > 0, "group size must be positive (or per-channel), got \(g)")
            if let h = hiddenSize { try require(g <= h, "group size \(g) is larger than the rows (\(h) columns)") }
        }
        try require(epochs > 0, "epochs must be positive, got \(epochs)")
        try require(nsamples > 0, "nsamples must be positive, got \(nsamples)")
        try require(seqlen >= 2, "seqlen must be at least 2, got \(seqlen)")
        try require(lr > 0 && lr.isFinite, "lr must be a positive number, got \(lr)")
    }
}

/// What happened to one block.
public struct OmniQuantBlockReport: Sendable, Codable {
    public var block: Int
    /// Mean MSE of the first and of the last epoch.
    public var lossFirstEpoch: Double
    public var lossLastEpoch: Double
    /// MSE of the fused (RTN-style re-quantized with the learned clipping) block vs the FP targets, and of plain
    /// RTN (clipping 1) for comparison.
    public var fusedLoss: Double
    public var rtnLoss: Double
    public var seconds: Double
    public var skippedSteps: Int
    public var finalLearningRate: Float
    public var resumed: Bool
}

/// OmniQuant's block-wise calibration with Learnable Weight Clipping (weight-only), for Llama-family models:
/// capture block-0 inputs of the calibration windows; for each block compute FP targets, train the LWC
/// parameters of its seven linears with AdamW on the MSE of the block output, fuse (weights quantized with the
/// learned clipping), and propagate the quantized block's outputs to the next block.
///
/// Memory: blocks are read from the model file one at a time; each fused block (weights, codes, scales,
/// zero-points) is written to the work directory and dropped from memory once its outputs are propagated, so
/// resident memory is about one block plus the activations (`3 · nsamples · seqlen · hidden` floats), whatever
/// the number of blocks. At the end the fused blocks are installed as views of their files.
///
/// Resume: every finished block leaves `block_NNN.safetensors` (learned parameters, fused weights, report) in
/// `workDir`; a run with the same options and work directory continues after the last finished block and ends
/// bit-identical to an uninterrupted run.
public final class OmniQuant {
    public let options: OmniQuantOptions
    public let workDir: String
    public private(set) var reports: [OmniQuantBlockReport] = []
    private var blockNames: [(index: Int, prefix: String)] = []
    public var log: (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }

    public init(options: OmniQuantOptions, workDir: String) throws {
        try options.validate()
        self.options = options
        self.workDir = workDir
    }

    private var fingerprint: String {
        let e = JSONEncoder()
        e.outputFormatting = .sortedKeys
        return String(decoding: (try? e.encode(options)) ?? Data(), as: UTF8.self)
    }

    private func blockFile(_ i: Int) -> String { workDir + String(format: "/block_%03d.safetensors", i) }

    /// Runs calibration on `model` (a Llama-family model without biases) and installs the fused blocks in it.
    /// `resume`: continue from finished blocks in `workDir` (else it is cleared first).
    public func run(model: TransformerModel, calibration windows: [[Int32]], resume: Bool) throws {
        guard let llama = model as? LlamaModel else {
            throw SwiftQuantError.unsupported("OmniQuant calibration supports Llama-family models; this is \(model.modelType)")
        }
        let c = llama.config
        try require(!c.qkvBias && !c.outputBias && !c.mlpBias,
                    "OmniQuant calibration does not support linear biases yet (model_type \(c.modelType))")
        try options.validate(hiddenSize: min(c.hiddenSize, c.intermediateSize))
        try require(windows.count == options.nsamples && windows.allSatisfy { $0.count == options.seqlen },
                    "expected \(options.nsamples) windows of \(options.seqlen) tokens")
        try prepareWorkDir(resume: resume)

        let T = options.seqlen, H = c.hiddenSize, n = windows.count
        // Block-0 inputs. fp = FP path, q = quantized path; aug: FP targets of the quantized inputs too.
        var fpIn = try windows.map { try model.embed($0) }
        let qIn = fpIn.map { $0.copy() }
        let blockCfg = LlamaBlockConfig(hidden: H, heads: c.numAttentionHeads, kvHeads: c.numKeyValueHeads,
                                        headDim: c.headDim, ffn: c.intermediateSize, rmsEps: Float(c.rmsNormEps),
                                        ropeTheta: c.ropeTheta)
        let (ropeCos, ropeSin) = ropeTables(llama, rows: T)
        let ws = Workspace()
        let start = sqs_now()
        log("omniquant: \(model.numBlocks) blocks, W\(options.wbits) \(options.groupSize.map { "g\($0)" } ?? "per-channel"), "
            + "\(n) × \(T) tokens, \(options.epochs) epochs, lr \(options.lr)\(options.augLoss ? ", aug_loss" : "")")

        for i in 0..<model.numBlocks {
            let t0 = sqs_now()
            let block = try model.loadBlock(i)
            // FP targets of this block.
            let fpOut = try fpIn.map { x -> Tensor in
                let y = x.copy()
                try model.forward(block: block, hidden: y, workspace: ws)
                return y
            }
            var targets = fpOut
            if options.augLoss {
                targets = try zip(qIn, fpOut).map { q, f -> Tensor in
                    let y = q.copy()
                    try model.forward(block: block, hidden: y, workspace: ws)
                    for k in 0..<y.count { y.pointer[k] = (y.pointer[k] + f.pointer[k]) * 0.5 }
                    return y
                }
            }
            let report: OmniQuantBlockReport
            let fused: TransformerBlock
            if resume, let saved = try loadFinished(i, model: model, block: block) {
                (fused, report) = saved
            } else {
                (fused, report) = try trainBlock(i, model: model, block: block, config: blockCfg, ropeCos: ropeCos,
                                                 ropeSin: ropeSin, qIn: qIn, targets: targets, fpOut: fpOut, ws: ws,
                                                 t0: t0)
            }
            // Propagate: quantized path through the fused block, FP path = the targets.
            for x in qIn { try model.forward(block: fused, hidden: x, workspace: ws) }
            fpIn = fpOut
            blockNames.append((i, model.blockPrefix(i)))
            reports.append(report)
            let elapsed = sqs_now() - start
            let eta = elapsed / Double(i + 1) * Double(model.numBlocks - i - 1)
            let mem = residentMemoryMiB().map {
                String(format: "  rss %.0f MiB (anon %.0f, peak %.0f)", $0.current, $0.anonymous, $0.peak)
            } ?? ""
            log(String(format: "block %2d/%d  loss %.3e → %.3e  fused %.3e (RTN %.3e, %+.1f%%)  %5.1f s  ETA %@%@%@%@",
                       i + 1, model.numBlocks, report.lossFirstEpoch, report.lossLastEpoch, report.fusedLoss,
                       report.rtnLoss, (report.fusedLoss / max(report.rtnLoss, 1e-30) - 1) * 100, report.seconds,
                       ProgressBar.format(seconds: eta), mem, report.resumed ? "  (resumed)" : "",
                       report.skippedSteps > 0 ? "  \(report.skippedSteps) non-finite steps skipped, lr now \(report.finalLearningRate)" : ""))
        }
        // Install the fused blocks as views of their files (pages are read when used).
        for i in 0..<model.numBlocks {
            guard let b = try mappedBlock(i, model: model, block: try model.loadBlock(i)) else {
                throw SwiftQuantError.io("\(blockFile(i)): missing after calibration")
            }
            model.setBlock(i, b)
        }
    }

    /// The quantized weights (codes, scales, zero-points) of every calibrated block, read from the work
    /// directory, by Hugging Face weight name.
    public func quantizedTensors() throws -> [String: QuantizedTensor] {
        let cfg = options.quantizerConfig
        var out: [String: QuantizedTensor] = [:]
        for (i, prefix) in blockNames {
            let file = try SafetensorsFile(path: blockFile(i))
            for name in Self.lwcNames {
                guard let info = file.info(name + ".codes") else {
                    throw SwiftQuantError.format("\(blockFile(i)): no \(name).codes")
                }
                let rows = info.shape[0], cols = info.shape[1]
                let codes = Array(try file.rawBytes(name + ".codes").bindMemory(to: UInt8.self))
                let scales = try file.float32(name + ".scales").array
                let zeros = Array(try file.rawBytes(name + ".zeros").bindMemory(to: Int32.self))
                out[prefix + name + ".weight"] = try QuantizedTensor(rows: rows, cols: cols, config: cfg, codes: codes,
                                                                     scales: scales, zeros: zeros)
            }
        }
        return out
    }

    private func ropeTables(_ m: LlamaModel, rows: Int) -> (Tensor, Tensor) {
        let d = m.config.headDim, half = d / 2, inv = m.inverseFrequencies()
        let c = Tensor(zeros: [rows, d]), s = Tensor(zeros: [rows, d])
        for p in 0..<rows {
            for j in 0..<half {
                let angle = Float(p) * inv[j]
                let cv = Float(Foundation.cos(Double(angle))), sv = Float(Foundation.sin(Double(angle)))
                c.pointer[p * d + j] = cv; c.pointer[p * d + j + half] = cv
                s.pointer[p * d + j] = sv; s.pointer[p * d + j + half] = sv
            }
        }
        return (c, s)
    }

    private func prepareWorkDir(resume: Bool) throws {
        let fm = FileManager.default
        if !resume { try? fm.removeItem(atPath: workDir) }
        do { try fm.createDirectory(atPath: workDir, withIntermediateDirectories: true) } catch {
            throw SwiftQuantError.io("\(workDir): cannot create the work directory: \(error.localizedDescription)")
        }
        let fp = workDir + "/options.json"
        if resume, let old = fm.contents(atPath: fp), String(decoding: old, as: UTF8.self) != fingerprint {
            throw SwiftQuantError.invalidArgument(
                "\(workDir): was written with other options (\(String(decoding: old, as: UTF8.self))); resume needs the same ones")
        }
        guard fm.createFile(atPath: fp, contents: Data(fingerprint.utf8)) else {
            throw SwiftQuantError.io("\(fp): cannot write")
        }
    }

    private static let lwcNames = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                   "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]

    private func mse(_ a: Tensor, _ b: Tensor) -> Double {
        var s = 0.0
        for k in 0..<a.count { let d = Double(a.pointer[k] - b.pointer[k]); s += d * d }
        return s / Double(a.count)
    }

    private func trainBlock(_ i: Int, model: TransformerModel, block: TransformerBlock, config: LlamaBlockConfig,
                            ropeCos: Tensor, ropeSin: Tensor, qIn: [Tensor], targets: [Tensor], fpOut: [Tensor],
                            ws: Workspace, t0: Double) throws -> (TransformerBlock, OmniQuantBlockReport) {
        let names = Self.lwcNames
        guard let norm1 = block.norms["input_layernorm"]?.weight, let norm2 = block.norms["post_attention_layernorm"]?.weight
        else { throw SwiftQuantError.format("block \(i): missing norm weights") }
        let w = names.map { block.linear($0).weight }
        let weights = LlamaBlockWeights(inputNorm: norm1, q: w[0], k: w[1], v: w[2], o: w[3], postNorm: norm2,
                                        gate: w[4], up: w[5], down: w[6])
        let grad = try LlamaBlockGrad(config: config, weights: weights, bits: options.wbits,
                                      groupSize: options.groupSize ?? 0, symmetric: options.symmetric,
                                      maxRows: options.seqlen)
        try grad.setRopeTables(cos: ropeCos, sin: ropeSin)
        let adam = try AdamW(parameters: grad.u + grad.l, learningRate: options.lr)
        let gradients = grad.gradU + grad.gradL
        var first = 0.0, last = 0.0, skipped = 0
        for epoch in 0..<options.epochs {
            var sum = 0.0, counted = 0
            for j in 0..<qIn.count {
                let loss = try grad.trainStep(input: qIn[j], target: targets[j])
                let gradsFinite = gradients.allSatisfy { g in (0..<g.count).allSatisfy { g.pointer[$0].isFinite } }
                if !loss.isFinite || !gradsFinite {
                    skipped += 1
                    adam.learningRate *= 0.5
                    log("block \(i + 1): non-finite loss at epoch \(epoch + 1), window \(j + 1): step skipped, lr halved to \(adam.learningRate)")
                    continue
                }
                try adam.step(gradients: gradients)
                sum += Double(loss); counted += 1
            }
            let mean = counted > 0 ? sum / Double(counted) : .nan
            if epoch == 0 { first = mean }
            last = mean
        }
        // Fuse: quantize each weight with the learned clipping; write params + fused weights; use them mapped.
        var entries: [SafetensorsEntry] = []
        var linears = block.linears
        let cfg = options.quantizerConfig
        for (k, name) in names.enumerated() {
            let lin = block.linear(name)
            let up = grad.u[k].buffer.map { 1 / (1 + Foundation.exp(-$0)) }
            let low = grad.l[k].buffer.map { 1 / (1 + Foundation.exp(-$0)) }
            let rows = lin.weight.shape[0], cols = lin.weight.shape[1]
            let q = try up.withUnsafeBufferPointer { u in
                try low.withUnsafeBufferPointer { l in
                    try Quantizer.quantize(UnsafeBufferPointer(lin.weight.buffer), rows: rows, cols: cols, config: cfg,
                                           clipUp: u, clipLow: l)
                }
            }
            let fake = q.dequantized()
            entries.append(SafetensorsEntry(name: name + ".codes", dtype: .u8, shape: [rows, cols], bytes: Data(q.codes)))
            entries.append(SafetensorsEntry(name: name + ".scales", dtype: .f32, shape: [rows, q.groupCount],
                                            bytes: q.scales.withUnsafeBufferPointer { Data(buffer: $0) }))
            entries.append(SafetensorsEntry(name: name + ".zeros", dtype: .i32, shape: [rows, q.groupCount],
                                            bytes: q.zeros.withUnsafeBufferPointer { Data(buffer: $0) }))
            entries.append(SafetensorsEntry(name: name + ".lwc_u", tensor: grad.u[k]))
            entries.append(SafetensorsEntry(name: name + ".lwc_l", tensor: grad.l[k]))
            entries.append(SafetensorsEntry(name: name + ".weight", tensor: fake))
            linears[name] = Linear(weight: fake, bias: lin.bias)
        }
        var fused = TransformerBlock(index: i, linearNames: block.linearNames, linears: linears, norms: block.norms)
        // Block losses of the fused and of the plain RTN block on the quantized-path inputs.
        let fusedLoss = try blockLoss(model: model, block: fused, inputs: qIn, targets: fpOut, ws: ws)
        var rtnLinears = block.linears
        for name in names {
            let lin = block.linear(name)
            rtnLinears[name] = Linear(weight: try RTN.quantizeWeight(lin.weight, config: cfg, name: name).1, bias: lin.bias)
        }
        let rtnLoss = try blockLoss(model: model, block: TransformerBlock(index: i, linearNames: block.linearNames,
                                                                          linears: rtnLinears, norms: block.norms),
                                    inputs: qIn, targets: fpOut, ws: ws)
        let report = OmniQuantBlockReport(block: i, lossFirstEpoch: first, lossLastEpoch: last, fusedLoss: fusedLoss,
                                          rtnLoss: rtnLoss, seconds: sqs_now() - t0, skippedSteps: skipped,
                                          finalLearningRate: adam.learningRate, resumed: false)
        let reportJSON = String(decoding: try JSONEncoder().encode(report), as: UTF8.self)
        try SafetensorsWriter.write(entries, metadata: ["report": reportJSON, "options": fingerprint], to: blockFile(i))
        fused = try mappedBlock(i, model: model, block: block) ?? fused
        return (fused, report)
    }

    private func blockLoss(model: TransformerModel, block: TransformerBlock, inputs: [Tensor], targets: [Tensor],
                           ws: Workspace) throws -> Double {
        var s = 0.0
        for (x, t) in zip(inputs, targets) {
            let y = x.copy()
            try model.forward(block: block, hidden: y, workspace: ws)
            s += mse(y, t)
        }
        return s / Double(inputs.count)
    }

    /// The fused block as views of its file in the work directory (nil if it is not there).
    private func mappedBlock(_ i: Int, model: TransformerModel, block: TransformerBlock) throws -> TransformerBlock? {
        guard FileManager.default.fileExists(atPath: blockFile(i)) else { return nil }
        let file = try SafetensorsFile(path: blockFile(i))
        var linears = block.linears
        for name in Self.lwcNames {
            let lin = block.linear(name)
            let w = try file.float32(name + ".weight")
            try require(w.shape == lin.weight.shape, "\(blockFile(i)): \(name).weight has shape \(w.shape)")
            linears[name] = Linear(weight: w, bias: lin.bias)
        }
        return TransformerBlock(index: i, linearNames: block.linearNames, linears: linears, norms: block.norms)
    }

    /// A block finished by an earlier run with the same options: its fused weights (mapped from the work
    /// directory, where its codes, scales and zero-points also are) and its report.
    private func loadFinished(_ i: Int, model: TransformerModel, block: TransformerBlock) throws
        -> (TransformerBlock, OmniQuantBlockReport)?
    {
        guard FileManager.default.fileExists(atPath: blockFile(i)) else { return nil }
        let file: SafetensorsFile
        do { file = try SafetensorsFile(path: blockFile(i)) } catch { return nil }  // a torn file: redo the block
        guard file.metadata["options"] == fingerprint, let r = file.metadata["report"],
              var report = try? JSONDecoder().decode(OmniQuantBlockReport.self, from: Data(r.utf8)),
              Self.lwcNames.allSatisfy({ file.info($0 + ".codes") != nil }),
              let fused = try mappedBlock(i, model: model, block: block)
        else { return nil }
        report.resumed = true
        return (fused, report)
    }
}
