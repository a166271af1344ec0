/// Dynamic, simulated ("fake") quantization of float32 activations in place (ALGORITHMS.md §2b): the input of a
/// linear `[rows, features]` (per token), or Q/K/V per head per token (a group of `headDim` features). The
/// parameters come from the values themselves, one set per group of `width` consecutive features of a row.
///
/// - INT2…8 (OmniQuant's `Q_a`, §1's asymmetric MinMax without LWC, 0 not forced into the range), per group:
///   `h = clamp((xmax − xmin)/(2^N − 1), 1e-5, 1e4)`, `z = round(clamp(−xmin/h, −1e4, 1e4))`,
///   `x̂ = (clamp(round(x/h) + z, 0, 2^N − 1) − z)·h` — `IntGrid.params` and `IntGrid.fakeQuant`.
/// - Minifloat (ZeroQuant-FP, §4), symmetric absmax per group: `s = absmax/Fmax` (1 when absmax = 0),
///   `y = clamp(x/s, ±Fmax)`, `x̂ = decode(cast(y))·s` with `MinifloatFormat`'s bit-exact cast.
///
/// Everything is float32 in the order written (true divisions, round half to even), bit-exact with the NumPy /
/// ml_dtypes reference (`Tests/SwiftQuantTests/Fixtures/make_activation_fixtures.py`).
///
/// Groups: `width = nil` is per token (the whole row is one group). A row whose length is not a multiple of
/// `width` ends with a shorter group (its own min/max, nothing padded); `width ≥ features` is per token.
///
/// Zeros: an INT output of zero is +0; a minifloat output keeps the sign of its input (the cast keeps −0). A
/// constant row follows §1's clamps literally (h = 1e-5, z clamped to ±1e4), as OmniQuant's `Q_a` does: a
/// constant 3.7 comes out as (2^N − 1 + 1e4)·1e-5, not 3.7.
///
/// The quantizer is immutable: one instance can serve several linears and threads.
///
/// Backward (`backward(input:gradient:rows:features:)`), as PyTorch autograd differentiates OmniQuant's `Q_a`:
/// `round_ste`, the scale `h` not detached (ALGORITHMS.md §1), `z = round(·)` without gradient, `amax`/`amin`
/// sharing their gradient evenly among ties. Per group, with `g = ∂L/∂x̂`:
/// - INT: `t = x/h`, `p = round(t) + z`, inside = `0 ≤ p ≤ 2^N − 1` (PyTorch's clamp passes at its bounds, as
///   `FakeQuantLWC`'s `.inclusive`). `∂x̂/∂x = [inside]`, `∂x̂/∂h = (q − z) − [inside]·t`; `∂L/∂h = Σ g·∂x̂/∂h`
///   (summed in float64) passes the scale clamp where `1e-5 ≤ raw h ≤ 1e4` and reaches the group's max element(s)
///   as `+∂L/∂h/(2^N − 1)` and its min element(s) as `−∂L/∂h/(2^N − 1)`.
/// - Minifloat (our extension of the same rule; ZeroQuant-FP does not train): `y = x/s`, inside = `|y| ≤ Fmax`,
///   `c = decode(cast(clamp(y)))`; `∂x̂/∂x = [inside]`, `∂x̂/∂s = c − [inside]·y`; `∂L/∂s = Σ g·∂x̂/∂s` reaches the
///   element(s) of largest `|x|` as `sign(x)·∂L/∂s/Fmax` (none when the group is all zeros: `s = 1` is a constant).
/// So training sees how a transform that narrows a token's range shrinks its rounding error, which a plain
/// straight-through estimator hides.
///
/// Non-finite inputs: `quantize` cannot throw (`ActivationQuantizer`). A group holding a NaN or ±Inf comes out
/// as NaN in every one of its elements (other groups and rows are unaffected), so a loss computed from it is
/// NaN and visible. Call `ActivationQuantization.check` first to get a thrown `.nonFinite` error instead.
public final class DynamicActivationQuantizer: ActivationQuantizer, Sendable, CustomStringConvertible {
    /// `.int(bits:)` with 2…8 bits, or a minifloat.
    public let format: NumberFormat
    /// Features per group; nil = the whole row (per token).
    public let width: Int?
    /// The minifloat's largest finite value (0 for INT).
    private let fmax: Float

    /// Throws `.invalidArgument` for an INT width outside 2…8 or a non-positive `width`.
    public init(format: NumberFormat, width: Int? = nil) throws {
        try format.validate()
        if let width {
            try require(width > 0, "activation quantizer group width must be positive, got \(width)")
        }
        self.format = format
        self.width = width
        if case .minifloat(let f) = format { fmax = f.maxFinite } else { fmax = 0 }
    }

