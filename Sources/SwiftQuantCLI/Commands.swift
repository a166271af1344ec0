import ArgumentParser
import Foundation
import SwiftQuant

/// Turns a SwiftQuantError into a one-line message and exit code 1 (no stack trace for user errors).
func runReportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as SwiftQuantError {
        FileHandle.standardError.write(Data("error: \(e.message)\n".utf8))
        throw ExitCode(1)
    }
}

struct ModelOptions: ParsableArguments {
    @Option(name: .long, help: "A Hugging Face model directory or a .gguf file.")
    var model: String
}

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "WikiText-2 perplexity with the papers' protocol (non-overlapping windows, mean token NLL).")

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Text file to evaluate (default: ../shared/data/wikitext-2-raw/test.joined.txt when present).")
    var data: String?

    @Option(help: "Tokens per window.")
    var seqlen = 2048

    @Option(help: "Evaluate only the first N windows.")
    var limit: Int?

    @Flag(help: "Print the result as one JSON object.")
    var json = false

    @Flag(help: "No progress bar.")
    var quiet = false

    func run() throws {
        try runReportingErrors {
            guard let path = data ?? SharedData.wikitextTest() else {
                throw SwiftQuantError.invalidArgument(
                    "no --data given and ../shared/data/wikitext-2-raw/test.joined.txt was not found")
            }
            let loaded = try LoadedModel.load(path: modelOptions.model)
            let text = try Perplexity.readText(path)
            let r = try Perplexity.evaluate(loaded, text: text, seqLen: seqlen, limit: limit, progress: !quiet)
            printReport(r, model: modelOptions.model, data: path, json: json)
        }
    }
}

func printReport(_ r: PerplexityReport, model: String, data: String, json: Bool, extra: [String: Any] = [:]) {
    if json {
        var o: [String: Any] = ["model": model, "data": data, "perplexity": r.perplexity, "mean_nll": r.meanNLL,
                                "windows": r.windows, "seqlen": r.seqLen, "tokens_in_text": r.tokensInText,
                                "seconds": r.seconds, "tokens_per_second": r.tokensPerSecond]
        for (k, v) in extra { o[k] = v }
        let d = try! JSONSerialization.data(withJSONObject: o, options: [.sortedKeys])
        print(String(decoding: d, as: UTF8.self))
    } else {
        print(String(format: "perplexity %.4f  (%d windows × %d tokens of %d, %.1f s, %.0f tokens/s)",
                     r.perplexity, r.windows, r.seqLen, r.tokensInText, r.seconds, r.tokensPerSecond))
    }
}

