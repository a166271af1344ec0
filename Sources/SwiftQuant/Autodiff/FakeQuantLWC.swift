import Foundation

extension Autodiff {
    /// Weight fake-quantizer with Learnable Weight Clipping (ALGORITHMS.md §1), forward and backward.
    ///
    /// `W` is `[rows, columns]`; each row is split into groups of `group` consecutive columns (`GroupSize`; a size
    /// `≥ columns` is one group per row, "per channel"). A ragged last group is allowed: it holds the remaining
    /// columns only and its min/max never see padding. `u`, `l` are `[rows, groupsPerRow]`.
    ///
    /// The grid is `IntGrid` (the quantizer's one definition); forward, per group (all float32, rounding
    /// half-to-even like `torch.round`):
    /// ```
    /// xmax = max(group), xmin = min(group), xmax' = σ(u)·xmax, xmin' = σ(l)·xmin
    /// asym: h = clamp((xmax' − xmin')/(2^N − 1), 1e-5, 1e4), z = round(clamp(−xmin'/h, −1e4, 1e4))
    /// sym:  h = clamp(max(|xmax'|, |xmin'|)/(2^(N−1) − 1), 1e-5, 1e4), z = 2^(N−1) − 1
    /// t = W/h (float32 division), r = round(t), p = r + z, q = clamp(p, 0, 2^N − 1), Ŵ = (q − z)·h
    /// ```
    ///
    /// Backward (straight-through estimator, `round_ste(t) = t + stopgrad(round(t) − t)`, `z` constant):
    /// - "inside" is the pass-through region of `clamp(p, 0, 2^N − 1)`. Its boundaries depend on `clampGradient`:
    ///   `.inclusive` (default) passes where `0 ≤ p ≤ 2^N − 1` — PyTorch's `clamp` gradient up to at least 2.12 (subgradient
    ///   1 at the bounds, pytorch#7049), the semantics OmniQuant was trained with; a value that rounds exactly onto
    ///   the top or bottom code still passes. `.exclusive` passes only where `0 < p < 2^N − 1` — what PyTorch 2.15
    ///   does for scalar bounds (minimum-norm subgradient, pytorch#184572): values on the end codes get no STE
    ///   gradient and contribute `q − z` to `∂Ŵ/∂h`. The same choice applies to the scale clamp below.
    /// - `∂Ŵ/∂W = 1` inside, `0` outside (plus the min/max path below).
    /// - `∂Ŵ/∂h = (q − z) − [inside]·W/h`, i.e. `round(t) − t` inside and `q − z` (a constant code) outside.
    /// - `∂L/∂h = Σ_group ∂L/∂Ŵ · ∂Ŵ/∂h`, then it passes the scale clamp only where `1e-5 ≤ h_raw ≤ 1e4`
    ///   (`<` for `.exclusive`). asym: `∂h/∂xmax' = 1/(2^N−1)`, `∂h/∂xmin' = −1/(2^N−1)`; sym: through `max` of the
    ///   absolute values (ties split the gradient in half, `|·|` has gradient `sign`, 0 at 0, like PyTorch).
    /// - `∂L/∂u = ∂L/∂xmax' · xmax · σ(u)(1 − σ(u))`, `∂L/∂l = ∂L/∂xmin' · xmin · σ(l)(1 − σ(l))`.
    /// - `∂L/∂W` also receives `∂L/∂xmax'·σ(u)` on the element(s) holding the group max (shared evenly among
    ///   ties, like `amax`) and likewise for the min. LWC keeps `W` frozen; the full gradient is there for LET.
    public struct FakeQuantLWC: Sendable {
        /// Where a clamp passes the gradient at its bounds (see the type's documentation).
        public enum ClampGradient: Sendable, Equatable {
            /// `min ≤ x ≤ max` (PyTorch ≤ 2.12, OmniQuant's training).
            case inclusive
            /// `min < x < max` (PyTorch 2.15 scalar-bound `clamp`).
            case exclusive
        }

        /// `groupSize` is the group width in columns (`columns` for one group per row).
        public let rows: Int, columns: Int, bits: Int, groupSize: Int, groupsPerRow: Int
        /// The group size as given.
        public let group: GroupSize
        /// The grid (`IntGrid`, policy `.minmax`).
        public let grid: IntGrid
        public let symmetric: Bool
        public let clampGradient: ClampGradient
        /// OmniQuant's initial value of `u` and `l` (σ(4) ≈ 0.982).
        public static let initialValue: Float = 4

