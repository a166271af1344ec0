import CSQSupport
import Foundation

/// What happened to one block.
public struct BlockReport: Sendable, Codable {
    public var block: Int
    /// Mean training loss of the first and of the last epoch (algorithms that train).
    public var lossFirstEpoch: Double?
    public var lossLastEpoch: Double?
    /// With `keep_best`: the epoch (1-based) whose parameters the block kept.
    public var keptEpoch: Int? = nil
    /// The fused block's loss against the FP targets, and plain RTN's for comparison (calibrated runs), in the
    /// recipe's training loss (`loss`: MSE unless `relative`).
    public var fusedLoss: Double?
    public var rtnLoss: Double?
    public var seconds: Double
    public var skippedSteps: Int
    public var finalLearningRate: Float?
    public var resumed: Bool
    /// Per linear `[GPTQ, plain rounding]` output error `‖(W − Ŵ)X‖²` on the calibration inputs (GPTQ and
    /// `weight_rounding: gptq`; plain rounding: to nearest on the same grid, learned clipping included).
    public var linearErrors: [String: [Double]]? = nil
}

/// The result of a quantization run: the model it ran on now holds the fused blocks.
public struct QuantizationResult {
    /// Codes, scales and zero-points by Hugging Face weight name.
    public var quantized: [String: QuantizedTensor]
    /// LoRC factors by Hugging Face weight name (empty without `lorc_rank`).
    public var lowRank: [String: LowRank] = [:]
    /// The activation quantization the result runs with (the model's `activations` are set to it).
    public var activations: ActivationScheme?
    public var reports: [BlockReport]
    public var seconds: Double
    /// The calibration text used (nil without calibration).
    public var calibrationPath: String?
}

/// The one calibration pipeline (ALGORITHMS.md §3): calibration windows → block-0 inputs → per block: FP targets,
/// the recipe's algorithm, fusion (dequantized codes become the block's weights), propagation of the quantized
/// path → resume, progress with ETA and memory lines. Algorithms (`BlockAlgorithm`) only see one block.
///
/// Memory: blocks are read from the model file one at a time; with a work directory each fused block (weights,
/// codes, scales, zero-points, learned parameters, report) is written there and dropped from memory once its
/// outputs are propagated, so resident memory is about one block plus the activations
/// (`3 · nsamples · seqlen · hidden` floats), whatever the number of blocks. At the end the fused blocks are
/// installed as views of their files.
///
/// Resume: every finished block leaves `block_NNN.safetensors` in the work directory; a run with the same recipe
/// continues after the last finished block and ends bit-identical to an uninterrupted run.
public final class CalibrationPipeline {
    public let recipe: QuantRecipe
    public let workDir: String?
    public let progress: Bool
    public var log: (String) -> Void

    public init(recipe: QuantRecipe, workDir: String? = nil, progress: Bool = true) throws {
        try recipe.validate()
        self.recipe = recipe
        self.workDir = workDir
        self.progress = progress
        log = progress ? { FileHandle.standardError.write(Data(($0 + "\n").utf8)) } : { _ in }
    }

    /// The one entry of the CLI, the C ABI and Python: reads the calibration text (when the method needs it),
    /// draws the windows and runs the pipeline on `loaded`'s model.
    public static func quantize(_ loaded: LoadedModel, recipe: QuantRecipe, calibrationPath: String?, workDir: String?,
                                resume: Bool = false, progress: Bool = true) throws -> QuantizationResult {
        try recipe.validate(model: loaded.model)
        let pipeline = try CalibrationPipeline(recipe: recipe, workDir: workDir, progress: progress)
        var windows: [[Int32]] = []
        var used: String?
        if recipe.needsCalibrationData {
            guard let path = calibrationPath else {
                throw SwiftQuantError.invalidArgument("\(recipe.method.rawValue) needs calibration text: pass a file")
            }
            guard let tok = loaded.tokenizer else {
                throw SwiftQuantError.invalidArgument("\(loaded.path): no tokenizer to read the calibration text")
            }
            windows = try Calibration.windows(tokens: tok.encode(try Calibration.text(path: path)),
                                              count: recipe.nsamples, length: recipe.seqlen, seed: recipe.seed)
            used = path
        }
        let wasCaching = loaded.source.enabled
        loaded.source.enabled = false  // one block in memory at a time
        defer { loaded.source.enabled = wasCaching }
        var r = try pipeline.run(loaded, windows: windows, resume: resume)
        r.calibrationPath = used
        return r
    }

