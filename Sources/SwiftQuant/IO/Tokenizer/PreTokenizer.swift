// Pre-tokenization: a hand-written scanner for the known split regexes, working on Unicode scalars with the
// Unicode general categories (\p{L} = L*, \p{N} = N*) and White_Space (\s, as Oniguruma defines it for Unicode).

/// Character classes the patterns need, as bit flags.
@usableFromInline
struct CharClass {
    static let letter: UInt8 = 1
    static let number: UInt8 = 2
    static let space: UInt8 = 4
    static let newline: UInt8 = 8   // \r or \n (also has `space`)

    static let ascii: [UInt8] = (0..<128).map { computeSlow(Unicode.Scalar(UInt8($0))) }

    @inline(__always)
    static func of(_ s: Unicode.Scalar) -> UInt8 {
        let v = s.value
        if v < 128 { return ascii[Int(v)] }
        return computeSlow(s)
    }

    static func computeSlow(_ s: Unicode.Scalar) -> UInt8 {
        var c: UInt8 = 0
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            c |= letter
        case .decimalNumber, .letterNumber, .otherNumber:
            c |= number
        default:
            break
        }
        if s.properties.isWhitespace { c |= space }
        if s.value == 10 || s.value == 13 { c |= newline }
        return c
    }
}

/// The split regexes the scanner implements.
enum SplitScanner: Equatable {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    case gpt2
    /// Llama-3 family with `\p{N}{1,maxDigits}` (3 for Llama-3, 1 for Qwen2).
    case llama3(maxDigits: Int)

    init?(pattern: String) {
        switch pattern {
        case KnownSplitPattern.gpt2: self = .gpt2
        case KnownSplitPattern.llama3: self = .llama3(maxDigits: 3)
        case KnownSplitPattern.qwen2: self = .llama3(maxDigits: 1)
        default: return nil
        }
    }

    /// Appends the matches in `s[start..<end]` (classes in `cls`) to `out` as ranges. Gaps (none for the known
    /// patterns, which match every character) would be appended too, as `Isolated` keeps them.
    func split(_ s: UnsafeBufferPointer<Unicode.Scalar>, _ cls: UnsafeBufferPointer<UInt8>, _ start: Int,
               _ end: Int, into out: inout [Range<Int>]) {
        var i = start
        while i < end {
            let n: Int
            switch self {
            case .gpt2: n = matchGPT2(s, cls, i, end)
            case .llama3(let d): n = matchLlama3(s, cls, i, end, maxDigits: d)
            }
            let len = max(n, 1)
            out.append(i..<(i + len))
            i += len
        }
    }

    /// Length of a contraction at `i` ('s 't 're 've 'm 'll 'd), 0 if none.
    @inline(__always)
    private func contraction(_ s: UnsafeBufferPointer<Unicode.Scalar>, _ i: Int, _ end: Int,
                             caseInsensitive: Bool) -> Int {
        guard s[i] == "'", i + 1 < end else { return 0 }
        @inline(__always) func low(_ k: Int) -> UInt32 {
            let v = s[k].value
            if caseInsensitive {
                if v >= 65 && v <= 90 { return v + 32 }
                if v == 0x17F { return 115 }   // ſ folds to s
            }
            return v
        }
        let a = low(i + 1)
        switch a {
        case 115, 116, 109, 100: return 2   // s t m d
        case 114, 118:                      // r(e) v(e)
            if i + 2 < end && low(i + 2) == 101 { return 3 }
        case 108:                           // l(l)
            if i + 2 < end && low(i + 2) == 108 { return 3 }
        default: break
        }
        return 0
    }

    @inline(__always)
    private func isOther(_ c: UInt8) -> Bool { c & (CharClass.letter | CharClass.number | CharClass.space) == 0 }

    /// `\s+(?!\S)|\s+` at `i` (which is whitespace): the run, minus its last character when a non-space follows
    /// and the run is longer than one.
    @inline(__always)
    private func whitespace(_ cls: UnsafeBufferPointer<UInt8>, _ i: Int, _ end: Int) -> Int {
        var j = i
        while j < end && cls[j] & CharClass.space != 0 { j += 1 }
        if j == end || j - i == 1 { return j - i }
        return j - i - 1
    }

    private func matchGPT2(_ s: UnsafeBufferPointer<Unicode.Scalar>, _ cls: UnsafeBufferPointer<UInt8>, _ i: Int,
                           _ end: Int) -> Int {
        let c = contraction(s, i, end, caseInsensitive: false)
        if c > 0 { return c }
        var j = i
        if s[i] == " " && i + 1 < end { j = i + 1 }
        let cj = cls[j]
        if cj & CharClass.letter != 0 {
            var k = j + 1
            while k < end && cls[k] & CharClass.letter != 0 { k += 1 }
            return k - i
        }
        if cj & CharClass.number != 0 {
            var k = j + 1
            while k < end && cls[k] & CharClass.number != 0 { k += 1 }
            return k - i
        }
        if isOther(cj) {
            var k = j + 1
            while k < end && isOther(cls[k]) { k += 1 }
            return k - i
        }
        if cls[i] & CharClass.space != 0 { return whitespace(cls, i, end) }
        return 1
    }

    private func matchLlama3(_ s: UnsafeBufferPointer<Unicode.Scalar>, _ cls: UnsafeBufferPointer<UInt8>, _ i: Int,
                             _ end: Int, maxDigits: Int) -> Int {
        let c = contraction(s, i, end, caseInsensitive: true)
        if c > 0 { return c }
        let ci = cls[i]
        // [^\r\n\p{L}\p{N}]?\p{L}+
        var j = i
        if ci & (CharClass.letter | CharClass.number | CharClass.newline) == 0 && i + 1 < end
            && cls[i + 1] & CharClass.letter != 0 {
            j = i + 1
        }
        if cls[j] & CharClass.letter != 0 {
            var k = j + 1
            while k < end && cls[k] & CharClass.letter != 0 { k += 1 }
            return k - i
        }
        // \p{N}{1,maxDigits}
        if ci & CharClass.number != 0 {
            var k = i + 1
            while k < end && k - i < maxDigits && cls[k] & CharClass.number != 0 { k += 1 }
            return k - i
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
        j = i
        if s[i] == " " && i + 1 < end { j = i + 1 }
        if isOther(cls[j]) {
            var k = j + 1
            while k < end && isOther(cls[k]) { k += 1 }
            while k < end && cls[k] & CharClass.newline != 0 { k += 1 }
            return k - i
        }
        if ci & CharClass.space != 0 {
            // \s*[\r\n]+ : up to and including the last newline of the whitespace run.
            var k = i
            var lastNL = -1
            while k < end && cls[k] & CharClass.space != 0 {
                if cls[k] & CharClass.newline != 0 { lastNL = k }
                k += 1
            }
            if lastNL >= 0 { return lastNL + 1 - i }
            return whitespace(cls, i, end)
        }
        return 1
    }
}
