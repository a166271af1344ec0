import Foundation

// TODO(issue 12, in progress on a branch): the gptq writer. Until it lands, exporting to gptq is refused.
public enum GPTQExport {
    public static func write(_ loaded: LoadedModel, to path: String, options: ExportOptions) throws {
        throw SwiftQuantError.unsupported("export to gptq is not available yet")
    }
}