    /// `run(model:windows:resume:)` on `loaded`'s model, then sets `loaded.quantization` (what saves and exports
    /// read) from the result.
    public func run(_ loaded: LoadedModel, windows: [[Int32]], resume: Bool = false) throws -> QuantizationResult {
        let r = try run(model: loaded.model, windows: windows, resume: resume)
        loaded.quantization = QuantizationState(method: recipe.method.rawValue, weights: try recipe.quantizerConfig,
                                                tensors: r.quantized, activations: r.activations, lowRank: r.lowRank,
                                                recipe: recipe.json)
        return r
    }

    private func blockFile(_ i: Int) -> String? { workDir.map { $0 + String(format: "/block_%03d.safetensors", i) } }

    /// Runs the recipe's algorithm over every block of `model` and installs the fused blocks in it.
    /// `windows`: calibration windows of `seqlen` tokens (ignored by data-free methods).
    public func run(model: TransformerModel, windows: [[Int32]], resume: Bool = false) throws -> QuantizationResult {
        try recipe.validate(model: model)
        let algorithm = recipe.algorithm()
        let data = algorithm.needsCalibrationData
        // The quantized path runs with the activation quantizers; FP targets without.
        let scheme = try recipe.activationScheme
        if data {
            try require(windows.count == recipe.nsamples && windows.allSatisfy { $0.count == recipe.seqlen },
                        "expected \(recipe.nsamples) windows of \(recipe.seqlen) tokens")
        }
        try prepareWorkDir(resume: resume)
        let start = sqs_now()
        let n = model.numBlocks
        var fpIn = try data ? windows.map { try model.embed($0) } : []
        let qIn = fpIn.map { $0.copy() }
        let ws = Workspace()
        var reports: [BlockReport] = []
        var inMemory: [String: QuantizedTensor] = [:]
        var lowRank: [String: LowRank] = [:]
        let bar = ProgressBar(total: n, label: "\(recipe.method.rawValue) \(try recipe.quantizerConfig)", unit: "block",
                              enabled: progress && !data)
        if data {
            log("\(recipe.method.rawValue): \(n) blocks, \(try recipe.quantizerConfig)\(scheme.map { ", \($0)" } ?? ""), "
                + "\(windows.count) × \(recipe.seqlen) tokens, "
                + "\(recipe.epochs) epochs, lr \(recipe.lr)"
                + (recipe.augLoss ? ", aug_loss (training losses against the mean of the FP block's outputs on the FP and the "
                    + "quantized inputs; fused and RTN losses against the FP path: about 4x the training loss where a "
                    + "block adds little error of its own)" : "")
                + (recipe.loss == .relative ? ", relative loss (each token weighed by the window's mean token energy over "
                    + "its own: training, fused and RTN losses alike)" : "")
                + (recipe.keepBest ? ", keep_best" : "")
                + (recipe.activationGradient == .ste ? ", straight-through activation gradients" : ""))
        }
        for i in 0..<n {
            let t0 = sqs_now()
            let block = try model.loadBlock(i)
            var fpOut: [Tensor] = [], targets: [Tensor] = []
            if data {
                fpOut = try fpIn.map { x in let y = x.copy(); try model.forward(block: block, hidden: y, workspace: ws); return y }
                targets = fpOut
                if recipe.augLoss {
                    targets = try zip(qIn, fpOut).map { q, f -> Tensor in
                        let y = q.copy()
                        try model.forward(block: block, hidden: y, workspace: ws)
                        for k in 0..<y.count { y.pointer[k] = (y.pointer[k] + f.pointer[k]) * 0.5 }
                        return y
                    }
                }
            }
            var fused: TransformerBlock
            var report: BlockReport
            if resume, let saved = try loadFinished(i, block: block) {
                (fused, report) = saved
                for x in qIn { try model.forward(block: fused, hidden: x, workspace: ws, activations: scheme) }
            } else {
                let job = BlockJob(model: model, index: i, weights: block, inputs: qIn, targets: targets, recipe: recipe,
                                   log: log)
                let outcome = try algorithm.quantize(job)
                fused = try fuse(outcome.transformed ?? block, outcome.quantized)
                report = BlockReport(block: i, lossFirstEpoch: outcome.lossFirstEpoch, lossLastEpoch: outcome.lossLastEpoch,
                                     fusedLoss: nil, rtnLoss: nil, seconds: 0, skippedSteps: outcome.skippedSteps,
                                     finalLearningRate: outcome.finalLearningRate, resumed: false)
                report.keptEpoch = outcome.keptEpoch.map { $0 + 1 }
                if !outcome.linearErrors.isEmpty {
                    report.linearErrors = outcome.linearErrors.mapValues { [$0.quantized, $0.rtn] }
                    for (name, e) in outcome.linearErrors.sorted(by: { $0.key < $1.key }) where e.quantized > e.rtn {
                        log(String(format: "block %d %@: GPTQ's output error %.4e above round-to-nearest's %.4e on the same grid",
                                      i + 1, name, e.quantized, e.rtn))
                    }
                }
                if data {
                    let rtn = try RTN().quantize(BlockJob(model: model, index: i, weights: block, inputs: [], targets: [],
                                                          recipe: recipe, log: log))
                    report.rtnLoss = try blockLoss(model, try fuse(block, rtn.quantized), qIn, fpOut, ws, scheme)
                }
                // Propagate the quantized path; its outputs against the FP targets are the fused block's loss.
                var fusedLoss = 0.0
                for (x, t) in zip(qIn, fpOut) {
                    try model.forward(block: fused, hidden: x, workspace: ws, activations: scheme)
                    fusedLoss += outputLoss(x, t)
                }
                if data { report.fusedLoss = fusedLoss / Double(qIn.count) }
                report.seconds = sqs_now() - t0
                if workDir != nil {
                    try save(i, fused: fused, outcome: outcome, report: report)
                    fused = try mappedBlock(i, block: block) ?? fused
                } else {
                    for (name, q) in outcome.quantized { inMemory[model.blockPrefix(i) + name + ".weight"] = q }
                    for (name, l) in fused.linears { if let r = l.lowRank { lowRank[model.blockPrefix(i) + name + ".weight"] = r } }
                }
            }
            fpIn = fpOut
            model.setBlock(i, workDir == nil ? fused : nil)
            reports.append(report)
            if data { logBlock(report, n: n, eta: Self.remainingSeconds(reports, total: n)) } else { bar.advance() }
        }
        var quantized = inMemory
        if workDir != nil {
            // Install the fused blocks as views of their files (pages are read when used).
            for i in 0..<n {
                guard let b = try mappedBlock(i, block: try model.loadBlock(i)) else {
                    throw SwiftQuantError.io("\(blockFile(i)!): missing after calibration")
                }
                model.setBlock(i, b)
                for (name, q) in try quantizedTensors(i, block: b) { quantized[model.blockPrefix(i) + name + ".weight"] = q }
                for (name, l) in b.linears { if let r = l.lowRank { lowRank[model.blockPrefix(i) + name + ".weight"] = r } }
            }
        }
        model.activations = scheme
        return QuantizationResult(quantized: quantized, lowRank: lowRank, activations: scheme, reports: reports,
                                  seconds: sqs_now() - start, calibrationPath: nil)
    }

