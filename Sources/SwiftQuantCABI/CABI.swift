// The C ABI (swiftquant.h) implemented over the SwiftQuant core. One error boundary: every entry point runs
// its body through `status(_:)`, which maps `SwiftQuantError` to a status code and records the message in
// thread-local storage for `sq_last_error()`. Arguments are validated here (null pointers, sizes) and in the
// core (settings), so no input reaches a trap.
import CSQSupport
import CSwiftQuant
import SwiftQuant

@inline(__always)
func status(_ body: () throws -> Void) -> Int32 {
    do {
        try body()
        sqs_set_last_error(nil)
        return SQ_OK
    } catch let error as SwiftQuantError {
        sqs_set_last_error(error.message)
        switch error {
        case .invalidArgument: return SQ_ERR_INVALID_ARGUMENT
        case .invalidType: return SQ_ERR_TYPE
        case .nonFinite: return SQ_ERR_NON_FINITE
        case .format: return SQ_ERR_FORMAT
        case .io: return SQ_ERR_IO
        case .unsupported: return SQ_ERR_UNSUPPORTED
        }
    } catch {
        sqs_set_last_error("internal error: \(error)")
        return SQ_ERR_INTERNAL
    }
}

func nonNull<T>(_ p: T?, _ name: String) throws -> T {
    guard let p else { throw SwiftQuantError.invalidArgument("\(name) is NULL") }
    return p
}

private func formatName(_ p: UnsafePointer<CChar>?) throws -> String {
    String(cString: try nonNull(p, "format"))
}

private func count(_ rows: Int64, _ cols: Int64) throws -> Int {
    try require(rows > 0 && cols > 0, "the matrix is empty or has a negative size: [\(rows), \(cols)]")
    let (n, overflow) = Int(rows).multipliedReportingOverflow(by: Int(cols))
    try require(!overflow, "[\(rows), \(cols)] is too large")
    return n
}

func config(_ format: UnsafePointer<CChar>?, _ options: UnsafePointer<sq_quant_options>?) throws
    -> QuantizerConfig
{
    let fmt = try NumberFormat.parse(try formatName(format))
    let o = options?.pointee
        ?? sq_quant_options(group_size: Int64(SQ_GROUP_PER_ROW), symmetric: 0, policy: 0, scale_constraint: 0, reserved: 0)
    let group = try GroupSize(abi: o.group_size)
    try require(o.reserved == 0, "sq_quant_options.reserved must be 0")
    let policy: QParamsPolicy
    switch o.policy {
    case SQ_POLICY_MINMAX: policy = .minmax
    case SQ_POLICY_GPTQ: policy = .gptq
    default: throw SwiftQuantError.invalidArgument("unknown policy \(o.policy)")
    }
    let constraint: ScaleConstraint
    switch o.scale_constraint {
    case SQ_SCALE_FREE: constraint = ScaleConstraint.none
    case SQ_SCALE_M1: constraint = .m1
    case SQ_SCALE_M2: constraint = .m2
    default: throw SwiftQuantError.invalidArgument("unknown scale constraint \(o.scale_constraint)")
    }
    return QuantizerConfig(format: fmt, groupSize: group, symmetric: o.symmetric != 0, policy: policy, scaleConstraint: constraint)
}

private func clips(_ up: UnsafePointer<Float>?, _ low: UnsafePointer<Float>?, rows: Int, groups: Int) throws
    -> (UnsafeBufferPointer<Float>?, UnsafeBufferPointer<Float>?)
{
    switch (up, low) {
    case (nil, nil): return (nil, nil)
    case let (u?, l?):
        return (UnsafeBufferPointer(start: u, count: rows * groups), UnsafeBufferPointer(start: l, count: rows * groups))
    default: throw SwiftQuantError.invalidArgument("clip_up and clip_low must be given together")
    }
}

@_cdecl("sq_last_error")
public func cabi_last_error() -> UnsafePointer<CChar> { sqs_last_error() }

private let versionCString = strdupConstant(SwiftQuantInfo.version)

@_cdecl("sq_version")
public func cabi_version() -> UnsafePointer<CChar> { versionCString }

@_cdecl("sq_abi_version")
public func cabi_abi_version() -> Int32 { SwiftQuantInfo.abiVersion }

@_cdecl("sq_blas_info")
public func cabi_blas_info() -> UnsafePointer<CChar> { sqs_blas_description() }

@_cdecl("sq_gemm_backend")
public func cabi_gemm_backend() -> UnsafePointer<CChar> { sqs_gemm_backend_name() }

@_cdecl("sq_blas_bf16_info")
public func cabi_blas_bf16_info() -> UnsafePointer<CChar> { sqs_gemm_bf16_description() }

