import Foundation

extension Autodiff {
    /// Causal softmax attention with grouped-query heads (HF `repeat_kv`: query head `h` reads kv head
    /// `h / (heads / kvHeads)`), scale `1/√headDim`; the softmax is the forward pass's (vectorised `exp`).
    /// Inputs are token-major: `q`, `out` `[rows, heads·d]`, `k`, `v` `[rows, kvHeads·d]`; position `t` attends
    /// to positions `0...t`.
    ///
    /// The object owns its saved state (the probabilities, `[heads, rows, rows]`) and scratch, allocated once for
    /// `maxRows`; `backward` uses the probabilities of the last `forward`.
    public final class CausalAttention {
        public let heads: Int, kvHeads: Int, headDim: Int, maxRows: Int
        /// Rows per block of the causal products (see `blocks`).
        public let blockRows: Int
        public let scale: Float
        /// Softmax probabilities of the last forward, `[heads, rows, rows]` (row stride `rows`); entries right of
        /// the end of a row's block are not written.
        public let probs: Tensor
        private let scratch: Tensor
        private var lastRows = 0

        public init(heads: Int, kvHeads: Int, headDim: Int, maxRows: Int, blockRows: Int = 64) throws {
            try require(blockRows > 0, "attention: blockRows must be positive")
            self.blockRows = blockRows
            try require(heads > 0 && kvHeads > 0 && heads % kvHeads == 0,
                        "attention: heads (\(heads)) must be a positive multiple of kv heads (\(kvHeads))")
            try require(headDim > 0 && maxRows > 0, "attention: headDim and maxRows must be positive")
            self.heads = heads; self.kvHeads = kvHeads; self.headDim = headDim; self.maxRows = maxRows
            scale = 1 / Float(headDim).squareRoot()
            probs = Tensor(zeros: [heads, maxRows, maxRows])
            scratch = Tensor(zeros: [maxRows, maxRows])
        }

        /// Row blocks `[r0, r1)` of the causal products: block b only needs key columns `0..<r1`, which skips
        /// about half of the work of the full `rows × rows` products.
        @inline(__always)
        private func blocks(_ T: Int) -> [(Int, Int)] {
            stride(from: 0, to: T, by: blockRows).map { ($0, Swift.min(T, $0 + blockRows)) }
        }

        public func forward(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                            out: UnsafeMutablePointer<Float>, rows: Int) {
            precondition(rows <= maxRows && rows > 0, "attention: \(rows) rows, capacity \(maxRows)")
            lastRows = rows
            let d = headDim, qw = heads * d, kw = kvHeads * d, rep = heads / kvHeads, T = rows
            let bl = blocks(T)
            for h in 0..<heads {
                let g = h / rep
                let p = probs.pointer + h * T * T
                // S = scale · Q·Kᵀ, lower block triangle only
                for (r0, r1) in bl {
                    BLAS.sgemm(transB: true, m: r1 - r0, n: r1, k: d, alpha: scale, a: q + r0 * qw + h * d, lda: qw,
                               b: k + g * d, ldb: kw, c: p + r0 * T, ldc: T)
                }
                // row softmax over 0...t; zeros up to the end of the row's block (what the products read)
                let br = blockRows
                parallelFor(T, minChunk: Swift.max(1, 8192 / T)) { range in
                    for t in range {
                        Kernels.softmaxRow(p + t * T, valid: t + 1, total: Swift.min(T, (t / br + 1) * br))
                    }
                }
                // O = P·V
                for (r0, r1) in bl {
                    BLAS.sgemm(m: r1 - r0, n: d, k: r1, a: p + r0 * T, lda: T, b: v + g * d, ldb: kw,
                               c: out + r0 * qw + h * d, ldc: qw)
                }
            }
        }

        /// Writes `dQ` and `dK`, `dV` (the kv gradients sum over the query heads of each group).
        public func backward(dOut: UnsafePointer<Float>, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                             v: UnsafePointer<Float>, dQ: UnsafeMutablePointer<Float>,
                             dK: UnsafeMutablePointer<Float>, dV: UnsafeMutablePointer<Float>, rows: Int) {
            precondition(rows == lastRows, "attention backward: \(rows) rows, forward saw \(lastRows)")
            let d = headDim, qw = heads * d, kw = kvHeads * d, rep = heads / kvHeads, T = rows
            dK.update(repeating: 0, count: T * kw)
            dV.update(repeating: 0, count: T * kw)
            let dp = scratch.pointer
            let scale = self.scale, br = blockRows
            let bl = blocks(T)
            for h in 0..<heads {
                let g = h / rep
                let p = probs.pointer + h * T * T
                for (r0, r1) in bl {
                    // dP = dO·Vᵀ ; dV += Pᵀ·dO
                    BLAS.sgemm(transB: true, m: r1 - r0, n: r1, k: d, a: dOut + r0 * qw + h * d, lda: qw,
                               b: v + g * d, ldb: kw, c: dp + r0 * T, ldc: T)
                    BLAS.sgemm(transA: true, m: r1, n: d, k: r1 - r0, a: p + r0 * T, lda: T,
                               b: dOut + r0 * qw + h * d, ldb: qw, beta: 1, c: dV + g * d, ldc: kw)
                }
                // dS = scale · P ⊙ (dP − Σ_j P·dP)   (masked entries have P = 0)
                parallelFor(T, minChunk: Swift.max(1, 8192 / T)) { range in
                    for t in range {
                        let pr = p + t * T, gr = dp + t * T, n = t + 1
                        var d8 = SIMD8<Float>()
                        var j = 0
                        while j + 8 <= n { d8 += loadSIMD8(pr + j) * loadSIMD8(gr + j); j += 8 }
                        var dot = d8.sum()
                        while j < n { dot += pr[j] * gr[j]; j += 1 }
                        let sv = SIMD8<Float>(repeating: scale), dv = SIMD8<Float>(repeating: dot)
                        j = 0
                        while j + 8 <= n { storeSIMD8(sv * loadSIMD8(pr + j) * (loadSIMD8(gr + j) - dv), gr + j); j += 8 }
                        while j < n { gr[j] = scale * pr[j] * (gr[j] - dot); j += 1 }
                        let end = Swift.min(T, (t / br + 1) * br)
                        if end > n { (gr + n).update(repeating: 0, count: end - n) }
                    }
                }
                for (r0, r1) in bl {
                    // dQ = dS·K ; dK += dSᵀ·Q
                    BLAS.sgemm(m: r1 - r0, n: d, k: r1, a: dp + r0 * T, lda: T, b: k + g * d, ldb: kw,
                               c: dQ + r0 * qw + h * d, ldc: qw)
                    BLAS.sgemm(transA: true, m: r1, n: d, k: r1 - r0, a: dp + r0 * T, lda: T,
                               b: q + r0 * qw + h * d, ldb: qw, beta: 1, c: dK + g * d, ldc: kw)
                }
            }
        }
    }
}
