import Foundation

/// What `GPTQ.quantize` returns for one weight `W` [out, in].
public struct GPTQResult: Sendable {
    /// Codes, scales and zero-points in the weight's own column order. Scales/zeros are [out, groups]; group `g`
    /// holds the sweep positions `g·G ..< (g+1)·G`. Without act-order those are the columns themselves
    /// (`groupIndex == nil`); with act-order `quantized.groupIndex` is `gIdx`, so `dequantized()` stays exact.
    public let quantized: QuantizedTensor
    /// The float32 weight the codes stand for, [out, in]: equal to `quantized.dequantized()`.
    public let dequantized: Tensor
    /// [in]: the group of each input column, `position(c) / G` with `position(c)` its place in the sweep order
    /// (`c / G` without act-order), as GPTQ checkpoints' `g_idx`.
    public let gIdx: [Int32]
    /// [in]: `permutation[p]` is the input column quantized at sweep position `p` (the identity without act-order).
    public let permutation: [Int]
    /// Input columns with `H_ii = 0` (no signal): their weights were set to 0 before the sweep.
    public let deadColumns: [Int]
    /// The relative damping finally used (`dampening`, ×10 per retry).
    public let dampening: Float
    /// How many times the Cholesky factorization failed and was retried with ×10 damping (0 normally).
    public let dampingRetries: Int
    /// M2 only: the row scale `c_r` [out] every group scale of row r is `c_r · 2^k` of (−8 ≤ k ≤ 6).
    public let rowScales: [Float]?
}

/// GPTQ (Frantar et al., arXiv 2210.17323) for one Linear weight, exactly as ALGORITHMS.md §5 defines it, with the
/// integer grids (any `QParamsPolicy`; `.gptq` is GPTQ's own) and every minifloat grid, M1/M2 applied inside the
/// sweep. Pure math: no pipeline, no I/O.
///
/// Steps: dead inputs (`H_ii = 0` → `H_ii = 1`, `W[:, i] = 0`); optional act-order (columns by descending `diag H`,
/// stable); damping `λ = dampening · mean(diag H)` (float32, summed in sweep order) added to the diagonal, retried
/// with ×10 `dampening` (up to 4 times) when the factorization fails; `U` = upper Cholesky factor of `H⁻¹`; the
/// sweep; un-permutation.
///
/// The sweep runs over the columns in sweep order, in blocks of `blockSize` columns. For column `i`:
/// - at a group start (`i % G == 0`) the group's parameters are computed for every row from the weights of the
///   group's columns `i ..< min(i + G, in)` **with every update from the columns before `i` applied** (a ragged last
///   group uses its real columns only). To make that hold when a group starts inside a block and would end past
///   it, that block ends at the group start (the next block starts there); a group never straddles a block end
///   otherwise. Blocks are therefore `blockSize` long except where such a group start cuts one short.
/// - `q = quant(w)` with the project's quantizer functions (`IntGrid.params/code`, `Quantizer.minifloatScale/
///   minifloatCode/m1Scale/m2Scale`), `err = (w − q) / U_ii`, and `W[:, j] −= err · U_ij` for the rest of the block;
/// - after the block, `W[:, rest] −= Err_block · U[block, rest]` in one GEMM.
///
/// **M1/M2 inside the sweep.** M1: each group's scale is `2^⌈log2 s⌉` of its scale `s` computed at its group start.
/// M2: the FP4 → FP8 shift needs one scale `c_r` per row shared by all its groups, fixed before any group is
/// quantized: `c_r = max_g s_{r,g}` over the absmax scales of all groups of row r computed from the weights at the
/// start of the sweep (after dead-input zeroing, in sweep order). Each group then takes its own scale `s` from its
/// current (error-updated) weights at its group start, and `ŝ = c_r · 2^k`, `k = ⌈log2(s / c_r)⌉` clamped to
/// [−8, 6] (`Quantizer.m2Scale`): the error updates can grow a later group past `c_r` (k > 0; a group grown more
/// than 64× would be clipped). Every E2M1 value × 2^k is exact in E4M3 over that range. (A `c_r` recomputed as the
/// sweep goes would change the factor of groups already quantized, so it is fixed.) With `H = I` nothing is
/// updated and this is RTN's M2 exactly.
public enum GPTQ {
    public static let maxDampingRetries = 4

