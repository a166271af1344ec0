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
            \(KernelDispatch.description)
            """,
        subcommands: [Eval.self, Quantize.self, Export.self, Inspect.self, Bench.self]
    )
}
