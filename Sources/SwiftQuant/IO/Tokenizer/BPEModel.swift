// The BPE merge loop shared by both kinds: symbols (token ids) merge pairwise, lowest rank first, leftmost first
// among equal ranks — the order of tokenizers' BPE and of llama.cpp's SentencePiece path (rank = score order).

struct MergeTable {
    /// key: left id << 32 | right id; value: rank << 32 | merged id.
    var table: [UInt64: UInt64] = [:]

    @inline(__always) static func key(_ a: Int32, _ b: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
    }

    @inline(__always) func lookup(_ a: Int32, _ b: Int32) -> (rank: Int32, id: Int32)? {
        guard let v = table[MergeTable.key(a, b)] else { return nil }
        return (Int32(truncatingIfNeeded: v >> 32), Int32(truncatingIfNeeded: v & 0xFFFF_FFFF))
    }

    mutating func insert(_ a: Int32, _ b: Int32, rank: Int32, id: Int32) {
        let k = MergeTable.key(a, b)
        if table[k] == nil {   // the first (best) rank wins, as in tokenizers
            table[k] = UInt64(UInt32(bitPattern: rank)) << 32 | UInt64(UInt32(bitPattern: id))
        }
    }

    /// Applies the merges to `syms` in place.
    func merge(_ syms: inout [Int32]) {
        if syms.count < 2 { return }
        if syms.count > 48 { mergeLong(&syms); return }
        var ranks = [Int32](repeating: .max, count: syms.count - 1)
        var ids = [Int32](repeating: -1, count: syms.count - 1)
        for p in 0..<(syms.count - 1) {
            if let m = lookup(syms[p], syms[p + 1]) { ranks[p] = m.rank; ids[p] = m.id }
        }
        while true {
            var best = Int32.max, bp = -1
            for p in 0..<ranks.count where ranks[p] < best { best = ranks[p]; bp = p }
            if bp < 0 { break }
            syms[bp] = ids[bp]
            syms.remove(at: bp + 1)
            ranks.remove(at: bp)
            ids.remove(at: bp)
            if bp > 0 {
                if let m = lookup(syms[bp - 1], syms[bp]) { ranks[bp - 1] = m.rank; ids[bp - 1] = m.id } else {
                    ranks[bp - 1] = .max
                }
            }
            if bp < ranks.count {
                if let m = lookup(syms[bp], syms[bp + 1]) { ranks[bp] = m.rank; ids[bp] = m.id } else {
                    ranks[bp] = .max
                }
            }
        }
    }

    /// Heap + linked list version for long inputs (a whole SentencePiece text is one word): O(n log n).
    private func mergeLong(_ syms: inout [Int32]) {
        let n = syms.count
        var id = syms
        var prev = (0..<n).map { Int32($0) - 1 }
        var next = (0..<n).map { $0 + 1 < n ? Int32($0 + 1) : -1 }
        var alive = [Bool](repeating: true, count: n)
        var heap = MinHeap()
        for p in 0..<(n - 1) {
            if let m = lookup(id[p], id[p + 1]) {
                heap.push(.init(rank: m.rank, pos: Int32(p), left: id[p], right: id[p + 1], result: m.id))
            }
        }
        while let e = heap.pop() {
            let p = Int(e.pos)
            guard alive[p], id[p] == e.left else { continue }
            let q = Int(next[p])
            guard q >= 0, id[q] == e.right else { continue }
            id[p] = e.result
            alive[q] = false
            next[p] = next[q]
            if next[q] >= 0 { prev[Int(next[q])] = Int32(p) }
            if prev[p] >= 0, let m = lookup(id[Int(prev[p])], id[p]) {
                heap.push(.init(rank: m.rank, pos: prev[p], left: id[Int(prev[p])], right: id[p], result: m.id))
            }
            if next[p] >= 0, let m = lookup(id[p], id[Int(next[p])]) {
                heap.push(.init(rank: m.rank, pos: Int32(p), left: id[p], right: id[Int(next[p])], result: m.id))
            }
        }
        var out: [Int32] = []
        var p = 0
        while p >= 0 { out.append(id[p]); p = Int(next[p]) }
        syms = out
    }
}

private struct MinHeap {
    struct Entry { var rank: Int32; var pos: Int32; var left: Int32; var right: Int32; var result: Int32 }
    var a: [Entry] = []

    @inline(__always) private func less(_ x: Entry, _ y: Entry) -> Bool {
        x.rank < y.rank || (x.rank == y.rank && x.pos < y.pos)
    }

    mutating func push(_ e: Entry) {
        a.append(e)
        var i = a.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            if less(a[i], a[p]) { a.swapAt(i, p); i = p } else { break }
        }
    }

    mutating func pop() -> Entry? {
        guard !a.isEmpty else { return nil }
        let top = a[0]
        let last = a.removeLast()
        if !a.isEmpty {
            a[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < a.count && less(a[l], a[m]) { m = l }
                if r < a.count && less(a[r], a[m]) { m = r }
                if m == i { break }
                a.swapAt(i, m)
                i = m
            }
        }
        return top
    }
}
