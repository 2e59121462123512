// The command line of the `readiness` tool: subcommands, options and their help, parsed in house so that
// the root package depends on no other package (a dependent of the Readiness library resolves nothing
// else). This file knows nothing about the commands themselves: each declares a `CommandSpec`.
//
// Syntax:
//   readiness [SUBCOMMAND] [--option value | --option=value | --flag | ARGUMENT]... [-- ARGUMENT...]
//   readiness help [SUBCOMMAND]          readiness [SUBCOMMAND] --help | -h
// Without a subcommand the default one runs. An option's value is the next argument unless that looks
// like an option itself; a negative number (`--timeout -5`) is a value, not an option. A value that
// starts with "-" and is not a number is given as `--option=-value`. After `--` everything is an argument.

/// Exit statuses of the tool.
enum ExitStatus {
    static let success: Int32 = 0
    /// A command ran and failed (EXIT_FAILURE).
    static let failure: Int32 = 1
    /// The command line is wrong: EX_USAGE of sysexits.h.
    static let usage: Int32 = 64
}

/// How help is laid out (the layout swift-argument-parser used, so that the texts stay as they were).
enum HelpLayout {
    /// No line of help is longer than this.
    static let maximumLineLength = 79
    /// Indentation of an option's or subcommand's label.
    static let labelIndent = 2
    /// The column where descriptions start; a longer label gets a line of its own.
    static let descriptionColumn = 26
    /// Spaces at least between a label and its description on the same line.
    static let minimumGap = 2
}

/// The spellings the parser itself reserves.
enum Spelling {
    static let longPrefix = "--"
    static let shortPrefix = "-"
    static let endOfOptions = "--"
    static let valueSeparator: Character = "="
    static let help = "--help"
    static let shortHelp = "-h"
    static let helpCommand = "help"

    static func isHelp(_ argument: String) -> Bool { argument == help || argument == shortHelp }

    /// "-5", "-42": a value, not an option.
    static func isNegativeNumber(_ argument: String) -> Bool {
        let digits = argument.dropFirst(shortPrefix.count)
        return argument.hasPrefix(shortPrefix) && !digits.isEmpty && digits.allSatisfy { $0.isASCII && $0.isNumber }
    }

    /// An argument that is spelled as an option ("--x", "-x"), as opposed to a value or an argument
    /// ("x", "-", "-5").
    static func looksLikeOption(_ argument: String) -> Bool {
        argument.hasPrefix(shortPrefix) && argument != shortPrefix && !isNegativeNumber(argument)
    }
}

/// One option of a command: a flag, or an option that takes a value.
struct OptionSpec: Sendable, Equatable {
    enum Kind: Sendable, Equatable {
        case flag
        /// `placeholder` is shown as `<placeholder>`; a repeatable option keeps every value given.
        case value(placeholder: String, repeatable: Bool)
    }

    /// The long name, without the leading "--".
    let name: String
    let kind: Kind
    let help: String
    /// Shown in the help as "(default: X)".
    let defaultValue: String?

    static func flag(_ name: String, help: String) -> OptionSpec {
        OptionSpec(name: name, kind: .flag, help: help, defaultValue: nil)
    }

    static func value(_ name: String, help: String, default defaultValue: String? = nil,
                      repeatable: Bool = false) -> OptionSpec {
        OptionSpec(name: name, kind: .value(placeholder: name, repeatable: repeatable), help: help,
                   defaultValue: defaultValue)
    }

    var takesValue: Bool { kind != .flag }

    /// "--json", "--backend <backend>".
    var label: String {
        switch kind {
        case .flag: Spelling.longPrefix + name
        case .value(let placeholder, _): "\(Spelling.longPrefix)\(name) <\(placeholder)>"
        }
    }

    /// "[--json]", "[--backend <backend> ...]".
    var usage: String {
        switch kind {
        case .value(_, repeatable: true): "[\(label) ...]"
        default: "[\(label)]"
        }
    }

    var helpWithDefault: String { defaultValue.map { "\(help) (default: \($0))" } ?? help }
}

/// A required positional argument of a command.
struct ArgumentSpec: Sendable, Equatable {
    let name: String
    let help: String
    var label: String { "<\(name)>" }
}

/// What a subcommand accepts and how its help reads.
struct CommandSpec: Sendable, Equatable {
    let name: String
    let abstract: String
    var arguments: [ArgumentSpec] = []
    var options: [OptionSpec] = []

    func option(named name: String) -> OptionSpec? { options.first { $0.name == name } }

    /// The usage line, without "Usage: ".
    func usage(tool: String) -> String {
        ([tool, name] + arguments.map(\.label) + options.map(\.usage)).joined(separator: " ")
    }
}

