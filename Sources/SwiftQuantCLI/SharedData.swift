import SwiftQuant
import Foundation

/// Default data files of the command-line tool: `../shared/data` next to the checkout, looked for from the current
/// directory and from the executable's directory (the CLI in `.build/…`), each upwards. The library itself never
/// searches: it takes paths.
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

    /// The WikiText-2 test text (`$SWIFTQUANT_WIKITEXT` first), or nil.
    static func wikitextTest() -> String? {
        if let env = ProcessInfo.processInfo.environment["SWIFTQUANT_WIKITEXT"],
           FileManager.default.fileExists(atPath: env) {
            return env
        }
        return find("wikitext-2-raw/test.joined.txt")
    }

    /// The default calibration text file: the WikiText-2 validation rows (read by `Calibration.text(path:)`'s one
    /// rule, like any file passed with --calib).
    static func calibrationPath() throws -> String {
        guard let p = find("wikitext-2-raw/tokenized-v1/valid.txt") else {
            throw SwiftQuantError.invalidArgument(
                "no --calib given and ../shared/data/wikitext-2-raw/tokenized-v1/valid.txt was not found; pass one")
        }
        return p
    }
}
