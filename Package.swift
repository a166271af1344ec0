// swift-tools-version:6.0
import PackageDescription

// Hot kernels are compiled for x86-64 with AVX2 + FMA (every machine this project runs on has them; see
// ../shared/docs/PERFORMANCE.md). Set SWIFTQUANT_PORTABLE=1 to build for the plain baseline instead.
#if arch(x86_64)
let portable = Context.environment["SWIFTQUANT_PORTABLE"] != nil
let cpuFlags: [SwiftSetting] = portable ? [] : [.unsafeFlags(["-target-cpu", "haswell"])]
let cCpuFlags: [CSetting] = portable ? [] : [.unsafeFlags(["-mavx2", "-mfma", "-mf16c"])]
#else
let cpuFlags: [SwiftSetting] = []
let cCpuFlags: [CSetting] = []
#endif

let package = Package(
    name: "SwiftQuant",
    products: [
        .library(name: "SwiftQuant", targets: ["SwiftQuant"]),
        .library(name: "SwiftQuantCABI", type: .dynamic, targets: ["SwiftQuantCABI"]),
        .executable(name: "swiftquant", targets: ["SwiftQuantCLI"]),
        .executable(name: "swiftquant-example", targets: ["SwiftQuantExample"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // C support code: BLAS loaded at run time (so the right kernel is chosen before it initialises), CPU
        // feature detection, monotonic clock.
        .target(name: "CSQSupport", cSettings: cCpuFlags, linkerSettings: [.linkedLibrary("dl")]),
        // The C ABI's source of truth: include/swiftquant.h. Header only (the .c file is empty).
        .target(name: "CSwiftQuant"),
        .target(
            name: "SwiftQuant",
            dependencies: ["CSQSupport"],
            swiftSettings: cpuFlags
        ),
        .target(
            name: "SwiftQuantCABI",
            dependencies: ["SwiftQuant", "CSwiftQuant"],
            swiftSettings: cpuFlags
        ),
        .executableTarget(
            name: "SwiftQuantCLI",
            dependencies: ["SwiftQuant", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: cpuFlags
        ),
        .executableTarget(name: "SwiftQuantExample", dependencies: ["SwiftQuant"], path: "Examples/swift"),
        .testTarget(
            name: "SwiftQuantTests",
            dependencies: ["SwiftQuant"],
            resources: [.copy("Fixtures")],
            swiftSettings: cpuFlags
        ),
    ],
    swiftLanguageModes: [.v5]
)