    /// E.g. `int8 per token`, `e4m3fn per 64 features`.
    public var description: String {
        "\(format.name) " + (width.map { "per \($0) features" } ?? "per token")
    }

    /// Fake-quantizes `x` `[rows, features]` in place (SIMD; the scalar twin is `quantizeReference`, which runs
    /// instead when `$SWIFTQUANT_KERNELS=reference`). Rows run in parallel.
    public func quantize(_ x: UnsafeMutablePointer<Float>, rows: Int, features: Int) {
        run(x, rows: rows, features: features, reference: KernelDispatch.reference)
    }

    /// The scalar definition of `quantize`, element by element (`IntGrid.fakeQuant`; `decode(encode(y))·s`).
    /// Same results bit for bit.
    public func quantizeReference(_ x: UnsafeMutablePointer<Float>, rows: Int, features: Int) {
        run(x, rows: rows, features: features, reference: true)
    }

    /// Turns `gradient` (`∂L/∂x̂`, `[rows, features]`) into `∂L/∂x` in place, `input` being the values before
    /// quantization (the type's documentation gives the math). A group whose input holds NaN or ±Inf gets NaN
    /// gradients, as its forward gave NaN values. Rows run in parallel. INT groups run a SIMD loop; the scalar
    /// twin is `backwardReference` (run instead when `$SWIFTQUANT_KERNELS=reference`), equal except for the order
    /// in which `∂L/∂h` is summed (in float64 either way).
    public func backward(input: UnsafePointer<Float>, gradient: UnsafeMutablePointer<Float>, rows: Int, features: Int) {
        backward(input: input, gradient: gradient, rows: rows, features: features, reference: KernelDispatch.reference)
    }

    /// The scalar definition of `backward`, element by element.
    public func backwardReference(input: UnsafePointer<Float>, gradient: UnsafeMutablePointer<Float>, rows: Int,
                                  features: Int) {
        backward(input: input, gradient: gradient, rows: rows, features: features, reference: true)
    }

    private func backward(input: UnsafePointer<Float>, gradient: UnsafeMutablePointer<Float>, rows: Int, features: Int,
                          reference: Bool) {
        precondition(rows >= 0 && features >= 0, "negative shape [\(rows), \(features)]")
        guard rows > 0, features > 0 else { return }
        let w = min(width ?? features, features)
        let format = self.format, fmax = self.fmax
        parallelFor(rows, minChunk: max(1, 16384 / features)) { range in
            for r in range {
                var lo = 0
                while lo < features {
                    let n = min(w, features - lo)
                    Self.groupBackward(input + r * features + lo, gradient + r * features + lo, n, format: format,
                                       fmax: fmax, reference: reference)
                    lo += n
                }
            }
        }
    }

    /// One group of `backward`, in place.
    private static func groupBackward(_ x: UnsafePointer<Float>, _ g: UnsafeMutablePointer<Float>, _ n: Int,
                                      format: NumberFormat, fmax: Float, reference: Bool) {
        guard let (xmin, xmax) = QuantKernels.minMax(x, n) else {
            g.update(repeating: .nan, count: n)
            return
        }
        switch format {
        case .int(let bits):
            let grid = IntGrid(bits: bits)
            let (h, z, raw) = grid.params(xmin: xmin, xmax: xmax)
            var dh: Double = 0
            var i = 0
            if !reference && max(abs(xmax), abs(xmin)) / h < QuantKernels.exactRoundLimit {
                dh = ActivationKernels.intBackward(x, g, n, h: h, z: z, qmax: grid.qmax, done: &i)
            }
            while i < n {
                let (d, inside) = Autodiff.FakeQuantLWC.steTerm(x[i], h: h, z: z, qmax: grid.qmax, inclusive: true)
                dh += Double(g[i] * d)
                if !inside { g[i] = 0 }
                i += 1
            }
            guard IntGrid.scalePasses(raw, inclusive: true) else { return }
            let d = Float(dh) / grid.qmax
            spread(d, over: x, g, n) { $0 == xmax }
            spread(-d, over: x, g, n) { $0 == xmin }
        case .minifloat(let f):
            let absmax = max(abs(xmin), abs(xmax))
            guard absmax > 0 else { return }  // all zeros: s = 1, a constant; every value is inside
            let s = absmax / fmax
            var ds: Double = 0
            for i in 0..<n {
                let y = x[i] / s
                let c = f.decode(f.encode(min(max(y, -fmax), fmax)))
                let inside = abs(y) <= fmax
                ds += Double(g[i] * (inside ? c - y : c))
                if !inside { g[i] = 0 }
            }
            spread(Float(ds) / fmax, over: x, g, n, signed: true) { abs($0) == absmax }
        }
    }