        public var qmax: Float { Float((1 << bits) - 1) }

        /// `group` larger than the row is one group per row (weights of different widths share one setting).
        public init(rows: Int, columns: Int, bits: Int, group: GroupSize, symmetric: Bool = false,
                    clampGradient: ClampGradient = .inclusive) throws {
            try require(rows > 0 && columns > 0, "fake-quant: shape [\(rows), \(columns)] must be positive")
            try require(bits >= (symmetric ? 2 : 1) && bits <= 16,
                        "fake-quant: \(bits) bits out of range (\(symmetric ? 2 : 1)...16)")
            try group.validateSize()
            self.rows = rows; self.columns = columns; self.bits = bits; self.symmetric = symmetric
            self.clampGradient = clampGradient
            self.group = group
            self.grid = IntGrid(bits: bits, symmetric: symmetric, policy: .minmax)
            self.groupSize = group.width(cols: columns)
            groupsPerRow = group.count(cols: columns)
        }

        /// `groupSize` in the C ABI's encoding of `GroupSize` (0 = one group per row; negative is an error).
        public init(rows: Int, columns: Int, bits: Int, groupSize: Int = 0, symmetric: Bool = false,
                    clampGradient: ClampGradient = .inclusive) throws {
            try self.init(rows: rows, columns: columns, bits: bits, group: try GroupSize(abi: Int64(groupSize)),
                          symmetric: symmetric, clampGradient: clampGradient)
        }

        /// Per-group values the forward pass saves for the backward pass; `scales` and `zeros` are the grid.
        public final class State: @unchecked Sendable {
            /// `h` and `z` per group, `[rows, groupsPerRow]`.
            public let scales: Tensor, zeros: Tensor
            let hPass: Tensor, xmax: Tensor, xmin: Tensor, su: Tensor, sl: Tensor
            init(count: Int, shape: [Int]) {
                scales = Tensor(zeros: shape); zeros = Tensor(zeros: shape)
                hPass = Tensor(zeros: [count]); xmax = Tensor(zeros: [count]); xmin = Tensor(zeros: [count])
                su = Tensor(zeros: [count]); sl = Tensor(zeros: [count])
            }
        }

        public func makeState() -> State { State(count: rows * groupsPerRow, shape: [rows, groupsPerRow]) }

        @inline(__always) static func sigmoid(_ x: Float) -> Float { 1 / (1 + Foundation.exp(-x)) }

        /// Writes the fake-quantized weight `out` (may not alias `weight`) and fills `state`. SIMD kernel; the
        /// scalar definition is `forwardReference`, which it equals bit for bit.
        public func forward(weight: UnsafePointer<Float>, u: UnsafePointer<Float>, l: UnsafePointer<Float>,
                            out: UnsafeMutablePointer<Float>, state: State) {
            if KernelDispatch.reference { return forwardReference(weight: weight, u: u, l: l, out: out, state: state) }
            let G = groupSize, nG = groupsPerRow, cols = columns, qmax = self.qmax
            let symDen = Float((1 << (bits - 1)) - 1)
            let inclusive = clampGradient == .inclusive
            let hs = state.scales.pointer, zs = state.zeros.pointer, pass = state.hPass.pointer
            let xmaxs = state.xmax.pointer, xmins = state.xmin.pointer, sus = state.su.pointer, sls = state.sl.pointer
            parallelFor(rows, minChunk: max(1, 8192 / cols)) { range in
                for r in range {
                    for g in 0..<nG {
                        let idx = r * nG + g
                        let start = g * G, n = Swift.min(G, cols - start)
                        let w = weight + r * cols + start, o = out + r * cols + start
                        guard let (mn, mx) = QuantKernels.minMax(w, n) else {
                            // NaN or ±Inf in the group: the scalar definition says what happens.
                            groupReference(w, o, n, idx: idx, u: u, l: l, symDen: symDen, inclusive: inclusive,
                                           state: state)
                            continue
                        }
                        let su = Self.sigmoid(u[idx]), sl = Self.sigmoid(l[idx])
                        let (h, z, hIn) = scale(xmaxp: su * mx, xminp: sl * mn, symDen: symDen, inclusive: inclusive)
                        hs[idx] = h; zs[idx] = z; pass[idx] = hIn ? 1 : 0
                        xmaxs[idx] = mx; xmins[idx] = mn; sus[idx] = su; sls[idx] = sl
                        if Swift.max(Swift.abs(mx), Swift.abs(mn)) / h >= Self.roundLimit {
                            // Beyond ±2^22 the magic-number rounding is not exact: scalar loop.
                            for i in 0..<n { o[i] = Self.fakeQuant(w[i], h: h, z: z, qmax: qmax) }
                            continue
                        }
                        let hv = SIMD8<Float>(repeating: h), zv = SIMD8<Float>(repeating: z)
                        let top = SIMD8<Float>(repeating: qmax)
                        var i = 0
                        while i + 8 <= n {
                            let q = QuantKernels.codes8(loadSIMD8(w + i), h: hv, z: zv, qmax: top)
                            storeSIMD8((q - zv) * hv, o + i)
                            i += 8
                        }
                        while i < n { o[i] = Self.fakeQuant(w[i], h: h, z: z, qmax: qmax); i += 1 }
                    }
                }
            }
        }