    /// Quantizes `weight` [out, in] float32 with the Hessian `hessian` [in, in] (`2/n·ΣXXᵀ`, symmetric up to float32
    /// accumulation noise: `(H + Hᵀ)/2` is used) under `config`. Throws `.invalidArgument` for impossible settings (shapes, group larger
    /// than the row, M1/M2 on an INT grid, block size < 1, dampening not positive) and `.nonFinite` for NaN/Inf
    /// inputs, before any work (also for a Hessian with a negative diagonal entry or that is not symmetric).
    ///
    /// `clipUp` / `clipLow` ([out · groups], in [0, 1]) multiply each group's max and min at its group start, as
    /// `Quantizer.quantize` applies LWC's learned clipping: GPTQ then rounds on the grid LWC trained (INT grids,
    /// column-order groups: not with `actOrder`).
    public static func quantize(weight: Tensor, hessian: Tensor, config: QuantizerConfig, actOrder: Bool = false,
                                blockSize: Int = 128, dampening: Float = 0.01, clipUp: [Float]? = nil,
                                clipLow: [Float]? = nil) throws -> GPTQResult {
        try _run(weight: weight, hessian: hessian, config: config, actOrder: actOrder, blockSize: blockSize,
                 dampening: dampening, clipUp: clipUp, clipLow: clipLow)
    }

    /// The factor GPTQ sweeps with: the upper Cholesky factor `U` of `H⁻¹` (`H⁻¹ = Uᵀ·U`) of a symmetric positive
    /// definite [n, n] `h` (upper triangle read), or nil when the factorization fails. `exactGEMM` as in `_run`.
    public static func inverseCholeskyUpper(_ h: Tensor, exactGEMM: Bool = false) throws -> Tensor? {
        try require(h.rank == 2 && h.shape[0] == h.shape[1], "the matrix must be square, got shape \(h.shape)")
        let n = h.shape[0]
        guard let u = DenseLinearAlgebra.inverseCholeskyUpper(h.pointer, n: n, exact: exactGEMM) else { return nil }
        return Tensor(shape: [n, n], values: u)
    }

