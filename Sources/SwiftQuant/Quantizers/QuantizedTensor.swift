/// A quantized [rows, cols] matrix: codes (one per element, in the low bits of a byte), per-group scales and
/// zero-points, and the config that made them. `dequantized()` is exact: it is what `fakeQuantize` returns.
public struct QuantizedTensor: Sendable {
    public let rows: Int
    public let cols: Int
    public let config: QuantizerConfig
    public var codes: [UInt8]
    /// [rows, groupCount]
    public var scales: [Float]
    /// [rows, groupCount]; integer zero-points (0 for minifloats). May lie outside [0, 2^N − 1] for an
    /// all-positive or all-negative group under the min/max policy (ALGORITHMS.md §1).
    public var zeros: [Int32]
    /// [cols] or nil: the group of each column when it is not `column / groupWidth` (GPTQ with act-order: a column's
    /// group is that of its position in the permuted order, as GPTQ checkpoints' `g_idx`). Nil for consecutive groups.
    /// Exporters that write consecutive groups only must refuse a tensor with a `groupIndex`.
    public var groupIndex: [Int32]?

    public var groupCount: Int { config.groupCount(cols: cols) }

    public init(rows: Int, cols: Int, config: QuantizerConfig, codes: [UInt8], scales: [Float], zeros: [Int32],
                groupIndex: [Int32]? = nil) throws {
        try config.validate(rows: rows, cols: cols)
        let g = config.groupCount(cols: cols)
        try require(codes.count == rows * cols, "codes: \(codes.count) values for [\(rows), \(cols)]")
        try require(scales.count == rows * g && zeros.count == rows * g,
                    "scales and zeros need \(rows * g) values ([\(rows), \(g)]), got \(scales.count) and \(zeros.count)")
        let limit = 1 << config.format.bitWidth
        if let bad = codes.firstIndex(where: { Int($0) >= limit }) {
            throw SwiftQuantError.invalidArgument("code \(codes[bad]) at index \(bad) does not fit \(config.format.name)")
        }
        if let gi = groupIndex {
            try require(gi.count == cols, "groupIndex: \(gi.count) values for \(cols) columns")
            if let bad = gi.firstIndex(where: { $0 < 0 || Int($0) >= g }) {
                throw SwiftQuantError.invalidArgument("groupIndex[\(bad)] = \(gi[bad]) is not a group of \(g)")
            }
        }
        self.groupIndex = groupIndex
        self.rows = rows
        self.cols = cols
        self.config = config
        self.codes = codes
        self.scales = scales
        self.zeros = zeros
    }

    /// The float32 matrix the codes stand for.
    public func dequantized() -> Tensor {
        let out = Tensor(zeros: [rows, cols])
        if let gi = groupIndex {
            let table = Quantizer.decodeTable(config), g = groupCount
            for r in 0..<rows {
                for c in 0..<cols {
                    let k = r * g + Int(gi[c])
                    out.pointer[r * cols + c] = (table[Int(codes[r * cols + c])] - Float(zeros[k])) * scales[k]
                }
            }
            return out
        }
        codes.withUnsafeBufferPointer { c in
            scales.withUnsafeBufferPointer { s in
                zeros.withUnsafeBufferPointer { z in
                    Quantizer.dequantizeUnchecked(codes: c, scales: s, zeros: z, rows: rows, cols: cols, config: config,
                                                  out: out.pointer)
                }
            }
        }
        return out
    }

    /// The codes packed row by row (each row starts on a byte boundary; see `BitPacking`).
    public func packed() -> [UInt8] {
        let stride = BitPacking.packedByteCount(count: cols, bits: config.format.bitWidth)
        var out = [UInt8](repeating: 0, count: rows * stride)
        codes.withUnsafeBufferPointer { c in
            out.withUnsafeMutableBufferPointer { o in
                try! BitPacking.packRows(c, rows: rows, cols: cols, bits: config.format.bitWidth, into: o)
            }
        }
        return out
    }
}
