import SwiftQuant

/// Entry points for a libFuzzer-style harness: parse untrusted bytes with each file reader entirely in memory,
/// decode every tensor, and swallow the thrown errors. Any crash, trap or hang here is a bug. Memory use is
/// bounded by a small multiple of the input size (decoded float32 is at most ~7× the stored bytes).
public enum FormatFuzz {
    public static func parseSafetensors(_ bytes: UnsafeRawBufferPointer) {
        guard let f = try? SafetensorsFile(bytes: bytes, name: "fuzz") else { return }
        _ = f.metadata.count
        for t in f.tensorInfos {
            _ = try? f.rawBytes(t.name)
            _ = f.isZeroCopy(t.name)
            _ = try? f.float32(t.name)
        }
    }

    public static func parseGGUF(_ bytes: UnsafeRawBufferPointer) {
        guard let g = try? GGUFFile(bytes: bytes, name: "fuzz") else { return }
        for k in g.keys {
            let v = g.metadata[k]
            _ = v?.int
            _ = v?.double
            _ = v?.stringArray
        }
        for t in g.tensors {
            _ = try? g.data(t.name)
            _ = try? g.float32(t.name)
        }
        if let src = try? GGUFTensorSource(file: g) {
            for t in src.tensorInfos { _ = try? src.float32(t.name) }
        }
    }
}
