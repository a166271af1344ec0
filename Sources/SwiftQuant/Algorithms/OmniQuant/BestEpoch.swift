/// `keep_best`: remembers the trained parameters at the end of the epoch with the lowest mean training loss and
/// puts them back when training ends. The mean is taken while the parameters move through the epoch (no extra
/// forward pass), so it scores the epoch's path, and its end point stands for it. Without `keep_best` it does
/// nothing and the last epoch's parameters stay, as the paper's code.
struct BestEpoch {
    private let parameters: [Tensor]
    private let enabled: Bool
    private var saved: [[Float]] = []
    private var bestLoss = Double.infinity
    /// The kept epoch (0-based); nil until a finite epoch mean has been seen or when disabled.
    private(set) var epoch: Int?

    init(_ parameters: [Tensor], enabled: Bool) {
        self.parameters = parameters; self.enabled = enabled
    }

    /// Call after every epoch with its mean training loss.
    mutating func record(epoch e: Int, meanLoss: Double) {
        guard enabled, meanLoss.isFinite, meanLoss < bestLoss else { return }
        bestLoss = meanLoss; epoch = e
        saved = parameters.map { Array($0.buffer) }
    }

    /// Restores the kept epoch's parameters (if training went on past it).
    func restore() {
        guard enabled, epoch != nil else { return }
        for (t, v) in zip(parameters, saved) {
            _ = v.withUnsafeBufferPointer { t.buffer.update(fromContentsOf: $0) }
        }
    }
}
