extension Autodiff {
    @inline(__always)
    static func rowChunk(_ dim: Int) -> Int { max(1, 16_384 / max(dim, 1)) }

    /// RMSNorm over the last axis (Llama): `y = x · r · g` with `r = 1/√(mean(x²) + eps)`.
    public enum RMSNorm {
        /// Writes `y` and saves `rstd[rows]` (= r) for the backward pass. `y` may not alias `x`.
        public static func forward(
            x: UnsafePointer<Float>, weight: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
            rstd: UnsafeMutablePointer<Float>, rows: Int, dim: Int, eps: Float
        ) {
            parallelFor(rows, minChunk: rowChunk(dim)) { range in
                for r in range {
                    let xr = x + r * dim, yr = y + r * dim
                    var ss: Float = 0
                    for j in 0..<dim { ss += xr[j] * xr[j] }
                    let s = 1 / (ss / Float(dim) + eps).squareRoot()
                    rstd[r] = s
                    for j in 0..<dim { yr[j] = weight[j] * (xr[j] * s) }
                }
            }
        }

        /// With `a = g ⊙ dY`: `dX = r·a − x · r³ · (a·x)/dim` (written, or added when `accumulate`);
        /// `dWeight += Σ_rows dY ⊙ x · r` when given.
        public static func backward(
            dY: UnsafePointer<Float>, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
            rstd: UnsafePointer<Float>, dX: UnsafeMutablePointer<Float>, accumulate: Bool = false,
            dWeight: UnsafeMutablePointer<Float>?, rows: Int, dim: Int
        ) {
            parallelFor(rows, minChunk: rowChunk(dim)) { range in
                for r in range {
                    let xr = x + r * dim, gr = dY + r * dim, dxr = dX + r * dim
                    let s = rstd[r]
                    var dot: Float = 0
                    for j in 0..<dim { dot += weight[j] * gr[j] * xr[j] }
                    let c = s * s * s * dot / Float(dim)
                    if accumulate {
                        for j in 0..<dim { dxr[j] += s * weight[j] * gr[j] - c * xr[j] }
                    } else {
                        for j in 0..<dim { dxr[j] = s * weight[j] * gr[j] - c * xr[j] }
                    }
                }
            }
            if let dWeight {
                for r in 0..<rows {
                    let xr = x + r * dim, gr = dY + r * dim, s = rstd[r]
                    for j in 0..<dim { dWeight[j] += gr[j] * xr[j] * s }
                }
            }
        }
    }

    /// LayerNorm over the last axis: `y = (x − μ)·r·g + b`, `r = 1/√(var + eps)`, biased variance (PyTorch).
    public enum LayerNorm {
        /// Writes `y`, saves `mean[rows]` and `rstd[rows]`.
        public static func forward(
            x: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
            y: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
            rows: Int, dim: Int, eps: Float
        ) {
            parallelFor(rows, minChunk: rowChunk(dim)) { range in
                for r in range {
                    let xr = x + r * dim, yr = y + r * dim
                    var sum: Float = 0
                    for j in 0..<dim { sum += xr[j] }
                    let mu = sum / Float(dim)
                    var ss: Float = 0
                    for j in 0..<dim { let d = xr[j] - mu; ss += d * d }
                    let s = 1 / (ss / Float(dim) + eps).squareRoot()
                    mean[r] = mu
                    rstd[r] = s
                    if let bias {
                        for j in 0..<dim { yr[j] = (xr[j] - mu) * s * weight[j] + bias[j] }
                    } else {
                        for j in 0..<dim { yr[j] = (xr[j] - mu) * s * weight[j] }
                    }
                }
            }
        }

        /// With `x̂ = (x − μ)r`, `a = g ⊙ dY`: `dX = r·(a − mean(a) − x̂·mean(a ⊙ x̂))`;
        /// `dWeight += Σ dY ⊙ x̂`, `dBias += Σ dY`.
        public static func backward(
            dY: UnsafePointer<Float>, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
            mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>, dX: UnsafeMutablePointer<Float>,
            accumulate: Bool = false, dWeight: UnsafeMutablePointer<Float>?, dBias: UnsafeMutablePointer<Float>?,
            rows: Int, dim: Int
        ) {
            parallelFor(rows, minChunk: rowChunk(dim)) { range in
                for r in range {
                    let xr = x + r * dim, gr = dY + r * dim, dxr = dX + r * dim
                    let mu = mean[r], s = rstd[r]
                    var sa: Float = 0, sax: Float = 0
                    for j in 0..<dim {
                        let a = weight[j] * gr[j]
                        sa += a
                        sax += a * (xr[j] - mu) * s
                    }
                    let ma = sa / Float(dim), max_ = sax / Float(dim)
                    if accumulate {
                        for j in 0..<dim { dxr[j] += s * (weight[j] * gr[j] - ma - (xr[j] - mu) * s * max_) }
                    } else {
                        for j in 0..<dim { dxr[j] = s * (weight[j] * gr[j] - ma - (xr[j] - mu) * s * max_) }
                    }
                }
            }
            for r in 0..<rows {
                let xr = x + r * dim, gr = dY + r * dim, mu = mean[r], s = rstd[r]
                if let dWeight { for j in 0..<dim { dWeight[j] += gr[j] * (xr[j] - mu) * s } }
                if let dBias { for j in 0..<dim { dBias[j] += gr[j] } }
            }
        }
    }
}
