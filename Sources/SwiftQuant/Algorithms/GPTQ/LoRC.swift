import Foundation

/// Low-rank factors of a quantization residual: `E ≈ u · v`.
public struct LoRCFactors: Sendable {
    /// `U' = U_r·Σ_r^½`, [out, r] (FP16-rounded unless asked otherwise).
    public let u: Tensor
    /// `V' = Σ_r^½·V_rᵀ`, [r, in].
    public let v: Tensor
    /// The singular values used (descending; float64 estimates), [r].
    public let singularValues: [Double]
    /// `‖E‖_F` and `‖E − u·v‖_F` (float64 sums of the float32 values).
    public let residualNormBefore: Double
    public let residualNormAfter: Double
    /// Components dropped (their factors zeroed) because FP16 rounding made them increase the residual (normally 0).
    public let droppedComponents: Int
}

/// Low-Rank Compensation (ZeroQuant-V2; ALGORITHMS.md §6): the rank-r truncated SVD of the residual `E = W − Ŵ`,
/// `U' = U_r·Σ_r^½`, `V' = Σ_r^½·V_rᵀ`, applied as `Ŵ + U'V'`.
///
/// The SVD: with `E` transposed if needed so that `in ≤ out`, the right singular vectors are the eigenvectors of
/// the Gram matrix `G = EᵀE` (one float32 GEMM, then float64). Ranks below half the Gram size use a randomized
/// subspace iteration (`r + 8` seeded Gaussian vectors, 6 power steps with re-orthonormalization, then the small
/// projected eigenproblem); larger ranks diagonalize `G` completely (cyclic Jacobi, about 2n³ per sweep: meant for
/// small matrices). Then `σ_i = ‖E·v_i‖` directly (not from the eigenvalue), `U' = E·v_i / √σ_i`,
/// `V' = √σ_i · v_iᵀ`, so `U'V' = E·V_r·V_rᵀ`: an orthogonal projection, whose residual never exceeds `‖E‖` and is 0
/// at full rank up to float rounding. After rounding to FP16 the residual is measured; trailing components that
/// would make it larger than `‖E‖` are zeroed (reported in `droppedComponents`).
public enum LoRC {
    public static let defaultRank = 8

    /// Factors of `residual` [out, in] of rank `rank` (1 ≤ rank ≤ min(out, in)). `roundToFP16: false` keeps the
    /// float32 factors (for the full-rank test); `seed` fixes the random start of the subspace iteration.
    public static func compensate(residual e: Tensor, rank: Int = defaultRank, roundToFP16: Bool = true,
                                  seed: UInt64 = 0x5EED) throws -> LoRCFactors {
        try require(e.rank == 2, "LoRC: the residual must be 2-D [out, in], got shape \(e.shape)")
        let out = e.shape[0], inn = e.shape[1]
        try require(out > 0 && inn > 0, "LoRC: the residual is empty: \(e.shape)")
        try require(rank >= 1 && rank <= min(out, inn),
                    "LoRC: rank \(rank) must lie in 1 ... min(out, in) = \(min(out, inn)) for a [\(out), \(inn)] matrix")
        if let bad = e.buffer.firstIndex(where: { !$0.isFinite }) {
            throw SwiftQuantError.nonFinite("LoRC: the residual contains \(e.buffer[bad]) at [\(bad / inn), \(bad % inn)]")
        }
        // Work on A = E or Eᵀ with rows ≥ cols.
        let transposed = out < inn
        let rows = transposed ? inn : out, cols = transposed ? out : inn
        let a: [Float]
        if transposed {
            var t = [Float](repeating: 0, count: rows * cols)
            for i in 0..<out { for j in 0..<inn { t[j * cols + i] = e.buffer[i * inn + j] } }
            a = t
        } else {
            a = Array(e.buffer)
        }
        // G = AᵀA [cols, cols].
        var g32 = [Float](repeating: 0, count: cols * cols)
        a.withUnsafeBufferPointer { ab in
            g32.withUnsafeMutableBufferPointer { gb in
                BLAS.sgemm(transA: true, m: cols, n: cols, k: rows, a: ab.baseAddress!, lda: cols, b: ab.baseAddress!,
                           ldb: cols, c: gb.baseAddress!, ldc: cols)
            }
        }
        var g = g32.map(Double.init)
        for i in 0..<cols { for j in 0..<i { let s = (g[i * cols + j] + g[j * cols + i]) / 2; g[i * cols + j] = s; g[j * cols + i] = s } }
        let vecs = topEigenvectors(g, n: cols, count: rank, seed: seed)  // [cols, rank]

        // A·v_i in float64, σ_i = ‖A·v_i‖.
        var av = [Double](repeating: 0, count: rows * rank)
        for i in 0..<rows {
            for c in 0..<cols {
                let x = Double(a[i * cols + c])
                if x == 0 { continue }
                for k in 0..<rank { av[i * rank + k] += x * vecs[c * rank + k] }
            }
        }
        var sigma = [Double](repeating: 0, count: rank)
        for k in 0..<rank {
            var s = 0.0
            for i in 0..<rows { s += av[i * rank + k] * av[i * rank + k] }
            sigma[k] = s.squareRoot()
        }
        let order = (0..<rank).sorted { sigma[$0] > sigma[$1] || (sigma[$0] == sigma[$1] && $0 < $1) }
        func round(_ x: Double) -> Float {
            roundToFP16 ? HalfConv.f16ToF32(HalfConv.f32ToF16(Float(x))) : Float(x)
        }
        // For A: A ≈ P·Q with P = A·v/√σ [rows, rank], Q = √σ·vᵀ [rank, cols].
        var p = [Float](repeating: 0, count: rows * rank), q = [Float](repeating: 0, count: rank * cols)
        for (k, src) in order.enumerated() where sigma[src] > 0 {
            let rs = sigma[src].squareRoot()
            for i in 0..<rows { p[i * rank + k] = round(av[i * rank + src] / rs) }
            for c in 0..<cols { q[k * cols + c] = round(rs * vecs[c * rank + src]) }
        }
        // E = A or Aᵀ: u = P, v = Q, or u = Qᵀ, v = Pᵀ.
        let u = Tensor(zeros: [out, rank]), v = Tensor(zeros: [rank, inn])
        func fill() {
            if transposed {
                for i in 0..<out { for k in 0..<rank { u.pointer[i * rank + k] = q[k * cols + i] } }
                for k in 0..<rank { for j in 0..<inn { v.pointer[k * inn + j] = p[j * rank + k] } }
            } else {
                u.pointer.update(from: p, count: p.count)
                v.pointer.update(from: q, count: q.count)
            }
        }
        fill()
        let before = frobenius(e.buffer)
        var after = residualNorm(e, u: u, v: v, rank: rank)
        var dropped = 0
        while after > before && dropped < rank {
            // Zero the weakest remaining component.
            let k = rank - 1 - dropped
            for i in 0..<rows { p[i * rank + k] = 0 }
            for c in 0..<cols { q[k * cols + c] = 0 }
            dropped += 1
            fill()
            after = residualNorm(e, u: u, v: v, rank: rank)
        }
        return LoRCFactors(u: u, v: v, singularValues: order.map { sigma[$0] }, residualNormBefore: before,
                           residualNormAfter: after, droppedComponents: dropped)
    }

