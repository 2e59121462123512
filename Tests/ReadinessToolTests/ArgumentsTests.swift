@testable import readiness
import Testing

/// The tool's command-line parser (Sources/readiness/Arguments.swift), in process.
@Suite("Command-line tool: arguments")
struct ArgumentsTests {
    let tool = ReadinessTool.spec
    let conformance = ConformanceCommand.spec
    let connect = ConnectCommand.spec
    let backends = BackendsCommand.spec

    func parsed(_ commandLine: [String]) throws -> (CommandSpec, ParsedArguments) {
        guard case .run(let command, let arguments) = try tool.parse(commandLine) else {
            throw TestFailure("\(commandLine) does not run a command")
        }
        return (command, arguments)
    }

    func mistake(_ commandLine: [String]) -> CommandLineError? {
        do {
            _ = try tool.parse(commandLine)
            return nil
        } catch {
            return error
        }
    }

    @Test("no subcommand runs conformance, the default, with what follows")
    func defaultSubcommand() throws {
        #expect(try tool.parse([]) == .run(conformance, ParsedArguments()))
        let (command, arguments) = try parsed(["--json", "--only", "misuse/"])
        #expect(command == conformance)
        #expect(arguments.flag("json"))
        #expect(arguments.value("only") == "misuse/")
    }

    @Test("--opt value and --opt=value mean the same")
    func valueForms() throws {
        let spaced = try parsed(["conformance", "--only", "connect/", "--seed", "7", "--differential", "3"])
        let joined = try parsed(["conformance", "--only=connect/", "--seed=7", "--differential=3"])
        #expect(spaced.1 == joined.1)
        let command = try ConformanceCommand(joined.1)
        #expect(command.only == "connect/")
        #expect(command.seed == 7)
        #expect(command.differential == 3)
        // Only the first "=" separates: the value keeps the others; an empty value is a value.
        #expect(try parsed(["--only=a=b"]).1.value("only") == "a=b")
        #expect(try parsed(["--only="]).1.value("only") == "")
    }

