import Foundation

// Only `Calibration.defaultTextPath()` (Pipeline/Calibration.swift) still uses this search; it goes away with
// that function, when the pipeline takes its calibration text as a path like every other library API does. The
// CLI, the tests and the demo find the shared WikiText-2 files themselves.
/// The shared data directory next to the checkout (`../shared/data`), looked for from the current directory and
/// from the running executable's directory (the CLI in `.build/…`, or Python in `.venv/bin`), each upwards.
enum SharedData {
    static func find(_ relative: String) -> String? {
        var starts = [URL(fileURLWithPath: FileManager.default.currentDirectoryPath)]
        if let exe = Bundle.main.executableURL?.resolvingSymlinksInPath() { starts.append(exe.deletingLastPathComponent()) }
        for start in starts {
            var dir = start
            for _ in 0..<8 {
                for base in ["shared/data", "../shared/data"] {
                    let p = dir.appendingPathComponent(base).appendingPathComponent(relative).standardizedFileURL.path
                    if FileManager.default.fileExists(atPath: p) { return p }
                }
                if dir.path == "/" { break }
                dir.deleteLastPathComponent()
            }
        }
        return nil
    }
}