    /// Adds `d`, shared evenly, to the gradient of the elements `selected` picks (the ties of a max or min; of
    /// the largest `|x|` with `signed`, each share times the sign of its value).
    @inline(__always)
    private static func spread(_ d: Float, over x: UnsafePointer<Float>, _ g: UnsafeMutablePointer<Float>, _ n: Int,
                               signed: Bool = false, _ selected: (Float) -> Bool) {
        var ties = 0
        for i in 0..<n where selected(x[i]) { ties += 1 }
        let share = d / Float(ties)
        for i in 0..<n where selected(x[i]) { g[i] += signed && x[i] < 0 ? -share : share }
    }

    private func run(_ x: UnsafeMutablePointer<Float>, rows: Int, features: Int, reference: Bool) {
        precondition(rows >= 0 && features >= 0, "negative shape [\(rows), \(features)]")
        guard rows > 0, features > 0 else { return }
        let w = min(width ?? features, features)
        let format = self.format, fmax = self.fmax
        parallelFor(rows, minChunk: max(1, 32768 / features)) { range in
            for r in range {
                let row = x + r * features
                var lo = 0
                while lo < features {
                    let n = min(w, features - lo)
                    Self.group(row + lo, n, format: format, fmax: fmax, reference: reference)
                    lo += n
                }
            }
        }
    }

    /// One group of `n` values, in place.
    @inline(__always)
    private static func group(_ p: UnsafeMutablePointer<Float>, _ n: Int, format: NumberFormat, fmax: Float,
                              reference: Bool) {
        guard let (xmin, xmax) = reference ? QuantKernels.Reference.minMax(p, n) : QuantKernels.minMax(p, n) else {
            p.update(repeating: .nan, count: n)
            return
        }
        switch format {
        case .int(let bits):
            let grid = IntGrid(bits: bits)
            let (h, z, _) = grid.params(xmin: xmin, xmax: xmax)
            if reference {
                for i in 0..<n { p[i] = IntGrid.fakeQuant(p[i], h: h, z: z, qmax: grid.qmax) }
            } else {
                ActivationKernels.intFakeQuant(p, n, h: h, z: z, qmax: grid.qmax)
            }
        case .minifloat(let f):
            let absmax = max(abs(xmin), abs(xmax))
            let raw = absmax / fmax
            let s = raw == 0 ? 1 : raw
            if reference {
                for i in 0..<n {
                    let y = min(max(p[i] / s, -fmax), fmax)
                    p[i] = f.decode(f.encode(y)) * s
                }
            } else {
                ActivationKernels.minifloatFakeQuant(p, n, s: s, fmax: fmax, format: f)
            }
        }
    }
}

/// Builds activation quantizers from format names and checks activations for NaN/Inf.
public enum ActivationQuantization {
    /// A dynamic fake quantizer for a format name: `"int2"` … `"int8"` (asymmetric MinMax) or a minifloat name
    /// (`"e4m3fn"`, `"e5m2"`, `"e3m2"`, `"e2m3"`, `"e2m1"` and their aliases such as `"fp8"`; symmetric absmax),
    /// the names `NumberFormat.parse` takes for weights. `width`: features per group (nil: per token; the head
    /// dimension: per head per token). Throws `.invalidArgument` for an unknown name, INT bits outside 2…8 or a
    /// non-positive width.
    public static func make(format: String, width: Int? = nil) throws -> ActivationQuantizer {
        try DynamicActivationQuantizer(format: NumberFormat.parse(format), width: width)
    }

    /// Throws `.nonFinite` naming the first NaN or ±Inf of `x` `[rows, features]` (row and feature), so a caller
    /// can refuse such activations before `quantize` turns their groups into NaN.
    public static func check(_ x: UnsafePointer<Float>, rows: Int, features: Int) throws {
        try require(rows >= 0 && features >= 0, "negative activation shape [\(rows), \(features)]")
        for i in 0..<(rows * features) where !x[i].isFinite {
            throw SwiftQuantError.nonFinite(
                "the activations contain \(x[i]) at [\(i / features), \(i % features)] (row \(i / features), feature "
                    + "\(i % features)); NaN and Inf cannot be quantized")
        }
    }
}

/// SIMD kernels of the activation quantizers; their scalar definitions are the `reference` branches of
/// `DynamicActivationQuantizer` (`IntGrid.fakeQuant`, `MinifloatFormat.decode(encode(_:))`).
enum ActivationKernels {
    typealias V = SIMD8<Float>
    typealias U = SIMD8<UInt32>

