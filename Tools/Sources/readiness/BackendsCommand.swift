import ArgumentParser
import Readiness

struct BackendsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backends",
        abstract: "List every backend, whether it works here and why, and its capabilities.")

    @Flag(help: "Print JSON instead of text.") var json = false

    struct Row: Encodable {
        let name: String
        let available: Bool
        let chosen: Bool
        let reason: String
        let capabilities: Capabilities?
        let method: String?
    }

    func run() throws {
        let report = Backend.selection()
        let rows = report.entries.map { entry -> Row in
            let poller = try? entry.backend.makePoller()
            defer { try? poller?.close() }
            let (chosen, reason): (Bool, String) = switch entry.verdict {
            case .chosen(let why): (true, why)
            case .skipped(let why): (false, why)
            }
            return Row(name: entry.backend.name, available: poller != nil, chosen: chosen, reason: reason,
                       capabilities: poller?.capabilities, method: poller?.capabilities.mechanism)
        }
        if json {
            try printJSON(rows)
            if report.failure != nil { throw ExitCode(1) }
            return
        }
        for row in rows {
            let mark = row.chosen ? "*" : (row.available ? " " : "-")
            print("\(mark) \(row.name)\(row.method.map { " (kernel method: \($0))" } ?? "")")
            if let caps = row.capabilities {
                print("    edge-triggered: \(caps.edgeTriggered), one-shot: \(caps.oneShot.rawValue), timeout resolution: \(caps.timeoutResolution), largest fd: \(caps.maxDescriptor), read-closed: \(caps.reportsReadClosed), hang-up/error: \(caps.reportsHangupAndError)")
            }
            print("    \(row.chosen ? "chosen" : "skipped"): \(row.reason)")
        }
        if let failure = report.failure {
            printError("error: \(failure)")
            throw ExitCode(1)
        }
    }
}
