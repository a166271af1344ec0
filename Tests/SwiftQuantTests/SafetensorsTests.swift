import Foundation
import SwiftQuant
import XCTest

/// A fresh temporary directory removed at the end of the test.
func makeTempDir(_ test: XCTestCase) throws -> String {
    let dir = (NSTemporaryDirectory() as NSString).appendingPathComponent("sq-io-\(UUID().uuidString)")
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
    return dir
}

/// Asserts `body` throws `SwiftQuantError.format` whose message contains every one of `fragments`.
func assertFormatError(_ fragments: [String], file: StaticString = #filePath, line: UInt = #line,
                       _ body: () throws -> Void) {
    do {
        try body()
        XCTFail("expected a format error containing \(fragments)", file: file, line: line)
    } catch let e as SwiftQuantError {
        guard case .format(let m) = e else {
            XCTFail("expected .format, got \(e)", file: file, line: line)
            return
        }
        for f in fragments where !m.contains(f) {
            XCTFail("message '\(m)' does not contain '\(f)'", file: file, line: line)
        }
    } catch {
        XCTFail("unexpected error \(error)", file: file, line: line)
    }
}

private func le<T: FixedWidthInteger>(_ v: T) -> Data { withUnsafeBytes(of: v.littleEndian) { Data($0) } }

/// A raw safetensors file from a header string and a data section.
private func rawSafetensors(_ header: String, data: Data = Data(), lengthOverride: UInt64? = nil) -> Data {
    var d = le(lengthOverride ?? UInt64(header.utf8.count))
    d.append(Data(header.utf8))
    d.append(data)
    return d
}

final class SafetensorsTests: XCTestCase {
    func testRoundTripEveryDType() throws {
        let dir = try makeTempDir(self)
        let path = (dir as NSString).appendingPathComponent("all.safetensors")
        var entries: [SafetensorsEntry] = []
        var expected: [String: Data] = [:]
        var rng = SystemRandomNumberGenerator()
        for dt in [DType.f64, .f32, .f16, .bf16, .i64, .i32, .i16, .i8, .u8, .bool] {
            let shape = [3, 5]
            let n = 15 * dt.safetensorsElementSize!
            var bytes = Data((0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) })
            if dt == .bool { bytes = Data((0..<n).map { _ in UInt8.random(in: 0...1, using: &rng) }) }
            entries.append(SafetensorsEntry(name: "t.\(dt.rawValue)", dtype: dt, shape: shape, bytes: bytes))
            expected["t.\(dt.rawValue)"] = bytes
        }
        entries.append(SafetensorsEntry(name: "empty", dtype: .f32, shape: [0, 4], bytes: Data()))
        entries.append(SafetensorsEntry(name: "scalar", dtype: .f32, shape: [], bytes: le(Float(2.5).bitPattern)))
        try SafetensorsWriter.write(entries, metadata: ["format": "pt", "quote\"key": "line\nbreak"], to: path)