    /// `quantize` with two hooks for parity tests against an independent implementation (not for production):
    /// `hinvOverride` [in·in] replaces the computed `U` (in sweep order), and `exactGEMM` runs every product through
    /// `Reference.sgemm` (a fixed summation order, no FMA) so the other side can reproduce each float32 operation.
    public static func _run(weight: Tensor, hessian: Tensor, config: QuantizerConfig, actOrder: Bool, blockSize: Int,
                    dampening: Float, hinvOverride: [Float]? = nil, exactGEMM: Bool = false, clipUp: [Float]? = nil,
                    clipLow: [Float]? = nil) throws -> GPTQResult {
        try require(weight.rank == 2, "GPTQ: the weight must be 2-D [out, in], got shape \(weight.shape)")
        let m = weight.shape[0], n = weight.shape[1]
        try require(hessian.rank == 2 && hessian.shape[0] == hessian.shape[1],
                    "GPTQ: the Hessian must be square [in, in], got shape \(hessian.shape)")
        try require(hessian.shape[0] == n,
                    "GPTQ: the Hessian is [\(hessian.shape[0]), \(hessian.shape[1])] but the weight has \(n) input columns")
        try config.validate(rows: m, cols: n)
        try require(blockSize >= 1, "GPTQ: block size must be at least 1, got \(blockSize)")
        try require(dampening > 0 && dampening.isFinite, "GPTQ: dampening must be positive and finite, got \(dampening)")
        if let bad = weight.buffer.firstIndex(where: { !$0.isFinite }) {
            throw SwiftQuantError.nonFinite("GPTQ: the weight contains \(weight.buffer[bad]) at [\(bad / n), \(bad % n)]")
        }
        if let bad = hessian.buffer.firstIndex(where: { !$0.isFinite }) {
            throw SwiftQuantError.nonFinite("GPTQ: the Hessian contains \(hessian.buffer[bad]) at [\(bad / n), \(bad % n)]")
        }
        if let h = hinvOverride { try require(h.count == n * n, "GPTQ: hinvOverride needs \(n * n) values") }
        if clipUp != nil || clipLow != nil {
            let want = m * config.groupCount(cols: n)
            guard let up = clipUp, let low = clipLow else {
                throw SwiftQuantError.invalidArgument("GPTQ: clipping needs both clipUp and clipLow")
            }
            try require(up.count == want && low.count == want,
                        "GPTQ: clipping needs \(want) multipliers per side (rows × groups), got \(up.count) and \(low.count)")
            try require((up + low).allSatisfy { $0 >= 0 && $0 <= 1 }, "GPTQ: clipping multipliers must lie in [0, 1]")
            guard case .int = config.format else {
                throw SwiftQuantError.invalidArgument("GPTQ: learned clipping applies to integer grids, got \(config.format)")
            }
            try require(!actOrder, "GPTQ: learned clipping belongs to column-order groups; act_order reorders them")
        }

        // Dead inputs and the sweep order.
        let h0 = hessian.buffer
        var diag = (0..<n).map { h0[$0 * n + $0] }
        if let bad = diag.firstIndex(where: { $0 < 0 }) {
            throw SwiftQuantError.invalidArgument("GPTQ: the Hessian has a negative diagonal entry \(diag[bad]) at \(bad)")
        }
        // Symmetry, within float32 accumulation noise (a Hessian summed by a GEMM need not be bit-symmetric); the
        // sweep uses (H_ij + H_ji)/2, which is H itself when H is exactly symmetric.
        let top = diag.max() ?? 0
        for i in 0..<n {
            for j in 0..<i where abs(h0[i * n + j] - h0[j * n + i]) > 1e-3 * top {
                throw SwiftQuantError.invalidArgument(
                    "GPTQ: the Hessian is not symmetric: H[\(i), \(j)] = \(h0[i * n + j]) but H[\(j), \(i)] = \(h0[j * n + i])")
            }
        }
        let dead = (0..<n).filter { diag[$0] == 0 }
        for i in dead { diag[i] = 1 }
        let perm: [Int] = actOrder ? (0..<n).sorted { diag[$0] > diag[$1] || (diag[$0] == diag[$1] && $0 < $1) }
            : Array(0..<n)
        let isDead = Set(dead)

        // H in sweep order with dead diagonals set to 1.
        var hp = [Float](repeating: 0, count: n * n)
        for p in 0..<n {
            let src = perm[p]
            for q in 0..<n { hp[p * n + q] = (h0[src * n + perm[q]] + h0[perm[q] * n + src]) / 2 }
            hp[p * n + p] = diag[src]
        }
        // W transposed into sweep order: wt[p·m + r] = W[r, perm[p]] (each column contiguous).
        var wt = [Float](repeating: 0, count: n * m)
        let w0 = weight.buffer
        for p in 0..<n where !isDead.contains(perm[p]) {
            let c = perm[p]
            for r in 0..<m { wt[p * m + r] = w0[r * n + c] }
        }

        // Damping and U = upper Cholesky factor of H⁻¹.
        var sum: Float = 0
        for p in 0..<n { sum += hp[p * n + p] }
        let mean = sum / Float(n)
        var rel = dampening, retries = 0
        var u: [Float]
        if let h = hinvOverride {
            u = h
        } else {
            while true {
                let damp = rel * mean
                var hd = hp
                for p in 0..<n { hd[p * n + p] += damp }
                if let f = hd.withUnsafeBufferPointer({ DenseLinearAlgebra.inverseCholeskyUpper($0.baseAddress!, n: n,
                                                                                                exact: exactGEMM) }) {
                    u = f
                    break
                }
                guard retries < maxDampingRetries else {
                    throw SwiftQuantError.invalidArgument(
                        "GPTQ: the Hessian is not positive definite even with dampening \(rel) (× mean diag \(mean)); "
                            + "check the calibration data")
                }
                retries += 1
                rel *= 10
            }
        }

        let groups = config.groupCount(cols: n), width = config.groupWidth(cols: n)
        var codesT = [UInt8](repeating: 0, count: n * m)
        var qT = [Float](repeating: 0, count: n * m)
        var scales = [Float](repeating: 0, count: m * groups)
        var zeros = [Int32](repeating: 0, count: m * groups)
        let rowScales: [Float]? = config.scaleConstraint == .m2 ? m2RowScales(wt, n: n, m: m, width: width,
                                                                              config: config) : nil
        try sweep(&wt, u: u, n: n, m: m, config: config, blockSize: blockSize, rowScales: rowScales,
                  exactGEMM: exactGEMM, clipUp: clipUp, clipLow: clipLow, codesT: &codesT, qT: &qT, scales: &scales,
                  zeros: &zeros)

        // Un-permute.
        var codes = [UInt8](repeating: 0, count: m * n)
        let deq = Tensor(zeros: [m, n])
        var gIdx = [Int32](repeating: 0, count: n)
        let dp = deq.pointer
        for p in 0..<n {
            let c = perm[p]
            gIdx[c] = Int32(p / width)
            for r in 0..<m {
                codes[r * n + c] = codesT[p * m + r]
                dp[r * n + c] = qT[p * m + r]
            }
        }
        let q = try QuantizedTensor(rows: m, cols: n, config: config, codes: codes, scales: scales, zeros: zeros,
                                    groupIndex: actOrder ? gIdx : nil)
        return GPTQResult(quantized: q, dequantized: deq, gIdx: gIdx, permutation: perm, deadColumns: dead,
                          dampening: rel, dampingRetries: retries, rowScales: rowScales)
    }

