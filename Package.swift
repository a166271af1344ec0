// swift-tools-version:6.0
import PackageDescription

// No unsafe flags: the package builds for the baseline of its platform and works as a versioned dependency.
// Hot C kernels carry per-function target attributes and are chosen at run time from the CPU's features
// (Sources/CSQSupport; $SWIFTQUANT_KERNELS=reference forces their scalar twins). Builds for the machine they run on
// (the Makefile, python/setup.py) add `-Xswiftc -target-cpu -Xswiftc <cpu>` themselves; see README "Kernels and CPU dispatch".

let package = Package(
    name: "SwiftQuant",
    products: [
        .library(name: "SwiftQuant", targets: ["SwiftQuant"]),
        .library(name: "SwiftQuantCABI", type: .dynamic, targets: ["SwiftQuantCABI"]),
        .executable(name: "swiftquant", targets: ["SwiftQuantCLI"]),
        .executable(name: "swiftquant-example", targets: ["SwiftQuantExample"]),
    ],
    dependencies: [
        // Used by the command-line tool only; the SwiftQuant library product does not depend on it.
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // C support code: BLAS loaded at run time (so the right kernel is chosen before it initialises), CPU
        // feature detection and kernel dispatch, the fused int4 kernel, monotonic clock.
        .target(name: "CSQSupport", linkerSettings: [.linkedLibrary("dl")]),
        // The C ABI's source of truth: include/swiftquant.h. Header only (the .c file is empty).
        .target(name: "CSwiftQuant"),
        .target(name: "SwiftQuant", dependencies: ["CSQSupport"]),
        .target(name: "SwiftQuantCABI", dependencies: ["SwiftQuant", "CSwiftQuant"]),
        .executableTarget(
            name: "SwiftQuantCLI",
            dependencies: ["SwiftQuant", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .executableTarget(name: "SwiftQuantExample", dependencies: ["SwiftQuant"], path: "Examples/swift"),
        // The parsers' fuzz entry points (Fuzz/run.sh builds them with libFuzzer; the tests run them too).
        .target(name: "SwiftQuantFuzz", dependencies: ["SwiftQuant"], path: "Fuzz", exclude: ["run.sh", "FuzzTarget.swift"],
                sources: ["FormatFuzz.swift"]),
        .testTarget(
            name: "SwiftQuantTests",
            dependencies: ["SwiftQuant", "SwiftQuantFuzz", "CSQSupport"],
            resources: [.copy("Fixtures")]
        ),
    ],
    swiftLanguageModes: [.v5]
)
