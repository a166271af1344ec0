import CSQSupport

/// Weight quantizers over row-major [rows, cols] float32 matrices (ALGORITHMS.md §1 and §4).
///
/// Every entry point validates its arguments, refuses NaN/Inf weights with `.nonFinite`, and runs rows in
/// parallel. Per group the kernel takes the range, derives (scale, zero-point) with the config's policy and
/// writes codes and/or the fake-quantized values. Arithmetic follows the specification operation by
/// operation in float32 (`w / h`, never `w · (1/h)`; round half to even), so results are bit-exact with the
/// NumPy reference in the tests; `Reference` below is the scalar definition the SIMD kernels are checked
/// against.
public enum Quantizer {
    // MARK: public entry points

    /// Quantizes `w` into caller-provided buffers: `codes` [rows·cols], `scales` and `zeros`
    /// [rows·groupCount]. `clipUp` / `clipLow` ([rows·groupCount], values in [0, 1]) multiply each group's
    /// max and min (LWC's σ(u), σ(l)).
    public static func quantize(
        _ w: UnsafeBufferPointer<Float>, rows: Int, cols: Int, config: QuantizerConfig,
        clipUp: UnsafeBufferPointer<Float>? = nil, clipLow: UnsafeBufferPointer<Float>? = nil,
        codes: UnsafeMutableBufferPointer<UInt8>, scales: UnsafeMutableBufferPointer<Float>,
        zeros: UnsafeMutableBufferPointer<Int32>
    ) throws {
        let g = try check(w.count, rows: rows, cols: cols, config: config, clipUp: clipUp, clipLow: clipLow)
        try require(codes.count >= rows * cols, "codes buffer holds \(codes.count) values, \(rows * cols) needed")
        try require(scales.count >= rows * g && zeros.count >= rows * g,
                    "scales/zeros buffers hold \(scales.count)/\(zeros.count) values, \(rows * g) needed")
        try run(w.baseAddress!, rows: rows, cols: cols, config: config, clipUp: clipUp, clipLow: clipLow,
                scales: scales.baseAddress!, zeros: zeros.baseAddress!) { r, rowCodes in
            (codes.baseAddress! + r * cols).update(from: rowCodes, count: cols)
        }
    }

    /// Quantizes `w` and returns codes, scales and zero-points together.
    public static func quantize(
        _ w: UnsafeBufferPointer<Float>, rows: Int, cols: Int, config: QuantizerConfig,
        clipUp: UnsafeBufferPointer<Float>? = nil, clipLow: UnsafeBufferPointer<Float>? = nil
    ) throws -> QuantizedTensor {
        let g = try check(w.count, rows: rows, cols: cols, config: config, clipUp: clipUp, clipLow: clipLow)
        var codes = [UInt8](repeating: 0, count: rows * cols)
        var scales = [Float](repeating: 0, count: rows * g)
        var zeros = [Int32](repeating: 0, count: rows * g)
        try codes.withUnsafeMutableBufferPointer { c in
            try scales.withUnsafeMutableBufferPointer { s in
                try zeros.withUnsafeMutableBufferPointer { z in
                    try quantize(w, rows: rows, cols: cols, config: config, clipUp: clipUp, clipLow: clipLow,
                                 codes: c, scales: s, zeros: z)
                }
            }
        }
        return try QuantizedTensor(rows: rows, cols: cols, config: config, codes: codes, scales: scales, zeros: zeros)
    }