    /// Seconds left for the blocks after `reports`: their count times the mean time of the blocks this run
    /// computed. A resumed block costs only its propagation, so it does not count (it would make a resumed run's
    /// ETA far too short); before the first computed block, the resumed blocks' recorded times stand in.
    public static func remainingSeconds(_ reports: [BlockReport], total n: Int) -> Double {
        let computed = reports.filter { !$0.resumed }.map(\.seconds)
        let basis = computed.isEmpty ? reports.map(\.seconds) : computed
        guard !basis.isEmpty else { return 0 }
        return basis.reduce(0, +) / Double(basis.count) * Double(max(n - reports.count, 0))
    }

    private func logBlock(_ r: BlockReport, n: Int, eta: Double) {
        let i = r.block
        let mem = residentMemoryMiB().map {
            String(format: "  rss %.0f MiB (anon %.0f, peak %.0f)", $0.current, $0.anonymous, $0.peak)
        } ?? ""
        let fused = r.fusedLoss ?? .nan, rtn = r.rtnLoss ?? .nan
        let kept = r.keptEpoch.map { " (kept epoch \($0))" } ?? ""
        let training = r.lossFirstEpoch.map { String(format: "loss %.3e → %.3e%@  ", $0, r.lossLastEpoch ?? .nan, kept) } ?? ""
        log(String(format: "block %2d/%d  %@fused %.3e (RTN %.3e, %+.1f%%)  %5.1f s  ETA %@%@%@%@",
                   i + 1, n, training, fused, rtn, (fused / max(rtn, 1e-30) - 1) * 100, r.seconds,
                   ProgressBar.format(seconds: eta), mem, r.resumed ? "  (resumed)" : "",
                   r.skippedSteps > 0 ? "  \(r.skippedSteps) non-finite steps skipped, lr now \(r.finalLearningRate ?? 0)" : ""))
    }