    /// M2's `c_r`: the largest unconstrained group scale of each row at the start of the sweep.
    static func m2RowScales(_ wt: [Float], n: Int, m: Int, width: Int, config: QuantizerConfig) -> [Float] {
        guard case .minifloat(let f) = config.format else { return [] }
        let fmax = f.maxFinite
        var c = [Float](repeating: 0, count: m)
        var lo = [Float](repeating: 0, count: m), hi = [Float](repeating: 0, count: m)
        var g0 = 0
        while g0 < n {
            let g1 = min(n, g0 + width)
            groupRange(wt, m: m, from: g0, to: g1, lo: &lo, hi: &hi)
            for r in 0..<m { c[r] = max(c[r], Quantizer.minifloatScale(xmin: lo[r], xmax: hi[r], fmax: fmax)) }
            g0 = g1
        }
        return c
    }

    /// Per row r: min and max of `wt[p·m + r]` for p in `from ..< to`.
    @inline(__always)
    static func groupRange(_ wt: [Float], m: Int, from: Int, to: Int, lo: inout [Float], hi: inout [Float]) {
        for r in 0..<m { lo[r] = .infinity; hi[r] = -.infinity }
        for p in from..<to {
            let base = p * m
            for r in 0..<m {
                let v = wt[base + r]
                lo[r] = min(lo[r], v); hi[r] = max(hi[r], v)
            }
        }
    }

    /// The end of the block starting at `b0`: `b0 + blockSize` (or `n`), cut at a group start inside the block
    /// whose group would end past it.
    static func blockEnd(_ b0: Int, n: Int, blockSize: Int, width: Int) -> Int {
        var b1 = min(n, b0 + blockSize)
        let lastStart = ((b1 - 1) / width) * width
        if lastStart > b0 && min(n, lastStart + width) > b1 { b1 = lastStart }
        return b1
    }