    /// Quantizes and packs in one pass: `packed` holds rows of `BitPacking.packedByteCount(count: cols, …)`
    /// bytes each.
    public static func quantizePacked(
        _ w: UnsafeBufferPointer<Float>, rows: Int, cols: Int, config: QuantizerConfig,
        clipUp: UnsafeBufferPointer<Float>? = nil, clipLow: UnsafeBufferPointer<Float>? = nil,
        packed: UnsafeMutableBufferPointer<UInt8>, scales: UnsafeMutableBufferPointer<Float>,
        zeros: UnsafeMutableBufferPointer<Int32>
    ) throws {
        let g = try check(w.count, rows: rows, cols: cols, config: config, clipUp: clipUp, clipLow: clipLow)
        let bits = config.format.bitWidth
        let stride = BitPacking.packedByteCount(count: cols, bits: bits)
        try require(packed.count >= rows * stride, "packed buffer holds \(packed.count) bytes, \(rows * stride) needed")
        try require(scales.count >= rows * g && zeros.count >= rows * g,
                    "scales/zeros buffers hold \(scales.count)/\(zeros.count) values, \(rows * g) needed")
        let out = packed.baseAddress!
        let width = config.groupWidth(cols: cols)
        if case .int(4) = config.format, config.policy == .minmax, clipUp == nil,
           try fusedInt4(w.baseAddress!, rows: rows, cols: cols, width: width, symmetric: config.symmetric,
                         packed: out, stride: stride, scales: scales.baseAddress!, zeros: zeros.baseAddress!) {
            return
        }
        try run(w.baseAddress!, rows: rows, cols: cols, config: config, clipUp: clipUp, clipLow: clipLow,
                scales: scales.baseAddress!, zeros: zeros.baseAddress!) { r, rowCodes in
            BitPacking.packUnchecked(rowCodes, count: cols, bits: bits, into: out + r * stride)
        }
    }

    /// 4-bit min/max quantize + pack in one pass over the weights (the AVX2 kernel `sqs_quant_int4_packed`:
    /// per group the range, the scale, then 32 values at a time straight to 16 packed bytes). Returns false when
    /// the kernel is not available (a build without AVX2, or an odd group width); the caller then takes the
    /// general path, which is also the scalar definition the tests compare this kernel with.
    private static func fusedInt4(
        _ w: UnsafePointer<Float>, rows: Int, cols: Int, width: Int, symmetric: Bool,
        packed: UnsafeMutablePointer<UInt8>, stride: Int, scales: UnsafeMutablePointer<Float>,
        zeros: UnsafeMutablePointer<Int32>
    ) throws -> Bool {
        func kernel(_ r0: Int, _ r1: Int) -> Int64 {
            sqs_quant_int4_packed(w, Int64(r0), Int64(r1), Int64(cols), Int64(width), symmetric ? 1 : 0, packed,
                                  Int64(stride), scales, zeros)
        }
        if kernel(0, 0) == -2 { return false }
        let badRows = UnsafeMutablePointer<UInt8>.allocate(capacity: rows)
        badRows.initialize(repeating: 0, count: rows)
        defer { badRows.deallocate() }
        parallelFor(rows, minChunk: max(1, 32768 / cols)) { range in
            let bad = kernel(range.lowerBound, range.upperBound)
            if bad >= 0 { badRows[Int(bad)] = 1 }
        }
        try reportNonFinite(w, rows: rows, cols: cols, flags: badRows)
        return true
    }

    /// Writes `dequantize(quantize(w))` to `out`, which may be `w` itself (in place).
    public static func fakeQuantize(
        _ w: UnsafePointer<Float>, rows: Int, cols: Int, config: QuantizerConfig,
        clipUp: UnsafeBufferPointer<Float>? = nil, clipLow: UnsafeBufferPointer<Float>? = nil,
        out: UnsafeMutablePointer<Float>
    ) throws {
        let g = try check(rows * cols, rows: rows, cols: cols, config: config, clipUp: clipUp, clipLow: clipLow)
        let width = config.groupWidth(cols: cols)
        let table = decodeTable(config)
        try run(w, rows: rows, cols: cols, config: config, clipUp: clipUp, clipLow: clipLow,
                scales: nil, zeros: nil) { r, rowCodes, rowScales, rowZeros in
            dequantizeRow(rowCodes, scales: rowScales, zeros: rowZeros, cols: cols, width: width, groups: g,
                          table: table, out: out + r * cols)
        }
    }

