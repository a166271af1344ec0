import Foundation

/// AdamW with the update of `torch.optim.AdamW` (single-tensor path, no amsgrad, not maximizing), constant lr:
/// ```
/// θ ← θ·(1 − lr·λ)
/// m ← m + (1 − β1)(g − m)            (torch's lerp)
/// v ← β2·v + (1 − β2)·g²
/// θ ← θ − lr/(1 − β1^t) · m / (√v / √(1 − β2^t) + ε)
/// ```
/// Bias corrections are computed in Float64 as PyTorch does (Python floats); the rest in float32.
/// Parameters are `Tensor`s (reference semantics): `step` updates them in place.
public final class AdamW {
    public var learningRate: Float
    public let beta1: Double, beta2: Double, eps: Double, weightDecay: Double
    public let parameters: [Tensor]
    public private(set) var stepCount = 0
    private let m: [Tensor], v: [Tensor]

    public init(parameters: [Tensor], learningRate: Float, beta1: Double = 0.9, beta2: Double = 0.999,
                eps: Double = 1e-8, weightDecay: Double = 0) throws {
        try require(learningRate >= 0 && learningRate.isFinite, "AdamW: invalid learning rate \(learningRate)")
        try require((0..<1).contains(beta1) && (0..<1).contains(beta2), "AdamW: betas must be in [0, 1)")
        try require(eps >= 0 && weightDecay >= 0, "AdamW: eps and weight decay must be non-negative")
        self.parameters = parameters
        self.learningRate = learningRate
        self.beta1 = beta1; self.beta2 = beta2; self.eps = eps; self.weightDecay = weightDecay
        m = parameters.map { Tensor(zeros: $0.shape) }
        v = parameters.map { Tensor(zeros: $0.shape) }
    }

    /// One update with `gradients[i]` for `parameters[i]` (same shapes).
    public func step(gradients: [Tensor]) throws {
        try require(gradients.count == parameters.count, "AdamW: \(gradients.count) gradients for \(parameters.count) parameters")
        for (p, g) in zip(parameters, gradients) {
            try require(p.count == g.count, "AdamW: gradient \(g.shape) for parameter \(p.shape)")
        }
        stepCount += 1
        let lr = Double(learningRate)
        let decay = Float(1 - lr * weightDecay)
        let w1 = Float(1 - beta1), b2 = Float(beta2), w2 = Float(1 - beta2)
        let bc1 = 1 - Foundation.pow(beta1, Double(stepCount))
        let bc2Sqrt = (1 - Foundation.pow(beta2, Double(stepCount))).squareRoot()
        let stepSize = Float(lr / bc1), bc2s = Float(bc2Sqrt), epsF = Float(eps)
        let applyDecay = weightDecay != 0
        for i in parameters.indices {
            let p = parameters[i].pointer, g = gradients[i].pointer, mp = m[i].pointer, vp = v[i].pointer
            parallelFor(parameters[i].count, minChunk: 1 << 15) { r in
                for j in r {
                    if applyDecay { p[j] *= decay }
                    let gj = g[j]
                    mp[j] += w1 * (gj - mp[j])
                    vp[j] = vp[j] * b2 + w2 * (gj * gj)
                    let denom = vp[j].squareRoot() / bc2s + epsF
                    p[j] += -stepSize * (mp[j] / denom)
                }
            }
        }
    }
}
