import Foundation

extension Autodiff {
    /// Rotary position embedding, Hugging Face `rotate_half` convention: inside each head of size `d`,
    /// channel `j < d/2` pairs with `j + d/2`:
    /// `y[j] = x[j]·cos[j] − x[j+d/2]·sin[j]`, `y[j+d/2] = x[j+d/2]·cos[j+d/2] + x[j]·sin[j+d/2]`.
    /// `cos`/`sin` are `[rows, headDim]` tables (row t is the position of input row t), as HF builds them
    /// (`cat(freqs, freqs)`, so both halves are equal, but the op does not rely on that).
    public enum Rope {
        /// `x`, `y`: `[rows, heads·headDim]`; `y` may be `x` (in place).
        public static func forward(
            x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, cos: UnsafePointer<Float>,
            sin: UnsafePointer<Float>, rows: Int, heads: Int, headDim: Int
        ) {
            let half = headDim / 2, width = heads * headDim
            parallelFor(rows, minChunk: Autodiff.rowChunk(width)) { range in
                for t in range {
                    let c = cos + t * headDim, s = sin + t * headDim
                    for h in 0..<heads {
                        let xr = x + t * width + h * headDim, yr = y + t * width + h * headDim
                        for j in 0..<half {
                            let a = xr[j], b = xr[j + half]
                            yr[j] = a * c[j] - b * s[j]
                            yr[j + half] = b * c[j + half] + a * s[j + half]
                        }
                    }
                }
            }
        }

        /// The transpose of the rotation: `dx[j] = dy[j]·cos[j] + dy[j+d/2]·sin[j+d/2]`,
        /// `dx[j+d/2] = dy[j+d/2]·cos[j+d/2] − dy[j]·sin[j]`. `dX` may be `dY` (in place).
        public static func backward(
            dY: UnsafePointer<Float>, dX: UnsafeMutablePointer<Float>, cos: UnsafePointer<Float>,
            sin: UnsafePointer<Float>, rows: Int, heads: Int, headDim: Int
        ) {
            let half = headDim / 2, width = heads * headDim
            parallelFor(rows, minChunk: Autodiff.rowChunk(width)) { range in
                for t in range {
                    let c = cos + t * headDim, s = sin + t * headDim
                    for h in 0..<heads {
                        let gr = dY + t * width + h * headDim, dr = dX + t * width + h * headDim
                        for j in 0..<half {
                            let a = gr[j], b = gr[j + half]
                            dr[j] = a * c[j] + b * s[j + half]
                            dr[j + half] = b * c[j + half] - a * s[j]
                        }
                    }
                }
            }
        }

        /// HF Llama tables for positions `0..<rows`: `inv_freq[i] = theta^(−2i/d)`, angle = pos·inv_freq,
        /// duplicated over both halves. Computed in Float64, stored as float32.
        public static func tables(rows: Int, headDim: Int, theta: Double = 10_000) -> (cos: Tensor, sin: Tensor) {
            let c = Tensor(zeros: [rows, headDim]), s = Tensor(zeros: [rows, headDim])
            let half = headDim / 2
            for t in 0..<rows {
                for i in 0..<half {
                    let invFreq = Double(Float(1 / Foundation.pow(theta, Double(2 * i) / Double(headDim))))
                    let angle = Double(t) * invFreq
                    let cv = Float(Foundation.cos(angle)), sv = Float(Foundation.sin(angle))
                    c.pointer[t * headDim + i] = cv; c.pointer[t * headDim + i + half] = cv
                    s.pointer[t * headDim + i] = sv; s.pointer[t * headDim + i + half] = sv
                }
            }
            return (c, s)
        }
    }
}
