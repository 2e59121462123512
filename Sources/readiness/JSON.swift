import Foundation

/// Prints a value as one line of JSON (sorted keys, so the output is stable).
func printJSON<T: Encodable>(_ value: T) throws(ToolError) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    let data = try orFail { () throws(any Error) -> Data in try encoder.encode(value) }
    print(String(decoding: data, as: UTF8.self))
}

/// Prints a line to standard error (diagnostics, failures), keeping standard output for results.
/// With `write(2)`, its failure ignored: Foundation's `FileHandle.write(_:)` traps on a write error
/// (a closed or full standard error, a pipe whose reader left with SIGPIPE ignored), which crashed
/// the tool on its way to exit status 64 or 1.
func printError(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
}