        /// Magnitude of `W/h` below which the SIMD rounding is exact (`QuantKernels.exactRoundLimit`).
        static var roundLimit: Float { QuantKernels.exactRoundLimit }

        /// `(clamp(round(w/h) + z, 0, qmax) − z)·h`, the definition (`IntGrid.fakeQuant`).
        @inline(__always) static func fakeQuant(_ w: Float, h: Float, z: Float, qmax: Float) -> Float {
            IntGrid.fakeQuant(w, h: h, z: z, qmax: qmax)
        }

        /// Scale `h`, zero-point `z` (`IntGrid.params`) and whether the scale clamp passes the gradient, from
        /// the clipped range.
        @inline(__always)
        func scale(xmaxp: Float, xminp: Float, symDen: Float, inclusive: Bool) -> (h: Float, z: Float, pass: Bool) {
            let (h, z, hRaw) = grid.params(xmin: xminp, xmax: xmaxp)
            return (h, z, IntGrid.scalePasses(hRaw, inclusive: inclusive))
        }

        /// One group of `forwardReference`.
        private func groupReference(_ w: UnsafePointer<Float>, _ o: UnsafeMutablePointer<Float>, _ n: Int, idx: Int,
                                    u: UnsafePointer<Float>, l: UnsafePointer<Float>, symDen: Float, inclusive: Bool,
                                    state: State) {
            var mx = w[0], mn = w[0]
            for i in 1..<Swift.max(n, 1) { mx = Swift.max(mx, w[i]); mn = Swift.min(mn, w[i]) }
            let su = Self.sigmoid(u[idx]), sl = Self.sigmoid(l[idx])
            let (h, z, hIn) = scale(xmaxp: su * mx, xminp: sl * mn, symDen: symDen, inclusive: inclusive)
            state.scales.pointer[idx] = h; state.zeros.pointer[idx] = z; state.hPass.pointer[idx] = hIn ? 1 : 0
            state.xmax.pointer[idx] = mx; state.xmin.pointer[idx] = mn
            state.su.pointer[idx] = su; state.sl.pointer[idx] = sl
            for i in 0..<n { o[i] = Self.fakeQuant(w[i], h: h, z: z, qmax: qmax) }
        }

        /// The scalar definition of `forward` (one element at a time, as written in the type's documentation).
        public func forwardReference(weight: UnsafePointer<Float>, u: UnsafePointer<Float>, l: UnsafePointer<Float>,
                                     out: UnsafeMutablePointer<Float>, state: State) {
            let G = groupSize, nG = groupsPerRow, cols = columns
            let symDen = Float((1 << (bits - 1)) - 1), inclusive = clampGradient == .inclusive
            parallelFor(rows, minChunk: max(1, 8192 / cols)) { range in
                for r in range {
                    for g in 0..<nG {
                        let start = g * G
                        groupReference(weight + r * cols + start, out + r * cols + start, Swift.min(G, cols - start),
                                       idx: r * nG + g, u: u, l: l, symDen: symDen, inclusive: inclusive, state: state)
                    }
                }
            }
        }

