import Foundation

/// The parts of a saved model directory that do not depend on how it was quantized: the effective float32
/// weights (streamed tensor by tensor) and what a runtime needs beside them (tokenizer, generation config).
public enum SavedModelFiles {
    /// Seconds a load or save may take before its progress bar appears.
    public static let progressDelay = 1.5

    /// Writes the model's effective float32 weights into `dir`: `model.safetensors`, or shards of at most
    /// `shardBytes` plus `model.safetensors.index.json`. Block linears come from the blocks as the forward pass
    /// uses them (installed, e.g. fake-quantized, or read from the source), everything else from the source, in
    /// the source's order; a tied LM head is not written.
    ///
    /// Streaming: each tensor is produced when the writer reaches it and released once written, so at most one
    /// block's weights exist beyond what the model already holds; tensors the source converts (GGUF block types,
    /// F16/BF16) are not kept in its cache. A progress bar with ETA goes to stderr when the write takes longer
    /// than `progressDelay` seconds.
    public static func writeEffectiveWeights(_ loaded: LoadedModel, into dir: String, shardBytes: Int,
                                             progress: Bool = true) throws {
        let model = loaded.model
        let tied = loaded.config["tie_word_embeddings"] as? Bool ?? false
        // Which block linear or norm a tensor name is (weight or bias): blocks run with their installed linears
        // and norms (an equivalent transformation rescales norms and biases).
        var blockTensor: [String: (block: Int, linear: String, bias: Bool, norm: Bool)] = [:]
        let spec = model.blockSpec
        for i in 0..<model.numBlocks {
            let p = model.blockPrefix(i)
            for n in model.blockLinearNames {
                blockTensor[p + n + ".weight"] = (i, n, false, false)
                blockTensor[p + n + ".bias"] = (i, n, true, false)
            }
            for n in [spec.attentionNorm.name, spec.mlpNorm.name] {
                blockTensor[p + n + ".weight"] = (i, n, false, true)
                blockTensor[p + n + ".bias"] = (i, n, true, true)
            }
        }
        // Biases the blocks run with but the source has no tensor for (LET shifts folded into an RMSNorm family:
        // norm biases, and biases on linears that had none) are written after the source's tensors; the loader
        // reads a bias wherever the file has one.
        var created: [(name: String, shape: [Int])] = []
        for i in 0..<model.numBlocks where loaded.quantization != nil {
            let b = try model.block(i), p = model.blockPrefix(i)
            for n in model.blockLinearNames {
                if let bias = b.linear(n).bias, loaded.source.info(p + n + ".bias") == nil {
                    created.append((p + n + ".bias", bias.shape))
                }
            }
            for (n, nw) in b.norms.sorted(by: { $0.key < $1.key }) {
                if let bias = nw.bias, loaded.source.info(p + n + ".bias") == nil {
                    created.append((p + n + ".bias", bias.shape))
                }
            }
        }
        // One block at a time (the writer visits a block's tensors one after the other: names are sorted).
        final class Memo { var index = -1; var block: TransformerBlock? }
        let memo = Memo()
        let source = loaded.source
        func tensor(_ name: String, shape: [Int]) throws -> Tensor {
            var t: Tensor? = nil
            if let b = blockTensor[name] {
                if memo.index != b.block {
                    memo.block = nil
                    memo.block = try model.block(b.block)
                    memo.index = b.block
                }
                if b.norm {
                    let nw = memo.block!.norms[b.linear]
                    t = b.bias ? nw?.bias : nw?.weight
                } else {
                    let l = memo.block!.linear(b.linear)
                    t = b.bias ? l.bias : l.weight
                }
            }
            let out = try t ?? source.float32(name)
            try require(out.shape == shape, "\(name): shape \(out.shape) differs from the source's \(shape)")
            return out
        }
        var entries: [SafetensorsEntry] = []
        for (name, shape) in source.tensorInfos.filter({ !($0.name == "lm_head.weight" && tied) }).map({ ($0.name, $0.shape) })
            + created {
            entries.append(SafetensorsEntry(name: name, dtype: .f32, shape: shape, deferred: {
                SafetensorsEntry(name: name, tensor: try tensor(name, shape: shape)).bytes
            }))
        }
        let total = entries.reduce(0) { $0 + max($1.byteCount, 0) }
        let mib = 1 << 20
        let bar = ProgressBar(total: (total + mib - 1) / mib, label: "saving weights",
                              unit: "MiB", enabled: progress, delay: progressDelay)
        var written = 0
        // Conversions made for the write are not kept (the model's own cached tensors are still used).
        let wasCaching = source.enabled
        source.enabled = false
        defer { source.enabled = wasCaching }
        _ = try SafetensorsWriter.writeSharded(entries, metadata: ["format": "pt"], directory: dir,
                                               maxShardBytes: shardBytes, progress: { n in
            let before = written / mib
            written += n
            bar.advance(written == total ? bar.total : written / mib - before)
        })
        memo.block = nil
    }

