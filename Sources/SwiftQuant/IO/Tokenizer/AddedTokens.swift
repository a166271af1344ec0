// Added-token matching: at the leftmost position where any added token matches, the longest one there wins;
// `lstrip` / `rstrip` extend the match over neighbouring whitespace (which then belongs to the token).

struct AddedTokenMatcher {
    private var byFirst: [UInt32: [(scalars: [Unicode.Scalar], index: Int)]] = [:]
    private var firstASCII = [Bool](repeating: false, count: 128)

    var isEmpty: Bool { byFirst.isEmpty }

    /// A Unicode regex word character (UTS #18 `\w`: Alphabetic, marks, decimal digits, connector punctuation,
    /// Join_Control), the test `single_word` uses.
    static func isWordChar(_ c: Unicode.Scalar) -> Bool {
        if c.properties.isAlphabetic || c.properties.isJoinControl { return true }
        switch c.properties.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .connectorPunctuation:
            return true
        default:
            return false
        }
    }

    /// `index` is the token's position in `TokenizerSpec.addedTokens`; `scalars` is the text to look for.
    mutating func add(_ scalars: [Unicode.Scalar], index: Int) {
        guard let f = scalars.first else { return }
        byFirst[f.value, default: []].append((scalars, index))
        byFirst[f.value]!.sort { $0.scalars.count > $1.scalars.count }
        if f.value < 128 { firstASCII[Int(f.value)] = true }
    }

    /// Splits `s` into text ranges (added == nil) and added-token ids, in order.
    func split(_ s: [Unicode.Scalar], tokens: [TokenizerSpec.AddedToken]) -> [(range: Range<Int>, added: Int32?)] {
        let n = s.count
        if isEmpty { return n == 0 ? [] : [(0..<n, nil)] }
        var segs: [(range: Range<Int>, added: Int32?)] = []
        var segStart = 0
        var i = 0
        while i < n {
            let v = s[i].value
            if v < 128 ? firstASCII[Int(v)] : byFirst[v] != nil, let cands = byFirst[v] {
                var matched: (len: Int, index: Int)? = nil
                for c in cands where c.scalars.count <= n - i {
                    var ok = true
                    var k = 1
                    while k < c.scalars.count {
                        if s[i + k] != c.scalars[k] { ok = false; break }
                        k += 1
                    }
                    if ok { matched = (c.scalars.count, c.index); break }
                }
                if let m = matched {
                    let tok = tokens[m.index]
                    var start = i, end = i + m.len
                    if tok.singleWord
                        && ((start > 0 && Self.isWordChar(s[start - 1])) || (end < n && Self.isWordChar(s[end]))) {
                        // Not a word on its own: the span stays text and the search goes on after it (the
                        // longest match is discarded, not replaced by a shorter one), as tokenizers does.
                        i = end
                        continue
                    }
                    if tok.lstrip {
                        while start > segStart && s[start - 1].properties.isWhitespace { start -= 1 }
                    }
                    if tok.rstrip {
                        while end < n && s[end].properties.isWhitespace { end += 1 }
                    }
                    if start > segStart { segs.append((segStart..<start, nil)) }
                    segs.append((start..<end, tok.id))
                    i = end
                    segStart = end
                    continue
                }
            }
            i += 1
        }
        if segStart < n { segs.append((segStart..<n, nil)) }
        return segs
    }
}