        /// Adds `∂L/∂u`, `∂L/∂l` into `dU`, `dL` (`[rows, groupsPerRow]`) and, when given, `∂L/∂W` into
        /// `dWeight`. Uses the `state` of the forward pass on the same `weight`, `u`, `l`. SIMD kernel: it equals
        /// `backwardReference` except for the order in which `∂L/∂h` is summed over a group (both in float64).
        public func backward(dOut: UnsafePointer<Float>, weight: UnsafePointer<Float>, state: State,
                             dU: UnsafeMutablePointer<Float>, dL: UnsafeMutablePointer<Float>,
                             dWeight: UnsafeMutablePointer<Float>? = nil) {
            if KernelDispatch.reference {
                return backwardReference(dOut: dOut, weight: weight, state: state, dU: dU, dL: dL, dWeight: dWeight)
            }
            let G = groupSize, nG = groupsPerRow, cols = columns, qmax = self.qmax
            let inclusive = clampGradient == .inclusive
            let hs = state.scales.pointer, zs = state.zeros.pointer
            let xmaxs = state.xmax.pointer, xmins = state.xmin.pointer
            parallelFor(rows, minChunk: max(1, 8192 / cols)) { range in
                for r in range {
                    for g in 0..<nG {
                        let idx = r * nG + g
                        let start = g * G, n = Swift.min(G, cols - start)
                        let w = weight + r * cols + start, dy = dOut + r * cols + start
                        let dwg = dWeight.map { $0 + r * cols + start }
                        let h = hs[idx], z = zs[idx]
                        var i = 0
                        var acc0 = SIMD4<Double>(), acc1 = SIMD4<Double>()
                        let mx = xmaxs[idx], mn = xmins[idx]
                        if mx.isFinite && mn.isFinite && Swift.max(Swift.abs(mx), Swift.abs(mn)) / h < Self.roundLimit {
                            let hv = SIMD8<Float>(repeating: h), zv = SIMD8<Float>(repeating: z)
                            let top = SIMD8<Float>(repeating: qmax), zero = SIMD8<Float>()
                            let mv = SIMD8<Float>(repeating: QuantKernels.magic)
                            while i + 8 <= n {
                                let (dWhat, inside) = Self.steTerm8(loadSIMD8(w + i), h: hv, z: zv, qmax: top,
                                                                    magic: mv, inclusive: inclusive)
                                let gy = loadSIMD8(dy + i)
                                Self.accumulate(gy * dWhat, &acc0, &acc1)
                                if let dwg {
                                    var add = gy
                                    add.replace(with: zero, where: .!inside)
                                    storeSIMD8(loadSIMD8(dwg + i) + add, dwg + i)
                                }
                                i += 8
                            }
                        }
                        acc0 += acc1
                        var dh = (acc0[0] + acc0[1]) + (acc0[2] + acc0[3])
                        while i < n {
                            let (d, inside) = Self.steTerm(w[i], h: h, z: z, qmax: qmax, inclusive: inclusive)
                            dh += Double(dy[i] * d)
                            if let dwg, inside { dwg[i] += dy[i] }
                            i += 1
                        }
                        clipGradients(Float(dh), idx: idx, w: w, n: n, state: state, dU: dU, dL: dL, dWeight: dwg)
                    }
                }
            }
        }

        /// `∂Ŵ/∂h` of one element and whether it is inside the clamp's pass-through region.
        @inline(__always)
        static func steTerm(_ w: Float, h: Float, z: Float, qmax: Float, inclusive: Bool) -> (Float, Bool) {
            let t = w / h
            let p = t.rounded(.toNearestOrEven) + z
            let inside = inclusive ? (p >= 0 && p <= qmax) : (p > 0 && p < qmax)
            let q = Swift.min(Swift.max(p, 0), qmax)
            return (inside ? (q - z) - t : (q - z), inside)
        }

        /// `steTerm` of 8 values (magic-number rounding, exact while `|w/h| < QuantKernels.exactRoundLimit`).
        @inline(__always)
        static func steTerm8(_ w: SIMD8<Float>, h: SIMD8<Float>, z: SIMD8<Float>, qmax: SIMD8<Float>,
                             magic: SIMD8<Float>, inclusive: Bool) -> (SIMD8<Float>, SIMDMask<SIMD8<Int32>>) {
            let zero = SIMD8<Float>()
            let t = w / h
            let p = ((t + magic) - magic) + z
            let inside = inclusive ? (p .>= zero) .& (p .<= qmax) : (p .> zero) .& (p .< qmax)
            var q = p
            q.replace(with: zero, where: p .< zero)
            q.replace(with: qmax, where: p .> qmax)
            let qz = q - z
            var d = qz - t
            d.replace(with: qz, where: .!inside)
            return (d, inside)
        }

