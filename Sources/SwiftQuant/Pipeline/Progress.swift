import CSQSupport
import Foundation

/// A progress bar with rate and ETA on stderr. On a terminal it redraws one line; otherwise (logs, CI, pipes)
/// it prints a line at most every few seconds and at the end, so logs stay readable.
public final class ProgressBar: @unchecked Sendable {
    public let total: Int
    public let label: String
    public let unit: String
    private let start = sqs_now()
    private var lastPrint = -Double.infinity
    private let interactive: Bool
    private let enabled: Bool
    private var done = 0
    private var extra: Double = 0

    /// `unitsPerStep`: how many `unit`s one step stands for (e.g. 2048 tokens per window) for the rate.
    /// `delay`: nothing is shown before this many seconds have passed (so work that finishes sooner, e.g. a small
    /// model's load or save, prints nothing).
    public init(total: Int, label: String, unit: String = "", unitsPerStep: Double = 1, enabled: Bool = true,
                delay: Double = 0) {
        self.total = max(total, 1)
        self.label = label
        self.unit = unit
        self.unitsPerStep = unitsPerStep
        self.enabled = enabled
        self.delay = delay
        interactive = isatty(2) != 0
    }

    private let delay: Double

    private let unitsPerStep: Double

    public static func format(seconds: Double) -> String {
        guard seconds.isFinite && seconds >= 0 else { return "--:--" }
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
    }

    /// Marks `steps` more as done; `note` is shown after the bar (e.g. the running perplexity).
    public func advance(_ steps: Int = 1, note: String = "") {
        done = min(total, done + steps)
        guard enabled else { return }
        let now = sqs_now(), elapsed = now - start
        if elapsed < delay { return }
        let finished = done == total
        if !finished && now - lastPrint < (interactive ? 0.2 : 5) { return }
        lastPrint = now
        let rate = Double(done) / max(elapsed, 1e-9)
        let eta = Double(total - done) / max(rate, 1e-12)
        let width = 24, filled = width * done / total
        let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
        var line = "\(label) \(bar) \(done)/\(total)"
        if unit.isEmpty {
            line += String(format: " %.2f/s", rate)
        } else {
            line += String(format: " %.0f %@/s", rate * unitsPerStep, unit)
        }
        line += " elapsed \(Self.format(seconds: elapsed))"
        if !finished { line += " ETA \(Self.format(seconds: eta))" }
        if !note.isEmpty { line += "  " + note }
        let out = interactive ? "\r\u{1B}[2K" + line + (finished ? "\n" : "") : line + "\n"
        FileHandle.standardError.write(Data(out.utf8))
    }
}

/// Resident and peak resident memory of this process in MiB (Linux /proc), or nil elsewhere. `anonymous` is
/// the part not backed by files: the resident total also counts the pages of memory-mapped model files that
/// have been read, which the kernel can drop at any time and which grow with every block a run has visited.
public func residentMemoryMiB() -> (current: Double, peak: Double, anonymous: Double)? {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
    func field(_ key: String) -> Double? {
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(key + ":") }) else { return nil }
        let kb = line.split(separator: " ").compactMap { Double($0) }.first
        return kb.map { $0 / 1024 }
    }
    guard let cur = field("VmRSS"), let peak = field("VmHWM") else { return nil }
    return (cur, peak, field("RssAnon") ?? cur)
}