    /// `block` (the FP block, or the algorithm's transformed one) with every quantized linear replaced by its
    /// dequantized codes, plus the LoRC term of the residual `W − Ŵ` when the recipe asks for one.
    private func fuse(_ block: TransformerBlock, _ q: [String: QuantizedTensor]) throws -> TransformerBlock {
        var linears = block.linears
        for name in q.keys.sorted() {
            let lin = block.linear(name), w = q[name]!.dequantized()
            var lr: LowRank?
            if recipe.lorcRank > 0 {
                let e = Tensor(zeros: w.shape)
                for k in 0..<e.count { e.pointer[k] = lin.weight.pointer[k] - w.pointer[k] }
                let f = try LoRC.compensate(residual: e, rank: recipe.lorcRank)
                lr = try LowRank(u: f.u, v: f.v)
            }
            linears[name] = Linear(weight: w, bias: lin.bias, lowRank: lr)
        }
        return TransformerBlock(index: block.index, linearNames: block.linearNames, linears: linears, norms: block.norms)
    }

    private func blockLoss(_ model: TransformerModel, _ block: TransformerBlock, _ inputs: [Tensor], _ targets: [Tensor],
                           _ ws: Workspace, _ scheme: ActivationScheme?) throws -> Double {
        var s = 0.0
        for (x, t) in zip(inputs, targets) {
            let y = x.copy()
            try model.forward(block: block, hidden: y, workspace: ws, activations: scheme)
            s += outputLoss(y, t)
        }
        return s / Double(max(inputs.count, 1))
    }

    /// The fused (or RTN) block's output against the FP target, in the recipe's training loss (MSE by default).
    private func outputLoss(_ y: Tensor, _ t: Tensor) -> Double {
        switch recipe.loss {
        case .mse:
            var e = 0.0
            for k in 0..<y.count { let d = Double(y.pointer[k] - t.pointer[k]); e += d * d }
            return e / Double(y.count)
        case .relative:
            return Double(Autodiff.RelativeMSELoss.forward(pred: y.pointer, target: t.pointer, rows: y.shape[0],
                                                           cols: y.count / max(y.shape[0], 1)))
        }
    }

    // MARK: work directory

    private func prepareWorkDir(resume: Bool) throws {
        guard let dir = workDir else { return }
        let fm = FileManager.default
        if !resume { try? fm.removeItem(atPath: dir) }
        do { try fm.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
            throw SwiftQuantError.io("\(dir): cannot create the work directory: \(error.localizedDescription)")
        }
        let fp = dir + "/recipe.json"
        if resume, let old = fm.contents(atPath: fp), String(decoding: old, as: UTF8.self) != recipe.json {
            throw SwiftQuantError.invalidArgument(
                "\(dir): was written with another recipe (\(String(decoding: old, as: UTF8.self))); resume needs the same one")
        }
        guard fm.createFile(atPath: fp, contents: Data(recipe.json.utf8)) else { throw SwiftQuantError.io("\(fp): cannot write") }
    }

    private func save(_ i: Int, fused: TransformerBlock, outcome: BlockOutcome, report: BlockReport) throws {
        var entries: [SafetensorsEntry] = []
        for name in outcome.quantized.keys.sorted() {
            let q = outcome.quantized[name]!
            if let g = q.groupIndex {
                entries.append(SafetensorsEntry(name: name + ".g_idx", dtype: .i32, shape: [q.cols],
                                                bytes: g.withUnsafeBufferPointer { Data(buffer: $0) }))
            }
            entries.append(SafetensorsEntry(name: name + ".codes", dtype: .u8, shape: [q.rows, q.cols], bytes: Data(q.codes)))
            entries.append(SafetensorsEntry(name: name + ".scales", dtype: .f32, shape: [q.rows, q.groupCount],
                                            bytes: q.scales.withUnsafeBufferPointer { Data(buffer: $0) }))
            entries.append(SafetensorsEntry(name: name + ".zeros", dtype: .i32, shape: [q.rows, q.groupCount],
                                            bytes: q.zeros.withUnsafeBufferPointer { Data(buffer: $0) }))
            let lin = fused.linear(name)
            entries.append(SafetensorsEntry(name: name + ".weight", tensor: lin.weight))
            if let b = lin.bias { entries.append(SafetensorsEntry(name: name + ".bias", tensor: b)) }
            if let r = lin.lowRank {
                entries.append(SafetensorsEntry(name: name + ".lorc_u", tensor: r.u))
                entries.append(SafetensorsEntry(name: name + ".lorc_v", tensor: r.v))
            }
        }
        // Norms as the block runs them (an equivalent transformation rescales them).
        for (name, nw) in fused.norms.sorted(by: { $0.key < $1.key }) {
            if let w = nw.weight { entries.append(SafetensorsEntry(name: name + ".weight", tensor: w)) }
            if let b = nw.bias { entries.append(SafetensorsEntry(name: name + ".bias", tensor: b)) }
        }
        for name in outcome.learned.keys.sorted() { entries.append(SafetensorsEntry(name: name, tensor: outcome.learned[name]!)) }
        let reportJSON = String(decoding: try JSONEncoder().encode(report), as: UTF8.self)
        try SafetensorsWriter.write(entries, metadata: ["report": reportJSON, "recipe": recipe.json], to: blockFile(i)!)
    }