    /// The float32 values of quantized codes: `(code − zero) · scale` (INT) or `decode(code) · scale` (FP).
    public static func dequantize(
        codes: UnsafeBufferPointer<UInt8>, scales: UnsafeBufferPointer<Float>, zeros: UnsafeBufferPointer<Int32>,
        rows: Int, cols: Int, config: QuantizerConfig, out: UnsafeMutableBufferPointer<Float>
    ) throws {
        try config.validate(rows: rows, cols: cols)
        let g = config.groupCount(cols: cols)
        try require(codes.count >= rows * cols && out.count >= rows * cols,
                    "codes/out hold \(codes.count)/\(out.count) values, \(rows * cols) needed")
        try require(scales.count >= rows * g && zeros.count >= rows * g,
                    "scales/zeros hold \(scales.count)/\(zeros.count) values, \(rows * g) needed")
        let limit = 1 << config.format.bitWidth
        if let bad = codes.firstIndex(where: { Int($0) >= limit }) {
            throw SwiftQuantError.invalidArgument("code \(codes[bad]) at index \(bad) does not fit \(config.format.name)")
        }
        dequantizeUnchecked(codes: codes, scales: scales, zeros: zeros, rows: rows, cols: cols, config: config,
                            out: out.baseAddress!)
    }

    static func dequantizeUnchecked(
        codes: UnsafeBufferPointer<UInt8>, scales: UnsafeBufferPointer<Float>, zeros: UnsafeBufferPointer<Int32>,
        rows: Int, cols: Int, config: QuantizerConfig, out: UnsafeMutablePointer<Float>
    ) {
        let g = config.groupCount(cols: cols), width = config.groupWidth(cols: cols)
        let table = decodeTable(config)
        let c = codes.baseAddress!, s = scales.baseAddress!, z = zeros.baseAddress!
        parallelFor(rows, minChunk: max(1, 32768 / cols)) { range in
            for r in range {
                dequantizeRow(c + r * cols, scales: s + r * g, zeros: z + r * g, cols: cols, width: width, groups: g,
                              table: table, out: out + r * cols)
            }
        }
    }

    // MARK: validation

    /// Validates sizes, settings and clip multipliers; returns the group count.
    static func check(_ count: Int, rows: Int, cols: Int, config: QuantizerConfig,
                      clipUp: UnsafeBufferPointer<Float>?, clipLow: UnsafeBufferPointer<Float>?) throws -> Int {
        try config.validate(rows: rows, cols: cols)
        let (n, overflow) = rows.multipliedReportingOverflow(by: cols)
        try require(!overflow && count >= n, "the weight buffer holds \(count) values, [\(rows), \(cols)] needs more")
        let g = config.groupCount(cols: cols)
        switch (clipUp, clipLow) {
        case (nil, nil): break
        case let (up?, low?):
            for (name, c) in [("clip_up", up), ("clip_low", low)] {
                try require(c.count == rows * g, "\(name) must hold [rows, groups] = [\(rows), \(g)] values, got \(c.count)")
                if let bad = c.firstIndex(where: { !($0 >= 0 && $0 <= 1) }) {
                    throw SwiftQuantError.invalidArgument(
                        "\(name) values must lie in [0, 1]; found \(c[bad]) at row \(bad / g), group \(bad % g)")
                }
            }
        default:
            throw SwiftQuantError.invalidArgument("clip multipliers come in pairs: give both up and low, or neither")
        }
        return g
    }

    // MARK: the row driver