/// A mistake on the command line: reported with the command's usage, exit status 64.
enum UsageError: Error, Equatable, CustomStringConvertible {
    case unknownOption(String)
    /// The option's label ("--timeout <timeout>").
    case missingValue(option: String)
    case invalidValue(String, option: String)
    /// A flag spelled with a value ("--json=yes").
    case valueForFlag(option: String)
    case unexpectedArgument(String)
    /// The argument's label ("<target>").
    case missingArgument(String)
    /// Values that parse but make no sense together or alone (a command's own check).
    case invalid(String)

    var description: String {
        switch self {
        case .unknownOption(let option): "Unknown option '\(option)'"
        case .missingValue(let option): "Missing value for '\(option)'"
        case .invalidValue(let value, let option): "The value '\(value)' is invalid for '\(option)'"
        case .valueForFlag(let option): "The option '\(option)' takes no value"
        case .unexpectedArgument(let argument): "Unexpected argument '\(argument)'"
        case .missingArgument(let argument): "Missing expected argument '\(argument)'"
        case .invalid(let message): message
        }
    }
}

/// The options, flags and arguments of one command line, by option name.
struct ParsedArguments: Sendable, Equatable {
    private(set) var values: [String: [String]] = [:]
    private(set) var flags: Set<String> = []
    private(set) var arguments: [String] = []

    init(values: [String: [String]] = [:], flags: Set<String> = [], arguments: [String] = []) {
        self.values = values
        self.flags = flags
        self.arguments = arguments
    }

    func flag(_ name: String) -> Bool { flags.contains(name) }

    /// Every value of a repeatable option, in order.
    func values(_ name: String) -> [String] { values[name] ?? [] }

    /// The value of an option given once (given more than once, the last one counts).
    func value(_ name: String) -> String? { values[name]?.last }

    /// The value of an integer option, nil if it is absent.
    func integer<Integer: FixedWidthInteger>(_ option: OptionSpec, as type: Integer.Type = Integer.self)
        throws(UsageError) -> Integer? {
        guard let text = value(option.name) else { return nil }
        guard let number = Integer(text) else { throw .invalidValue(text, option: option.label) }
        return number
    }

    mutating func add(value: String, for option: String) { values[option, default: []].append(value) }
    mutating func add(flag: String) { flags.insert(flag) }
    mutating func add(argument: String) { arguments.append(argument) }
}

extension CommandSpec {
    /// Parses the arguments after the subcommand's name. Help is looked for before (`ToolSpec.parse`).
    func parse(_ commandLine: some Collection<String>) throws(UsageError) -> ParsedArguments {
        var parsed = ParsedArguments()
        var remaining = commandLine[...]
        var optionsEnded = false
        while let argument = remaining.popFirst() {
            if optionsEnded || !Spelling.looksLikeOption(argument) {
                parsed.add(argument: argument)
            } else if argument == Spelling.endOfOptions {
                optionsEnded = true
            } else if argument.hasPrefix(Spelling.longPrefix) {
                let spelled = argument.dropFirst(Spelling.longPrefix.count)
                let name = String(spelled.prefix { $0 != Spelling.valueSeparator })
                let inlineValue = spelled.firstIndex(of: Spelling.valueSeparator).map { String(spelled[spelled.index(after: $0)...]) }
                guard let option = option(named: name) else {
                    throw .unknownOption(Spelling.longPrefix + name)
                }
                guard option.takesValue else {
                    if inlineValue != nil { throw .valueForFlag(option: option.label) }
                    parsed.add(flag: option.name)
                    continue
                }
                if let inlineValue {
                    parsed.add(value: inlineValue, for: option.name)
                } else if let next = remaining.first, !Spelling.looksLikeOption(next) {
                    parsed.add(value: next, for: option.name)
                    remaining = remaining.dropFirst()
                } else {
                    throw .missingValue(option: option.label)
                }
            } else {
                throw .unknownOption(argument)
            }
        }
        if parsed.arguments.count < arguments.count {
            throw .missingArgument(arguments[parsed.arguments.count].label)
        }
        if parsed.arguments.count > arguments.count {
            throw .unexpectedArgument(parsed.arguments[arguments.count])
        }
        return parsed
    }
}

/// What a command line asks for.
enum Invocation: Equatable {
    /// Print help: of a subcommand, or of the tool (nil).
    case help(CommandSpec?)
    case run(CommandSpec, ParsedArguments)
}

/// A usage mistake, with the subcommand whose usage to show.
struct CommandLineError: Error, Equatable {
    let command: CommandSpec
    let error: UsageError
}

/// The tool: its subcommands and the one that runs when none is named.
struct ToolSpec: Sendable {
    let name: String
    let abstract: String
    let commands: [CommandSpec]
    let defaultCommand: CommandSpec

