import CSQSupport
import Foundation

/// Which kernels run: the fast ones (C kernels chosen from the CPU's features, Swift SIMD kernels) or their scalar
/// twins. Every fast kernel has a scalar twin with the same signature (`Kernels.Reference`,
/// `QuantKernels.Reference`, `FakeQuantLWC.forwardReference` / `backwardReference`, the C
/// `sqs_quant_int4_packed_reference`) and a parity test comparing the two (Tests/SwiftQuantTests/Kernels).
///
/// `SWIFTQUANT_KERNELS=reference` in the environment (read once, at first use) forces the scalar twins
/// everywhere; anything else, or nothing, is the automatic choice.
public enum KernelDispatch {
    /// True when `$SWIFTQUANT_KERNELS` is `reference`: every dispatched kernel runs its scalar twin.
    public static let reference: Bool = ProcessInfo.processInfo.environment["SWIFTQUANT_KERNELS"] == "reference"

    /// The C kernels' level in use: `"avx2"` (AVX2 + FMA, per-function target attributes) or `"reference"`.
    public static var cKernels: String { String(cString: sqs_kernels_name()) }

    /// Whether this CPU can run the AVX2 + FMA C kernels (whatever `$SWIFTQUANT_KERNELS` says).
    public static var avx2Available: Bool { sqs_kernels_available(Int32(SQS_KERNELS_AVX2)) != 0 }

    /// One line for `--version` and benchmarks, e.g. `kernels: avx2 (C, chosen from CPUID); Swift SIMD`.
    public static var description: String {
        reference ? "kernels: reference (SWIFTQUANT_KERNELS=reference: scalar twins everywhere)"
            : "kernels: C \(cKernels) (chosen at load from the CPU's features), Swift SIMD"
    }
}
