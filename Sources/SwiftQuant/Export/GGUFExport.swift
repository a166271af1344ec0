import Foundation

// TODO(issue 12, in progress on a branch): the gguf writer. Until it lands, exporting to gguf is refused.
public enum GGUFExport {
    public static func write(_ loaded: LoadedModel, to path: String, options: ExportOptions) throws {
        throw SwiftQuantError.unsupported("export to gguf is not available yet")
    }
}
