import Foundation

/// Writes a GPTQ checkpoint (the layout of AutoGPTQ / GPTQModel, `checkpoint_format: "gptq"`, i.e. v1), which
/// transformers loads through GPTQModel:
///
/// | tensor | dtype, shape | content |
/// |---|---|---|
/// | `<linear>.qweight` | I32 `[in·N/32, out]` | column `o` is one LSB-first stream of the `in` codes of output row `o` (`Int32Stream`; 3-bit: 32 codes in 3 words) |
/// | `<linear>.qzeros` | I32 `[groups, out·N/32]` | row `g` is one LSB-first stream of the `out` zero-points of group `g`, each stored as zero − 1 (v1) |
/// | `<linear>.scales` | F16 `[groups, out]` | the scales, rounded to FP16 |
/// | `<linear>.g_idx` | I32 `[in]` | the group of each input column (`c / group_size`, or act-order's permuted groups) |
/// | `<linear>.bias` and every other tensor | F32 | as the blocks run them |
///
/// Dequantized: `W[o, c] = scales[g, o] · (q[c, o] − (stored_zero[g, o] + 1))` with `g = g_idx[c]`.
/// `config.json` gets `quantization_config = {quant_method: "gptq", bits, group_size (−1 per row), desc_act, sym,
/// checkpoint_format: "gptq", …}`.
///
/// What GPTQ kernels accept, and so what is refused here: 2, 3, 4 or 8 bits; a group size that divides every
/// linear's input features (576-wide rows with group 128 would leave a ragged group: re-quantize with group 64 or per
/// row); `in·N` and `out·N` multiples of 32; zero-points in 1…2^N−1 (v1 stores zero − 1 in N bits; GPTQModel's
/// v1→v2 conversion adds 1 to every field) and, for `sym`, exactly 2^(N−1). Zero-points outside are moved without
/// changing the grid when the group's codes allow (`ZeroPointRefit`), else refused (or clamped with `requantize`,
/// with a per-tensor error report). Weight-only: no activation quantization, no LoRC, INT grids only.
public enum GPTQExport {
    public static let supportedBits: Set<Int> = [2, 3, 4, 8]

    public static func write(_ loaded: LoadedModel, to path: String, options: ExportOptions) throws {
        let (state, bits) = try RuntimeExport.weightOnlyIntState(
            loaded, format: "GPTQ", bits: supportedBits,
            activations: "a GPTQ checkpoint is weight-only and runtimes would run it with FP activations. Save it in "
                + "SwiftQuant's format, or export a weight-only quantization")
        try QuantizedExport.checkOutput(path)
        let cfg = state.weights
        let tensors = state.tensors
        let group = cfg.groupSize.columns
        if let g = group {
            let ragged = tensors.filter { $0.value.cols % g != 0 }.keys.sorted()
            if let first = ragged.first {
                let q = tensors[first]!
                let counts = Set(tensors.values.map(\.cols)).sorted()
                var hint = "re-quantize per row (--group-size per-row)"
                if let d = RuntimeExport.dividingGroupSize(counts, atMost: g) {
                    hint = "re-quantize with --group-size \(d) (it divides \(counts.map(String.init).joined(separator: " and "))) or per row (--group-size per-row)"
                }
                throw SwiftQuantError.unsupported(
                    "GPTQ needs the group size to divide every linear's input features: \(first) has \(q.cols) inputs and "
                        + "group \(g) leaves a last group of \(q.cols % g) (\(ragged.count) linears like it); GPTQ kernels have "
                        + "no ragged groups. \(hint)")
            }
        }
        for (name, q) in tensors.sorted(by: { $0.key < $1.key }) {
            if (q.cols * bits) % 32 != 0 || (q.rows * bits) % 32 != 0 {
                throw SwiftQuantError.unsupported(
                    "\(name) [\(q.rows), \(q.cols)]: GPTQ packs \(bits)-bit codes into whole int32 words along both dimensions; "
                        + "in·\(bits) and out·\(bits) must be multiples of 32")
            }
        }
        let half = 1 << (bits - 1)
        let allowed = cfg.symmetric ? half...half : 1...((1 << bits) - 1)
        let what = cfg.symmetric ? "GPTQ with sym (zero-point fixed at \(half))" : "GPTQ v1 (qzeros holds zero − 1)"
        var descAct = false
        var clamped: [String] = []
        let bar = options.progress && loaded.model.numBlocks > 4
            ? ProgressBar(total: loaded.model.numBlocks, label: "packing GPTQ", unit: "blocks") : nil
        let entries = try RuntimeExport.entries(loaded, quantized: tensors, progress: bar) { name, q in
            let fit = try ZeroPointRefit.refit(q, name: name, allowed: allowed, format: what, options: options,
                                               clamped: &clamped)
            let consecutive = (0..<q.cols).map { Int32($0 / (group ?? q.cols)) }
            let gIdx = q.groupIndex ?? consecutive
            if gIdx != consecutive { descAct = true }
            return try pack(name: name, rows: q.rows, cols: q.cols, groups: q.groupCount, bits: bits, codes: fit.codes,
                            zeros: fit.zeros, scales: q.scales, gIdx: gIdx)
        }
        var meta: [String: Any] = ["quantizer": ["swiftquant:\(SwiftQuantInfo.version)"], "swiftquant_method": state.method]
        if !clamped.isEmpty { meta["swiftquant_requantized"] = clamped }
        let qc: [String: Any] = [
            "quant_method": "gptq", "bits": bits, "group_size": group ?? -1, "desc_act": descAct, "sym": cfg.symmetric,
            "checkpoint_format": "gptq", "static_groups": false, "true_sequential": true, "lm_head": false,
            "pack_dtype": "int32", "meta": meta,
        ]
        let marker: [String: Any] = ["format": "gptq", "method": state.method, "bits": bits,
                                     "group_size": group.map { $0 as Any } ?? "per-row", "symmetric": cfg.symmetric,
                                     "quantized_tensors": tensors.count, "requantized_tensors": clamped]
        try RuntimeExport.writeDirectory(loaded, to: path, entries: entries,
                                         config: RuntimeExport.config(loaded, quantizationConfig: qc), marker: marker)
    }

