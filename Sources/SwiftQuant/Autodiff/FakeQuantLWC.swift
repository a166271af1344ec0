import Foundation

extension Autodiff {
    /// Weight fake-quantizer with Learnable Weight Clipping (ALGORITHMS.md §1), forward and backward.
    ///
    /// `W` is `[rows, columns]`; each row is split into groups of `groupSize` consecutive columns (`groupSize = 0`
    /// or `≥ columns`: one group per row, "per channel"). A ragged last group is allowed: it holds the remaining
    /// columns only and its min/max never see padding. `u`, `l` are `[rows, groupsPerRow]`.
    ///
    /// Forward, per group (all float32, rounding half-to-even like `torch.round`):
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

        public let rows: Int, columns: Int, bits: Int, groupSize: Int, groupsPerRow: Int
        public let symmetric: Bool
        public let clampGradient: ClampGradient
        /// OmniQuant's initial value of `u` and `l` (σ(4) ≈ 0.982).
        public static let initialValue: Float = 4

        public var qmax: Float { Float((1 << bits) - 1) }

        public init(rows: Int, columns: Int, bits: Int, groupSize: Int = 0, symmetric: Bool = false,
                    clampGradient: ClampGradient = .inclusive) throws {
            try require(rows > 0 && columns > 0, "fake-quant: shape [\(rows), \(columns)] must be positive")
            try require(bits >= (symmetric ? 2 : 1) && bits <= 16,
                        "fake-quant: \(bits) bits out of range (\(symmetric ? 2 : 1)...16)")
            try require(groupSize >= 0, "fake-quant: negative group size \(groupSize)")
            self.rows = rows; self.columns = columns; self.bits = bits; self.symmetric = symmetric
            self.clampGradient = clampGradient
            self.groupSize = (groupSize == 0 || groupSize > columns) ? columns : groupSize
            groupsPerRow = (columns + self.groupSize - 1) / self.groupSize
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

        /// Writes the fake-quantized weight `out` (may not alias `weight`) and fills `state`.
        public func forward(weight: UnsafePointer<Float>, u: UnsafePointer<Float>, l: UnsafePointer<Float>,
                            out: UnsafeMutablePointer<Float>, state: State) {
            let G = groupSize, nG = groupsPerRow, cols = columns, qmax = self.qmax
            let symDen = Float((1 << (bits - 1)) - 1), symmetric = self.symmetric
            let inclusive = clampGradient == .inclusive
            let hs = state.scales.pointer, zs = state.zeros.pointer, pass = state.hPass.pointer
            let xmaxs = state.xmax.pointer, xmins = state.xmin.pointer, sus = state.su.pointer, sls = state.sl.pointer
            parallelFor(rows, minChunk: max(1, 8192 / cols)) { range in
                for r in range {
                    for g in 0..<nG {
                        let idx = r * nG + g
                        let start = g * G, n = Swift.min(G, cols - start)
                        let w = weight + r * cols + start, o = out + r * cols + start
                        var mx = w[0], mn = w[0]
                        for i in 1..<Swift.max(n, 1) { mx = Swift.max(mx, w[i]); mn = Swift.min(mn, w[i]) }
                        let su = Self.sigmoid(u[idx]), sl = Self.sigmoid(l[idx])
                        let xmaxp = su * mx, xminp = sl * mn
                        let hRaw: Float, z: Float
                        if symmetric {
                            hRaw = Swift.max(Swift.abs(xmaxp), Swift.abs(xminp)) / symDen
                        } else {
                            hRaw = (xmaxp - xminp) / qmax
                        }
                        let h = Swift.min(Swift.max(hRaw, 1e-5), 1e4)
                        if symmetric {
                            z = symDen
                        } else {
                            z = Swift.min(Swift.max(-xminp / h, -1e4), 1e4).rounded(.toNearestOrEven)
                        }
                        hs[idx] = h; zs[idx] = z
                        let hIn = inclusive ? (hRaw >= 1e-5 && hRaw <= 1e4) : (hRaw > 1e-5 && hRaw < 1e4)
                        pass[idx] = hIn ? 1 : 0
                        xmaxs[idx] = mx; xmins[idx] = mn; sus[idx] = su; sls[idx] = sl
                        for i in 0..<n {
                            let p = (w[i] / h).rounded(.toNearestOrEven) + z
                            let q = Swift.min(Swift.max(p, 0), qmax)
                            o[i] = (q - z) * h
                        }
                    }
                }
            }
        }

        /// Adds `∂L/∂u`, `∂L/∂l` into `dU`, `dL` (`[rows, groupsPerRow]`) and, when given, `∂L/∂W` into
        /// `dWeight`. Uses the `state` of the forward pass on the same `weight`, `u`, `l`.
        public func backward(dOut: UnsafePointer<Float>, weight: UnsafePointer<Float>, state: State,
                             dU: UnsafeMutablePointer<Float>, dL: UnsafeMutablePointer<Float>,
                             dWeight: UnsafeMutablePointer<Float>? = nil) {
            let G = groupSize, nG = groupsPerRow, cols = columns, qmax = self.qmax
            let symDen = Float((1 << (bits - 1)) - 1), symmetric = self.symmetric
            let inclusive = clampGradient == .inclusive
            let hs = state.scales.pointer, zs = state.zeros.pointer, pass = state.hPass.pointer
            let xmaxs = state.xmax.pointer, xmins = state.xmin.pointer, sus = state.su.pointer, sls = state.sl.pointer
            parallelFor(rows, minChunk: max(1, 8192 / cols)) { range in
                for r in range {
                    for g in 0..<nG {
                        let idx = r * nG + g
                        let start = g * G, n = Swift.min(G, cols - start)
                        let w = weight + r * cols + start, dy = dOut + r * cols + start
                        let h = hs[idx], z = zs[idx]
                        // ∂L/∂h summed over the group (accumulated in Double: many terms of both signs).
                        var dh: Double = 0
                        for i in 0..<n {
                            let t = w[i] / h
                            let p = t.rounded(.toNearestOrEven) + z
                            let inside = inclusive ? (p >= 0 && p <= qmax) : (p > 0 && p < qmax)
                            let q = Swift.min(Swift.max(p, 0), qmax)
                            let dWhat = inside ? (q - z) - t : (q - z)
                            dh += Double(dy[i] * dWhat)
                            if let dWeight, inside { dWeight[r * cols + start + i] += dy[i] }
                        }
                        let gh = pass[idx] != 0 ? Float(dh) : 0
                        if gh == 0 { continue }
                        let su = sus[idx], sl = sls[idx], mx = xmaxs[idx], mn = xmins[idx]
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
                        if let dWeight {
                            let dmx = dxmaxp * su, dmn = dxminp * sl
                            var cmx = 0, cmn = 0
                            for i in 0..<n { if w[i] == mx { cmx += 1 }; if w[i] == mn { cmn += 1 } }
                            let emx = dmx / Float(cmx), emn = dmn / Float(cmn)
                            let dw = dWeight + r * cols + start
                            for i in 0..<n {
                                if w[i] == mx { dw[i] += emx }
                                if w[i] == mn { dw[i] += emn }
                            }
                        }
                    }
                }
            }
        }

        @inline(__always) static func sign(_ x: Float) -> Float { x > 0 ? 1 : (x < 0 ? -1 : 0) }
    }
}
