import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The bytes of a model file: a private memory mapping of the whole file (or an owned heap copy for in-memory
/// parsing). Shared by every tensor view cut from it; unmapped when the last reference goes away.
///
/// The mapping is `MAP_PRIVATE` with read and write permission on a file opened read-only: the file itself is
/// never modified, but code that updates a weight view in place (fusing a transform into a weight, say) gets a
/// private copy of the touched pages instead of a crash.
final class MappedBytes: @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    let count: Int
    private let mapped: Bool

    /// Maps `path`. OS failures are `SwiftQuantError.io`.
    init(path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw SwiftQuantError.io("\(path): cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        if fstat(fd, &st) != 0 {
            throw SwiftQuantError.io("\(path): cannot stat: \(String(cString: strerror(errno)))")
        }
        if (st.st_mode & S_IFMT) == S_IFDIR { throw SwiftQuantError.io("\(path): is a directory") }
        let size = Int(st.st_size)
        if size == 0 {
            base = UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 64)
            count = 0
            mapped = false
            return
        }
        let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0)
        guard let p, p != UnsafeMutableRawPointer(bitPattern: -1) else {
            throw SwiftQuantError.io("\(path): cannot map: \(String(cString: strerror(errno)))")
        }
        base = p
        count = size
        mapped = true
    }

    /// An owned, 64-byte aligned copy of `bytes`.
    init(copying bytes: UnsafeRawBufferPointer) {
        base = UnsafeMutableRawPointer.allocate(byteCount: max(bytes.count, 1), alignment: 64)
        if let src = bytes.baseAddress, bytes.count > 0 { base.copyMemory(from: src, byteCount: bytes.count) }
        count = bytes.count
        mapped = false
    }

    deinit {
        if mapped { munmap(base, count) } else { base.deallocate() }
    }

    /// A `Storage` spanning the whole region that keeps this object (and so the mapping) alive. A new one per
    /// call: holding it here would make a reference cycle and the file would never be unmapped.
    func makeStorage() -> Storage {
        Storage(borrowing: base, byteCount: count, release: { [self] in _ = self.count })
    }

    var buffer: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }
}

// MARK: - Half-precision conversions (exact bit manipulation; no dependence on platform Float16 support)

enum HalfConv {
    /// IEEE binary16 bits → Float, exact (every binary16 value is representable).
    @inline(__always)
    static func f16ToF32(_ h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let exp = UInt32(h >> 10) & 0x1f
        let mant = UInt32(h & 0x3ff)
        if exp == 0 {
            if mant == 0 { return Float(bitPattern: sign) }
            // subnormal: mant · 2^-24, exact in float32
            let v = Float(mant) * Float(bitPattern: 0x3380_0000)  // 2^-24
            return sign != 0 ? -v : v
        }
        if exp == 31 { return Float(bitPattern: sign | 0x7f80_0000 | (mant << 13)) }
        return Float(bitPattern: sign | ((exp + 112) << 23) | (mant << 13))
    }

    /// Float → IEEE binary16 bits, round to nearest, ties to even; overflow gives ±inf; NaN stays NaN (quiet).
    @inline(__always)
    static func f32ToF16(_ f: Float) -> UInt16 {
        let bits = f.bitPattern
        let sign = UInt16((bits >> 16) & 0x8000)
        let exp = Int((bits >> 23) & 0xff)
        let mant = bits & 0x7f_ffff
        if exp == 0xff {
            return mant == 0 ? sign | 0x7c00 : sign | 0x7e00 | UInt16(truncatingIfNeeded: mant >> 13)
        }
        let e = exp - 127 + 15
        if e >= 31 { return sign | 0x7c00 }
        if e <= 0 {
            if e < -10 { return sign }
            let m = mant | 0x80_0000
            let shift = UInt32(14 - e)
            var r = m >> shift
            let rem = m & ((1 << shift) - 1)
            let half: UInt32 = 1 << (shift - 1)
            if rem > half || (rem == half && (r & 1) == 1) { r += 1 }
            return sign | UInt16(r)
        }
        var r = UInt32(e << 10) | (mant >> 13)
        let rem = mant & 0x1fff
        if rem > 0x1000 || (rem == 0x1000 && (r & 1) == 1) { r += 1 }
        return sign | UInt16(r)
    }