    @Test("a negative number is a value, not an option; it reaches the command's validation")
    func negativeValues() throws {
        let (_, arguments) = try parsed(["connect", "127.0.0.1:1", "--timeout", "-5"])
        #expect(arguments.value("timeout") == "-5")
        #expect(throws: UsageError.invalid("--timeout must not be negative (got -5)")) {
            try ConnectCommand(arguments)
        }
        // ... which refuses a negative count of scripts (it ran none and reported success before).
        #expect(throws: UsageError.invalidValue("-3", option: "differential")) {
            try ConformanceCommand(try parsed(["--differential", "-3"]).1)
        }
        // A negative number where an argument is expected is an argument.
        #expect(try parsed(["connect", "-1"]).1.arguments == ["-1"])
    }

    @Test("defaults when an option is absent")
    func defaults() throws {
        let command = try ConformanceCommand(ParsedArguments())
        #expect(command.differential == ConformanceCommand.defaultDifferential)
        #expect(command.seed == ConformanceCommand.defaultSeed)
        #expect(command.showScript == nil && command.only == nil && command.backendNames.isEmpty)
        #expect(!command.json && !command.markdown && !command.list && !command.differentialOnly)
        let connection = try ConnectCommand(try parsed(["connect", "unix:/run/x.sock"]).1)
        #expect(connection.timeout == ConnectCommand.defaultTimeoutMilliseconds)
        #expect(connection.target == "unix:/run/x.sock" && connection.backend == nil && !connection.json)
    }

    @Test("a repeatable option keeps every value in order; others keep the last; flags may repeat")
    func repetition() throws {
        let (_, arguments) = try parsed(["--backend", "poll", "--backend=select", "--only", "a", "--only", "b",
                                         "--json", "--json"])
        let command = try ConformanceCommand(arguments)
        #expect(command.backendNames == ["poll", "select"])
        #expect(command.only == "b")
        #expect(command.json)
    }

    @Test("options and the argument in any order; after -- everything is an argument")
    func order() throws {
        let before = try ConnectCommand(try parsed(["connect", "--json", "--backend", "poll", "[::1]:80"]).1)
        #expect(before.target == "[::1]:80" && before.backend == "poll" && before.json)
        let dashed = try parsed(["connect", "--", "--json"]).1
        #expect(dashed.arguments == ["--json"] && !dashed.flag("json"))
        #expect(try parsed(["connect", "--", "--help"]).1.arguments == ["--help"])
    }

    @Test("an unknown option is a usage mistake of the subcommand")
    func unknownOption() {
        #expect(mistake(["conformance", "--bogus"]) == CommandLineError(command: conformance, error: .unknownOption("--bogus")))
        #expect(mistake(["backends", "--bogus=1"]) == CommandLineError(command: backends, error: .unknownOption("--bogus")))
        #expect(mistake(["-x"]) == CommandLineError(command: conformance, error: .unknownOption("-x")))
        // Another subcommand's option is unknown here.
        #expect(mistake(["backends", "--timeout", "5"]) == CommandLineError(command: backends, error: .unknownOption("--timeout")))
    }

    @Test("a missing value: at the end, or followed by an option")
    func missingValue() {
        #expect(mistake(["connect", "h:1", "--timeout"]) == CommandLineError(command: connect, error: .missingValue(option: "--timeout <timeout>")))
        #expect(mistake(["--only", "--json"]) == CommandLineError(command: conformance, error: .missingValue(option: "--only <only>")))
        #expect(mistake(["--only", "--"]) == CommandLineError(command: conformance, error: .missingValue(option: "--only <only>")))
    }

    @Test("values that are not numbers, values for flags, missing and extra arguments")
    func otherMistakes() throws {
        #expect(throws: UsageError.invalidValue("x", option: "--seed <seed>")) {
            try ConformanceCommand(try parsed(["--seed", "x"]).1)
        }
        #expect(throws: UsageError.invalidValue("-1", option: "--show-script <show-script>")) {
            try ConformanceCommand(try parsed(["--show-script", "-1"]).1)
        }
        #expect(throws: UsageError.invalidValue("99999999999999999999", option: "--timeout <timeout>")) {
            try ConnectCommand(try parsed(["connect", "h:1", "--timeout", "99999999999999999999"]).1)
        }
        #expect(mistake(["backends", "--json=yes"]) == CommandLineError(command: backends, error: .valueForFlag(option: "--json")))
        #expect(mistake(["connect"]) == CommandLineError(command: connect, error: .missingArgument("<target>")))
        #expect(mistake(["connect", "a:1", "b:2"]) == CommandLineError(command: connect, error: .unexpectedArgument("b:2")))
        #expect(mistake(["bogus"]) == CommandLineError(command: conformance, error: .unexpectedArgument("bogus")))
    }

    @Test("--help and -h, per subcommand and at the top; help SUBCOMMAND")
    func help() throws {
        #expect(try tool.parse(["--help"]) == .help(nil))
        #expect(try tool.parse(["-h"]) == .help(nil))
        #expect(try tool.parse(["help"]) == .help(nil))
        #expect(try tool.parse(["help", "bogus"]) == .help(nil))
        #expect(try tool.parse(["help", "connect"]) == .help(connect))
        #expect(try tool.parse(["connect", "-h"]) == .help(connect))
        #expect(try tool.parse(["backends", "--json", "--help"]) == .help(backends))
        // Help wins over a mistake on the same line, as before.
        #expect(try tool.parse(["conformance", "--bogus", "--help"]) == .help(conformance))
        #expect(try tool.parse(["--only", "x", "-h"]) == .help(conformance))
    }

    @Test("help texts: as swift-argument-parser laid them out, no line longer than 79")
    func helpTexts() {
        #expect(tool.help(for: backends) == """
            OVERVIEW: List every backend, whether it works here and why, and its
            capabilities.

            USAGE: readiness backends [--json]

            OPTIONS:
              --json                  Print JSON instead of text.
              -h, --help              Show help information.

            """)
        #expect(tool.help(for: nil) == """
            OVERVIEW: Wait on sockets with epoll, poll, select, libevent or io_uring,
            chosen at run time.

            USAGE: readiness <subcommand>

            OPTIONS:
              -h, --help              Show help information.

            SUBCOMMANDS:
              conformance (default)   Run the conformance suite on backends and print the
                                      matrix of scenarios by backends.
              backends                List every backend, whether it works here and why,
                                      and its capabilities.
              connect                 Connect once (confirmed by SO_ERROR) and print the
                                      outcome, the time and the state machine's trace.

              See 'readiness help <subcommand>' for detailed help.
            """)
        let conformanceHelp = tool.help(for: conformance)
        #expect(conformanceHelp.contains("""
              --differential <differential>
                                      Random differential scripts to run on all chosen
                                      backends (0: none). (default: 50)
              --seed <seed>           First seed of the differential scripts. (default: 1)
            """))
        #expect(tool.help(for: connect).contains("""
            ARGUMENTS:
              <target>                HOST:PORT, [IPv6]:PORT or unix:PATH
            """))
        for command in [nil] + tool.commands {
            for line in tool.help(for: command).split(separator: "\n") where !line.hasPrefix("USAGE: ") {
                #expect(line.count <= HelpLayout.maximumLineLength, "\(line)")
            }
        }
    }

    @Test("the usage message: the error, the option's help, the usage line, where to read more")
    func usageMessage() {
        let message = tool.usageMessage(for: CommandLineError(command: connect, error: .missingValue(option: "--timeout <timeout>")))
        #expect(message == """
            Error: Missing value for '--timeout <timeout>'
            Help:  --timeout <timeout>  Timeout in milliseconds for the whole connect, every address (0 or more).
            Usage: readiness connect <target> [--backend <backend>] [--timeout <timeout>] [--json]
              See 'readiness connect --help' for more information.
            """)
    }

    @Test("exit statuses")
    func exitStatuses() {
        #expect(readiness.ExitStatus.usage == 64)
        #expect(readiness.ExitStatus.failure == 1)
        #expect(readiness.ExitStatus.success == 0)
        #expect(ToolError.failed == .exit(1))
    }
}