    /// `IntGrid.fakeQuant` of `n` values in place: the codes by `QuantKernels.codes8` (IntGrid's declared fast
    /// twin), then `IntGrid.value`, `(q − z)·h`, lane by lane.
    @inline(__always)
    static func intFakeQuant(_ p: UnsafeMutablePointer<Float>, _ n: Int, h: Float, z: Float, qmax: Float) {
        let hv = V(repeating: h), zv = V(repeating: z), top = V(repeating: qmax)
        var i = 0
        while i + 8 <= n {
            let raw = UnsafeMutableRawPointer(p + i)
            let q = QuantKernels.codes8(raw.loadUnaligned(as: V.self), h: hv, z: zv, qmax: top)
            raw.storeBytes(of: (q - zv) * hv, as: V.self)
            i += 8
        }
        while i < n {
            p[i] = IntGrid.fakeQuant(p[i], h: h, z: z, qmax: qmax)
            i += 1
        }
    }

    /// The INT backward of `DynamicActivationQuantizer` over the first `8·⌊n/8⌋` values of a group (`done` is set to
    /// that count; the caller finishes the tail with `FakeQuantLWC.steTerm`): zeroes `g` outside the clamp's
    /// pass-through region and returns `Σ g·∂x̂/∂h` (float64, two 4-lane accumulators). Exact rounding needs
    /// `|x/h| < QuantKernels.exactRoundLimit` (checked by the caller).
    @inline(__always)
    static func intBackward(_ x: UnsafePointer<Float>, _ g: UnsafeMutablePointer<Float>, _ n: Int, h: Float, z: Float,
                            qmax: Float, done: inout Int) -> Double {
        let hv = V(repeating: h), zv = V(repeating: z), top = V(repeating: qmax), zero = V()
        let mv = V(repeating: QuantKernels.magic)
        var acc0 = SIMD4<Double>(), acc1 = SIMD4<Double>()
        var i = 0
        while i + 8 <= n {
            let (d, inside) = Autodiff.FakeQuantLWC.steTerm8(loadSIMD8(x + i), h: hv, z: zv, qmax: top, magic: mv,
                                                             inclusive: true)
            var gy = loadSIMD8(g + i)
            Autodiff.FakeQuantLWC.accumulate(gy * d, &acc0, &acc1)
            gy.replace(with: zero, where: .!inside)
            storeSIMD8(gy, g + i)
            i += 8
        }
        done = i
        acc0 += acc1
        return (acc0[0] + acc0[1]) + (acc0[2] + acc0[3])
    }

    /// `decode(cast(clamp(x/s, ±Fmax)))·s` of `n` finite values in place. Since `|y| ≤ Fmax`, the cast never
    /// overflows, and its value is `y` rounded (half to even) to a multiple of the format's spacing at `y`'s
    /// binade, `ulp = 2^(max(e, 1 − bias) − M)` (`e` the float32 exponent of `y`; the subnormals share the
    /// smallest normal binade's spacing). Both scalings by `ulp` are exact (powers of two), the rounding is the
    /// magic-number one (exact: `|y/ulp| ≤ 2^(M+1)`), and the sign of `y` is put back so ±0 come out signed as
    /// the cast keeps them.
    @inline(__always)
    static func minifloatFakeQuant(_ p: UnsafeMutablePointer<Float>, _ n: Int, s: Float, fmax: Float,
                                   format f: MinifloatFormat) {
        let sv = V(repeating: s), hi = V(repeating: fmax), lo = V(repeating: -fmax)
        let m = UInt32(f.mantissaBits)
        let minField = U(repeating: UInt32(127 + 1 - f.bias))  // float32 exponent field of the smallest normal
        let mv = U(repeating: m), two54 = U(repeating: 254)
        let magic = V(repeating: QuantKernels.magic)
        var i = 0
        while i + 8 <= n {
            let raw = UnsafeMutableRawPointer(p + i)
            var y = raw.loadUnaligned(as: V.self) / sv
            y.replace(with: lo, where: y .< lo)
            y.replace(with: hi, where: y .> hi)
            let bits = unsafeBitCast(y, to: U.self)
            var e = (bits &>> 23) & 0xFF
            e.replace(with: minField, where: e .< minField)
            let ulp = unsafeBitCast((e &- mv) &<< 23, to: V.self)
            let inv = unsafeBitCast((two54 &- (e &- mv)) &<< 23, to: V.self)
            let r = ((y * inv + magic) - magic) * ulp
            let signed = unsafeBitCast(unsafeBitCast(r, to: U.self) | (bits & 0x8000_0000), to: V.self)
            raw.storeBytes(of: signed * sv, as: V.self)
            i += 8
        }
        while i < n {
            let y = min(max(p[i] / s, -fmax), fmax)
            p[i] = f.decode(f.encode(y)) * s
            i += 1
        }
    }
}
