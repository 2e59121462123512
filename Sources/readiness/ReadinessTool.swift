import Foundation

/// The `readiness` command-line tool. Each subcommand lives in its own file; the command line is parsed
/// by Arguments.swift.
@main
enum ReadinessTool {
    static let spec = ToolSpec(
        name: "readiness",
        abstract: "Wait on sockets with epoll, poll, select, libevent or io_uring, chosen at run time.",
        commands: commands.map { $0.spec },
        defaultCommand: ConformanceCommand.spec)

    /// The subcommands, in the order of the help.
    static var commands: [any Command.Type] { [ConformanceCommand.self, BackendsCommand.self, ConnectCommand.self] }

    static func main() {
        // A reader that went away is a write error (EPIPE, exit 1), not a silent death by SIGPIPE.
        signal(SIGPIPE, SIG_IGN)
        // A standard descriptor closed (`>&-`, `<&-`): the next descriptor opened (a poller's) would take
        // its number and the report or a message would go into it. /dev/null holds each such number;
        // a closed standard output means the report was not written.
        let outputClosed = fcntl(STDOUT_FILENO, F_GETFD) < 0
        for standard in [STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO] where fcntl(standard, F_GETFD) < 0 {
            let null = open("/dev/null", O_RDWR)
            if null >= 0, null != standard {
                dup2(null, standard)
                close(null)
            }
        }
        // Standard output's number could not be held: a report would land in whatever takes it.
        if fcntl(STDOUT_FILENO, F_GETFD) < 0 { exit(ExitStatus.failure) }
        exit(flushed(run(Array(CommandLine.arguments.dropFirst())), outputClosed: outputClosed))
    }

    /// `status`, or 1 when standard output could not take what was printed (a full disk, `> /dev/full`,
    /// a reader that went away, a closed descriptor): a report that was not written is not a success.
    static func flushed(_ status: Int32, outputClosed: Bool) -> Int32 {
        var failure: String?
        if outputClosed { failure = "standard output is closed" } else if fflush(nil) != 0 {   // every stream; standard output is the one written
            failure = String(cString: strerror(errno))
        }
        guard let failure else { return status }
        printError("Error: could not write to standard output: \(failure)")
        return status == ExitStatus.success ? ExitStatus.failure : status
    }

    /// Runs a command line (without the program name) and returns the exit status.
    static func run(_ commandLine: [String]) -> Int32 {
        let invocation: Invocation
        do {
            invocation = try spec.parse(commandLine)
        } catch {
            printError(spec.usageMessage(for: error))
            return ExitStatus.usage
        }
        switch invocation {
        case .help(let command):
            print(spec.help(for: command))
            return ExitStatus.success
        case .run(let command, let arguments):
            guard let type = commands.first(where: { $0.spec == command }) else {
                printError("Error: no subcommand \(command.name)")
                return ExitStatus.failure
            }
            let instance: any Command
            do {
                instance = try type.init(arguments)
            } catch {
                return report(.usage(error), of: command)
            }
            do {
                try instance.run()
                return ExitStatus.success
            } catch {
                return report(error, of: command)
            }
        }
    }

    /// Prints what went wrong, if it has not been printed yet, and returns the exit status.
    static func report(_ error: ToolError, of command: CommandSpec) -> Int32 {
        switch error {
        case .usage(let mistake):
            printError(spec.usageMessage(for: CommandLineError(command: command, error: mistake)))
            return ExitStatus.usage
        case .failure(let message):
            printError("Error: \(message)")
            return ExitStatus.failure
        case .exit(let status):
            return status
        }
    }
}

/// A subcommand: what it accepts, how it reads its arguments, what it does.
protocol Command {
    static var spec: CommandSpec { get }
    /// Reads the parsed command line; a value that is not valid is a usage mistake.
    init(_ arguments: ParsedArguments) throws(UsageError)
    func run() throws(ToolError)
}

/// How a command ends other than with success.
enum ToolError: Error, Equatable {
    /// A usage mistake found by the command: printed with the usage line, exit status 64.
    case usage(UsageError)
    /// A failure: printed as "Error: message", exit status 1.
    case failure(String)
    /// The command has said what went wrong (its output): exit with this status, printing nothing.
    case exit(Int32)

    /// A command that ran and failed, its output already printed.
    static let failed = ToolError.exit(ExitStatus.failure)
}

/// Runs `body`, turning its error into a failure reported as "Error: <description>" (exit status 1).
func orFail<Value, Failure: Error>(_ body: () throws(Failure) -> Value) throws(ToolError) -> Value {
    do { return try body() } catch { throw .failure(String(describing: error)) }
}
