import CSQSupport
import Foundation

// Forward-pass kernels shared by the architecture adapters: tight loops over raw row-major float32 rows,
// parallel over rows (or rows × heads); matrix products go to BLAS with all rows at once. Every SIMD kernel has
// a scalar twin in `Kernels.Reference` (same signature) that `SWIFTQUANT_KERNELS=reference` selects and that
// Tests/SwiftQuantTests/Kernels/KernelParityTests.swift compares it with.

/// Vectorised exp for float32 (Cephes range reduction and polynomial). Arguments are clamped to [-87.3, 88]:
/// below, the result is ~1.2e-38 instead of 0. Accuracy, tested against float64 `exp` on that range
/// (`KernelParityTests.testExpTwinsAgreeAndMeetTheirAccuracyClaim`): at most 2 ulp. Each lane equals
/// `scalarExp` of it bit for bit.
@inlinable @inline(__always)
public func simdExp(_ x0: SIMD8<Float>) -> SIMD8<Float> {
    var x = x0
    x.replace(with: SIMD8(repeating: 88.0), where: x .> 88.0)
    x.replace(with: SIMD8(repeating: -87.3), where: x .< -87.3)
    let magic = SIMD8<Float>(repeating: 12582912.0)  // 1.5·2²³: adding it rounds to an integer
    let t = x * 1.44269504088896341 + magic
    let n = t - magic
    var r = x - n * 0.693359375
    r = r - n * -2.12194440e-4
    var p = SIMD8<Float>(repeating: 1.9875691500e-4)
    p = p * r + 1.3981999507e-3
    p = p * r + 8.3334519073e-3
    p = p * r + 4.1665795894e-2
    p = p * r + 1.6666665459e-1
    p = p * r + 5.0000001201e-1
    let y = p * (r * r) + r + 1
    let ni = unsafeBitCast(t, to: SIMD8<Int32>.self) &- unsafeBitCast(magic, to: SIMD8<Int32>.self)
    let scale = unsafeBitCast((ni &+ 127) &<< 23, to: SIMD8<Float>.self)
    return y * scale
}

/// The scalar twin of `simdExp`: the same operations in the same order on one float32, so the two agree bit for
/// bit (no fused multiply-add is formed in either).
@inlinable @inline(__always)
public func scalarExp(_ x0: Float) -> Float {
    var x = x0
    if x > 88.0 { x = 88.0 }
    if x < -87.3 { x = -87.3 }
    let magic: Float = 12582912.0
    let t = x * 1.44269504088896341 + magic
    let n = t - magic
    var r = x - n * 0.693359375
    r = r - n * -2.12194440e-4
    var p: Float = 1.9875691500e-4
    p = p * r + 1.3981999507e-3
    p = p * r + 8.3334519073e-3
    p = p * r + 4.1665795894e-2
    p = p * r + 1.6666665459e-1
    p = p * r + 5.0000001201e-1
    let y = p * (r * r) + r + 1
    let ni = Int32(bitPattern: t.bitPattern) &- Int32(bitPattern: magic.bitPattern)
    let scale = Float(bitPattern: UInt32(bitPattern: (ni &+ 127) &<< 23))
    return y * scale
}

@inline(__always)
func loadSIMD8(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
}

@inline(__always)
func storeSIMD8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
}

/// A reusable set of scratch buffers, grown on demand: allocate once per forward, not per block.
public final class Workspace {
    private var buffers: [Tensor] = []
    public init() {}

    /// Buffer number `slot` with room for at least `count` floats (contents unspecified).
    func buffer(_ slot: Int, _ count: Int) -> UnsafeMutablePointer<Float> {
        while buffers.count <= slot { buffers.append(Tensor(zeros: [0])) }
        if buffers[slot].count < count { buffers[slot] = Tensor(zeros: [count]) }
        return buffers[slot].pointer
    }
}

public enum Kernels {
    static func addBias(_ y: UnsafeMutablePointer<Float>, rows: Int, _ b: UnsafePointer<Float>, _ n: Int) {
        parallelFor(rows, minChunk: max(1, 16384 / max(n, 1))) { range in
            for r in range {
                let row = y + r * n
                for j in 0..<n { row[j] += b[j] }
            }
        }
    }

