import CSQSupport

/// Library version and build facts.
public enum SwiftQuantInfo {
    /// Semantic version of the library, the C ABI and the Python module (kept equal).
    public static let version = "0.1.0"
    /// Incremented on every incompatible change of `swiftquant.h`.
    public static let abiVersion: Int32 = 2

    /// The processor this process runs on, with the SIMD features that decide kernels.
    public static var cpu: String {
        var f = sqs_cpu_features()
        sqs_cpu_detect(&f)
        let brand = withUnsafeBytes(of: f.brand) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        var feats: [String] = []
        if f.avx2 != 0 { feats.append("AVX2") }
        if f.fma != 0 { feats.append("FMA") }
        if f.avx512f != 0 { feats.append("AVX-512") }
        if f.avx512bf16 != 0 { feats.append("AVX512-BF16") }
        if f.amxbf16 != 0 { feats.append("AMX-BF16") }
        return "\(brand.isEmpty ? "unknown CPU" : brand) (\(feats.isEmpty ? "no AVX" : feats.joined(separator: ", ")))"
    }
}
