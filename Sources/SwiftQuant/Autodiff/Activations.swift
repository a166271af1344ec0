import Foundation

extension Autodiff {
    /// Llama MLP gate: `y = SiLU(gate) · up`, `SiLU(g) = g·σ(g)`, with the vectorised `exp` of the forward
    /// pass (`simdExp`, ≈ 2 ulp), so training sees the same activations as evaluation.
    /// Backward: `dGate = dY·up·σ(g)(1 + g(1 − σ(g)))`, `dUp = dY·SiLU(g)` (both written).
    public enum SiLUMul {
        public static func forward(gate: UnsafePointer<Float>, up: UnsafePointer<Float>,
                                   y: UnsafeMutablePointer<Float>, count: Int) {
            parallelFor(count, minChunk: 1 << 14) { r in
                var i = r.lowerBound
                let one = SIMD8<Float>(repeating: 1)
                while i + 8 <= r.upperBound {
                    let g = loadSIMD8(gate + i)
                    storeSIMD8(g / (one + simdExp(-g)) * loadSIMD8(up + i), y + i)
                    i += 8
                }
                while i < r.upperBound {
                    let g = gate[i]
                    y[i] = g / (1 + scalarExp(-g)) * up[i]
                    i += 1
                }
            }
        }

        public static func backward(dY: UnsafePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>,
                                    dGate: UnsafeMutablePointer<Float>, dUp: UnsafeMutablePointer<Float>,
                                    count: Int) {
            parallelFor(count, minChunk: 1 << 14) { r in
                var i = r.lowerBound
                let one = SIMD8<Float>(repeating: 1)
                while i + 8 <= r.upperBound {
                    let g = loadSIMD8(gate + i), s = one / (one + simdExp(-g)), gy = loadSIMD8(dY + i)
                    storeSIMD8(gy * g * s, dUp + i)
                    storeSIMD8(gy * loadSIMD8(up + i) * s * (one + g * (one - s)), dGate + i)
                    i += 8
                }
                while i < r.upperBound {
                    let g = gate[i], s = 1 / (1 + scalarExp(-g)), gy = dY[i]
                    dUp[i] = gy * g * s
                    dGate[i] = gy * up[i] * s * (1 + g * (1 - s))
                    i += 1
                }
            }
        }
    }

    /// GELU, tanh approximation (PyTorch `gelu(approximate="tanh")`):
    /// `y = ½x(1 + tanh(c(x + 0.044715x³)))`, `c = √(2/π)`.
    public enum GELUTanh {
        static let c: Float = 0.7978845608028654
        public static func forward(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, count: Int) {
            parallelFor(count, minChunk: 1 << 14) { r in
                for i in r {
                    let v = x[i]
                    y[i] = 0.5 * v * (1 + Foundation.tanh(c * (v + 0.044715 * v * v * v)))
                }
            }
        }

        /// `dX = dY·(½(1 + tanh u) + ½x(1 − tanh²u)·c(1 + 3·0.044715x²))` (written).
        public static func backward(dY: UnsafePointer<Float>, x: UnsafePointer<Float>,
                                    dX: UnsafeMutablePointer<Float>, count: Int) {
            parallelFor(count, minChunk: 1 << 14) { r in
                for i in r {
                    let v = x[i], th = Foundation.tanh(c * (v + 0.044715 * v * v * v))
                    let d = 0.5 * (1 + th) + 0.5 * v * (1 - th * th) * c * (1 + 3 * 0.044715 * v * v)
                    dX[i] = dY[i] * d
                }
            }
        }
    }

    /// GELU, exact form (PyTorch `gelu(approximate="none")`): `y = ½x(1 + erf(x/√2)) = x·Φ(x)`.
    public enum GELUErf {
        public static func forward(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, count: Int) {
            parallelFor(count, minChunk: 1 << 14) { r in
                for i in r {
                    let v = x[i]
                    y[i] = 0.5 * v * (1 + Foundation.erf(v * 0.7071067811865476))
                }
            }
        }

        /// `dX = dY·(Φ(x) + x·φ(x))`, `φ(x) = e^(−x²/2)/√(2π)` (written).
        public static func backward(dY: UnsafePointer<Float>, x: UnsafePointer<Float>,
                                    dX: UnsafeMutablePointer<Float>, count: Int) {
            parallelFor(count, minChunk: 1 << 14) { r in
                for i in r {
                    let v = x[i]
                    let cdf = 0.5 * (1 + Foundation.erf(v * 0.7071067811865476))
                    let pdf = Foundation.exp(-0.5 * v * v) * 0.3989422804014327
                    dX[i] = dY[i] * (cdf + v * pdf)
                }
            }
        }
    }

    /// `y = max(x, 0)`. Backward passes `dY` where `x > 0` and gives 0 at and below 0 (PyTorch's convention).
    public enum ReLU {
        public static func forward(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, count: Int) {
            parallelFor(count, minChunk: 1 << 16) { r in
                for i in r { y[i] = x[i] > 0 ? x[i] : 0 }
            }
        }

        public static func backward(dY: UnsafePointer<Float>, x: UnsafePointer<Float>,
                                    dX: UnsafeMutablePointer<Float>, count: Int) {
            parallelFor(count, minChunk: 1 << 16) { r in
                for i in r { dX[i] = x[i] > 0 ? dY[i] : 0 }
            }
        }
    }
}
