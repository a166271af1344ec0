import Foundation

/// Writes the `pack-quantized` layout of the compressed-tensors package (the format llm-compressor writes and
/// transformers with compressed-tensors, and vLLM, load), for INT4 and INT8 weights:
///
/// | tensor | dtype, shape | content |
/// |---|---|---|
/// | `<linear>.weight_packed` | I32 `[out, in·N/32]` | row `o` is one LSB-first stream (`Int32Stream`) of `q + 2^(N−1)` per input column, where `q ∈ [−2^(N−1), 2^(N−1))` is the signed code |
/// | `<linear>.weight_scale` | F32 `[out, groups]` (`[out, 1]` per channel) | the scales, in the model's dtype (float32: SwiftQuant's scales exactly) |
/// | `<linear>.weight_zero_point` | I32 `[out·N/32, groups]` | asymmetric only: column `g` is one LSB-first stream along the output rows of `zp + 2^(N−1)` |
/// | `<linear>.weight_shape` | I64 `[2]` | `[out, in]` |
/// | every other tensor | F32 | as the blocks run them |
///
/// Dequantized: `W = (q − zp)·scale` (zp = 0 when symmetric). SwiftQuant's unsigned code `c` with zero `z` becomes
/// `q = c − 2^(N−1)`, `zp = z − 2^(N−1)`, so `q − zp = c − z` exactly. `config.json` gets
/// `quantization_config = {quant_method: "compressed-tensors", format: "pack-quantized", quantization_status:
/// "compressed", config_groups: {group_0: {targets: ["Linear"], weights: {num_bits, type: "int", symmetric,
/// strategy: "group" | "channel", group_size, dynamic: false}}}, ignore: ["lm_head", …]}`.
///
/// Refused: minifloat weights, other bit widths, act-order (`g_idx`: compressed-tensors has no group index any
/// more), a group size that does not divide a linear's input features (the format has no ragged group),
/// activation quantization (SwiftQuant's per-token quantizer does not force 0 into the range; compressed-tensors'
/// dynamic one does, so the runtime would compute something else), LoRC. Zero-points are moved into the storable
/// range without changing the grid when the codes allow (`ZeroPointRefit`), else refused (or clamped with
/// `requantize`, with a per-tensor error report).
public enum CompressedTensorsExport {
    public static let supportedBits: Set<Int> = [4, 8]

    public static func write(_ loaded: LoadedModel, to path: String, options: ExportOptions) throws {
        let (state, bits) = try RuntimeExport.weightOnlyIntState(
            loaded, format: "compressed-tensors", bits: supportedBits,
            activations: "compressed-tensors' dynamic activation quantizer forces 0 into each token's range and "
                + "SwiftQuant's (OmniQuant's) does not, so no input_activations entry would reproduce this model. Save it "
                + "in SwiftQuant's format, or export a weight-only quantization")
        try QuantizedExport.checkOutput(path)
        let cfg = state.weights
        let tensors = state.tensors
        let group = cfg.groupSize.columns
        for (name, q) in tensors.sorted(by: { $0.key < $1.key }) {
            if let g = q.groupIndex, g != (0..<q.cols).map({ Int32($0 / cfg.groupWidth(cols: q.cols)) }) {
                throw SwiftQuantError.unsupported(
                    "\(name) was quantized with act-order (its groups are not consecutive columns); compressed-tensors "
                        + "stores no group index: export it with --format gptq (g_idx), or quantize without act_order")
            }
            if let g = group, q.cols % g != 0 {
                let counts = Set(tensors.values.map(\.cols)).sorted()
                let d = RuntimeExport.dividingGroupSize(counts, atMost: g)
                throw SwiftQuantError.unsupported(
                    "compressed-tensors needs the group size to divide every linear's input features: \(name) has "
                        + "\(q.cols) inputs and group \(g) leaves a last group of \(q.cols % g). Re-quantize "
                        + (d.map { "with --group-size \($0) or " } ?? "") + "per row (--group-size per-row)")
            }
        }
        let half = 1 << (bits - 1)
        let allowed = cfg.symmetric ? half...half : 0...((1 << bits) - 1)
        let what = cfg.symmetric ? "compressed-tensors symmetric (no zero-point: codes −\(half)…\(half - 1))"
            : "compressed-tensors (zero-points −\(half)…\(half - 1))"
        var clamped: [String] = []
        let bar = options.progress && loaded.model.numBlocks > 4
            ? ProgressBar(total: loaded.model.numBlocks, label: "packing compressed-tensors", unit: "blocks") : nil
        let entries = try RuntimeExport.entries(loaded, quantized: tensors, progress: bar) { name, q in
            let fit = try ZeroPointRefit.refit(q, name: name, allowed: allowed, format: what, options: options,
                                               clamped: &clamped)
            return pack(name: name, rows: q.rows, cols: q.cols, groups: q.groupCount, bits: bits, codes: fit.codes,
                        zeros: cfg.symmetric ? nil : fit.zeros, scales: q.scales)
        }
        // Linears the blocks hold unquantized, and the LM head, stay dense.
        var ignore: Set<String> = ["lm_head"]
        for i in 0..<loaded.model.numBlocks {
            for l in loaded.model.blockSpec.linears {
                let base = loaded.model.blockPrefix(i) + l.name
                if tensors[base + ".weight"] == nil { ignore.insert(base) }
            }
        }
        var weights: [String: Any] = ["num_bits": bits, "type": "int", "symmetric": cfg.symmetric, "dynamic": false,
                                      "strategy": group == nil ? "channel" : "group"]
        weights["group_size"] = group.map { $0 as Any } ?? NSNull()
        let scheme: [String: Any] = ["targets": ["Linear"], "weights": weights, "input_activations": NSNull(),
                                     "output_activations": NSNull(), "format": "pack-quantized"]
        let qc: [String: Any] = [
            "quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
            "config_groups": ["group_0": scheme], "ignore": ignore.sorted(), "kv_cache_scheme": NSNull(),
            "global_compression_ratio": NSNull(),
        ]
        let marker: [String: Any] = ["format": "compressed-tensors", "method": state.method, "bits": bits,
                                     "group_size": group.map { $0 as Any } ?? "per-row", "symmetric": cfg.symmetric,
                                     "quantized_tensors": tensors.count, "requantized_tensors": clamped]
        try RuntimeExport.writeDirectory(loaded, to: path, entries: entries,
                                         config: RuntimeExport.config(loaded, quantizationConfig: qc), marker: marker)
    }