    /// Writes what a runtime needs beside the weights into `dir`:
    ///
    /// - the source's own files (tokenizer.json, tokenizer_config.json, special_tokens_map.json,
    ///   generation_config.json …), copied as they are;
    /// - when the source has none of them (a GGUF file), `tokenizer.json` written from the tokenizer
    ///   (`TokenizerJSONWriter`), `tokenizer_config.json` (special tokens, `add_bos_token`, chat template) and
    ///   `special_tokens_map.json`;
    /// - `generation_config.json` with the bos / eos / pad ids the source gives (tokenizer, config.json), when
    ///   the source has no such file and knows at least one of them.
    public static func writeCompanions(_ loaded: LoadedModel, into dir: String) throws {
        let fm = FileManager.default
        var present = Set<String>()
        for f in loaded.companionFiles {
            let name = (f as NSString).lastPathComponent
            do {
                try fm.copyItem(atPath: f, toPath: (dir as NSString).appendingPathComponent(name))
            } catch {
                throw SwiftQuantError.io("\(f): cannot copy into \(dir): \(error.localizedDescription)")
            }
            present.insert(name)
        }
        func write(_ text: String, _ name: String) throws {
            try AtomicFileWriter.write(to: (dir as NSString).appendingPathComponent(name)) { w in
                try w.write(Data(text.utf8))
            }
        }
        let extras = loaded.tokenizerExtras
        if let tok = loaded.tokenizer {
            if !present.contains("tokenizer.json") {
                try write(try TokenizerJSONWriter.tokenizerJSON(tok.spec), "tokenizer.json")
            }
            if !present.contains("tokenizer_config.json") {
                try write(try TokenizerJSONWriter.tokenizerConfigJSON(tok.spec, extras: extras), "tokenizer_config.json")
            }
            if !present.contains("special_tokens_map.json") && !present.contains("tokenizer_config.json") {
                try write(try TokenizerJSONWriter.specialTokensMapJSON(tok.spec, extras: extras),
                          "special_tokens_map.json")
            }
        }
        if !present.contains("generation_config.json") {
            var gen: [(String, JSONOut)] = []
            let cfg = loaded.config
            // config.json first (an id or, for eos, a list of ids), then the tokenizer.
            for (key, fromTokenizer) in [("bos_token_id", loaded.tokenizer?.bosId),
                                         ("eos_token_id", loaded.tokenizer?.eosId), ("pad_token_id", extras.padId)] {
                if let v = cfg[key] as? Int {
                    gen.append((key, .int(v)))
                } else if let l = cfg[key] as? [Int], !l.isEmpty {
                    gen.append((key, .array(l.map { .int($0) })))
                } else if let t = fromTokenizer {
                    gen.append((key, .int(Int(t))))
                }
            }
            if !gen.isEmpty {
                var text = ""
                JSONOut.object(gen).render(into: &text, indent: 0)
                try write(text + "\n", "generation_config.json")
            }
        }
    }
}

extension TransformerModel {
    /// Reads every weight the forward pass uses once, so that a caching source (`CachingTensorSource`, as
    /// `LoadedModel` has) converts them now rather than inside the first window; a progress bar with ETA goes to
    /// stderr when this takes longer than `SavedModelFiles.progressDelay` seconds (a large GGUF model). Does
    /// nothing when the source does not keep conversions (zero-copy files need none; calibration turns caching
    /// off to hold one block at a time). Installed blocks are not read again.
    public func loadWeights(progress: Bool = true, label: String = "loading weights") throws {
        guard let c = source as? CachingTensorSource, c.enabled else { return }
        let bar = ProgressBar(total: numBlocks + 1, label: label, unit: "", enabled: progress,
                              delay: SavedModelFiles.progressDelay)
        _ = try embed([0])
        _ = try lmHeadWeight()
        try applyFinalNorm(Tensor(zeros: [1, hiddenSize]))
        bar.advance()
        for i in 0..<numBlocks {
            _ = try block(i)
            bar.advance()
        }
    }
}
