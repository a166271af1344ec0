import Dispatch

/// Runs `body` over `0..<count` split into contiguous chunks on all cores. Chunks are at least `minChunk`
/// long so small loops stay on the calling thread.
@inlinable
public func parallelFor(_ count: Int, minChunk: Int = 1, _ body: (Range<Int>) -> Void) {
    let workers = ProcessorInfoCache.activeCores
    let chunks = min(workers * 4, max(1, count / max(minChunk, 1)))
    if chunks <= 1 || count <= 1 {
        if count > 0 { body(0..<count) }
        return
    }
    let step = (count + chunks - 1) / chunks
    withoutActuallyEscaping(body) { body in
        DispatchQueue.concurrentPerform(iterations: (count + step - 1) / step) { c in
            let lo = c * step
            body(lo..<min(count, lo + step))
        }
    }
}

public enum ProcessorInfoCache {
    public static let activeCores: Int = {
        #if canImport(Glibc)
        return max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        #else
        return 1
        #endif
    }()
}

#if canImport(Glibc)
import Glibc
#endif