@_cdecl("sq_gemm_bf16_backend")
public func cabi_gemm_bf16_backend() -> UnsafePointer<CChar> { sqs_gemm_bf16_backend_name() }

private func strdupConstant(_ s: String) -> UnsafePointer<CChar> {
    let bytes = Array(s.utf8CString)
    let p = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count)
    p.initialize(from: bytes, count: bytes.count)
    return UnsafePointer(p)
}

@_cdecl("sq_format_bits")
public func cabi_format_bits(_ format: UnsafePointer<CChar>?, _ bits: UnsafeMutablePointer<Int32>?) -> Int32 {
    status {
        let f = try NumberFormat.parse(try formatName(format))
        try nonNull(bits, "bits").pointee = Int32(f.bitWidth)
    }
}

// ---- minifloats

@_cdecl("sq_encode")
public func cabi_encode(_ x: UnsafePointer<Float>?, _ n: Int, _ format: UnsafePointer<CChar>?,
                        _ codes: UnsafeMutablePointer<UInt8>?) -> Int32 {
    status {
        let f = try MinifloatFormat.named(try formatName(format))
        if n == 0 { return }
        f.encode(UnsafeBufferPointer(start: try nonNull(x, "x"), count: n),
                 into: UnsafeMutableBufferPointer(start: try nonNull(codes, "codes"), count: n))
    }
}

@_cdecl("sq_decode")
public func cabi_decode(_ codes: UnsafePointer<UInt8>?, _ n: Int, _ format: UnsafePointer<CChar>?,
                        _ out: UnsafeMutablePointer<Float>?) -> Int32 {
    status {
        let f = try MinifloatFormat.named(try formatName(format))
        if n == 0 { return }
        let src = UnsafeBufferPointer(start: try nonNull(codes, "codes"), count: n)
        let limit = 1 << f.bitWidth
        if let bad = src.firstIndex(where: { Int($0) >= limit }) {
            throw SwiftQuantError.invalidArgument(
                "code \(src[bad]) at index \(bad) does not fit \(f.name) (\(f.bitWidth) bits)")
        }
        f.decode(src, into: UnsafeMutableBufferPointer(start: try nonNull(out, "out"), count: n))
    }
}

// ---- quantizers

@_cdecl("sq_group_count")
public func cabi_group_count(_ cols: Int64, _ groupSize: Int64) -> Int64 {
    guard cols > 0, let g = try? GroupSize(abi: groupSize) else { return 0 }
    return Int64(g.count(cols: Int(cols)))
}

@_cdecl("sq_quantize")
public func cabi_quantize(
    _ w: UnsafePointer<Float>?, _ rows: Int64, _ cols: Int64, _ format: UnsafePointer<CChar>?,
    _ options: UnsafePointer<sq_quant_options>?, _ clipUp: UnsafePointer<Float>?, _ clipLow: UnsafePointer<Float>?,
    _ codes: UnsafeMutablePointer<UInt8>?, _ scales: UnsafeMutablePointer<Float>?, _ zeros: UnsafeMutablePointer<Int32>?
) -> Int32 {
    status {
        let n = try count(rows, cols)
        let cfg = try config(format, options)
        try cfg.validate(rows: Int(rows), cols: Int(cols))
        let g = cfg.groupCount(cols: Int(cols))
        let (up, low) = try clips(clipUp, clipLow, rows: Int(rows), groups: g)
        try Quantizer.quantize(
            UnsafeBufferPointer(start: try nonNull(w, "w"), count: n), rows: Int(rows), cols: Int(cols), config: cfg,
            clipUp: up, clipLow: low,
            codes: UnsafeMutableBufferPointer(start: try nonNull(codes, "codes"), count: n),
            scales: UnsafeMutableBufferPointer(start: try nonNull(scales, "scales"), count: Int(rows) * g),
            zeros: UnsafeMutableBufferPointer(start: try nonNull(zeros, "zeros"), count: Int(rows) * g))
    }
}