        /// Adds 8 products into two float64 4-lane accumulators (`∂L/∂h` of a group).
        @inline(__always)
        static func accumulate(_ prod: SIMD8<Float>, _ acc0: inout SIMD4<Double>, _ acc1: inout SIMD4<Double>) {
            acc0 += SIMD4<Double>(Double(prod[0]), Double(prod[1]), Double(prod[2]), Double(prod[3]))
            acc1 += SIMD4<Double>(Double(prod[4]), Double(prod[5]), Double(prod[6]), Double(prod[7]))
        }

        /// From the group's `∂L/∂h` (before the scale clamp): `∂L/∂u`, `∂L/∂l`, and the min/max path of `∂L/∂W`.
        @inline(__always)
        private func clipGradients(_ dh: Float, idx: Int, w: UnsafePointer<Float>, n: Int, state: State,
                                   dU: UnsafeMutablePointer<Float>, dL: UnsafeMutablePointer<Float>,
                                   dWeight dw: UnsafeMutablePointer<Float>?) {
            let gh = state.hPass.pointer[idx] != 0 ? dh : 0
            if gh == 0 { return }
            let symDen = Float((1 << (bits - 1)) - 1)
            let su = state.su.pointer[idx], sl = state.sl.pointer[idx]
            let mx = state.xmax.pointer[idx], mn = state.xmin.pointer[idx]
            let dxmaxp: Float, dxminp: Float
            if symmetric {
                let xmaxp = su * mx, xminp = sl * mn
                let a = Swift.abs(xmaxp), b = Swift.abs(xminp)
                let dm = gh / symDen
                let wa: Float = a > b ? 1 : (a == b ? 0.5 : 0)
                dxmaxp = dm * wa * Self.sign(xmaxp)
                dxminp = dm * (1 - wa) * Self.sign(xminp)
            } else {
                dxmaxp = gh / qmax
                dxminp = -gh / qmax
            }
            dU[idx] += dxmaxp * mx * (su * (1 - su))
            dL[idx] += dxminp * mn * (sl * (1 - sl))
            if let dw {
                let dmx = dxmaxp * su, dmn = dxminp * sl
                var cmx = 0, cmn = 0
                for i in 0..<n { if w[i] == mx { cmx += 1 }; if w[i] == mn { cmn += 1 } }
                let emx = dmx / Float(cmx), emn = dmn / Float(cmn)
                for i in 0..<n {
                    if w[i] == mx { dw[i] += emx }
                    if w[i] == mn { dw[i] += emn }
                }
            }
        }

        /// The scalar definition of `backward` (one element at a time, as written in the type's documentation).
        public func backwardReference(dOut: UnsafePointer<Float>, weight: UnsafePointer<Float>, state: State,
                                      dU: UnsafeMutablePointer<Float>, dL: UnsafeMutablePointer<Float>,
                                      dWeight: UnsafeMutablePointer<Float>? = nil) {
            let G = groupSize, nG = groupsPerRow, cols = columns, qmax = self.qmax
            let inclusive = clampGradient == .inclusive
            let hs = state.scales.pointer, zs = state.zeros.pointer
            parallelFor(rows, minChunk: max(1, 8192 / cols)) { range in
                for r in range {
                    for g in 0..<nG {
                        let idx = r * nG + g
                        let start = g * G, n = Swift.min(G, cols - start)
                        let w = weight + r * cols + start, dy = dOut + r * cols + start
                        let dwg = dWeight.map { $0 + r * cols + start }
                        // ∂L/∂h summed over the group (accumulated in Double: many terms of both signs).
                        var dh: Double = 0
                        for i in 0..<n {
                            let (d, inside) = Self.steTerm(w[i], h: hs[idx], z: zs[idx], qmax: qmax, inclusive: inclusive)
                            dh += Double(dy[i] * d)
                            if let dwg, inside { dwg[i] += dy[i] }
                        }
                        clipGradients(Float(dh), idx: idx, w: w, n: n, state: state, dU: dU, dL: dL, dWeight: dwg)
                    }
                }
            }
        }

        @inline(__always) static func sign(_ x: Float) -> Float { x > 0 ? 1 : (x < 0 ? -1 : 0) }
    }
}
