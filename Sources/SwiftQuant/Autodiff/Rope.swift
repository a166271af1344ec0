import Foundation

extension Autodiff {
    /// Rotary position embedding, Hugging Face `rotate_half` convention: inside each head of size `d`,
    /// channel `j < d/2` pairs with `j + d/2`:
    /// `y[j] = x[j]·cos[j] − x[j+d/2]·sin[j]`, `y[j+d/2] = x[j+d/2]·cos[j] + x[j]·sin[j]`.
    /// `cos`/`sin` are `[rows, headDim/2]` tables (row t is the position of input row t): Hugging Face builds
    /// `cat(freqs, freqs)`, whose two halves are equal, so one half is kept.
    public enum Rope {
        /// `x`, `y`: `[rows, heads·headDim]`; `y` may be `x` (in place).
        public static func forward(
            x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, cos: UnsafePointer<Float>,
            sin: UnsafePointer<Float>, rows: Int, heads: Int, headDim: Int
        ) {
            let half = headDim / 2, width = heads * headDim
            parallelFor(rows, minChunk: Autodiff.rowChunk(width)) { range in
                for t in range {
                    let c = cos + t * half, s = sin + t * half
                    for h in 0..<heads {
                        let xr = x + t * width + h * headDim, yr = y + t * width + h * headDim
                        for j in 0..<half {
                            let a = xr[j], b = xr[j + half]
                            yr[j] = a * c[j] - b * s[j]
                            yr[j + half] = b * c[j] + a * s[j]
                        }
                    }
                }
            }
        }

        /// The transpose of the rotation: `dx[j] = dy[j]·cos[j] + dy[j+d/2]·sin[j]`,
        /// `dx[j+d/2] = dy[j+d/2]·cos[j] − dy[j]·sin[j]`. `dX` may be `dY` (in place).
        public static func backward(
            dY: UnsafePointer<Float>, dX: UnsafeMutablePointer<Float>, cos: UnsafePointer<Float>,
            sin: UnsafePointer<Float>, rows: Int, heads: Int, headDim: Int
        ) {
            let half = headDim / 2, width = heads * headDim
            parallelFor(rows, minChunk: Autodiff.rowChunk(width)) { range in
                for t in range {
                    let c = cos + t * half, s = sin + t * half
                    for h in 0..<heads {
                        let gr = dY + t * width + h * headDim, dr = dX + t * width + h * headDim
                        for j in 0..<half {
                            let a = gr[j], b = gr[j + half]
                            dr[j] = a * c[j] + b * s[j]
                            dr[j + half] = b * c[j] - a * s[j]
                        }
                    }
                }
            }
        }

        /// Tables for positions `0..<rows` from inverse frequencies `inv` (`headDim/2` of them): the angle is the
        /// float32 product `pos·inv[j]` (as transformers computes it), its cos and sin taken in float64 and stored
        /// as float32. Returns `[rows, headDim/2]` tables.
        public static func tables(rows: Int, inverseFrequencies inv: [Float]) -> RopeTables {
            let half = inv.count
            let c = Tensor(zeros: [rows, half]), s = Tensor(zeros: [rows, half])
            for t in 0..<rows {
                for j in 0..<half {
                    let angle = Float(t) * inv[j]
                    c.pointer[t * half + j] = Float(Foundation.cos(Double(angle)))
                    s.pointer[t * half + j] = Float(Foundation.sin(Double(angle)))
                }
            }
            return RopeTables(cos: c, sin: s)
        }

        /// Plain RoPE inverse frequencies `1/θ^(2i/d)` in float32.
        public static func inverseFrequencies(headDim d: Int, theta: Double) -> [Float] {
            (0..<(d / 2)).map { i in Float(1) / Foundation.pow(Float(theta), Float(2 * i) / Float(d)) }
        }
    }
}