    static func frobenius(_ x: UnsafeMutableBufferPointer<Float>) -> Double {
        var s = 0.0
        for v in x { s += Double(v) * Double(v) }
        return s.squareRoot()
    }

    /// `‖E − u·v‖_F` (the product in float32 through BLAS, the difference and sum in float64).
    static func residualNorm(_ e: Tensor, u: Tensor, v: Tensor, rank: Int) -> Double {
        let out = e.shape[0], inn = e.shape[1]
        let prod = Tensor(zeros: [out, inn])
        BLAS.sgemm(m: out, n: inn, k: rank, a: u.pointer, lda: rank, b: v.pointer, ldb: inn, c: prod.pointer, ldc: inn)
        var s = 0.0
        for i in 0..<(out * inn) {
            let d = Double(e.pointer[i]) - Double(prod.pointer[i])
            s += d * d
        }
        return s.squareRoot()
    }

    /// The `count` leading eigenvectors of the symmetric positive semidefinite n×n `g`, as columns of [n, count].
    static func topEigenvectors(_ g: [Double], n: Int, count: Int, seed: UInt64) -> [Double] {
        let k = min(n, count + 8)
        if 2 * k >= n || n <= 64 {
            let (_, vectors) = DenseLinearAlgebra.symmetricEigen(g, n: n)
            var out = [Double](repeating: 0, count: n * count)
            for i in 0..<n { for j in 0..<count { out[i * count + j] = vectors[i * n + j] } }
            return out
        }
        // Randomized subspace iteration on G.
        var rng = SplitMix64(seed: seed)
        func next() -> Double { rng.nextUnit() }
        var y = [Double](repeating: 0, count: n * k)  // [n, k]
        for i in 0..<(n * k) { y[i] = (-2 * log(max(next(), 1e-300))).squareRoot() * cos(2 * .pi * next()) }
        orthonormalize(&y, n: n, k: k)
        for _ in 0..<6 {
            y = product(g, y, m: n, k: n, n: k)
            orthonormalize(&y, n: n, k: k)
        }
        // B = Yᵀ G Y [k, k], its eigenvectors W, V = Y·W (the first `count` columns).
        var b = product(y, product(g, y, m: n, k: n, n: k), m: k, k: n, n: k, transA: true)
        for a in 0..<k { for c in 0..<a { let s = (b[a * k + c] + b[c * k + a]) / 2; b[a * k + c] = s; b[c * k + a] = s } }
        let (_, w) = DenseLinearAlgebra.symmetricEigen(b, n: k)
        let v = product(y, w, m: n, k: k, n: k)
        return (0..<(n * count)).map { v[($0 / count) * k + $0 % count] }
    }

    /// `a·b` in float64, `a` [m, k] (stored [k, m] when `transA`), `b` [k, n]; every output element sums over the
    /// inner index in increasing order.
    static func product(_ a: [Double], _ b: [Double], m: Int, k: Int, n: Int, transA: Bool = false) -> [Double] {
        var out = [Double](repeating: 0, count: m * n)
        for i in 0..<m {
            for p in 0..<k {
                let x = transA ? a[p * m + i] : a[i * k + p]
                for j in 0..<n { out[i * n + j] += x * b[p * n + j] }
            }
        }
        return out
    }

    /// Modified Gram–Schmidt, twice, on the k columns of `y` [n, k]; a column that vanishes is left at 0.
    static func orthonormalize(_ y: inout [Double], n: Int, k: Int) {
        for _ in 0..<2 {
            for a in 0..<k {
                for b in 0..<a {
                    var d = 0.0
                    for i in 0..<n { d += y[i * k + a] * y[i * k + b] }
                    for i in 0..<n { y[i * k + a] -= d * y[i * k + b] }
                }
                var s = 0.0
                for i in 0..<n { s += y[i * k + a] * y[i * k + a] }
                let nrm = s.squareRoot()
                for i in 0..<n { y[i * k + a] = nrm > 0 ? y[i * k + a] / nrm : 0 }
            }
        }
    }
}
