import CSQSupport
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
        /// Rows per block of the causal products: a block of query rows `[r0, r1)` only needs key columns
        /// `0..<r1`, which skips about half of the work of the full `rows × rows` products.
        public let blockRows: Int
        public let scale: Float
        /// Softmax probabilities of the last forward, `[heads, rows, rows]` (row stride `rows`); entries right of
        /// the end of a row's block are not written.
        public let probs: Tensor
        /// Per worker: `dP`/`dS` of one block `[blockRows, maxRows]`; workers after the first also get private
        /// `dK`, `dV` accumulators `[maxRows, kvHeads·d]`, summed in worker order at the end (deterministic).
        private let workerScratch: [Tensor], workerDK: [Tensor], workerDV: [Tensor]
        private let workers: Int
        private var lastRows = 0
        /// The arithmetic of the four products (the softmax and its backward stay fp32).
        public var precision: GEMMPrecision = .fp32

        public init(heads: Int, kvHeads: Int, headDim: Int, maxRows: Int, blockRows: Int = 64) throws {
            try require(blockRows > 0, "attention: blockRows must be positive")
            self.blockRows = blockRows
            try require(heads > 0 && kvHeads > 0 && heads % kvHeads == 0,
                        "attention: heads (\(heads)) must be a positive multiple of kv heads (\(kvHeads))")
            try require(headDim > 0 && maxRows > 0, "attention: headDim and maxRows must be positive")
            self.heads = heads; self.kvHeads = kvHeads; self.headDim = headDim; self.maxRows = maxRows
            scale = 1 / Float(headDim).squareRoot()
            probs = Tensor(zeros: [heads, maxRows, maxRows])
            workers = Swift.max(1, Swift.min(ProcessorInfoCache.activeCores, heads * ((maxRows + blockRows - 1) / blockRows)))
            workerScratch = (0..<workers).map { _ in Tensor(zeros: [Swift.min(blockRows, maxRows), maxRows]) }
            workerDK = (1..<Swift.max(workers, 1)).map { _ in Tensor(zeros: [maxRows, kvHeads * headDim]) }
            workerDV = workerDK.map { Tensor(zeros: $0.shape) }
        }

        /// Runs `body(worker, head, r0, r1)` over every (head, row block) item, largest blocks first, dealt
        /// round-robin to the workers, with BLAS single-threaded meanwhile (a process-wide OpenBLAS setting,
        /// restored afterwards): the products are small, so items in parallel beat threads inside each product.
        private func forEachItem(_ T: Int, _ body: (Int, Int, Int, Int) -> Void) {
            let br = blockRows, nb = (T + br - 1) / br, items = nb * heads
            let n = Swift.min(workers, items)
            let saved = sqs_blas_threads()
            if n > 1 { sqs_blas_set_threads(1) }
            defer { if n > 1 { sqs_blas_set_threads(saved) } }
            DispatchQueue.concurrentPerform(iterations: n) { w in
                var item = w
                while item < items {
                    let b = nb - 1 - item / heads, h = item % heads
                    body(w, h, b * br, Swift.min(T, (b + 1) * br))
                    item += n
                }
            }
        }

        public func forward(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                            out: UnsafeMutablePointer<Float>, rows: Int) {
            precondition(rows <= maxRows && rows > 0, "attention: \(rows) rows, capacity \(maxRows)")
            lastRows = rows
            let d = headDim, qw = heads * d, kw = kvHeads * d, rep = heads / kvHeads, T = rows
            let scale = self.scale, probs = self.probs.pointer, precision = self.precision
            forEachItem(T) { _, h, r0, r1 in
                let g = h / rep, p = probs + h * T * T
                // S = scale · Q·Kᵀ for query rows r0..<r1 and keys 0..<r1; row softmax over 0...t, zeros up to r1
                BLAS.sgemm(transB: true, m: r1 - r0, n: r1, k: d, alpha: scale, a: q + r0 * qw + h * d, lda: qw,
                           b: k + g * d, ldb: kw, c: p + r0 * T, ldc: T, precision: precision)
                for t in r0..<r1 { Kernels.softmaxRow(p + t * T, valid: t + 1, total: r1) }
                // O = P·V
                BLAS.sgemm(m: r1 - r0, n: d, k: r1, a: p + r0 * T, lda: T, b: v + g * d, ldb: kw,
                           c: out + r0 * qw + h * d, ldc: qw, precision: precision)
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
            for t in workerDK + workerDV { t.pointer.update(repeating: 0, count: T * kw) }
            let scale = self.scale, probs = self.probs.pointer, precision = self.precision
            let scratch = workerScratch.map { $0.pointer }
            let accK = [dK] + workerDK.map { $0.pointer }, accV = [dV] + workerDV.map { $0.pointer }
            forEachItem(T) { w, h, r0, r1 in
                let g = h / rep, p = probs + h * T * T, dp = scratch[w], m = r1 - r0
                let dKw = accK[w], dVw = accV[w]
                // dP = dO·Vᵀ (block rows, keys 0..<r1, row stride r1) ; dV += Pᵀ·dO
                BLAS.sgemm(transB: true, m: m, n: r1, k: d, a: dOut + r0 * qw + h * d, lda: qw,
                           b: v + g * d, ldb: kw, c: dp, ldc: r1, precision: precision)
                BLAS.sgemm(transA: true, m: r1, n: d, k: m, a: p + r0 * T, lda: T,
                           b: dOut + r0 * qw + h * d, ldb: qw, beta: 1, c: dVw + g * d, ldc: kw, precision: precision)
                // dS = scale · P ⊙ (dP − Σ_j P·dP)   (masked entries have P = 0)
                for t in r0..<r1 {
                    let pr = p + t * T, gr = dp + (t - r0) * r1, n = t + 1
                    var d8 = SIMD8<Float>()
                    var j = 0
                    while j + 8 <= n { d8 += loadSIMD8(pr + j) * loadSIMD8(gr + j); j += 8 }
                    var dot = d8.sum()
                    while j < n { dot += pr[j] * gr[j]; j += 1 }
                    let sv = SIMD8<Float>(repeating: scale), dv = SIMD8<Float>(repeating: dot)
                    j = 0
                    while j + 8 <= n { storeSIMD8(sv * loadSIMD8(pr + j) * (loadSIMD8(gr + j) - dv), gr + j); j += 8 }
                    while j < n { gr[j] = scale * pr[j] * (gr[j] - dot); j += 1 }
                    if r1 > n { (gr + n).update(repeating: 0, count: r1 - n) }
                }
                // dQ = dS·K ; dK += dSᵀ·Q
                BLAS.sgemm(m: m, n: d, k: r1, a: dp, lda: r1, b: k + g * d, ldb: kw,
                           c: dQ + r0 * qw + h * d, ldc: qw, precision: precision)
                BLAS.sgemm(transA: true, m: r1, n: d, k: m, a: dp, lda: r1,
                           b: q + r0 * qw + h * d, ldb: qw, beta: 1, c: dKw + g * d, ldc: kw, precision: precision)
            }
            for (a, b) in zip(workerDK, workerDV) {
                Autodiff.Residual.forward(a: dK, b: a.pointer, y: dK, count: T * kw)
                Autodiff.Residual.forward(a: dV, b: b.pointer, y: dV, count: T * kw)
            }
        }
    }
}
