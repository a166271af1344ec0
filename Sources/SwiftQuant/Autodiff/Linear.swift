/// Reverse-mode gradients for one transformer block, written as ops that keep their forward and backward
/// passes side by side. There is no generic graph: a caller (for example `LlamaBlockGrad`) keeps a block-level
/// tape — the forward pass stores what the backward pass needs — and walks it in reverse.
///
/// Conventions shared by every op in this namespace:
/// - tensors are dense, row-major float32, passed as raw pointers with explicit sizes;
/// - a backward pass *writes* the gradient of its input(s) (or adds it when `accumulate` is true) and always
///   *adds* into parameter gradients (like PyTorch's `.grad`), so callers zero parameter gradients themselves;
/// - matrix products go to `BLAS.sgemm`; elementwise, norm and softmax loops run over rows with `parallelFor`.
public enum Autodiff {}

extension Autodiff {
    /// Affine map `Y[rows, out] = X[rows, in] · Wᵀ + b` with `W` in PyTorch layout `[out, in]`.
    public enum Linear {
        public static func forward(
            x: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
            y: UnsafeMutablePointer<Float>, rows: Int, inFeatures: Int, outFeatures: Int
        ) {
            var beta: Float = 0
            if let bias {
                for r in 0..<rows { (y + r * outFeatures).update(from: bias, count: outFeatures) }
                beta = 1
            }
            BLAS.sgemm(transA: false, transB: true, m: rows, n: outFeatures, k: inFeatures,
                       a: x, lda: inFeatures, b: weight, ldb: inFeatures, beta: beta, c: y, ldc: outFeatures)
        }

        /// `dX = dY · W` (written, or added when `accumulate`), `dW += dYᵀ · X`, `db += Σ_rows dY`.
        /// Any of `dX`, `dWeight`, `dBias` may be nil to skip that product. `overwriteWeightGradient` writes
        /// `dW = dYᵀ · X` instead of adding (saves zeroing a buffer the caller owns).
        public static func backward(
            dY: UnsafePointer<Float>, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
            dX: UnsafeMutablePointer<Float>?, accumulate: Bool = false,
            dWeight: UnsafeMutablePointer<Float>?, dBias: UnsafeMutablePointer<Float>? = nil,
            overwriteWeightGradient: Bool = false, rows: Int, inFeatures: Int, outFeatures: Int,
            precision: GEMMPrecision = .fp32
        ) {
            if let dX {
                BLAS.sgemm(m: rows, n: inFeatures, k: outFeatures, a: dY, lda: outFeatures, b: weight,
                           ldb: inFeatures, beta: accumulate ? 1 : 0, c: dX, ldc: inFeatures, precision: precision)
            }
            if let dWeight {
                BLAS.sgemm(transA: true, m: outFeatures, n: inFeatures, k: rows, a: dY, lda: outFeatures,
                           b: x, ldb: inFeatures, beta: overwriteWeightGradient ? 0 : 1, c: dWeight,
                           ldc: inFeatures, precision: precision)
            }
            if let dBias {
                for r in 0..<rows {
                    let g = dY + r * outFeatures
                    for j in 0..<outFeatures { dBias[j] += g[j] }
                }
            }
        }
    }

    /// `y = a + b`. Backward: both inputs receive `dY` unchanged.
    public enum Residual {
        public static func forward(a: UnsafePointer<Float>, b: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                                   count: Int) {
            parallelFor(count, minChunk: 1 << 16) { r in
                for i in r { y[i] = a[i] + b[i] }
            }
        }

        /// Adds `dY` into `dA` and `dB` (either may be nil).
        public static func backward(dY: UnsafePointer<Float>, dA: UnsafeMutablePointer<Float>?,
                                    dB: UnsafeMutablePointer<Float>?, count: Int) {
            parallelFor(count, minChunk: 1 << 16) { r in
                if let dA { for i in r { dA[i] += dY[i] } }
                if let dB { for i in r { dB[i] += dY[i] } }
            }
        }
    }

    /// Mean squared error `L = mean((pred − target)²)` (PyTorch `mse_loss`, reduction "mean").
    public enum MSELoss {
        public static func forward(pred: UnsafePointer<Float>, target: UnsafePointer<Float>, count: Int) -> Float {
            var acc: Double = 0
            for i in 0..<count {
                let d = Double(pred[i]) - Double(target[i])
                acc += d * d
            }
            return Float(acc / Double(max(count, 1)))
        }

        /// `dPred = dLoss · 2(pred − target)/count` (written). The target gets the negation; not produced.
        public static func backward(pred: UnsafePointer<Float>, target: UnsafePointer<Float>,
                                    dPred: UnsafeMutablePointer<Float>, count: Int, dLoss: Float = 1) {
            let s = dLoss * 2 / Float(max(count, 1))
            parallelFor(count, minChunk: 1 << 16) { r in
                for i in r { dPred[i] = s * (pred[i] - target[i]) }
            }
        }
    }

    /// Squared error with every token rescaled to the window's mean token energy:
    /// `(1/n) Σ_t (N̄ / ‖target_t‖²) ‖pred_t − target_t‖²` over `rows` = T tokens of `cols` features (n = T·cols),
    /// `N̄` the mean of `‖target_t‖²` over the window. It is MSE when every token has the same norm, and each token's
    /// relative error weighs the same whatever its magnitude, so a window's massive-activation tokens (residual
    /// norms 100× the others, e.g. SmolLM2's first token from block 12 on, 98% of the plain MSE) do not own the
    /// loss. `‖target_t‖²` is floored at 1e-6 · N̄.
    public enum RelativeMSELoss {
        /// Per row, `N̄ / max(‖target_t‖², 1e-6 N̄) / n`.
        static func weights(target: UnsafePointer<Float>, rows: Int, cols: Int) -> [Double] {
            var e = [Double](repeating: 0, count: rows)
            for t in 0..<rows {
                var a: Double = 0
                for j in 0..<cols { let v = Double(target[t * cols + j]); a += v * v }
                e[t] = a
            }
            let mean = e.reduce(0, +) / Double(max(rows, 1))
            let floor = max(1e-6 * mean, Double(Float.leastNormalMagnitude)), n = Double(max(rows * cols, 1))
            return e.map { mean / max($0, floor) / n }
        }

        public static func forward(pred: UnsafePointer<Float>, target: UnsafePointer<Float>, rows: Int, cols: Int) -> Float {
            let w = weights(target: target, rows: rows, cols: cols)
            var acc: Double = 0
            for t in 0..<rows {
                var e: Double = 0
                for j in 0..<cols { let d = Double(pred[t * cols + j]) - Double(target[t * cols + j]); e += d * d }
                acc += e * w[t]
            }
            return Float(acc)
        }

        /// `dPred_t = dLoss · 2 w_t (pred_t − target_t)`, `w_t = N̄ / (n ‖target_t‖²)` (written).
        public static func backward(pred: UnsafePointer<Float>, target: UnsafePointer<Float>,
                                    dPred: UnsafeMutablePointer<Float>, rows: Int, cols: Int, dLoss: Float = 1) {
            let w = weights(target: target, rows: rows, cols: cols)
            parallelFor(rows, minChunk: max(1, (1 << 16) / max(cols, 1))) { r in
                for t in r {
                    let s = dLoss * Float(2 * w[t])
                    for j in 0..<cols { dPred[t * cols + j] = s * (pred[t * cols + j] - target[t * cols + j]) }
                }
            }
        }
    }
}