    /// Runs the row kernel over all rows in parallel; `emit(r, codes)` gets each row's codes (in scratch).
    private static func run(
        _ w: UnsafePointer<Float>, rows: Int, cols: Int, config: QuantizerConfig,
        clipUp: UnsafeBufferPointer<Float>?, clipLow: UnsafeBufferPointer<Float>?,
        scales: UnsafeMutablePointer<Float>, zeros: UnsafeMutablePointer<Int32>,
        emit: (Int, UnsafeMutablePointer<UInt8>) -> Void
    ) throws {
        try run(w, rows: rows, cols: cols, config: config, clipUp: clipUp, clipLow: clipLow, scales: scales,
                zeros: zeros) { r, c, _, _ in emit(r, c) }
    }

    /// Runs the row kernel; `scales`/`zeros` nil means "scratch only" (fake-quant).
    private static func run(
        _ w: UnsafePointer<Float>, rows: Int, cols: Int, config: QuantizerConfig,
        clipUp: UnsafeBufferPointer<Float>?, clipLow: UnsafeBufferPointer<Float>?,
        scales: UnsafeMutablePointer<Float>?, zeros: UnsafeMutablePointer<Int32>?,
        emit: (Int, UnsafeMutablePointer<UInt8>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Int32>) -> Void
    ) throws {
        let g = config.groupCount(cols: cols)
        let kernel = RowKernel(config: config, cols: cols)
        let badRows = UnsafeMutablePointer<UInt8>.allocate(capacity: rows)
        badRows.initialize(repeating: 0, count: rows)
        defer { badRows.deallocate() }
        parallelFor(rows, minChunk: max(1, 32768 / cols)) { range in
            let codes = UnsafeMutablePointer<UInt8>.allocate(capacity: cols + 64)
            let ownScales = scales == nil ? UnsafeMutablePointer<Float>.allocate(capacity: g) : nil
            let ownZeros = zeros == nil ? UnsafeMutablePointer<Int32>.allocate(capacity: g) : nil
            defer { codes.deallocate(); ownScales?.deallocate(); ownZeros?.deallocate() }
            for r in range {
                let s = scales.map { $0 + r * g } ?? ownScales!
                let z = zeros.map { $0 + r * g } ?? ownZeros!
                let ok = kernel.quantizeRow(w + r * cols, up: clipUp.map { $0.baseAddress! + r * g },
                                            low: clipLow.map { $0.baseAddress! + r * g },
                                            codes: codes, scales: s, zeros: z)
                if !ok { badRows[r] = 1; continue }
                emit(r, codes, s, z)
            }
        }
        try reportNonFinite(w, rows: rows, cols: cols, flags: badRows)
    }

    /// Throws `.nonFinite` naming the first NaN/Inf among the flagged rows.
    private static func reportNonFinite(_ w: UnsafePointer<Float>, rows: Int, cols: Int,
                                        flags: UnsafeMutablePointer<UInt8>) throws {
        guard let r = (0..<rows).first(where: { flags[$0] != 0 }) else { return }
        let c = (0..<cols).first { !w[r * cols + $0].isFinite } ?? 0
        throw SwiftQuantError.nonFinite(
            "the weights contain \(w[r * cols + c]) at [\(r), \(c)] (row \(r), column \(c)); NaN and Inf cannot be quantized")
    }

    // MARK: kernels

    static func decodeTable(_ config: QuantizerConfig) -> [Float] {
        switch config.format {
        case .int(let bits): return (0..<(1 << bits)).map(Float.init)
        case .minifloat(let f): return f.decodeTable
        }
    }

    static func dequantizeRow(_ codes: UnsafePointer<UInt8>, scales: UnsafePointer<Float>, zeros: UnsafePointer<Int32>,
                              cols: Int, width: Int, groups: Int, table: [Float], out: UnsafeMutablePointer<Float>) {
        table.withUnsafeBufferPointer { t in
            for gi in 0..<groups {
                let lo = gi * width, hi = min(cols, lo + width)
                let s = scales[gi], z = Float(zeros[gi])
                for i in lo..<hi { out[i] = (t[Int(codes[i])] - z) * s }
            }
        }
    }

