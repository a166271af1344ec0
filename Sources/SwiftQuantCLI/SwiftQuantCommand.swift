import ArgumentParser
import SwiftQuant

@main
struct SwiftQuantCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swiftquant",
        abstract: "Post-training quantization of large language models (RTN, OmniQuant LWC, ZeroQuant-FP formats).",
        version: """
            swiftquant \(SwiftQuantInfo.version) (C ABI \(SwiftQuantInfo.abiVersion))
            CPU:  \(SwiftQuantInfo.cpu)
            BLAS: \(BLAS.description)
            bf16: \(GEMMPrecision.bf16.isSupported ? BLAS.bf16Description : "no bf16 arithmetic on this CPU")
            \(KernelDispatch.description)
            """,
        subcommands: [Eval.self, Quantize.self, Export.self, Inspect.self, Bench.self]
    )
}