    /// The four GPTQ tensors of one linear `[rows = out, cols = in]` from codes and zeros (row-major, SwiftQuant's
    /// layout) that already fit the format.
    static func pack(name: String, rows: Int, cols: Int, groups: Int, bits: Int, codes: [UInt8], zeros: [Int32],
                     scales: [Float], gIdx: [Int32]) throws -> [SafetensorsEntry] {
        let base = String(name.dropLast(".weight".count))
        let qwRows = cols * bits / 32, qzCols = rows * bits / 32
        var qweight = [UInt32](repeating: 0, count: qwRows * rows)
        codes.withUnsafeBufferPointer { c in
            qweight.withUnsafeMutableBufferPointer { w in
                let wp = w.baseAddress!, cp = c.baseAddress!
                parallelFor(rows, minChunk: 16) { range in
                    for r in range {
                        Int32Stream.pack(count: cols, bits: bits, into: wp + r, stride: rows) { UInt32(cp[r * cols + $0]) }
                    }
                }
            }
        }
        var qzeros = [UInt32](repeating: 0, count: groups * qzCols)
        qzeros.withUnsafeMutableBufferPointer { w in
            for g in 0..<groups {
                Int32Stream.pack(count: rows, bits: bits, into: w.baseAddress! + g * qzCols, stride: 1) {
                    UInt32(zeros[$0 * groups + g] - 1)  // v1: zero − 1 (the refit keeps zero ≥ 1)
                }
            }
        }
        var half = Data(count: groups * rows * 2)
        try half.withUnsafeMutableBytes { raw in
            for g in 0..<groups {
                for r in 0..<rows {
                    let h = try RuntimeExport.halfScale(scales[r * groups + g], name: name, index: r * groups + g)
                    raw.storeBytes(of: h.littleEndian, toByteOffset: 2 * (g * rows + r), as: UInt16.self)
                }
            }
        }
        return [
            SafetensorsEntry(name: base + ".qweight", dtype: .i32, shape: [qwRows, rows], bytes: Int32Stream.data(qweight)),
            SafetensorsEntry(name: base + ".qzeros", dtype: .i32, shape: [groups, qzCols], bytes: Int32Stream.data(qzeros)),
            SafetensorsEntry(name: base + ".scales", dtype: .f16, shape: [groups, rows], bytes: half),
            SafetensorsEntry(name: base + ".g_idx", dtype: .i32, shape: [cols],
                             bytes: Int32Stream.data(gIdx.map { UInt32(bitPattern: $0) })),
        ]
    }
}
