import Foundation

/// Prints a value as one line of JSON (sorted keys, so the output is stable).
func printJSON<T: Encodable>(_ value: T) throws(ToolError) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    let data = try orFail { () throws(any Error) -> Data in try encoder.encode(value) }
    print(String(decoding: data, as: UTF8.self))
}

/// Prints a line to standard error (diagnostics, failures), keeping standard output for results.
func printError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}