    /// Per-row quantization for one config. Holds the format constants so the loops see them as values.
    struct RowKernel {
        let config: QuantizerConfig
        let cols: Int
        let width: Int
        let groups: Int

        init(config: QuantizerConfig, cols: Int) {
            self.config = config
            self.cols = cols
            self.width = config.groupWidth(cols: cols)
            self.groups = config.groupCount(cols: cols)
        }

        /// Quantizes one row into `codes`; returns false when the row holds NaN/Inf.
        @inline(__always)
        func quantizeRow(_ w: UnsafePointer<Float>, up: UnsafePointer<Float>?, low: UnsafePointer<Float>?,
                         codes: UnsafeMutablePointer<UInt8>, scales: UnsafeMutablePointer<Float>,
                         zeros: UnsafeMutablePointer<Int32>) -> Bool {
            switch config.format {
            case .int(let bits):
                let grid = IntGrid(bits: bits, symmetric: config.symmetric, policy: config.policy)
                let reference = KernelDispatch.reference
                for gi in 0..<groups {
                    let lo = gi * width, n = min(cols, lo + width) - lo
                    guard var (xmin, xmax) = reference ? QuantKernels.Reference.minMax(w + lo, n)
                        : QuantKernels.minMax(w + lo, n) else { return false }
                    if let up, let low { xmax = up[gi] * xmax; xmin = low[gi] * xmin }
                    let (h, z, _) = grid.params(xmin: xmin, xmax: xmax)
                    scales[gi] = h
                    zeros[gi] = Int32(z)
                    if reference {
                        for i in 0..<n { codes[lo + i] = UInt8(IntGrid.code(w[lo + i], h: h, z: z, qmax: grid.qmax)) }
                    } else {
                        QuantKernels.intCodes(w + lo, n, h: h, z: z, qmax: grid.qmax, into: codes + lo)
                    }
                }
            case .minifloat(let f):
                let fmax = f.maxFinite
                for gi in 0..<groups {
                    let lo = gi * width, n = min(cols, lo + width) - lo
                    guard var (xmin, xmax) = QuantKernels.minMax(w + lo, n) else { return false }
                    if let up, let low { xmax = up[gi] * xmax; xmin = low[gi] * xmin }
                    scales[gi] = Quantizer.minifloatScale(xmin: xmin, xmax: xmax, fmax: fmax)
                    zeros[gi] = 0
                }
                Quantizer.constrain(scales, count: groups, config.scaleConstraint)
                for gi in 0..<groups {
                    let lo = gi * width, n = min(cols, lo + width) - lo
                    let s = scales[gi]
                    for i in 0..<n { codes[lo + i] = Quantizer.minifloatCode(w[lo + i], scale: s, format: f, fmax: fmax) }
                }
            }
            return true
        }
    }

    /// Scale and zero-point of one INT group from its (possibly clipped) range: `IntGrid.params`.
    @inline(__always)
    public static func intParams(xmin: Float, xmax: Float, bits: Int, symmetric: Bool, policy: QParamsPolicy)
        -> (scale: Float, zero: Float)
    {
        let p = IntGrid(bits: bits, symmetric: symmetric, policy: policy).params(xmin: xmin, xmax: xmax)
        return (p.scale, p.zero)
    }

    /// Applies a power-of-two constraint to one row's minifloat scales (ALGORITHMS.md §4).
    static func constrain(_ s: UnsafeMutablePointer<Float>, count: Int, _ constraint: ScaleConstraint) {
        switch constraint {
        case .none: return
        case .m1:
            for i in 0..<count { s[i] = m1Scale(s[i]) }
        case .m2:
            var c: Float = 0
            for i in 0..<count { c = max(c, s[i]) }
            for i in 0..<count { s[i] = m2Scale(s[i], rowScale: c) }
        }
    }

    // MARK: one group at a time (GPTQ's sweep; the row kernel above uses the same functions)

