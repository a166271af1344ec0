/// Round-to-nearest weight quantization: every Linear of every block quantized on its own with the min/max
/// policy (ALGORITHMS.md §1), no calibration. Embeddings, norms and the LM head stay FP (the papers' setting).
public enum RTN {
    /// Quantizes every block linear of `model`, installs the fake-quantized blocks in `model` and returns the
    /// quantized tensors by Hugging Face weight name.
    @discardableResult
    public static func apply(to model: TransformerModel, config: QuantizerConfig, progress: Bool = false) throws
        -> [String: QuantizedTensor]
    {
        var out: [String: QuantizedTensor] = [:]
        let bar = ProgressBar(total: model.numBlocks, label: "rtn \(config)", unit: "block", enabled: progress)
        for i in 0..<model.numBlocks {
            let block = try model.loadBlock(i)
            var linears = block.linears
            for name in block.linearNames {
                guard let lin = block.linears[name] else { continue }
                let (q, fake) = try quantizeWeight(lin.weight, config: config, name: model.blockPrefix(i) + name)
                out[model.blockPrefix(i) + name + ".weight"] = q
                linears[name] = Linear(weight: fake, bias: lin.bias)
            }
            model.setBlock(i, TransformerBlock(index: i, linearNames: block.linearNames, linears: linears, norms: block.norms))
            bar.advance()
        }
        return out
    }

    /// One weight: its `QuantizedTensor` and the dequantized (fake-quantized) float32 matrix.
    public static func quantizeWeight(_ w: Tensor, config: QuantizerConfig, name: String) throws
        -> (QuantizedTensor, Tensor)
    {
        try require(w.rank == 2, "\(name): a Linear weight must be 2-D, got \(w.shape)")
        let rows = w.shape[0], cols = w.shape[1]
        do {
            let q = try Quantizer.quantize(UnsafeBufferPointer(w.buffer), rows: rows, cols: cols, config: config)
            return (q, q.dequantized())
        } catch let e as SwiftQuantError {
            switch e {
            case .invalidArgument(let m): throw SwiftQuantError.invalidArgument("\(name): \(m)")
            case .nonFinite(let m): throw SwiftQuantError.nonFinite("\(name): \(m)")
            default: throw e
            }
        }
    }
}