    /// The compressed-tensors tensors of one linear `[rows = out, cols = in]` from unsigned codes and zeros
    /// (row-major, SwiftQuant's layout) that already fit the format; `zeros` nil for the symmetric scheme.
    static func pack(name: String, rows: Int, cols: Int, groups: Int, bits: Int, codes: [UInt8], zeros: [Int32]?,
                     scales: [Float]) -> [SafetensorsEntry] {
        let base = String(name.dropLast(".weight".count))
        let perRow = Int32Stream.wordCount(cols, bits: bits)
        var packed = [UInt32](repeating: 0, count: rows * perRow)
        codes.withUnsafeBufferPointer { c in
            packed.withUnsafeMutableBufferPointer { w in
                let wp = w.baseAddress!, cp = c.baseAddress!
                parallelFor(rows, minChunk: 16) { range in
                    for r in range {
                        // The stored value is the signed code plus 2^(N−1): SwiftQuant's unsigned code itself.
                        Int32Stream.pack(count: cols, bits: bits, into: wp + r * perRow, stride: 1) { UInt32(cp[r * cols + $0]) }
                    }
                }
            }
        }
        var out = [
            SafetensorsEntry(name: base + ".weight_packed", dtype: .i32, shape: [rows, perRow], bytes: Int32Stream.data(packed)),
            SafetensorsEntry(name: base + ".weight_scale", dtype: .f32, shape: [rows, groups],
                             bytes: scales.withUnsafeBufferPointer { Data(buffer: $0) }),
            SafetensorsEntry(name: base + ".weight_shape", dtype: .i64, shape: [2],
                             bytes: [Int64(rows), Int64(cols)].map { $0.littleEndian }.withUnsafeBytes { Data($0) }),
        ]
        if let zeros {
            let zRows = Int32Stream.wordCount(rows, bits: bits)
            var zp = [UInt32](repeating: 0, count: zRows * groups)
            zp.withUnsafeMutableBufferPointer { w in
                for g in 0..<groups {
                    // Packed along the output dimension: column g of [out·N/32, groups] is a stream over rows.
                    Int32Stream.pack(count: rows, bits: bits, into: w.baseAddress! + g, stride: groups) {
                        UInt32(zeros[$0 * groups + g])
                    }
                }
            }
            out.append(SafetensorsEntry(name: base + ".weight_zero_point", dtype: .i32, shape: [zRows, groups],
                                        bytes: Int32Stream.data(zp)))
        }
        return out
    }
}
