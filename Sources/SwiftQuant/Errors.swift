/// The one error type of the SwiftQuant core. Every public throwing API throws it; the C ABI maps each case
/// to a status code and the Python module to an exception class (noted on each case).
public enum SwiftQuantError: Error, Equatable, CustomStringConvertible, Sendable {
    /// A setting or argument that cannot work (bits out of range, group size 0, shape mismatch …).
    /// C: `SQ_ERR_INVALID_ARGUMENT`; Python: `ValueError`.
    case invalidArgument(String)
    /// A value of the wrong type or element type (for example float64 where float32 is required).
    /// C: `SQ_ERR_TYPE`; Python: `TypeError`.
    case invalidType(String)
    /// NaN or ±Inf where the operation cannot represent it. C: `SQ_ERR_NON_FINITE`; Python: `ValueError`.
    case nonFinite(String)
    /// A file that cannot be read as what it claims to be; the message names the file and the problem.
    /// C: `SQ_ERR_FORMAT`; Python: `swiftquant.FormatError` (a `ValueError`).
    case format(String)
    /// The operating system refused (missing file, permission, disk full). C: `SQ_ERR_IO`; Python: `OSError`.
    case io(String)
    /// A valid request this version does not implement. C: `SQ_ERR_UNSUPPORTED`; Python: `NotImplementedError`.
    case unsupported(String)

    public var message: String {
        switch self {
        case .invalidArgument(let m), .invalidType(let m), .nonFinite(let m), .format(let m), .io(let m),
             .unsupported(let m):
            return m
        }
    }

    public var description: String { message }
}

/// Throws `SwiftQuantError.invalidArgument(message())` unless `condition` holds.
@inline(__always)
public func require(_ condition: Bool, _ message: @autoclosure () -> String) throws {
    if !condition { throw SwiftQuantError.invalidArgument(message()) }
}