    /// bfloat16 bits → Float, exact.
    @inline(__always)
    static func bf16ToF32(_ h: UInt16) -> Float { Float(bitPattern: UInt32(h) << 16) }

    /// Float → bfloat16 bits, round to nearest, ties to even; NaN stays NaN (quiet).
    @inline(__always)
    static func f32ToBF16(_ f: Float) -> UInt16 {
        let bits = f.bitPattern
        if f.isNaN { return UInt16(bits >> 16) | 0x40 }
        let rounded = bits &+ 0x7fff &+ ((bits >> 16) & 1)
        return UInt16(rounded >> 16)
    }
}

// MARK: - Atomic file writing

/// Writes a file under a temporary name in the target's directory, fsyncs it, then renames it over the target.
/// On any error the temporary file is removed and the target is left untouched.
struct AtomicFileWriter {
    let path: String
    let tempPath: String
    private var fd: Int32

    init(path: String) throws {
        self.path = path
        let url = URL(fileURLWithPath: path)
        let dir = url.deletingLastPathComponent().path
        tempPath = (dir as NSString).appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
        fd = open(tempPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 {
            throw SwiftQuantError.io("\(path): cannot create temporary file: \(String(cString: strerror(errno)))")
        }
    }

    mutating func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard var p = bytes.baseAddress else { return }
        var left = bytes.count
        while left > 0 {
            let n = sysWrite(fd, p, min(left, 1 << 30))
            if n < 0 {
                if errno == EINTR { continue }
                throw SwiftQuantError.io("\(path): write failed: \(String(cString: strerror(errno)))")
            }
            if n == 0 { throw SwiftQuantError.io("\(path): write made no progress") }
            p += n
            left -= n
        }
    }

    mutating func write(_ data: Data) throws {
        try data.withUnsafeBytes { try write($0) }
    }

    /// fsync, close and rename into place.
    mutating func commit() throws {
        if fsync(fd) != 0 {
            throw SwiftQuantError.io("\(path): fsync failed: \(String(cString: strerror(errno)))")
        }
        let rc = close(fd)
        fd = -1
        if rc != 0 { throw SwiftQuantError.io("\(path): close failed: \(String(cString: strerror(errno)))") }
        if rename(tempPath, path) != 0 {
            throw SwiftQuantError.io("\(path): cannot rename temporary file into place: \(String(cString: strerror(errno)))")
        }
        // Make the rename durable (best effort).
        let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
        let dfd = open(dir, O_RDONLY | O_CLOEXEC)
        if dfd >= 0 { _ = fsync(dfd); close(dfd) }
    }

    /// Closes (if open) and removes the temporary file. Call on every error path.
    mutating func abandon() {
        if fd >= 0 { close(fd); fd = -1 }
        unlink(tempPath)
    }

    /// Runs `body` to fill the file, then commits; removes the temporary file if anything throws.
    static func write(to path: String, _ body: (inout AtomicFileWriter) throws -> Void) throws {
        var w = try AtomicFileWriter(path: path)
        do {
            try body(&w)
            try w.commit()
        } catch {
            w.abandon()
            throw error
        }
    }
}

// MARK: - Small JSON helpers

enum JSONText {
    /// A JSON string literal for `s`.
    static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
            }
        }
        return out + "\""
    }
}

/// Reads an integer out of a JSONSerialization value, rejecting booleans, fractions and out-of-range numbers.
func jsonInt(_ v: Any) -> Int? {
    if v is Bool && !(v is Int) { return nil }
    if let i = v as? Int { return i }
    return nil
}

private func sysWrite(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int { write(fd, p, n) }
