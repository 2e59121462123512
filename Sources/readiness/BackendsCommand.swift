import Readiness

struct BackendsCommand: Command {
    private enum Name {
        static let json = "json"
    }

    static let spec = CommandSpec(
        name: "backends",
        abstract: "List every backend, whether it works here and why, and its capabilities.",
        options: [.flag(Name.json, help: "Print JSON instead of text.")])

    let json: Bool

    init(_ arguments: ParsedArguments) throws(UsageError) {
        json = arguments.flag(Name.json)
    }

    struct Row: Encodable {
        let name: String
        let available: Bool
        let chosen: Bool
        let reason: String
        let capabilities: Capabilities?
        let method: String?
    }

    func run() throws(ToolError) {
        let report = Backend.selection()
        let rows = report.entries.map { entry -> Row in
            let poller = try? entry.backend.makePoller()
            defer { try? poller?.close() }
            let (chosen, reason): (Bool, String) = switch entry.verdict {
            case .chosen(let why): (true, why)
            case .skipped(let why): (false, why)
            }
            // A poller can be created yet fail its start-up self-test (io_uring with io_uring_enter refused).
            let available = poller != nil && entry.backend.probe() == nil
            return Row(name: entry.backend.name, available: available, chosen: chosen, reason: reason,
                       capabilities: poller?.capabilities, method: poller?.capabilities.mechanism)
        }
        if json {
            try printJSON(rows)
            if report.failure != nil { throw .failed }
            return
        }
        for row in rows {
            let mark = row.chosen ? "*" : (row.available ? " " : "-")
            print("\(mark) \(row.name)\(row.method.map { " (kernel method: \($0))" } ?? "")")
            if let caps = row.capabilities {
                print("    edge-triggered: \(caps.edgeTriggered), one-shot: \(caps.oneShot.rawValue), timeout resolution: \(caps.timeoutResolution), largest fd: \(caps.maxDescriptor), read-closed: \(caps.reportsReadClosed), hang-up/error: \(caps.reportsHangupAndError), close releases the file: \(caps.closeReleasesFile)")
            }
            print("    \(row.chosen ? "chosen" : "skipped"): \(row.reason)")
        }
        if let failure = report.failure {
            printError("error: \(failure)")
            throw .failed
        }
    }
}
