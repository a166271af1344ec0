import Foundation
import XCTest
import SwiftQuant

/// Deterministic normal samples (SplitMix64 + Box–Muller) so the tests never depend on a random seed.
struct TestRNG {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func uniform() -> Double { Double(next() >> 11) / Double(1 << 53) }
    mutating func normal() -> Double {
        let u1 = max(uniform(), 1e-300), u2 = uniform()
        return (-2 * Foundation.log(u1)).squareRoot() * Foundation.cos(2 * Double.pi * u2)
    }
    mutating func floats(_ n: Int, scale: Double = 1, shift: Double = 0) -> [Float] {
        (0..<n).map { _ in Float(normal() * scale + shift) }
    }
}

/// Tests pass `tensor.pointer` straight into kernels; Swift may end a local's lifetime right after its last use
/// (the `.pointer` read), so every tensor a test makes is retained here until the process ends.
final class TestArena: @unchecked Sendable {
    static let shared = TestArena()
    private let lock = NSLock()
    private var kept: [Tensor] = []
    func keep(_ t: Tensor) -> Tensor { lock.lock(); kept.append(t); lock.unlock(); return t }
}

func tensor(_ values: [Float], _ shape: [Int]? = nil) -> Tensor {
    TestArena.shared.keep(Tensor(shape: shape ?? [values.count], values: values))
}

func zeros(_ shape: [Int]) -> Tensor { TestArena.shared.keep(Tensor(zeros: shape)) }

/// max |a − ref| / max |ref|.
func relativeError(_ a: [Float], _ ref: [Float]) -> Double {
    precondition(a.count == ref.count, "length \(a.count) vs \(ref.count)")
    var num = 0.0, den = 0.0
    for i in a.indices {
        num = max(num, abs(Double(a[i]) - Double(ref[i])))
        den = max(den, abs(Double(ref[i])))
    }
    return den == 0 ? num : num / den
}

func relativeError(_ a: [Float], _ ref: [Double]) -> Double {
    relativeError(a.map { Double($0) }, ref)
}

func relativeError(_ a: [Double], _ ref: [Double]) -> Double {
    var num = 0.0, den = 0.0
    for i in a.indices {
        num = max(num, abs(a[i] - ref[i]))
        den = max(den, abs(ref[i]))
    }
    return den == 0 ? num : num / den
}

func assertClose(_ a: [Float], _ ref: [Float], _ tol: Double = 1e-4, _ what: String,
                 file: StaticString = #filePath, line: UInt = #line) {
    let e = relativeError(a, ref)
    XCTAssertLessThanOrEqual(e, tol, "\(what): relative error \(e)", file: file, line: line)
}

/// The PyTorch fixtures written by Fixtures/make_autodiff_fixtures.py: one safetensors file (float32 tensors) whose
/// metadata holds each case's settings as JSON under "meta".
final class AutodiffFixtures {
    static let shared: AutodiffFixtures = {
        do { return try AutodiffFixtures() } catch { fatalError("cannot load autodiff fixtures: \(error)") }
    }()

    let file: SafetensorsFile
    let meta: [String: [String: Any]]

    init() throws {
        guard let url = Bundle.module.url(forResource: "autodiff_fixtures", withExtension: "safetensors",
                                          subdirectory: "Fixtures")
        else { throw SwiftQuantError.io("autodiff fixtures missing from the test bundle") }
        file = try SafetensorsFile(path: url.path)
        guard let json = file.metadata["meta"]?.data(using: .utf8),
              let m = try JSONSerialization.jsonObject(with: json) as? [String: [String: Any]]
        else { throw SwiftQuantError.format("autodiff fixtures: no \"meta\" metadata") }
        meta = m
    }

    /// A fresh float32 copy (retained for the whole test run, see `TestArena`).
    func tensor(_ name: String) -> Tensor {
        do {
            let t = try file.float32(name)
            return TestArena.shared.keep(t.copy())
        } catch { fatalError("fixture \(name): \(error)") }
    }

    func array(_ name: String) -> [Float] { tensor(name).array }
    func shape(_ name: String) -> [Int] { tensor(name).shape }

    func int(_ group: String, _ key: String) -> Int { (meta[group]![key] as! NSNumber).intValue }
    func double(_ group: String, _ key: String) -> Double { (meta[group]![key] as! NSNumber).doubleValue }
    func bool(_ group: String, _ key: String) -> Bool { (meta[group]![key] as! NSNumber).boolValue }
}