    /// `out = x · rsqrt(mean(x²) + eps) · weight`, row by row, in float32 (as transformers does).
    public static func rmsNorm(_ x: UnsafePointer<Float>, rows: Int, dim: Int, weight: UnsafePointer<Float>, eps: Float,
                        _ out: UnsafeMutablePointer<Float>) {
        if KernelDispatch.reference { return Reference.rmsNorm(x, rows: rows, dim: dim, weight: weight, eps: eps, out) }
        parallelFor(rows, minChunk: 16) { range in
            for r in range {
                let xr = x + r * dim, yr = out + r * dim
                var acc = SIMD8<Float>()
                var j = 0
                while j + 8 <= dim { let v = loadSIMD8(xr + j); acc += v * v; j += 8 }
                var ss = acc.sum()
                while j < dim { ss += xr[j] * xr[j]; j += 1 }
                let inv = 1 / (ss / Float(dim) + eps).squareRoot()
                for j in 0..<dim { yr[j] = weight[j] * (xr[j] * inv) }
            }
        }
    }

    /// LayerNorm over the last dimension with biased variance; `weight`/`bias` nil means no affine part.
    public static func layerNorm(_ x: UnsafePointer<Float>, rows: Int, dim: Int, weight: UnsafePointer<Float>?,
                          bias: UnsafePointer<Float>?, eps: Float, _ out: UnsafeMutablePointer<Float>) {
        if KernelDispatch.reference {
            return Reference.layerNorm(x, rows: rows, dim: dim, weight: weight, bias: bias, eps: eps, out)
        }
        parallelFor(rows, minChunk: 16) { range in
            for r in range {
                let xr = x + r * dim, yr = out + r * dim
                var acc = SIMD8<Float>()
                var j = 0
                while j + 8 <= dim { acc += loadSIMD8(xr + j); j += 8 }
                var s = acc.sum()
                while j < dim { s += xr[j]; j += 1 }
                let mean = s / Float(dim)
                var acc2 = SIMD8<Float>()
                let m8 = SIMD8<Float>(repeating: mean)
                j = 0
                while j + 8 <= dim { let d = loadSIMD8(xr + j) - m8; acc2 += d * d; j += 8 }
                var v = acc2.sum()
                while j < dim { let d = xr[j] - mean; v += d * d; j += 1 }
                let inv = 1 / (v / Float(dim) + eps).squareRoot()
                for j in 0..<dim {
                    var y = (xr[j] - mean) * inv
                    if let w = weight { y *= w[j] }
                    if let b = bias { y += b[j] }
                    yr[j] = y
                }
            }
        }
    }

