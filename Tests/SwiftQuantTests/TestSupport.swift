import Foundation
import XCTest
import SwiftQuant

/// Shared helpers of the test target.
enum Fixtures {
    static func url(_ name: String) -> URL {
        Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent(name)
    }

    static func data(_ name: String) throws -> Data { try Data(contentsOf: url(name)) }

    static func json(_ name: String) throws -> Any { try JSONSerialization.jsonObject(with: data(name)) }

    /// The repository root (tests live in Tests/SwiftQuantTests/).
    static let repoRoot: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    /// `../shared/data/<path>` next to the checkout, or nil (the caller skips with a reason).
    static func sharedData(_ path: String) -> URL? {
        let u = repoRoot.deletingLastPathComponent().appendingPathComponent("shared/data").appendingPathComponent(path)
        return FileManager.default.fileExists(atPath: u.path) ? u : nil
    }
}

/// Tests draw from the library's SplitMix64 so they are reproducible without Foundation's randomness.
extension SplitMix64 {
    mutating func gaussian() -> Float {
        let u1 = Float.random(in: Float.ulpOfOne..<1, using: &self), u2 = Float.random(in: 0..<1, using: &self)
        return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
    }
}

func XCTAssertThrowsSwiftQuantError<T>(
    _ expression: @autoclosure () throws -> T, contains fragment: String, file: StaticString = #filePath,
    line: UInt = #line
) {
    XCTAssertThrowsError(try expression(), file: file, line: line) { error in
        let message = "\(error)"
        XCTAssertTrue(message.contains(fragment), "error '\(message)' does not mention '\(fragment)'", file: file,
                      line: line)
    }
}