        let f = try SafetensorsFile(path: path)
        XCTAssertEqual(f.metadata, ["format": "pt", "quote\"key": "line\nbreak"])
        XCTAssertEqual(Set(f.names), Set(entries.map(\.name)))
        for e in entries {
            XCTAssertEqual(f.info(e.name), TensorInfo(name: e.name, dtype: e.dtype, shape: e.shape))
            XCTAssertEqual(Data(try f.rawBytes(e.name)), e.bytes, e.name)
        }
        // Every F32 tensor is aligned by the writer, so views are zero-copy.
        XCTAssertTrue(f.isZeroCopy("t.F32"))
        XCTAssertFalse(f.isZeroCopy("t.F16"))
        XCTAssertEqual(try f.float32("scalar").array, [2.5])
        XCTAssertEqual(try f.float32("empty").shape, [0, 4])
        // Header length is a multiple of 8.
        let raw = try Data(contentsOf: URL(fileURLWithPath: path))
        let n = raw.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        XCTAssertEqual(n % 8, 0)
        // No temporary files left.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["all.safetensors"])
        // For python/tests/test_safetensors_interop.py (read back with the `safetensors` package).
        if let out = ProcessInfo.processInfo.environment["SWIFTQUANT_SAFETENSORS_OUT"] {
            try SafetensorsWriter.write(entries, metadata: ["format": "pt", "quote\"key": "line\nbreak"], to: out)
        }
    }

    func testFloatConversions() throws {
        let dir = try makeTempDir(self)
        let path = (dir as NSString).appendingPathComponent("conv.safetensors")
        // f16: 1.0, -2.0, max 65504, smallest subnormal 2^-24, inf, -0
        let f16: [UInt16] = [0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0x8000]
        let f16Expect: [Float] = [1, -2, 65504, Float(sign: .plus, exponent: -24, significand: 1), .infinity, -0.0]
        let bf16: [UInt16] = [0x3f80, 0xc040, 0x0001, 0x7f80]
        let bf16Expect: [Float] = [1, -3, Float(bitPattern: 0x0001_0000), .infinity]
        let ints: [Int64] = [-5, 0, 1 << 40, Int64.min]
        let i8: [Int8] = [-128, -1, 0, 127]
        let f64: [Double] = [0.1, -1e300, 3, .nan]
        func bytes<T>(_ a: [T]) -> Data { a.withUnsafeBytes { Data($0) } }
        try SafetensorsWriter.write([
            SafetensorsEntry(name: "h", dtype: .f16, shape: [6], bytes: bytes(f16)),
            SafetensorsEntry(name: "b", dtype: .bf16, shape: [2, 2], bytes: bytes(bf16)),
            SafetensorsEntry(name: "i64", dtype: .i64, shape: [4], bytes: bytes(ints)),
            SafetensorsEntry(name: "i8", dtype: .i8, shape: [4], bytes: bytes(i8)),
            SafetensorsEntry(name: "u8", dtype: .u8, shape: [2], bytes: Data([0, 255])),
            SafetensorsEntry(name: "i32", dtype: .i32, shape: [2], bytes: bytes([Int32(-7), Int32.max])),
            SafetensorsEntry(name: "d", dtype: .f64, shape: [4], bytes: bytes(f64)),
        ], to: path)
        let f = try SafetensorsFile(path: path)
        XCTAssertEqual(try f.float32("h").array.map(\.bitPattern), f16Expect.map(\.bitPattern))
        XCTAssertEqual(try f.float32("b").array, bf16Expect)
        XCTAssertEqual(try f.float32("b").shape, [2, 2])
        XCTAssertEqual(try f.float32("i64").array, ints.map(Float.init))
        XCTAssertEqual(try f.float32("i8").array, [-128, -1, 0, 127])
        XCTAssertEqual(try f.float32("u8").array, [0, 255])
        XCTAssertEqual(try f.float32("i32").array, [-7, Float(Int32.max)])
        let d = try f.float32("d").array
        XCTAssertEqual(Array(d[0..<3]), [Float(0.1), -.infinity, 3])
        XCTAssertTrue(d[3].isNaN)
    }

    func testFloat32ConvenienceAndF16Rounding() throws {
        let dir = try makeTempDir(self)
        let path = (dir as NSString).appendingPathComponent("t.safetensors")
        let t = Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
        try SafetensorsWriter.write(float32: [("w", t)], to: path)
        let f = try SafetensorsFile(path: path)
        XCTAssertEqual(try f.float32("w").array, t.array)
        XCTAssertEqual(try f.float32("w").shape, [2, 3])
        // F16 rounding: 1 + 2^-11 is a tie → 1; 1 + 3·2^-11 ties up to 1 + 2^-9; 70000 → inf; 2^-25 → 0.
        let v = Tensor(shape: [5], values: [1 + 0x1p-11, 1 + 3 * 0x1p-11, 70000, 0x1p-25, 65519])
        try SafetensorsWriter.write([SafetensorsEntry(name: "h", tensor: v, as: .f16),
                                     SafetensorsEntry(name: "b", tensor: v, as: .bf16)], to: path)
        let g = try SafetensorsFile(path: path)
        XCTAssertEqual(try g.float32("h").array, [1, 1 + 0x1p-9, .infinity, 0, 65504])
        XCTAssertEqual(try g.float32("b").array, [1, 1, 70144, 0x1p-25, 65536])
    }

    func testZeroCopyViewOutlivesFile() throws {
        let dir = try makeTempDir(self)
        let path = (dir as NSString).appendingPathComponent("v.safetensors")
        try SafetensorsWriter.write(float32: [("a", Tensor(shape: [4], values: [1, 2, 3, 4]))], to: path)
        var view: Tensor?
        do {
            let f = try SafetensorsFile(path: path)
            XCTAssertTrue(f.isZeroCopy("a"))
            view = try f.float32("a")
        }
        #if os(Linux)
        func mapped() throws -> Bool {
            // /proc files report size 0, so read them in chunks.
            let fd = open("/proc/self/maps", O_RDONLY)
            guard fd >= 0 else { throw XCTSkip("no /proc/self/maps") }
            defer { close(fd) }
            var bytes: [UInt8] = []
            var buf = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, 65536) }
                if n <= 0 { break }
                bytes += buf[0..<n]
            }
            return String(decoding: bytes, as: UTF8.self).contains(path)
        }
        XCTAssertTrue(try mapped())
        #endif
        XCTAssertEqual(view?.array, [1, 2, 3, 4])
        // In-place updates go to private pages and do not crash (the file is unchanged).
        view!.pointer[0] = 9
        XCTAssertEqual(view?.array, [9, 2, 3, 4])
        XCTAssertEqual(try SafetensorsFile(path: path).float32("a").array, [1, 2, 3, 4])
        // The last view going away unmaps the file.
        view = nil
        #if os(Linux)
        XCTAssertFalse(try mapped())
        #endif
        try FileManager.default.removeItem(atPath: path)
    }

    func testInMemoryParsing() throws {
        let header = #"{"x":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}"#
        let d = rawSafetensors(header, data: le(Int32(3)) + le(Int32(-4)))
        let f = try d.withUnsafeBytes { try SafetensorsFile(bytes: $0, name: "mem") }
        XCTAssertEqual(try f.float32("x").array, [3, -4])
        assertFormatError(["mem", "no tensor named 'y'"]) { _ = try f.float32("y") }
    }

    func testHostileFiles() throws {
        let dir = try makeTempDir(self)
        var k = 0
        func check(_ bytes: Data, _ fragment: String, line: UInt = #line) throws {
            k += 1
            let path = (dir as NSString).appendingPathComponent("bad\(k).safetensors")
            try bytes.write(to: URL(fileURLWithPath: path))
            assertFormatError([path, fragment], line: line) { _ = try SafetensorsFile(path: path) }
            // The in-memory parser agrees.
            assertFormatError(["mem", fragment], line: line) {
                _ = try bytes.withUnsafeBytes { try SafetensorsFile(bytes: $0, name: "mem") }
            }
        }
        let good = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
        XCTAssertNoThrow(try rawSafetensors(good, data: Data(count: 8)).withUnsafeBytes {
            try SafetensorsFile(bytes: $0, name: "mem")
        })
        try check(Data([1, 2, 3]), "shorter than")
        try check(Data(), "shorter than")
        try check(rawSafetensors(good, data: Data(count: 8), lengthOverride: 1000), "larger than the file")
        try check(rawSafetensors(good, data: Data(count: 8), lengthOverride: UInt64.max), "exceeds")
        try check(rawSafetensors("{not json", data: Data()), "not valid JSON")
        try check(le(UInt64(4)) + Data([0x7b, 0xff, 0xfe, 0x7d]), "UTF-8")
        try check(rawSafetensors("[1,2]"), "not a JSON object")
        try check(rawSafetensors(#"{"a":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}}"#, data: Data(count: 1)),
                  "unknown dtype 'F8_E4M3'")
        try check(rawSafetensors(#"{"a":{"dtype":"Q4_0","shape":[1],"data_offsets":[0,1]}}"#, data: Data(count: 1)),
                  "unknown dtype")
        try check(rawSafetensors(#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#),
                  "overflows")
        try check(rawSafetensors(#"{"a":{"dtype":"F64","shape":[1152921504606846976,2],"data_offsets":[0,8]}}"#),
                  "overflows")
        try check(rawSafetensors(#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,8]}}"#), "invalid dimension")
        try check(rawSafetensors(#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: Data(count: 12)),
                  "needs 12")
        try check(rawSafetensors(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#, data: Data(count: 8)),
                  "outside the data section")
        try check(rawSafetensors(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, data: Data(count: 8)),
                  "invalid")
        try check(rawSafetensors(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}}"#, data: Data(count: 8)),
                  "two integers")
        try check(rawSafetensors(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I32","shape":[2],"data_offsets":[4,12]}}"#,
                                 data: Data(count: 12)), "overlap")
        try check(rawSafetensors(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}"#,
                                 data: Data(count: 8)), "overlap")
        try check(rawSafetensors(#"{"__metadata__":{"k":1}}"#), "__metadata__")
        try check(rawSafetensors(#"{"a":{"shape":[2],"data_offsets":[0,8]}}"#, data: Data(count: 8)), "missing dtype")
        try check(rawSafetensors(#"{"a":3}"#), "not an object")
        // Gaps between tensors are allowed.
        let gap = rawSafetensors(#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}}"#,
                                 data: Data([1, 2, 0, 0, 3, 4]))
        let f = try gap.withUnsafeBytes { try SafetensorsFile(bytes: $0, name: "mem") }
        XCTAssertEqual(f.names, ["a", "b"])
        XCTAssertEqual(try f.float32("b").array, [3, 4])
    }

    func testMissingFileIsIOError() throws {
        let dir = try makeTempDir(self)
        let p = (dir as NSString).appendingPathComponent("nope.safetensors")
        XCTAssertThrowsError(try SafetensorsFile(path: p)) { e in
            guard case SwiftQuantError.io(let m)? = e as? SwiftQuantError else { return XCTFail("\(e)") }
            XCTAssertTrue(m.contains(p))
        }
    }

    func testWriterRejectsBadEntriesAndLeavesNothing() throws {
        let dir = try makeTempDir(self)
        let path = (dir as NSString).appendingPathComponent("out.safetensors")
        XCTAssertThrowsError(try SafetensorsWriter.write([
            SafetensorsEntry(name: "ok", dtype: .f32, shape: [2], bytes: Data(count: 8)),
            SafetensorsEntry(name: "bad", dtype: .f32, shape: [3], bytes: Data(count: 8)),
        ], to: path)) { e in
            guard case SwiftQuantError.invalidArgument(let m)? = e as? SwiftQuantError else { return XCTFail("\(e)") }
            XCTAssertTrue(m.contains("bad"))
        }
        XCTAssertThrowsError(try SafetensorsWriter.write([
            SafetensorsEntry(name: "q", dtype: .q4_0, shape: [32], bytes: Data(count: 18)),
        ], to: path))
        XCTAssertThrowsError(try SafetensorsWriter.write([
            SafetensorsEntry(name: "a", dtype: .u8, shape: [1], bytes: Data(count: 1)),
            SafetensorsEntry(name: "a", dtype: .u8, shape: [1], bytes: Data(count: 1)),
        ], to: path))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), [])
    }

    func testWriterFailureMidwayRemovesTemporaryFile() throws {
        let dir = try makeTempDir(self)
        // The target is a non-empty directory: the data are written and synced, then rename(2) fails.
        let target = (dir as NSString).appendingPathComponent("model.safetensors")
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: false)
        try Data([1]).write(to: URL(fileURLWithPath: (target as NSString).appendingPathComponent("x")))
        XCTAssertThrowsError(try SafetensorsWriter.write(float32: [("a", Tensor(zeros: [4]))], to: target)) { e in
            guard case SwiftQuantError.io? = e as? SwiftQuantError else { return XCTFail("\(e)") }
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["model.safetensors"])
        // A missing directory fails before anything is created.
        let missing = (dir as NSString).appendingPathComponent("no/such/dir/m.safetensors")
        XCTAssertThrowsError(try SafetensorsWriter.write(float32: [("a", Tensor(zeros: [4]))], to: missing))
        // Overwriting an existing file replaces it atomically.
        let p = (dir as NSString).appendingPathComponent("b.safetensors")
        try SafetensorsWriter.write(float32: [("a", Tensor(shape: [1], values: [1]))], to: p)
        try SafetensorsWriter.write(float32: [("a", Tensor(shape: [1], values: [2]))], to: p)
        XCTAssertEqual(try SafetensorsFile(path: p).float32("a").array, [2])
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: dir)),
                       ["model.safetensors", "b.safetensors"])
    }

    func testShardedWriteAndHFDirectory() throws {
        let dir = try makeTempDir(self)
        let tensors = (0..<5).map { i in
            SafetensorsEntry(name: "layer.\(i).weight", tensor: Tensor(shape: [4, 4], values: (0..<16).map { Float($0 + 100 * i) }))
        }
        let sharded = (dir as NSString).appendingPathComponent("sharded")
        let files = try SafetensorsWriter.writeSharded(tensors, metadata: ["format": "pt"], directory: sharded,
                                                       maxShardBytes: 128)
        XCTAssertEqual(files, ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                               "model-00003-of-00003.safetensors", "model.safetensors.index.json"])
        let index = try HFDirectorySource.readJSON(path: (sharded as NSString).appendingPathComponent("model.safetensors.index.json"))
        XCTAssertEqual((index["metadata"] as? [String: Any])?["total_size"] as? Int, 5 * 64)
        XCTAssertEqual((index["weight_map"] as? [String: String])?["layer.4.weight"], "model-00003-of-00003.safetensors")
        let src = try HFDirectorySource(directory: sharded)
        XCTAssertEqual(src.names, tensors.map(\.name))
        for (i, t) in tensors.enumerated() {
            XCTAssertEqual(try src.float32(t.name).array, (0..<16).map { Float($0 + 100 * i) })
            XCTAssertTrue(src.isZeroCopy(t.name))
        }
        XCTAssertNil(try src.config())
        assertFormatError([sharded, "no tensor named"]) { _ = try src.float32("nope") }

        let single = (dir as NSString).appendingPathComponent("single")
        XCTAssertEqual(try SafetensorsWriter.writeSharded(tensors, directory: single, maxShardBytes: 1 << 20),
                       ["model.safetensors"])
        try Data(#"{"hidden_size": 16, "model_type": "llama"}"#.utf8)
            .write(to: URL(fileURLWithPath: (single as NSString).appendingPathComponent("config.json")))
        let s = try HFDirectorySource(directory: single)
        XCTAssertEqual(s.tensorInfos.count, 5)
        XCTAssertEqual(try s.config()?["hidden_size"] as? Int, 16)

        // Broken directories.
        let empty = (dir as NSString).appendingPathComponent("empty")
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: false)
        assertFormatError([empty, "no model.safetensors"]) { _ = try HFDirectorySource(directory: empty) }
        try FileManager.default.removeItem(atPath: (sharded as NSString).appendingPathComponent("model-00002-of-00003.safetensors"))
        assertFormatError(["model.safetensors.index.json", "model-00002-of-00003.safetensors", "missing"]) {
            _ = try HFDirectorySource(directory: sharded)
        }
        let idx = (single as NSString).appendingPathComponent("model.safetensors.index.json")
        try Data(#"{"weight_map": {"ghost": "model.safetensors"}}"#.utf8).write(to: URL(fileURLWithPath: idx))
        assertFormatError([idx, "ghost"]) { _ = try HFDirectorySource(directory: single) }
        try Data("{oops".utf8).write(to: URL(fileURLWithPath: idx))
        assertFormatError([idx, "not valid JSON"]) { _ = try HFDirectorySource(directory: single) }
    }
    /// Deferred entries are produced one at a time, in the file's order, each released once written (the bytes of
    /// the previous tensor are gone when the next is produced), so a model is written without being held whole.
    func testDeferredEntriesStreamOneAtATime() throws {
        let dir = try makeTempDir(self)
        final class Counter { var live = 0; var maxLive = 0; var order: [String] = [] }
        let c = Counter()
        func entry(_ name: String, _ base: Float) -> SafetensorsEntry {
            SafetensorsEntry(name: name, dtype: .f32, shape: [4, 4], deferred: {
                c.order.append(name)
                c.live += 1
                c.maxLive = max(c.maxLive, c.live)
                let p = UnsafeMutablePointer<Float>.allocate(capacity: 16)
                for k in 0..<16 { p[k] = base + Float(k) }
                return Data(bytesNoCopy: p, count: 64, deallocator: .custom({ raw, _ in
                    raw.assumingMemoryBound(to: Float.self).deallocate()
                    c.live -= 1
                }))
            })
        }
        let entries = [entry("b", 100), entry("a", 0), entry("d", 300), entry("c", 200)]
        XCTAssertEqual(entries.map(\.byteCount), [64, 64, 64, 64])
        XCTAssertTrue(c.order.isEmpty, "nothing is produced before the write")
        var reported: [Int] = []
        let path = (dir as NSString).appendingPathComponent("s.safetensors")
        try SafetensorsWriter.write(entries, to: path, progress: { reported.append($0) })
        XCTAssertEqual(c.order, ["a", "b", "c", "d"])
        XCTAssertEqual(c.maxLive, 1)
        XCTAssertEqual(c.live, 0)
        XCTAssertEqual(reported, [64, 64, 64, 64])
        let f = try SafetensorsFile(path: path)
        for (n, base) in [("a", 0), ("b", 100), ("c", 200), ("d", 300)] as [(String, Float)] {
            XCTAssertEqual(try f.float32(n).array, (0..<16).map { base + Float($0) })
        }
        // Sharded: the same, across files.
        c.order = []
        c.maxLive = 0
        let files = try SafetensorsWriter.writeSharded(entries, directory: (dir as NSString).appendingPathComponent("sh"),
                                                       maxShardBytes: 128)
        XCTAssertEqual(files.count, 3)
        XCTAssertEqual(c.maxLive, 1)
        XCTAssertEqual(Set(c.order), ["a", "b", "c", "d"])
        // A producer that returns the wrong size fails the write and leaves no file.
        let bad = SafetensorsEntry(name: "x", dtype: .f32, shape: [3], deferred: { Data(count: 8) })
        let badPath = (dir as NSString).appendingPathComponent("bad.safetensors")
        XCTAssertThrowsSwiftQuantError(try SafetensorsWriter.write([bad], to: badPath), contains: "8 bytes produced, 12")
        XCTAssertFalse(FileManager.default.fileExists(atPath: badPath))
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: dir)), ["s.safetensors", "sh"])
    }
}
