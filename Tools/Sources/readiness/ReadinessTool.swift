import ArgumentParser

/// The `readiness` command-line tool. Each subcommand lives in its own file.
@main
struct ReadinessTool: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "readiness",
        abstract: "Wait on sockets with epoll, poll, select or libevent, chosen at run time.",
        subcommands: [ConformanceCommand.self, BackendsCommand.self, ConnectCommand.self],
        defaultSubcommand: ConformanceCommand.self)
}