    /// The unconstrained minifloat scale of one group from its range: `absmax / Fmax`, 0 → 1 (ALGORITHMS.md §4).
    @inline(__always)
    public static func minifloatScale(xmin: Float, xmax: Float, fmax: Float) -> Float {
        let s = max(abs(xmax), abs(xmin)) / fmax
        return s == 0 ? 1 : s
    }

    /// The minifloat code of `w` under scale `s`: `encode(clamp(w / s, ±Fmax))` (a true division).
    @inline(__always)
    public static func minifloatCode(_ w: Float, scale s: Float, format f: MinifloatFormat, fmax: Float) -> UInt8 {
        f.encode(min(max(w / s, -fmax), fmax))
    }

    /// M1 for one scale: `2^⌈log2 s⌉`.
    @inline(__always)
    public static func m1Scale(_ s: Float) -> Float { ceilPowerOfTwo(s).value }

    /// M2 for one scale against the row scale `c`: `c · 2^k`, `k = ⌈log2(s / c)⌉` clamped to [−8, 6] (the range in
    /// which every E2M1 value × 2^k is exact in E4M3). With `c = max_g s` (RTN) `k ≤ 0`, so only −8 binds; GPTQ's
    /// sweep fixes `c` before the sweep and a group's weights may grow past it (k > 0).
    @inline(__always)
    public static func m2Scale(_ s: Float, rowScale c: Float) -> Float {
        let k = min(max(ceilPowerOfTwo(s / c).exponent, m2MinExponent), m2MaxExponent)
        return c * Float(sign: .plus, exponent: k, significand: 1)
    }

    /// The exponent range of M2's power-of-two factors.
    public static let m2MinExponent = -8, m2MaxExponent = 6

    /// `2^⌈log2 x⌉` for positive finite `x`, exactly (from the significand and exponent, no `log2`).
    @inline(__always)
    public static func ceilPowerOfTwo(_ x: Float) -> (value: Float, exponent: Int) {
        let k = Int(x.exponent) + (x.significand == 1 ? 0 : 1)
        return (Float(sign: .plus, exponent: k, significand: 1), k)
    }
}

/// SIMD kernels of the quantizers, each with its scalar definition in `QuantKernels.Reference`.
public enum QuantKernels {
    /// 1.5 · 2^23: adding and subtracting it rounds a float32 of magnitude < 2^22 to the nearest integer, ties
    /// to even, in the current (default) rounding mode. Larger magnitudes saturate in the clamp after it.
    @usableFromInline static let magic: Float = 12_582_912

    /// (min, max) of `n` values, or nil when one of them is NaN or ±Inf.
    @inlinable @inline(__always)
    public static func minMax(_ p: UnsafePointer<Float>, _ n: Int) -> (Float, Float)? {
        typealias V = SIMD8<Float>
        @inline(__always) func load(_ i: Int) -> V { UnsafeRawPointer(p + i).loadUnaligned(as: V.self) }
        // Two independent accumulator sets hide the latency of min/max/add.
        var lo0 = V(repeating: .infinity), hi0 = V(repeating: -.infinity), bad0 = V(repeating: 0)
        var lo1 = lo0, hi1 = hi0, bad1 = bad0
        var i = 0
        while i + 16 <= n {
            let a = load(i), b = load(i + 8)
            lo0.replace(with: a, where: a .< lo0); hi0.replace(with: a, where: a .> hi0)
            lo1.replace(with: b, where: b .< lo1); hi1.replace(with: b, where: b .> hi1)
            bad0 += a - a  // NaN for NaN and ±Inf, 0 otherwise
            bad1 += b - b
            i += 16
        }
        if i + 8 <= n {
            let a = load(i)
            lo0.replace(with: a, where: a .< lo0); hi0.replace(with: a, where: a .> hi0)
            bad0 += a - a
            i += 8
        }
        bad0 += bad1
        // Horizontal reductions by hand, lane by lane: the generic `SIMD.min()` / `.max()` / `.sum()` are not
        // inlined, and merging the two accumulators with `replace(with:where:)` compiles to per-lane branches.
        var l = Swift.min(lo0[0], lo1[0]), h = Swift.max(hi0[0], hi1[0]), b = bad0[0]
        for j in 1..<8 {
            l = Swift.min(l, Swift.min(lo0[j], lo1[j]))
            h = Swift.max(h, Swift.max(hi0[j], hi1[j]))
            b += bad0[j]
        }
        while i < n {
            let v = p[i]
            l = Swift.min(l, v); h = Swift.max(h, v); b += v - v
            i += 1
        }
        return b == 0 ? (l, h) : nil
    }