    /// The column sweep over `wt` [n, m] (sweep order, transposed) with `u` [n, n] the upper Cholesky factor of
    /// `H⁻¹`. Writes codes and dequantized values (transposed) and per-row, per-group scales and zero-points.
    /// `clipUp`/`clipLow` [m · groups]: multipliers of each group's max and min (learned clipping), or nil.
    static func sweep(_ wt: inout [Float], u: [Float], n: Int, m: Int, config: QuantizerConfig, blockSize: Int,
                      rowScales: [Float]?, exactGEMM: Bool, clipUp: [Float]? = nil, clipLow: [Float]? = nil,
                      codesT: inout [UInt8], qT: inout [Float],
                      scales: inout [Float], zeros: inout [Int32]) throws {
        let groups = config.groupCount(cols: n), width = config.groupWidth(cols: n)
        let table = Quantizer.decodeTable(config)
        var lo = [Float](repeating: 0, count: m), hi = [Float](repeating: 0, count: m)
        var hs = [Float](repeating: 1, count: m), zs = [Float](repeating: 0, count: m)
        var err = [Float](repeating: 0, count: blockSize * m)
        var b0 = 0
        while b0 < n {
            let b1 = blockEnd(b0, n: n, blockSize: blockSize, width: width)
            for i in b0..<b1 {
                if i % width == 0 {
                    let g = i / width
                    groupRange(wt, m: m, from: i, to: min(n, i + width), lo: &lo, hi: &hi)
                    if let r = (0..<m).first(where: { !lo[$0].isFinite || !hi[$0].isFinite }) {
                        throw SwiftQuantError.nonFinite(
                            "GPTQ: the error updates overflowed in row \(r) at sweep column \(i); the Hessian is ill-conditioned")
                    }
                    if let up = clipUp, let low = clipLow {
                        for r in 0..<m { hi[r] = up[r * groups + g] * hi[r]; lo[r] = low[r * groups + g] * lo[r] }
                    }
                    switch config.format {
                    case .int(let bits):
                        let grid = IntGrid(bits: bits, symmetric: config.symmetric, policy: config.policy)
                        for r in 0..<m {
                            let p = grid.params(xmin: lo[r], xmax: hi[r])
                            hs[r] = p.scale; zs[r] = p.zero
                        }
                    case .minifloat(let f):
                        let fmax = f.maxFinite
                        for r in 0..<m {
                            let s = Quantizer.minifloatScale(xmin: lo[r], xmax: hi[r], fmax: fmax)
                            switch config.scaleConstraint {
                            case .none: hs[r] = s
                            case .m1: hs[r] = Quantizer.m1Scale(s)
                            case .m2: hs[r] = Quantizer.m2Scale(s, rowScale: rowScales![r])
                            }
                            zs[r] = 0
                        }
                    }
                    for r in 0..<m { scales[r * groups + g] = hs[r]; zeros[r * groups + g] = Int32(zs[r]) }
                }
                // Quantize column i and spread its error over the rest of the block.
                let d = u[i * n + i], base = i * m, e = (i - b0) * m
                switch config.format {
                case .int(let bits):
                    let qmax = Float((1 << bits) - 1)
                    for r in 0..<m {
                        let w = wt[base + r]
                        let code = IntGrid.code(w, h: hs[r], z: zs[r], qmax: qmax)
                        let q = (table[Int(code)] - zs[r]) * hs[r]
                        codesT[base + r] = UInt8(code); qT[base + r] = q
                        err[e + r] = (w - q) / d
                    }
                case .minifloat(let f):
                    let fmax = f.maxFinite
                    for r in 0..<m {
                        let w = wt[base + r]
                        let code = Quantizer.minifloatCode(w, scale: hs[r], format: f, fmax: fmax)
                        let q = (table[Int(code)] - zs[r]) * hs[r]
                        codesT[base + r] = code; qT[base + r] = q
                        err[e + r] = (w - q) / d
                    }
                }
                if i + 1 < b1 {
                    wt.withUnsafeMutableBufferPointer { wb in
                        err.withUnsafeBufferPointer { eb in
                            let ep = eb.baseAddress! + e
                            for j in (i + 1)..<b1 {
                                let hij = u[i * n + j]
                                let row = wb.baseAddress! + j * m
                                for r in 0..<m { row[r] = row[r] - ep[r] * hij }
                            }
                        }
                    }
                }
            }
            // Lazy update of the columns after the block: W[:, b1:] −= Err · U[b0:b1, b1:].
            if b1 < n {
                u.withUnsafeBufferPointer { ub in
                    err.withUnsafeBufferPointer { eb in
                        wt.withUnsafeMutableBufferPointer { wb in
                            DenseLinearAlgebra.gemm(exactGEMM, transA: true, m: n - b1, n: m, k: b1 - b0, alpha: -1,
                                                    a: ub.baseAddress! + b0 * n + b1, lda: n, b: eb.baseAddress!,
                                                    ldb: m, beta: 1, c: wb.baseAddress! + b1 * m, ldc: m)
                        }
                    }
                }
            }
            b0 = b1
        }
    }
}