struct Quantize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Quantize a model's weights and write a fake-quantized model directory plus packed codes.")

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Method: rtn, smoothquant, omniquant or gptq.")
    var method = "rtn"

    @Option(help: "Weight bits (2–8) of an integer grid (default 4).")
    var wbits: Int?

    @Option(name: [.customLong("wformat"), .customLong("format")],
            help: "Weight format instead of --wbits: int2 … int8 or a minifloat, e.g. e2m1 (FP4), e3m2 (FP6), e4m3fn (FP8).")
    var format: String?

    @Option(help: "Activation bits (2–8, INT asymmetric per token) of every block linear's input.")
    var abits: Int?

    @Option(help: "Activation format instead of --abits: e4m3fn or e5m2 (FP8, symmetric per token), or intN.")
    var aformat: String?

    @Option(help: "Q/K/V (KV cache) bits per head per token, or none (default: the activation setting).")
    var kvBits: String?

    @Flag(help: "GPTQ: quantize columns by decreasing Hessian diagonal (act-order, with g_idx).")
    var actOrder = false

    @Option(help: "LoRC: rank of the low-rank compensation of every quantized linear (ZeroQuant-FP uses 8; 0 = off).")
    var lorc = 0

    @Option(help: "SmoothQuant and LET initialisation: migration strength alpha (default 0.5; OmniQuant W4A4, INT activations of 4 bits or fewer: 0.75, as the paper's scripts).")
    var alpha: Float?

    @Flag(name: .customLong("let"), inversion: .prefixedNo,
          help: "OmniQuant: train the Learnable Equivalent Transformation with LWC (default: on when activations are quantized, as the paper's weight-activation runs).")
    var useLET: Bool?

    @Option(help: "OmniQuant LET: learning rate of the scales and shifts (default 5e-3).")
    var letLr: Float = 5e-3

    @Flag(name: .customLong("let-shifts"), inversion: .prefixedNo,
          help: "OmniQuant LET: train shifts too (default: on for OPT, off for Llama and Qwen2, whose shifts fold into new RMSNorm and linear biases that only SwiftQuant loads: runtime exports refuse them).")
    var letShifts: Bool?

    @Flag(help: "OmniQuant LET: also train an up → down scale (gated MLPs; beyond the paper, which leaves the down projection's input untransformed).")
    var letDown = false

    @Flag(help: "OmniQuant: end each block with the parameters of the epoch whose mean training loss was lowest, instead of the last epoch's (beyond the paper; guards long budgets whose loss rises).")
    var keepBest = false

    @Option(help: "OmniQuant: what training minimises per block: mse (the paper's) or relative (each token's squared error rescaled to the window's mean token energy, so massive-activation tokens do not own the loss; beyond the paper).")
    var loss = "mse"

    @Option(help: "OmniQuant with activations quantized: how training differentiates the activation and KV quantizers: scale (the paper's code: round_ste plus the path through each token's scale) or ste (straight-through; beyond the paper).")
    var activationGradient = "scale"

    @Option(help: "SmoothQuant and OmniQuant: how the transformed weights are finally rounded: rtn (to nearest on the grid, LWC's learned clipping included; the papers') or gptq (GPTQ's error-feedback sweep on the same grid; llm-compressor's SmoothQuant → GPTQ).")
    var weightRounding = "rtn"

    @Option(help: "OmniQuant: arithmetic of the block's matrix products while training, fp32 or bf16 (bf16 operands, fp32 accumulation; CPUs with AVX512-BF16 or AMX).")
    var precision = "fp32"

    @Option(help: "Group size along the input dimension: a number of columns, or per-row for one group per output row.")
    var groupSize: GroupSize = 128

    @Flag(help: "Symmetric integer grid.")
    var symmetric = false

    @Option(help: "Output directory.")
    var out: String

    @Option(help: "After quantizing, evaluate perplexity on this many windows (0 = skip).")
    var evalWindows = 0

    @Option(help: "OmniQuant: training epochs per block (paper 20; cpu preset 5).")
    var epochs: Int?

    @Option(help: "Calibration windows of OmniQuant, GPTQ, SmoothQuant (paper 128; cpu preset 16, GPTQ 32).")
    var nsamples: Int?

    @Option(help: "Tokens per calibration window (paper 2048; cpu preset 512).")
    var seqlen: Int?

    @Option(help: "OmniQuant: AdamW learning rate of the clipping parameters (paper 1e-2; cpu preset 5e-2).")
    var lr: Float?

    @Flag(inversion: .prefixedNo,
          help: "OmniQuant: also match the FP block's output on the quantized inputs (default: on for W2 weight-only and W4A4 at the paper preset, as the paper's scripts; off otherwise).")
    var augLoss: Bool?

    @Option(help: "Calibration text of OmniQuant, GPTQ, SmoothQuant (default ../shared/data/wikitext-2-raw/tokenized-v1/valid.txt).")
    var calib: String?

    @Option(help: "Seed of the calibration windows.")
    var seed: UInt64 = 2

    @Option(help: "Calibration budget: paper (128 × 2048, 20 epochs, lr 1e-2) or cpu (OmniQuant, SmoothQuant: 16 × 512, 5 epochs, lr 5e-2; GPTQ: 32 × 512).")
    var preset = "paper"

    @Flag(help: "OmniQuant, GPTQ: continue an interrupted run from its last finished block (same options).")
    var resume = false

    @Option(help: "Minifloat weights: power-of-two scale constraint m1 or m2 (ZeroQuant-FP), applied inside GPTQ's sweep.")
    var scaleConstraint: String?

    func run() throws {
        try runReportingErrors {
            guard let m = QuantRecipe.Method(rawValue: method) else {
                throw SwiftQuantError.invalidArgument("unknown --method '\(method)' (available: rtn, smoothquant, omniquant, gptq)")
            }
            guard let p = QuantRecipe.Preset(rawValue: preset) else {
                throw SwiftQuantError.invalidArgument("unknown --preset '\(preset)' (paper or cpu)")
            }
            if format != nil && wbits != nil {
                throw SwiftQuantError.invalidArgument("give --wbits (integer grids) or --wformat (a format name), not both")
            }
            if abits != nil && aformat != nil {
                throw SwiftQuantError.invalidArgument("give --abits (INT activations) or --aformat (a format name), not both")
            }
            if let a = abits, !(2...8).contains(a) {
                throw SwiftQuantError.invalidArgument("--abits must be in 2...8, got \(a)")
            }
            guard let gemmPrecision = GEMMPrecision(rawValue: precision.lowercased()) else {
                throw SwiftQuantError.invalidArgument("--precision must be fp32 or bf16, got '\(precision)'")
            }
            guard let calibrationLoss = CalibrationLoss(rawValue: loss.lowercased()) else {
                throw SwiftQuantError.invalidArgument("--loss must be mse or relative, got '\(loss)'")
            }
            guard let actGradient = ActivationGradient(rawValue: activationGradient.lowercased()) else {
                throw SwiftQuantError.invalidArgument("--activation-gradient must be scale or ste, got '\(activationGradient)'")
            }
            guard let rounding = WeightRounding(rawValue: weightRounding.lowercased()) else {
                throw SwiftQuantError.invalidArgument("--weight-rounding must be rtn or gptq, got '\(weightRounding)'")
            }
            let act = aformat ?? abits.map { "int\($0)" }
            var kv: String?? = .none
            if let k = kvBits {
                if k.lowercased() == "none" { kv = .some(nil) } else {
                    guard let b = Int(k), (2...8).contains(b) else {
                        throw SwiftQuantError.invalidArgument("--kv-bits must be in 2...8 or none, got '\(k)'")
                    }
                    kv = .some("int\(b)")
                }
            }
            let recipe = QuantRecipe(method: m, wformat: format ?? "int\(wbits ?? 4)", groupSize: groupSize,
                                     symmetric: symmetric, preset: p, epochs: epochs, nsamples: nsamples, seqlen: seqlen,
                                     lr: lr, augLoss: augLoss, seed: seed,
                                     scaleConstraint: try scaleConstraint.map { name in
                                         guard let c = ScaleConstraint(rawValue: name), c != .none else {
                                             throw SwiftQuantError.invalidArgument("--scale-constraint must be m1 or m2, got '\(name)'")
                                         }
                                         return c
                                     } ?? .none, aformat: act, kvFormat: kv, actOrder: actOrder, lorcRank: lorc,
                                     let: useLET, letShifts: letShifts, letDown: letDown, alpha: alpha, letLr: letLr, precision: gemmPrecision,
                                     keepBest: keepBest, loss: calibrationLoss, activationGradient: actGradient,
                                     weightRounding: rounding)
            try recipe.validate()
            let config = try recipe.quantizerConfig
            try QuantizedExport.checkOutput(out)
            let calibPath = recipe.needsCalibrationData ? try calib ?? SharedData.calibrationPath() : nil
            let loaded = try LoadedModel.load(path: modelOptions.model)
            let start = Date()
            let work = recipe.needsCalibrationData ? out + ".\(method)-work" : nil
            let result = try CalibrationPipeline.quantize(loaded, recipe: recipe, calibrationPath: calibPath, workDir: work,
                                                          resume: resume)
            let q = result.quantized
            var info: [String: Any] = ["recipe": recipe.json]
            if let c = result.calibrationPath { info["calibration"] = c }
            let seconds = Date().timeIntervalSince(start)
            info["quantize_seconds"] = seconds
            try QuantizedExport.write(loaded, to: out, info: info)
            if let work { try? FileManager.default.removeItem(atPath: work) }
            print("wrote \(out): \(q.count) quantized linears, \(config), \(String(format: "%.1f", seconds)) s")
            if evalWindows > 0, let data = SharedData.wikitextTest() {
                let r = try Perplexity.evaluate(loaded, text: try Perplexity.readText(data), limit: evalWindows)
                printReport(r, model: out, data: data, json: false)
            }
        }
    }
}

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a model's config, tensors and tokenizer.")

    @Argument(help: "A Hugging Face model directory or a .gguf file.")
    var path: String

    @Flag(help: "List every tensor.")
    var tensors = false

    func run() throws {
        try runReportingErrors {
            let loaded = try LoadedModel.load(path: path)
            let m = loaded.model
            print("\(path)")
            print("  model_type \(m.modelType), \(m.numBlocks) blocks, hidden \(m.hiddenSize), vocab \(m.vocabSize)")
            let params = loaded.source.tensorInfos.reduce(0) { $0 + $1.shape.reduce(1, *) }
            print("  \(loaded.source.tensorInfos.count) tensors, \(params) parameters")
            if let t = loaded.tokenizer { print("  tokenizer: \(t.vocabSize) tokens") } else { print("  tokenizer: none") }
            print(loaded.configJSON)
            if tensors {
                for t in loaded.source.tensorInfos { print("  \(t.name) \(t.dtype.rawValue) \(t.shape)") }
            }
        }
    }
}

extension GroupSize: ExpressibleByArgument {
    /// `--group-size 128` or `--group-size per-row` (`GroupSize.parse`: 0 and negative sizes are refused).
    public init?(argument: String) {
        guard let g = try? GroupSize.parse(argument) else { return nil }
        self = g
    }
}

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a quantized model (a directory `swiftquant quantize` wrote) in a runtime's format.")

    @Option(help: "A directory written by `swiftquant quantize` (or any model SwiftQuant loads).")
    var model: String

    @Option(help: "gguf (llama.cpp), compressed-tensors (transformers, vLLM), gptq (GPTQ checkpoint) or swiftquant.")
    var format: String

    @Option(help: "Output: a .gguf file, or a directory for the other formats.")
    var out: String

    @Flag(help: "Allow re-quantizing tensors the format cannot hold exactly (each tensor's error is printed).")
    var requantize = false

    func run() throws {
        try runReportingErrors {
            let f = try ExportFormat.parse(format)
            let loaded = try LoadedModel.load(path: model)
            try ModelExport.write(loaded, format: f, to: out, options: ExportOptions(requantize: requantize))
            print("wrote \(out) (\(f.rawValue))")
        }
    }
}
