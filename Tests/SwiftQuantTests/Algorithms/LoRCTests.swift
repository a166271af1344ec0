import Foundation
import SwiftQuant
import XCTest

/// LoRC (ALGORITHMS.md §6): the residual norm never grows, full rank removes it, rank r is close to the optimal
/// truncation, bad ranks are refused.
final class LoRCTests: XCTestCase {
    static func frobenius(_ t: Tensor) -> Double { t.array.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot() }

    /// ‖E − U·V‖_F computed here, in float64.
    static func residual(_ e: Tensor, _ f: LoRCFactors) -> Double {
        let m = e.shape[0], n = e.shape[1], r = f.u.shape[1]
        var s = 0.0
        for i in 0..<m {
            for j in 0..<n {
                var p = 0.0
                for k in 0..<r { p += Double(f.u.pointer[i * r + k]) * Double(f.v.pointer[k * n + j]) }
                let d = Double(e.pointer[i * n + j]) - p
                s += d * d
            }
        }
        return s.squareRoot()
    }

    /// A matrix with a decaying spectrum: Σ_k 0.8^k · a_k b_kᵀ plus noise.
    static func decaying(_ m: Int, _ n: Int, seed: UInt64) -> Tensor {
        var rng = SplitMix64(seed: seed)
        let t = Tensor(zeros: [m, n])
        for k in 0..<min(m, n, 24) {
            let a = (0..<m).map { _ in rng.gaussian() }, b = (0..<n).map { _ in rng.gaussian() }
            let w = Float(pow(0.8, Double(k)))
            for i in 0..<m { for j in 0..<n { t.pointer[i * n + j] += w * a[i] * b[j] } }
        }
        for i in 0..<(m * n) { t.pointer[i] += 0.05 * rng.gaussian() }
        return t
    }

    func testResidualNeverGrows() throws {
        for (m, n, seed) in [(24, 40, 1), (40, 24, 2), (96, 64, 3), (200, 150, 4), (150, 200, 5)] as [(Int, Int, UInt64)] {
            let e = GPTQTests.randomMatrix(m, n, seed: seed, scale: 0.01)
            let d = Self.decaying(m, n, seed: seed + 100)
            for t in [e, d] {
                for r in [1, 8, 16] {
                    let f = try LoRC.compensate(residual: t, rank: r)
                    XCTAssertEqual(f.u.shape, [m, r]); XCTAssertEqual(f.v.shape, [r, n])
                    let before = Self.frobenius(t), after = Self.residual(t, f)
                    XCTAssertLessThanOrEqual(after, before, "[\(m), \(n)] rank \(r)")
                    XCTAssertEqual(after, f.residualNormAfter, accuracy: 1e-4 * before)
                    // FP16-rounded factors.
                    for v in f.u.array + f.v.array {
                        XCTAssertEqual(v, Float(Float16(v)), "factor \(v) is not an FP16 value")
                    }
                }
            }
        }
    }

    func testFullRankRemovesResidual() throws {
        for (m, n) in [(24, 40), (40, 24), (32, 32)] {
            let e = GPTQTests.randomMatrix(m, n, seed: UInt64(m * n))
            let f = try LoRC.compensate(residual: e, rank: min(m, n), roundToFP16: false)
            let rel = Self.residual(e, f) / Self.frobenius(e)
            XCTAssertLessThan(rel, 1e-5, "[\(m), \(n)]")
        }
    }

    /// The randomized path (rank 8 of a 150-column Gram matrix) is within 0.1% of the exact truncation's residual
    /// (the full Jacobi path at rank 8 on the same matrix: its Gram matrix diagonalized completely).
    func testRankEightNearOptimal() throws {
        let e = Self.decaying(200, 150, seed: 9)
        let f = try LoRC.compensate(residual: e, rank: 8, roundToFP16: false)
        let full = try LoRC.compensate(residual: e, rank: 75, roundToFP16: false)  // 2·(75 + 8) ≥ 150: full Jacobi
        var best = 0.0
        let total = Self.frobenius(e)
        for s in full.singularValues.prefix(8) { best += s * s }
        let optimal = (total * total - best).squareRoot()
        XCTAssertLessThanOrEqual(Self.residual(e, f), optimal * 1.001)
    }

    /// Rank 8 of a [1536, 576] residual (SmolLM2's gate/up shape): the time (printed; the machine may be shared).
    func testSmolLM2SizedResidual() throws {
        let e = Self.decaying(1536, 576, seed: 12)
        let t0 = Date()
        let f = try LoRC.compensate(residual: e, rank: 8)
        let seconds = Date().timeIntervalSince(t0)
        print(String(format: "LoRC [1536, 576] rank 8: %.3f s; ‖E‖ %.3f → %.3f", seconds, f.residualNormBefore,
                     f.residualNormAfter))
        XCTAssertLessThan(f.residualNormAfter, f.residualNormBefore)
        XCTAssertEqual(f.droppedComponents, 0)
    }

    func testBadRanks() throws {
        let e = GPTQTests.randomMatrix(8, 12, seed: 1)
        XCTAssertThrowsSwiftQuantError(try LoRC.compensate(residual: e, rank: 0), contains: "rank 0")
        XCTAssertThrowsSwiftQuantError(try LoRC.compensate(residual: e, rank: 9), contains: "min(out, in) = 8")
        let n = e.copy(); n.pointer[3] = .infinity
        XCTAssertThrowsError(try LoRC.compensate(residual: n, rank: 2))
        XCTAssertThrowsSwiftQuantError(try LoRC.compensate(residual: Tensor(zeros: [96]), rank: 2), contains: "2-D")
    }
}
