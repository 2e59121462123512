// How the examples end when they cannot run: a message on standard error and a non-zero status (no
// trap, no crash backtrace), so that scripts and harnesses see a failed start as one.
#if canImport(Glibc)
import Glibc
#endif

/// Prints `message` (and `usage`, for a command-line mistake) to standard error and exits with
/// status 2 for a ``UsageError``, 1 otherwise.
public func exitFailing(_ program: String, _ error: any Error, usage: String? = nil) -> Never {
    var text = "\(program): \(error)\n"
    let mistake = error is UsageError
    if mistake, let usage { text += "usage: \(usage)\n" }
    let bytes = Array(text.utf8)
    _ = bytes.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
    exit(mistake ? 2 : 1)
}
