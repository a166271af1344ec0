// libFuzzer entry point for the model-file parsers (built by Fuzz/run.sh, not by SwiftPM). The first input byte
// picks the parser; the rest is the file. Both parsers take untrusted bytes and must only ever throw.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 0 else { return 0 }
    let body = UnsafeRawBufferPointer(start: data + 1, count: size - 1)
    if data[0] & 1 == 0 { FormatFuzz.parseSafetensors(body) } else { FormatFuzz.parseGGUF(body) }
    return 0
}