    /// Magnitude of `w / h` below which adding and subtracting `magic` rounds exactly (half to even).
    public static let exactRoundLimit: Float = 4_194_304

    /// `IntGrid.code` of 8 values at once: `clamp(round(w / h) + z, 0, qmax)` as floats, by magic-number rounding
    /// (exact while `|w / h| < exactRoundLimit`; larger values land on the clamp anyway for any sane grid).
    @inlinable @inline(__always)
    public static func codes8(_ w: SIMD8<Float>, h: SIMD8<Float>, z: SIMD8<Float>, qmax: SIMD8<Float>) -> SIMD8<Float> {
        let mv = SIMD8<Float>(repeating: magic), zero = SIMD8<Float>(repeating: 0)
        var x = ((w / h + mv) - mv) + z
        x.replace(with: zero, where: x .< zero)
        x.replace(with: qmax, where: x .> qmax)
        return x
    }

    /// Codes `clamp(round(w / h) + z, 0, qmax)` of `n` values.
    @inlinable @inline(__always)
    public static func intCodes(_ p: UnsafePointer<Float>, _ n: Int, h: Float, z: Float, qmax: Float,
                                into codes: UnsafeMutablePointer<UInt8>) {
        var i = 0
        let hv = SIMD8<Float>(repeating: h), zv = SIMD8<Float>(repeating: z), mv = SIMD8<Float>(repeating: magic)
        let top = SIMD8<Float>(repeating: qmax)
        while i + 8 <= n {
            let x = codes8(UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self), h: hv, z: zv, qmax: top)
            let bits = unsafeBitCast(x + mv, to: SIMD8<UInt32>.self) & 0xFF
            for j in 0..<8 { codes[i + j] = UInt8(truncatingIfNeeded: bits[j]) }
            i += 8
        }
        while i < n {
            codes[i] = Reference.intCode(p[i], h: h, z: z, qmax: qmax)
            i += 1
        }
    }

    /// The scalar twins of `minMax` and `intCodes`.
    public enum Reference {
        /// One INT code by the definition (`IntGrid.code`).
        @inlinable
        public static func intCode(_ w: Float, h: Float, z: Float, qmax: Float) -> UInt8 {
            UInt8(IntGrid.code(w, h: h, z: z, qmax: qmax))
        }

        /// (min, max) of `n` values one at a time, or nil when one of them is NaN or ±Inf.
        public static func minMax(_ p: UnsafePointer<Float>, _ n: Int) -> (Float, Float)? {
            var l = Float.infinity, h = -Float.infinity
            for i in 0..<n {
                guard p[i].isFinite else { return nil }
                l = Swift.min(l, p[i]); h = Swift.max(h, p[i])
            }
            return (l, h)
        }
    }
}

/// The integer grid of ALGORITHMS.md §1 — the one definition of INT quantization parameters, codes and values,
/// used by `Quantizer` (RTN, export), `Autodiff.FakeQuantLWC` (training) and, as declared fast twins, the SIMD
/// kernels (`QuantKernels.codes8`) and the C kernel `sqs_quant_int4_packed` (4 bits, `.minmax`), which the tests
/// hold bit-exact to it. All float32, `w / h` as a true division, round half to even.
public struct IntGrid: Sendable, Hashable {
    public let bits: Int
    public let symmetric: Bool
    public let policy: QParamsPolicy

