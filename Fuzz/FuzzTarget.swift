// libFuzzer entry point for the model-file parsers and checkpoint importers (built by Fuzz/run.sh, not by SwiftPM).
// The first input byte picks the target (byte % 5): 0 safetensors, 1 GGUF, 2 GPTQ import, 3 compressed-tensors
// import, 4 SwiftQuant's saved quantization; the rest is the file (for the importers: see
// `FormatFuzz.checkpointInput`). Every target takes untrusted bytes and must only ever throw.
// SWIFTQUANT_FUZZ_TARGET=N pins every input to target N (one importer per fuzzing run), whatever its first byte.
import Foundation
import SwiftQuant

let pinnedTarget: UInt8? = ProcessInfo.processInfo.environment["SWIFTQUANT_FUZZ_TARGET"].flatMap { UInt8($0) }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 0 else { return 0 }
    let body = UnsafeRawBufferPointer(start: data + 1, count: size - 1)
    switch (pinnedTarget ?? data[0]) % 5 {
    case 0: FormatFuzz.parseSafetensors(body)
    case 1: FormatFuzz.parseGGUF(body)
    case 2: FormatFuzz.importCheckpoint(body, method: "gptq")
    case 3: FormatFuzz.importCheckpoint(body, method: "compressed-tensors")
    default: FormatFuzz.readSavedQuantization(body)
    }
    return 0
}

/// With SWIFTQUANT_FUZZ_SEEDS set to a directory, writes the importer seeds there before fuzzing starts
/// (libFuzzer calls this before it reads the corpus).
@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> Int32 {
    guard let dir = ProcessInfo.processInfo.environment["SWIFTQUANT_FUZZ_SEEDS"], !dir.isEmpty else { return 0 }
    do {
        for (name, bytes) in try FormatFuzz.importSeeds() {
            try Data(bytes).write(to: URL(fileURLWithPath: dir + "/seed-" + name))
        }
    } catch {
        FileHandle.standardError.write(Data("seed writing failed: \(error)\n".utf8))
        exit(1)
    }
    return 0
}
