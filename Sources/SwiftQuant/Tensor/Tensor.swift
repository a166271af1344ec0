/// Memory that tensors point into: a 64-byte aligned heap allocation, or a region of a memory-mapped file
/// that stays mapped while any `Storage` refers to it.
public final class Storage: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let byteCount: Int
    private let release: (() -> Void)?

    /// Zero-filled heap memory.
    public init(byteCount: Int) {
        precondition(byteCount >= 0)
        base = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 1), alignment: 64)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: max(byteCount, 1))
        self.byteCount = byteCount
        let b = base
        release = { b.deallocate() }
    }

    /// Memory owned by someone else; `release` runs when the last reference goes away.
    public init(borrowing base: UnsafeMutableRawPointer, byteCount: Int, release: (() -> Void)?) {
        self.base = base
        self.byteCount = byteCount
        self.release = release
    }

    deinit { release?() }
}

/// A dense, row-major float32 tensor. It has reference semantics: copies of a `Tensor` share storage
/// (use `copy()` for an independent one), which is what lets weights stay views of a mapped file.
public struct Tensor: @unchecked Sendable {
    public let shape: [Int]
    public let storage: Storage
    /// Byte offset of element 0 inside `storage`.
    public let byteOffset: Int

    public var count: Int { shape.reduce(1, *) }
    public var rank: Int { shape.count }

    /// A zero-filled tensor.
    public init(zeros shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.shape = shape
        self.storage = Storage(byteCount: shape.reduce(1, *) * MemoryLayout<Float>.stride)
        self.byteOffset = 0
    }

    /// A view of `storage` (no copy). The caller guarantees alignment and bounds.
    public init(shape: [Int], storage: Storage, byteOffset: Int = 0) {
        precondition(byteOffset >= 0 && byteOffset + shape.reduce(1, *) * 4 <= storage.byteCount,
                     "tensor view \(shape) at \(byteOffset) outside its storage of \(storage.byteCount) bytes")
        self.shape = shape
        self.storage = storage
        self.byteOffset = byteOffset
    }

    public init(shape: [Int], values: [Float]) {
        precondition(shape.reduce(1, *) == values.count, "shape \(shape) does not hold \(values.count) values")
        self.init(zeros: shape)
        values.withUnsafeBufferPointer { src in
            pointer.update(from: src.baseAddress!, count: src.count)
        }
    }

    @inlinable public var pointer: UnsafeMutablePointer<Float> {
        (storage.base + byteOffset).assumingMemoryBound(to: Float.self)
    }

    @inlinable public var buffer: UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(start: pointer, count: count)
    }

    public var array: [Float] { Array(buffer) }

    /// An independent copy.
    public func copy() -> Tensor {
        let t = Tensor(zeros: shape)
        t.pointer.update(from: pointer, count: count)
        return t
    }

    /// The same storage seen with another shape of equal element count.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        precondition(newShape.reduce(1, *) == count, "cannot reshape \(shape) to \(newShape)")
        return Tensor(shape: newShape, storage: storage, byteOffset: byteOffset)
    }
}