    /// The fused block as views of its file in the work directory (nil if it is not there).
    private func mappedBlock(_ i: Int, block: TransformerBlock) throws -> TransformerBlock? {
        guard let path = blockFile(i), FileManager.default.fileExists(atPath: path) else { return nil }
        let file = try SafetensorsFile(path: path)
        var linears = block.linears
        func tensor(_ name: String, _ shape: [Int]) throws -> Tensor? {
            guard file.info(name) != nil else { return nil }
            let t = try file.float32(name)
            try require(t.shape == shape, "\(path): \(name) has shape \(t.shape), expected \(shape)")
            return t
        }
        for name in block.linearNames where file.info(name + ".codes") != nil {
            let lin = block.linear(name)
            let w = try tensor(name + ".weight", lin.weight.shape)!
            var lr: LowRank?
            if let u = file.info(name + ".lorc_u"), let v = file.info(name + ".lorc_v") {
                lr = try LowRank(u: try tensor(name + ".lorc_u", u.shape)!, v: try tensor(name + ".lorc_v", v.shape)!)
            }
            linears[name] = Linear(weight: w, bias: try tensor(name + ".bias", [w.shape[0]]) ?? lin.bias, lowRank: lr)
        }
        var norms = block.norms
        for (name, nw) in block.norms {
            let h = nw.weight?.count ?? 0
            norms[name] = NormWeights(weight: try tensor(name + ".weight", [h]) ?? nw.weight,
                                      bias: try tensor(name + ".bias", [h]) ?? nw.bias)
        }
        return TransformerBlock(index: i, linearNames: block.linearNames, linears: linears, norms: norms)
    }

    private func quantizedTensors(_ i: Int, block: TransformerBlock) throws -> [String: QuantizedTensor] {
        let path = blockFile(i)!, file = try SafetensorsFile(path: path), cfg = try recipe.quantizerConfig
        var out: [String: QuantizedTensor] = [:]
        for name in block.linearNames {
            guard let info = file.info(name + ".codes") else { throw SwiftQuantError.format("\(path): no \(name).codes") }
            out[name] = try QuantizedTensor(rows: info.shape[0], cols: info.shape[1], config: cfg,
                                            codes: Array(try file.rawBytes(name + ".codes").bindMemory(to: UInt8.self)),
                                            scales: try file.float32(name + ".scales").array,
                                            zeros: Array(try file.rawBytes(name + ".zeros").bindMemory(to: Int32.self)),
                                            groupIndex: file.info(name + ".g_idx") == nil ? nil
                                                : Array(try file.rawBytes(name + ".g_idx").bindMemory(to: Int32.self)))
        }
        return out
    }

    /// A block finished by an earlier run with the same recipe: its fused weights (mapped) and its report.
    private func loadFinished(_ i: Int, block: TransformerBlock) throws -> (TransformerBlock, BlockReport)? {
        guard let path = blockFile(i), FileManager.default.fileExists(atPath: path) else { return nil }
        let file: SafetensorsFile
        do { file = try SafetensorsFile(path: path) } catch { return nil }  // a torn file: redo the block
        guard file.metadata["recipe"] == recipe.json, let r = file.metadata["report"],
              var report = try? JSONDecoder().decode(BlockReport.self, from: Data(r.utf8)),
              block.linearNames.allSatisfy({ file.info($0 + ".codes") != nil }),
              let fused = try mappedBlock(i, block: block)
        else { return nil }
        report.resumed = true
        return (fused, report)
    }
}