    public init(bits: Int, symmetric: Bool = false, policy: QParamsPolicy = .minmax) {
        self.bits = bits; self.symmetric = symmetric; self.policy = policy
    }

    /// The clamp of the `.minmax` scale: `h ∈ [minScale, maxScale]`.
    public static let minScale: Float = 1e-5, maxScale: Float = 1e4

    /// Whether the scale clamp passes the gradient at `rawScale` (LWC): inside `[minScale, maxScale]`, bounds
    /// included or not.
    @inlinable @inline(__always)
    public static func scalePasses(_ rawScale: Float, inclusive: Bool) -> Bool {
        inclusive ? (rawScale >= minScale && rawScale <= maxScale) : (rawScale > minScale && rawScale < maxScale)
    }

    /// The largest code, `2^N − 1`.
    @inlinable public var qmax: Float { Float((1 << bits) - 1) }

    /// Scale `h` and zero-point `z` of one group from its (possibly clipped) range, and the scale before its
    /// clamp to [1e-5, 1e4] (`.minmax`; LWC's gradient passes the clamp by it):
    /// ```
    /// minmax asym: h = clamp((xmax − xmin)/(2^N − 1), 1e-5, 1e4), z = round(clamp(−xmin/h, −1e4, 1e4))
    /// minmax sym:  h = clamp(max(|xmax|, |xmin|)/(2^(N−1) − 1), 1e-5, 1e4), z = 2^(N−1) − 1
    /// gptq: 0 forced into the range; sym h = 2·absmax/(2^N − 1), z = 2^(N−1); an all-zero group uses [−1, 1]
    /// ```
    @inlinable @inline(__always)
    public func params(xmin: Float, xmax: Float) -> (scale: Float, zero: Float, rawScale: Float) {
        switch policy {
        case .minmax:
            if symmetric {
                let den = Float((1 << (bits - 1)) - 1)
                let raw = Swift.max(Swift.abs(xmax), Swift.abs(xmin)) / den
                return (Swift.min(Swift.max(raw, Self.minScale), Self.maxScale), den, raw)
            }
            let raw = (xmax - xmin) / qmax
            let h = Swift.min(Swift.max(raw, Self.minScale), Self.maxScale)
            let z = Swift.min(Swift.max(-xmin / h, -1e4), 1e4).rounded(.toNearestOrEven)
            return (h, z, raw)
        case .gptq:
            var lo = Swift.min(xmin, 0), hi = Swift.max(xmax, 0)
            if symmetric {
                hi = Swift.max(Swift.abs(lo), hi)
                lo = -hi
            }
            if lo == 0 && hi == 0 { lo = -1; hi = 1 }
            let h = (hi - lo) / qmax
            let z = symmetric ? Float(1 << (bits - 1)) : (-lo / h).rounded(.toNearestOrEven)
            return (h, z, h)
        }
    }

    /// The code of `w`: `clamp(round(w / h) + z, 0, qmax)` (a float holding an integer).
    @inlinable @inline(__always)
    public static func code(_ w: Float, h: Float, z: Float, qmax: Float) -> Float {
        Swift.min(Swift.max((w / h).rounded(.toNearestOrEven) + z, 0), qmax)
    }

    /// The value of a code: `(q − z)·h`.
    @inlinable @inline(__always)
    public static func value(_ q: Float, h: Float, z: Float) -> Float { (q - z) * h }

    /// `value(code(w))`, the fake-quantized weight.
    @inlinable @inline(__always)
    public static func fakeQuant(_ w: Float, h: Float, z: Float, qmax: Float) -> Float {
        value(code(w, h: h, z: z, qmax: qmax), h: h, z: z)
    }
}