    /// Causal softmax attention with grouped-query heads. `q` is `[T, heads·d]` (already including any
    /// scaling other than `scale`), `k`/`v` are `[T, kvHeads·d]`; writes `out` `[T, heads·d]`.
    /// Work is split into (head, query tile) items so only the causal part of QKᵀ is computed; the items are
    /// spread over the cores, each running single-threaded BLAS: these products are small (inner or outer
    /// dimension = head_dim), so one core per product beats splitting every product across cores.
    /// Uses workspace slots `slot ..< slot + cores`. BLAS runs single-threaded while this runs (a process-wide OpenBLAS setting, restored afterwards).
    public static func causalAttention(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                                     out: UnsafeMutablePointer<Float>, T: Int, heads: Int, kvHeads: Int,
                                     headDim: Int, scale: Float, workspace: Workspace, slot: Int) {
        if KernelDispatch.reference {
            return Reference.causalAttention(q: q, k: k, v: v, out: out, T: T, heads: heads, kvHeads: kvHeads,
                                             headDim: headDim, scale: scale)
        }
        let tile = min(T, 128)
        let tiles = (T + tile - 1) / tile
        let items = tiles * heads
        let workers = min(ProcessorInfoCache.activeCores, items)
        let buffers = (0..<workers).map { workspace.buffer(slot + $0, tile * T) }
        let group = heads / kvHeads
        let qStride = heads * headDim, kvStride = kvHeads * headDim
        let savedThreads = sqs_blas_threads()
        if workers > 1 { sqs_blas_set_threads(1) }
        defer { if workers > 1 { sqs_blas_set_threads(savedThreads) } }
        // Largest tiles first, dealt round-robin, so the workers finish together.
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            let scores = buffers[w]
            var item = w
            while item < items {
                let t = tiles - 1 - item / heads, h = item % heads
                let kvh = h / group
                let r0 = t * tile, r1 = min(T, r0 + tile), rows = r1 - r0, keys = r1
                BLAS.sgemm(transB: true, m: rows, n: keys, k: headDim, alpha: scale,
                           a: q + r0 * qStride + h * headDim, lda: qStride,
                           b: k + kvh * headDim, ldb: kvStride, c: scores, ldc: keys)
                for i in 0..<rows { softmaxRowSIMD(scores + i * keys, valid: r0 + i + 1, total: keys) }
                BLAS.sgemm(m: rows, n: headDim, k: keys, a: scores, lda: keys, b: v + kvh * headDim, ldb: kvStride,
                           c: out + r0 * qStride + h * headDim, ldc: qStride)
                item += workers
            }
        }
    }

    /// Softmax over the first `valid` entries of a row; entries `valid..<total` are set to 0.
    @inline(__always)
    public static func softmaxRow(_ row: UnsafeMutablePointer<Float>, valid: Int, total: Int) {
        if KernelDispatch.reference { return Reference.softmaxRow(row, valid: valid, total: total) }
        softmaxRowSIMD(row, valid: valid, total: total)
    }

    /// `softmaxRow` without the dispatch check, for loops that checked once (`causalAttention`).
    @inline(__always)
    static func softmaxRowSIMD(_ row: UnsafeMutablePointer<Float>, valid: Int, total: Int) {
        var m8 = SIMD8<Float>(repeating: -.infinity)
        var j = 0
        while j + 8 <= valid { m8 = pointwiseMax8(m8, loadSIMD8(row + j)); j += 8 }
        var mx = m8.max()
        while j < valid { mx = Swift.max(mx, row[j]); j += 1 }
        let mv = SIMD8<Float>(repeating: mx)
        var s8 = SIMD8<Float>()
        j = 0
        while j + 8 <= valid {
            let e = simdExp(loadSIMD8(row + j) - mv)
            storeSIMD8(e, row + j)
            s8 += e
            j += 8
        }
        var sum = s8.sum()
        while j < valid { let e = scalarExp(row[j] - mx); row[j] = e; sum += e; j += 1 }
        let inv = 1 / sum
        let iv = SIMD8<Float>(repeating: inv)
        j = 0
        while j + 8 <= valid { storeSIMD8(loadSIMD8(row + j) * iv, row + j); j += 8 }
        while j < valid { row[j] *= inv; j += 1 }
        if valid < total { (row + valid).update(repeating: 0, count: total - valid) }
    }

    @inline(__always)
    static func pointwiseMax8(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> {
        var r = a
        r.replace(with: b, where: b .> a)
        return r
    }

    /// `gate[i] = silu(gate[i]) · up[i]` over `count` elements.
    public static func siluMul(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int) {
        if KernelDispatch.reference { return Reference.siluMul(gate, up, count: count) }
        parallelFor(count, minChunk: 16384) { range in
            var i = range.lowerBound
            let one = SIMD8<Float>(repeating: 1)
            while i + 8 <= range.upperBound {
                let g = loadSIMD8(gate + i)
                let s = g / (one + simdExp(-g))
                storeSIMD8(s * loadSIMD8(up + i), gate + i)
                i += 8
            }
            while i < range.upperBound {
                let g = gate[i]
                gate[i] = g / (1 + scalarExp(-g)) * up[i]
                i += 1
            }
        }
    }

    /// Summed negative log-likelihood `Σ_i [logsumexp(logits_i) − logits_i[target_i]]` over rows, each row
    /// reduced with a float64 running sum of float32 exponentials shifted by the row maximum.
    public static func nllRows(_ logits: UnsafePointer<Float>, rows: Int, vocab: Int, targets: UnsafePointer<Int32>)
        -> Double {
        if KernelDispatch.reference { return Reference.nllRows(logits, rows: rows, vocab: vocab, targets: targets) }
        var partial = [Double](repeating: 0, count: rows)
        partial.withUnsafeMutableBufferPointer { out in
            let outp = out.baseAddress!
            parallelFor(rows, minChunk: 1) { range in
                for r in range {
                    let row = logits + r * vocab
                    let (mx, total) = blockSumExp(row, vocab)
                    let lse = Double(mx) + Foundation.log(total)
                    outp[r] = lse - Double(row[Int(targets[r])])
                }
            }
        }
        return partial.reduce(0, +)
    }

    /// Running log-sum-exp state of `rows` rows whose logits arrive in column blocks (`NLLAccumulator.add`):
    /// per row the largest logit so far, the sum of `exp(logit − max)` (float64) and the target's logit.
    public struct NLLAccumulator {
        public private(set) var rowMax: [Float], rowSum: [Double], targetLogit: [Float]
        public init(rows: Int) {
            rowMax = Array(repeating: -.infinity, count: rows)
            rowSum = Array(repeating: 0, count: rows)
            targetLogit = Array(repeating: .nan, count: rows)
        }

        /// Folds in logits `[rows, cols]` (row stride `ld`) of the vocabulary columns `col0 ..< col0 + cols`.
        public mutating func add(_ logits: UnsafePointer<Float>, cols: Int, ld: Int, col0: Int,
                                 targets: UnsafePointer<Int32>) {
            let rows = rowMax.count
            let reference = KernelDispatch.reference
            rowMax.withUnsafeMutableBufferPointer { mp in
                rowSum.withUnsafeMutableBufferPointer { sp in
                    targetLogit.withUnsafeMutableBufferPointer { tp in
                        let m = mp.baseAddress!, s = sp.baseAddress!, t = tp.baseAddress!
                        parallelFor(rows, minChunk: 1) { range in
                            for r in range {
                                let row = logits + r * ld
                                let (bm, bs) = reference ? Reference.blockSumExp(row, cols)
                                                         : Kernels.blockSumExp(row, cols)
                                let newMax = Swift.max(m[r], bm)
                                if newMax > -.infinity {
                                    s[r] = s[r] * Foundation.exp(Double(m[r] - newMax))
                                        + bs * Foundation.exp(Double(bm - newMax))
                                    m[r] = newMax
                                }
                                let target = Int(targets[r]) - col0
                                if target >= 0 && target < cols { t[r] = row[target] }
                            }
                        }
                    }
                }
            }
        }

        /// `Σ_r [logsumexp_r − logit_r[target_r]]`: what `nllRows` gives on the whole rows.
        public var total: Double {
            var sum: Double = 0
            for r in rowMax.indices { sum += Double(rowMax[r]) + Foundation.log(rowSum[r]) - Double(targetLogit[r]) }
            return sum
        }
    }

    /// (max, Σ exp(x − max)) of `n` values: float32 SIMD lanes over blocks of 1024, float64 across blocks.
    static func blockSumExp(_ row: UnsafePointer<Float>, _ n: Int) -> (Float, Double) {
        var m8 = SIMD8<Float>(repeating: -.infinity)
        var j = 0
        while j + 8 <= n { m8 = pointwiseMax8(m8, loadSIMD8(row + j)); j += 8 }
        var mx = m8.max()
        while j < n { mx = Swift.max(mx, row[j]); j += 1 }
        if mx == -.infinity { return (mx, 0) }
        let mv = SIMD8<Float>(repeating: mx)
        var total: Double = 0
        j = 0
        while j < n {
            let end = Swift.min(n, j + 1024)
            var s8 = SIMD8<Float>()
            while j + 8 <= end { s8 += simdExp(loadSIMD8(row + j) - mv); j += 8 }
            var s = s8.sum()
            while j < end { s += scalarExp(row[j] - mx); j += 1 }
            total += Double(s)
        }
        return (mx, total)
    }

    /// The scalar twins of the SIMD kernels above: the definitions, one element at a time, single-threaded, with
    /// the same signatures. `SWIFTQUANT_KERNELS=reference` makes the kernels above call these.
    public enum Reference {
        public static func rmsNorm(_ x: UnsafePointer<Float>, rows: Int, dim: Int, weight: UnsafePointer<Float>,
                                   eps: Float, _ out: UnsafeMutablePointer<Float>) {
            for r in 0..<rows {
                let xr = x + r * dim, yr = out + r * dim
                var ss: Float = 0
                for j in 0..<dim { ss += xr[j] * xr[j] }
                let inv = 1 / (ss / Float(dim) + eps).squareRoot()
                for j in 0..<dim { yr[j] = weight[j] * (xr[j] * inv) }
            }
        }

        public static func layerNorm(_ x: UnsafePointer<Float>, rows: Int, dim: Int, weight: UnsafePointer<Float>?,
                                     bias: UnsafePointer<Float>?, eps: Float, _ out: UnsafeMutablePointer<Float>) {
            for r in 0..<rows {
                let xr = x + r * dim, yr = out + r * dim
                var s: Float = 0
                for j in 0..<dim { s += xr[j] }
                let mean = s / Float(dim)
                var v: Float = 0
                for j in 0..<dim { v += (xr[j] - mean) * (xr[j] - mean) }
                let inv = 1 / (v / Float(dim) + eps).squareRoot()
                for j in 0..<dim {
                    var y = (xr[j] - mean) * inv
                    if let w = weight { y *= w[j] }
                    if let b = bias { y += b[j] }
                    yr[j] = y
                }
            }
        }

        public static func softmaxRow(_ row: UnsafeMutablePointer<Float>, valid: Int, total: Int) {
            var mx = -Float.infinity
            for j in 0..<valid { mx = Swift.max(mx, row[j]) }
            var sum: Float = 0
            for j in 0..<valid { row[j] = scalarExp(row[j] - mx); sum += row[j] }
            let inv = 1 / sum
            for j in 0..<valid { row[j] *= inv }
            for j in valid..<Swift.max(valid, total) { row[j] = 0 }
        }

        public static func siluMul(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int) {
            for i in 0..<count { gate[i] = gate[i] / (1 + scalarExp(-gate[i])) * up[i] }
        }

        /// Causal grouped-query attention by the definition: per head and query, scores against keys `0...t`,
        /// softmax, weighted sum of values (no tiles, no BLAS, one thread).
        public static func causalAttention(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                                           out: UnsafeMutablePointer<Float>, T: Int, heads: Int, kvHeads: Int,
                                           headDim: Int, scale: Float) {
            let group = heads / kvHeads, qStride = heads * headDim, kvStride = kvHeads * headDim
            let scores = UnsafeMutablePointer<Float>.allocate(capacity: Swift.max(T, 1))
            defer { scores.deallocate() }
            for h in 0..<heads {
                let kvh = h / group
                for t in 0..<T {
                    let qt = q + t * qStride + h * headDim
                    for j in 0...t {
                        let kj = k + j * kvStride + kvh * headDim
                        var dot: Float = 0
                        for d in 0..<headDim { dot += qt[d] * kj[d] }
                        scores[j] = scale * dot
                    }
                    softmaxRow(scores, valid: t + 1, total: t + 1)
                    let o = out + t * qStride + h * headDim
                    for d in 0..<headDim {
                        var acc: Float = 0
                        for j in 0...t { acc += scores[j] * v[j * kvStride + kvh * headDim + d] }
                        o[d] = acc
                    }
                }
            }
        }

        /// `Kernels.blockSumExp` by the definition, one element at a time, float64 sums.
        static func blockSumExp(_ row: UnsafePointer<Float>, _ n: Int) -> (Float, Double) {
            var mx = -Float.infinity
            for j in 0..<n { mx = Swift.max(mx, row[j]) }
            if mx == -.infinity { return (mx, 0) }
            var s: Double = 0
            for j in 0..<n { s += Double(scalarExp(row[j] - mx)) }
            return (mx, s)
        }

        /// `Σ_i [logsumexp(logits_i) − logits_i[target_i]]`, each row's exponentials summed in float64.
        public static func nllRows(_ logits: UnsafePointer<Float>, rows: Int, vocab: Int,
                                   targets: UnsafePointer<Int32>) -> Double {
            var total: Double = 0
            for r in 0..<rows {
                let row = logits + r * vocab
                var mx = -Float.infinity
                for j in 0..<vocab { mx = Swift.max(mx, row[j]) }
                var s: Double = 0
                for j in 0..<vocab { s += Double(scalarExp(row[j] - mx)) }
                total += Double(mx) + Foundation.log(s) - Double(row[Int(targets[r])])
            }
            return total
        }
    }
}
