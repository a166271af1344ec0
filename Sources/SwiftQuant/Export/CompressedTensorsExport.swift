import Foundation

// TODO(issue 12, in progress on a branch): the compressed-tensors writer. Until it lands, exporting to compressed-tensors is refused.
public enum CompressedTensorsExport {
    public static func write(_ loaded: LoadedModel, to path: String, options: ExportOptions) throws {
        throw SwiftQuantError.unsupported("export to compressed-tensors is not available yet")
    }
}
