// How the examples end when they cannot run: a message on standard error and a non-zero status (no
// trap, no crash backtrace), so that scripts and harnesses see a failed start as one. The one file of
// the examples that imports Glibc (the standard error stream and the exit status are not Readiness's).
#if canImport(Glibc)
import Glibc
#endif

/// Prints `message` (and `usage`, for a command-line mistake) to standard error and exits with
/// status 2 for a ``UsageError``, 1 otherwise; `--help` prints the usage on standard output, status 0.
public func exitFailing(_ program: String, _ error: any Error, usage: String? = nil) -> Never {
    if let asked = error as? UsageError, asked.isHelp {
        let bytes = Array("usage: \(program) \(usage ?? "")\n".utf8)
        _ = bytes.withUnsafeBytes { write(STDOUT_FILENO, $0.baseAddress, $0.count) }
        exit(0)
    }
    var text = "\(program): \(error)\n"
    let mistake = error is UsageError
    if mistake, let usage { text += "usage: \(program) \(usage)\n" }
    let bytes = Array(text.utf8)
    _ = bytes.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
    exit(mistake ? 2 : 1)
}

/// A failure while running (no address, a deadline passed): status 1, not a command-line mistake.
public struct RunFailure: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A program whose standard output is a pipe (`| tee log`, a log collector) must not be ended by
/// SIGPIPE when the reader goes away mid-drain: its status lines then fail with EPIPE, ignored, and a
/// graceful shutdown still answers what is in flight and exits 0. (The sockets never raise SIGPIPE:
/// Readiness sends with MSG_NOSIGNAL.) Called first by every example.
public func ignoreBrokenPipes() {
    signal(SIGPIPE, SIG_IGN)
}
