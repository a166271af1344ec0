import XCTest
import SwiftQuant

final class SmokeTests: XCTestCase {
    func testBLASMatchesReference() {
        let m = 7, n = 5, k = 9
        let a = (0..<(m * k)).map { Float($0 % 13) - 6 }
        let b = (0..<(k * n)).map { Float($0 % 7) - 3 }
        var c1 = [Float](repeating: 0, count: m * n), c2 = c1
        BLAS.sgemm(m: m, n: n, k: k, a: a, lda: k, b: b, ldb: n, c: &c1, ldc: n)
        Reference.sgemm(transA: false, transB: false, m: m, n: n, k: k, alpha: 1, a: a, lda: k, b: b, ldb: n,
                        beta: 0, c: &c2, ldc: n)
        XCTAssertEqual(c1, c2)  // small integers: exact in any summation order
    }
}