    func command(named name: String) -> CommandSpec? { commands.first { $0.name == name } }

    /// Parses the whole command line (without the program name).
    func parse(_ commandLine: [String]) throws(CommandLineError) -> Invocation {
        guard let first = commandLine.first else { return .run(defaultCommand, ParsedArguments()) }
        if Spelling.isHelp(first) { return .help(nil) }
        if first == Spelling.helpCommand {
            // `help bogus` shows the tool's help, as `help` alone does.
            return .help(commandLine.dropFirst().first.flatMap(command(named:)))
        }
        let command = command(named: first) ?? defaultCommand
        let rest = command.name == first ? commandLine.dropFirst() : commandLine[...]
        let options = rest.prefix { $0 != Spelling.endOfOptions }
        if options.contains(where: Spelling.isHelp) { return .help(command) }
        do {
            return .run(command, try command.parse(rest))
        } catch {
            throw CommandLineError(command: command, error: error)
        }
    }
}

// MARK: - Help and usage text

extension ToolSpec {
    /// The help of a subcommand, or of the tool (nil).
    func help(for command: CommandSpec?) -> String {
        guard let command else { return toolHelp }
        var lines = HelpText.wrap("OVERVIEW: " + command.abstract)
        lines += ["", "USAGE: " + command.usage(tool: name), ""]
        if !command.arguments.isEmpty {
            lines.append("ARGUMENTS:")
            for argument in command.arguments { lines += HelpText.entry(argument.label, argument.help) }
            lines.append("")
        }
        lines.append("OPTIONS:")
        for option in command.options { lines += HelpText.entry(option.label, option.helpWithDefault) }
        lines += HelpText.entry("\(Spelling.shortHelp), \(Spelling.help)", HelpText.helpOption)
        lines.append("")
        return lines.joined(separator: "\n")
    }

    private var toolHelp: String {
        var lines = HelpText.wrap("OVERVIEW: " + abstract)
        lines += ["", "USAGE: \(name) <subcommand>", "", "OPTIONS:"]
        lines += HelpText.entry("\(Spelling.shortHelp), \(Spelling.help)", HelpText.helpOption)
        lines += ["", "SUBCOMMANDS:"]
        for command in commands {
            let label = command == defaultCommand ? "\(command.name) (default)" : command.name
            lines += HelpText.entry(label, command.abstract)
        }
        lines += ["", "  See '\(name) \(Spelling.helpCommand) <subcommand>' for detailed help."]
        return lines.joined(separator: "\n")
    }

    /// What is printed on standard error for a usage mistake.
    func usageMessage(for failure: CommandLineError) -> String {
        var lines = ["Error: \(failure.error)"]
        let label: String? = switch failure.error {
        case .missingValue(let option), .invalidValue(_, let option), .valueForFlag(let option): option
        case .missingArgument(let argument): argument
        default: nil
        }
        if let label, let help = helpOf(label: label, in: failure.command) {
            lines.append("Help:  \(label)  \(help)")
        }
        lines.append("Usage: " + failure.command.usage(tool: name))
        lines.append("  See '\(name) \(failure.command.name) \(Spelling.help)' for more information.")
        return lines.joined(separator: "\n")
    }

    private func helpOf(label: String, in command: CommandSpec) -> String? {
        command.options.first { $0.label == label }?.help ?? command.arguments.first { $0.label == label }?.help
    }
}

/// Word wrapping for help text.
enum HelpText {
    static let helpOption = "Show help information."

    /// The words of `text` on lines of at most `width` characters (a longer word has a line of its own).
    static func wrap(_ text: String, width: Int = HelpLayout.maximumLineLength) -> [String] {
        var lines: [String] = []
        var line = ""
        for word in text.split(separator: " ") {
            if line.isEmpty {
                line = String(word)
            } else if line.count + 1 + word.count <= width {
                line += " " + word
            } else {
                lines.append(line)
                line = String(word)
            }
        }
        lines.append(line)
        return lines
    }

    /// "  label                   description...", the description wrapped in its column; a label too
    /// long for the column gets a line of its own.
    static func entry(_ label: String, _ description: String) -> [String] {
        let column = HelpLayout.descriptionColumn
        let labelLine = String(repeating: " ", count: HelpLayout.labelIndent) + label
        let padding = String(repeating: " ", count: column)
        let described = wrap(description, width: HelpLayout.maximumLineLength - column).map { padding + $0 }
        guard labelLine.count + HelpLayout.minimumGap <= column, let first = described.first else {
            return [labelLine] + described
        }
        return [labelLine + first.dropFirst(labelLine.count)] + described.dropFirst()
    }
}