@_cdecl("sq_gptq")
public func cabi_gptq(
    _ w: UnsafePointer<Float>?, _ rows: Int64, _ cols: Int64, _ h: UnsafePointer<Float>?, _ format: UnsafePointer<CChar>?,
    _ options: UnsafePointer<sq_quant_options>?, _ actOrder: Int32, _ codes: UnsafeMutablePointer<UInt8>?,
    _ scales: UnsafeMutablePointer<Float>?, _ zeros: UnsafeMutablePointer<Int32>?, _ gIdx: UnsafeMutablePointer<Int32>?,
    _ dequantized: UnsafeMutablePointer<Float>?
) -> Int32 {
    status {
        let n = try count(rows, cols)
        _ = try count(cols, cols)
        let cfg = try config(format, options)
        let weight = Tensor(zeros: [Int(rows), Int(cols)])
        weight.pointer.update(from: try nonNull(w, "w"), count: n)
        let hess = Tensor(zeros: [Int(cols), Int(cols)])
        hess.pointer.update(from: try nonNull(h, "h"), count: Int(cols * cols))
        let r = try GPTQ.quantize(weight: weight, hessian: hess, config: cfg, actOrder: actOrder != 0)
        let q = r.quantized, g = q.groupCount
        try nonNull(codes, "codes").update(from: q.codes, count: n)
        try nonNull(scales, "scales").update(from: q.scales, count: Int(rows) * g)
        try nonNull(zeros, "zeros").update(from: q.zeros, count: Int(rows) * g)
        let gi = try nonNull(gIdx, "g_idx")
        let width = cfg.groupWidth(cols: Int(cols))
        for c in 0..<Int(cols) { gi[c] = q.groupIndex?[c] ?? Int32(c / width) }
        try nonNull(dequantized, "dequantized").update(from: r.dequantized.pointer, count: n)
    }
}

@_cdecl("sq_quantize_packed")
public func cabi_quantize_packed(
    _ w: UnsafePointer<Float>?, _ rows: Int64, _ cols: Int64, _ format: UnsafePointer<CChar>?,
    _ options: UnsafePointer<sq_quant_options>?, _ clipUp: UnsafePointer<Float>?, _ clipLow: UnsafePointer<Float>?,
    _ packed: UnsafeMutablePointer<UInt8>?, _ scales: UnsafeMutablePointer<Float>?, _ zeros: UnsafeMutablePointer<Int32>?
) -> Int32 {
    status {
        let n = try count(rows, cols)
        let cfg = try config(format, options)
        try cfg.validate(rows: Int(rows), cols: Int(cols))
        let g = cfg.groupCount(cols: Int(cols))
        let (up, low) = try clips(clipUp, clipLow, rows: Int(rows), groups: g)
        let stride = BitPacking.packedByteCount(count: Int(cols), bits: cfg.format.bitWidth)
        try Quantizer.quantizePacked(
            UnsafeBufferPointer(start: try nonNull(w, "w"), count: n), rows: Int(rows), cols: Int(cols), config: cfg,
            clipUp: up, clipLow: low,
            packed: UnsafeMutableBufferPointer(start: try nonNull(packed, "packed"), count: Int(rows) * stride),
            scales: UnsafeMutableBufferPointer(start: try nonNull(scales, "scales"), count: Int(rows) * g),
            zeros: UnsafeMutableBufferPointer(start: try nonNull(zeros, "zeros"), count: Int(rows) * g))
    }
}

@_cdecl("sq_dequantize")
public func cabi_dequantize(
    _ codes: UnsafePointer<UInt8>?, _ scales: UnsafePointer<Float>?, _ zeros: UnsafePointer<Int32>?,
    _ rows: Int64, _ cols: Int64, _ format: UnsafePointer<CChar>?, _ options: UnsafePointer<sq_quant_options>?,
    _ out: UnsafeMutablePointer<Float>?
) -> Int32 {
    status {
        let n = try count(rows, cols)
        let cfg = try config(format, options)
        try cfg.validate(rows: Int(rows), cols: Int(cols))
        let g = cfg.groupCount(cols: Int(cols))
        try Quantizer.dequantize(
            codes: UnsafeBufferPointer(start: try nonNull(codes, "codes"), count: n),
            scales: UnsafeBufferPointer(start: try nonNull(scales, "scales"), count: Int(rows) * g),
            zeros: UnsafeBufferPointer(start: try nonNull(zeros, "zeros"), count: Int(rows) * g),
            rows: Int(rows), cols: Int(cols), config: cfg,
            out: UnsafeMutableBufferPointer(start: try nonNull(out, "out"), count: n))
    }
}

@_cdecl("sq_fake_quantize")
public func cabi_fake_quantize(
    _ w: UnsafePointer<Float>?, _ rows: Int64, _ cols: Int64, _ format: UnsafePointer<CChar>?,
    _ options: UnsafePointer<sq_quant_options>?, _ clipUp: UnsafePointer<Float>?, _ clipLow: UnsafePointer<Float>?,
    _ out: UnsafeMutablePointer<Float>?
) -> Int32 {
    status {
        _ = try count(rows, cols)
        let cfg = try config(format, options)
        try cfg.validate(rows: Int(rows), cols: Int(cols))
        let g = cfg.groupCount(cols: Int(cols))
        let (up, low) = try clips(clipUp, clipLow, rows: Int(rows), groups: g)
        try Quantizer.fakeQuantize(try nonNull(w, "w"), rows: Int(rows), cols: Int(cols), config: cfg,
                                   clipUp: up, clipLow: low, out: try nonNull(out, "out"))
    }
}

// ---- packing

@_cdecl("sq_packed_size")
public func cabi_packed_size(_ count: Int, _ bits: Int32) -> Int {
    guard bits >= 1 && bits <= 8 else { return 0 }
    return BitPacking.packedByteCount(count: count, bits: Int(bits))
}

@_cdecl("sq_pack")
public func cabi_pack(_ codes: UnsafePointer<UInt8>?, _ count: Int, _ bits: Int32, _ out: UnsafeMutablePointer<UInt8>?,
                      _ outSize: Int) -> Int32 {
    status {
        try require(bits >= 1 && bits <= 8, "bits must be in 1...8, got \(bits)")
        let need = BitPacking.packedByteCount(count: count, bits: Int(bits))
        try require(outSize >= need, "output holds \(outSize) bytes, \(need) needed")
        if count == 0 { return }
        try BitPacking.pack(UnsafeBufferPointer(start: try nonNull(codes, "codes"), count: count), bits: Int(bits),
                            into: UnsafeMutableBufferPointer(start: try nonNull(out, "out"), count: need))
    }
}

@_cdecl("sq_pack_rows")
public func cabi_pack_rows(_ codes: UnsafePointer<UInt8>?, _ rows: Int64, _ cols: Int64, _ bits: Int32,
                           _ out: UnsafeMutablePointer<UInt8>?, _ outSize: Int) -> Int32 {
    status {
        try require(bits >= 1 && bits <= 8, "bits must be in 1...8, got \(bits)")
        let n = try count(rows, cols)
        let stride = BitPacking.packedByteCount(count: Int(cols), bits: Int(bits))
        let (need, overflow) = stride.multipliedReportingOverflow(by: Int(rows))
        try require(!overflow && outSize >= need, "output holds \(outSize) bytes, \(need) needed")
        try BitPacking.packRows(UnsafeBufferPointer(start: try nonNull(codes, "codes"), count: n), rows: Int(rows),
                                cols: Int(cols), bits: Int(bits),
                                into: UnsafeMutableBufferPointer(start: try nonNull(out, "out"), count: need))
    }
}

@_cdecl("sq_unpack")
public func cabi_unpack(_ packed: UnsafePointer<UInt8>?, _ packedSize: Int, _ bits: Int32, _ count: Int,
                        _ codes: UnsafeMutablePointer<UInt8>?) -> Int32 {
    status {
        try require(bits >= 1 && bits <= 8, "bits must be in 1...8, got \(bits)")
        let need = BitPacking.packedByteCount(count: count, bits: Int(bits))
        try require(packedSize >= need, "\(count) codes of \(bits) bits need \(need) bytes, got \(packedSize)")
        if count == 0 { return }
        try BitPacking.unpack(UnsafeBufferPointer(start: try nonNull(packed, "packed"), count: need), bits: Int(bits),
                              count: count,
                              into: UnsafeMutableBufferPointer(start: try nonNull(codes, "codes"), count: count))
    }
}

// ---- BLAS

@_cdecl("sq_sgemm")
public func cabi_sgemm(_ transA: Int32, _ transB: Int32, _ m: Int64, _ n: Int64, _ k: Int64, _ alpha: Float,
                       _ a: UnsafePointer<Float>?, _ lda: Int64, _ b: UnsafePointer<Float>?, _ ldb: Int64,
                       _ beta: Float, _ c: UnsafeMutablePointer<Float>?, _ ldc: Int64) -> Int32 {
    status {
        let limit = Int64(Int32.max)
        try require(m >= 0 && n >= 0 && k >= 0 && m < limit && n < limit && k < limit,
                    "sizes out of range: m \(m), n \(n), k \(k)")
        let ta = transA != 0, tb = transB != 0
        try require(lda >= max(1, ta ? m : k) && ldb >= max(1, tb ? k : n) && ldc >= max(1, n),
                    "leading dimensions too small: lda \(lda), ldb \(ldb), ldc \(ldc)")
        if m == 0 || n == 0 { return }
        BLAS.sgemm(transA: ta, transB: tb, m: Int(m), n: Int(n), k: Int(k), alpha: alpha,
                   a: try nonNull(a, "a"), lda: Int(lda), b: try nonNull(b, "b"), ldb: Int(ldb), beta: beta,
                   c: try nonNull(c, "c"), ldc: Int(ldc))
    }
}
