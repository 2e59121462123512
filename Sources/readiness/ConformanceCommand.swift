import Foundation
import Readiness
import ReadinessConformance

struct ConformanceCommand: Command {
    private enum Name {
        static let backend = "backend"
        static let only = "only"
        static let differential = "differential"
        static let differentialAsync = "differential-async"
        static let seed = "seed"
        static let differentialOnly = "differential-only"
        static let showScript = "show-script"
        static let showAsyncScript = "show-async-script"
        static let list = "list"
        static let json = "json"
        static let markdown = "markdown"
    }

    /// Random differential scripts run when --differential is not given.
    static let defaultDifferential = 50
    /// Random async differential scripts run when --differential-async is not given.
    static let defaultDifferentialAsync = 50
    /// The first seed when --seed is not given.
    static let defaultSeed: UInt64 = 1

    private enum Option {
        static let differential = OptionSpec.value(
            Name.differential, help: "Random differential scripts to run on all chosen backends (0: none).",
            default: String(defaultDifferential))
        static let seed = OptionSpec.value(
            Name.seed, help: "First seed of the differential scripts.", default: String(defaultSeed))
        static let differentialAsync = OptionSpec.value(
            Name.differentialAsync, help: "Random async differential scripts (interleaved async operations) to run on all chosen backends (0: none).",
            default: String(defaultDifferentialAsync))
        static let showAsyncScript = OptionSpec.value(
            Name.showAsyncScript, help: "Run the async differential script of this seed on the first chosen backend, print each step's outcome, and exit.")
        static let showScript = OptionSpec.value(
            Name.showScript, help: "Print the differential script of this seed and exit.")
    }

    static let spec = CommandSpec(
        name: "conformance",
        abstract: "Run the conformance suite on backends and print the matrix of scenarios by backends.",
        options: [
            .value(Name.backend, help: "A backend to run (repeatable; default: every available one).", repeatable: true),
            .value(Name.only, help: "Only scenarios whose id starts with this prefix."),
            Option.differential,
            Option.seed,
            Option.differentialAsync,
            .flag(Name.differentialOnly, help: "Run only the differential scripts, no scenario."),
            Option.showScript,
            Option.showAsyncScript,
            .flag(Name.list, help: "Only list the scenarios (Markdown), without running them."),
            .flag(Name.json, help: "Print JSON."),
            .flag(Name.markdown, help: "Print a Markdown table."),
        ])

    let backendNames: [String]
    let only: String?
    let differential: Int
    let differentialAsync: Int
    let seed: UInt64
    let differentialOnly: Bool
    let showScript: UInt64?
    let showAsyncScript: UInt64?
    let list: Bool
    let json: Bool
    let markdown: Bool

    init(_ arguments: ParsedArguments) throws(UsageError) {
        backendNames = arguments.values(Name.backend)
        only = arguments.value(Name.only)
        differential = try arguments.integer(Option.differential) ?? Self.defaultDifferential
        differentialAsync = try arguments.integer(Option.differentialAsync) ?? Self.defaultDifferentialAsync
        seed = try arguments.integer(Option.seed) ?? Self.defaultSeed
        differentialOnly = arguments.flag(Name.differentialOnly)
        showScript = try arguments.integer(Option.showScript)
        showAsyncScript = try arguments.integer(Option.showAsyncScript)
        // A count of scripts is at least 0: a negative one is a mistake, not "none" (it ran nothing and
        // reported success).
        if differential < 0 { throw .invalidValue(String(differential), option: Option.differential.name) }
        if differentialAsync < 0 { throw .invalidValue(String(differentialAsync), option: Option.differentialAsync.name) }
        list = arguments.flag(Name.list)
        json = arguments.flag(Name.json)
        markdown = arguments.flag(Name.markdown)
        // One format: the pair printed JSON and ignored --markdown without a word.
        if json && markdown { throw .invalid("--json and --markdown cannot be used together") }
        // Formats an output does not have are refused, not ignored without a word.
        if list && json { throw .invalid("--list prints Markdown: --json cannot be used with it") }
        if list && differentialOnly { throw .invalid("--list lists the scenarios: --differential-only cannot be used with it") }
        if list && showAsyncScript != nil { throw .invalid("--list lists the scenarios: --show-async-script cannot be used with it") }
        if showScript != nil && (list || showAsyncScript != nil) {
            throw .invalid("--show-script prints one script: --list and --show-async-script cannot be used with it")
        }
        if (showScript != nil || showAsyncScript != nil) && (json || markdown) {
            throw .invalid("--show-script and --show-async-script print steps: --json and --markdown cannot be used with them")
        }
        // Nothing to compare with: the differential scripts need two backends or more.
        if differentialOnly && Set(backendNames.map { $0.lowercased() }).count == 1 {
            throw .invalid("--differential-only compares backends: name two or more with --backend, or none for every available one")
        }
    }

    /// Steps per differential script.
    static let scriptLength = 30
    /// Random steps per async differential script (between its prelude and its shutdown).
    static let asyncScriptLength = 24

    struct Cell: Encodable {
        let outcome: String
        let detail: String?
        let milliseconds: Double
    }
    struct Row: Encodable {
        /// "poller" (a ``Scenario``) or "async" (an ``AsyncScenario``).
        let layer: String
        let scenario: String
        let checks: String
        let results: [String: Cell]
    }
    struct Totals: Encodable {
        let passed: Int
        let failed: Int
        let skipped: Int
        let seconds: Double

        static let zero = Totals(passed: 0, failed: 0, skipped: 0, seconds: 0)
    }
    struct Output: Encodable {
        let backends: [String]
        let rows: [Row]
        let totals: [String: Totals]
        let asyncTotals: [String: Totals]
        let differential: [String]
        let differentialScripts: Int
        let differentialAsync: [String]
        let differentialAsyncScripts: Int
    }

    enum Layer {
        static let poller = "poller"
        static let async = "async"
    }

    func run() throws(ToolError) {
        if let showScript {
            for (index, step) in Differential.script(seed: showScript, length: Self.scriptLength).enumerated() { print("\(index + 1). \(step)") }
            return
        }
        let named = try orFail { () throws(SelectionError) in try backendNames.map { name throws(SelectionError) in try Backend.named(name) } }
        // A backend named twice runs once (the matrix has one column per backend).
        let chosen = backendNames.isEmpty ? Backend.available : named.enumerated().filter { index, backend in
            !named[..<index].contains { $0.name == backend.name }
        }.map(\.element)
        // A backend named that cannot run here (not built, refused by the kernel) is said at once, as
        // `connect --backend` says it: its matrix would be all failures, and each differential script
        // would run the others only to find it missing.
        for backend in chosen where !backendNames.isEmpty {
            if let problem = backend.probe() { throw .failure("backend \(backend.name) is unavailable here: \(problem)") }
        }
        if let showAsyncScript, let backend = chosen.first {
            let steps = AsyncDifferential.script(seed: showAsyncScript, length: Self.asyncScriptLength)
            let result = Self.blocking { () async -> ScenarioResult in
                await AsyncConformance.record(steps, backend: backend.name) { () throws(PollerError) -> any Poller in try backend.makePoller() }
            }
            for line in result.trace { print("\(line.index). \(line.step): \(line.observed)") }
            if case .failed(let why) = result.outcome {
                print("FAIL on \(backend.name): \(why)")
                throw .failed   // a failing script is a failure (exit status 1), as in a full run
            }
            return
        }
        let scenarios = differentialOnly ? [] : Conformance.scenarios.filter { scenario in only.map(scenario.id.hasPrefix) ?? true }
        let asyncScenarios = differentialOnly ? [] : AsyncConformance.scenarios.filter { scenario in only.map(scenario.id.hasPrefix) ?? true }
        if let only, scenarios.isEmpty, asyncScenarios.isEmpty, !differentialOnly {
            throw .usage(.invalid("no scenario id starts with \"\(only)\" (see --list)"))
        }
        if list {
            for scenario in scenarios {
                let needs = scenario.requirements.map(\.reason).joined(separator: "; ")
                print("| `\(scenario.id)` | \(scenario.checks) | \(needs.isEmpty ? "" : needs) |")
            }
            for scenario in asyncScenarios {
                let needs = scenario.requirements.map(\.reason).joined(separator: "; ")
                print("| `\(scenario.id)` | \(scenario.checks) | \(needs.isEmpty ? "" : needs) |")
            }
            return
        }
        var reports: [BackendReport] = []
        for backend in chosen {
            reports.append(Conformance.run(backend: backend.name, scenarios: scenarios) { try backend.makePoller() })
        }
        let asyncReports = Self.blocking { () async -> [BackendReport] in
            var reports: [BackendReport] = []
            for backend in chosen {
                reports.append(await AsyncConformance.run(backend: backend.name, scenarios: asyncScenarios) { () throws(PollerError) -> any Poller in
                    try backend.makePoller()
                })
            }
            return reports
        }
        let contenders = chosen.map { backend in Differential.Contender(name: backend.name) { try backend.makePoller() } }
        var differences: [String] = []
        if contenders.count > 1 {
            for offset in 0..<UInt64(max(0, differential)) {
                if let failure = Differential.check(seed: seed &+ offset, length: Self.scriptLength, contenders: contenders) {
                    differences.append(failure.description)
                }
            }
        }
        let asyncContenders = chosen.map { backend in
            AsyncDifferential.Contender(name: backend.name) { () throws(PollerError) -> any Poller in try backend.makePoller() }
        }
        let asyncScripts = asyncContenders.count > 1 ? max(0, differentialAsync) : 0
        let (seed, length) = (self.seed, Self.asyncScriptLength)
        let asyncDifferences = Self.blocking { () async -> [String] in
            var differences: [String] = []
            for offset in 0..<UInt64(asyncScripts) {
                if let failure = await AsyncDifferential.check(seed: seed &+ offset, length: length, contenders: asyncContenders) {
                    differences.append(failure.description)
                }
            }
            return differences
        }
        let output = Output(
            backends: chosen.map(\.name),
            rows: Self.rows(Layer.poller, scenarios.map { ($0.id, $0.checks) }, reports)
                + Self.rows(Layer.async, asyncScenarios.map { ($0.id, $0.checks) }, asyncReports),
            totals: Self.totals(reports),
            asyncTotals: Self.totals(asyncReports),
            differential: differences,
            differentialScripts: contenders.count > 1 ? max(0, differential) : 0,
            differentialAsync: asyncDifferences,
            differentialAsyncScripts: asyncScripts)

        if json {
            try printJSON(output)
        } else {
            print(markdown ? Self.markdown(output) : Self.text(output))
        }
        let failed = (reports + asyncReports).contains { !$0.failures.isEmpty } || !differences.isEmpty || !asyncDifferences.isEmpty
        if failed { throw .failed }
    }

    static func rows(_ layer: String, _ scenarios: [(id: String, checks: String)], _ reports: [BackendReport]) -> [Row] {
        scenarios.enumerated().map { index, scenario in
            Row(layer: layer, scenario: scenario.id, checks: scenario.checks, results: Dictionary(uniqueKeysWithValues: reports.map { report in
                let result = report.results[index]
                let ms = Double(result.duration.components.attoseconds) / 1e15 + Double(result.duration.components.seconds) * 1000
                switch result.outcome {
                case .passed: return (report.backend, Cell(outcome: "pass", detail: nil, milliseconds: ms))
                case .failed(let diff): return (report.backend, Cell(outcome: "FAIL", detail: diff, milliseconds: ms))
                case .skipped(let why): return (report.backend, Cell(outcome: "skip", detail: why, milliseconds: ms))
                }
            }))
        }
    }

    static func totals(_ reports: [BackendReport]) -> [String: Totals] {
        Dictionary(uniqueKeysWithValues: reports.map { report in
            let (s, atto) = report.duration.components
            return (report.backend, Totals(passed: report.passed, failed: report.failures.count, skipped: report.skipped,
                                           seconds: Double(s) + Double(atto) / 1e18))
        })
    }

    /// Runs async work from the tool's synchronous command and waits for its value.
    static func blocking<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
        let result = ResultBox<T>()
        let done = DispatchSemaphore(value: 0)
        Task {
            result.value = await body()
            done.signal()
        }
        done.wait()
        return result.value!
    }

    /// The layers' matrices in order: the poller scenarios, then the async ones (a layer with no row is left out).
    static func layers(_ o: Output) -> [(name: String, rows: [Row], totals: [String: Totals])] {
        [(Layer.poller, o.totals), (Layer.async, o.asyncTotals)].compactMap { layer, totals in
            let rows = o.rows.filter { $0.layer == layer }
            return rows.isEmpty ? nil : (layer, rows, totals)
        }
    }

    static func markdown(_ o: Output) -> String {
        var lines: [String] = []
        var notes: [String] = []
        for layer in layers(o) {
            if !lines.isEmpty { lines.append("") }
            lines.append("| \(layer.name) scenario | " + o.backends.joined(separator: " | ") + " |")
            lines.append("|---|" + o.backends.map { _ in "---" }.joined(separator: "|") + "|")
            for row in layer.rows {
                let cells = o.backends.map { backend -> String in
                    guard let cell = row.results[backend] else { return "" }
                    if let detail = cell.detail {
                        notes.append("- \(row.scenario) on \(backend): \(cell.outcome): \(detail.replacingOccurrences(of: "\n", with: "; "))")
                    }
                    return cell.outcome
                }
                lines.append("| \(row.scenario) | " + cells.joined(separator: " | ") + " |")
            }
            lines.append("| **totals (pass/fail/skip)** | " + o.backends.map { b in
                let t = layer.totals[b, default: .zero]
                return "\(t.passed)/\(t.failed)/\(t.skipped)"
            }.joined(separator: " | ") + " |")
            lines.append("| **time (s)** | " + o.backends.map { String(format: "%.2f", layer.totals[$0, default: .zero].seconds) }.joined(separator: " | ") + " |")
        }
        lines.append("")
        lines.append("Differential: \(o.differentialScripts) random scripts, \(o.differential.count) differences; "
            + "async: \(o.differentialAsyncScripts) random scripts, \(o.differentialAsync.count) differences.")
        if !notes.isEmpty { lines.append(""); lines.append(contentsOf: notes) }
        for difference in o.differential + o.differentialAsync { lines.append("```\n\(difference)\n```") }
        return lines.joined(separator: "\n")
    }

    static func text(_ o: Output) -> String {
        let width = max(22, (o.rows.map(\.scenario.count).max() ?? 8) + 1)
        let column = max(8, (o.backends.map(\.count).max() ?? 8) + 1)
        func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
        var lines: [String] = []
        var notes: [String] = []
        for layer in layers(o) {
            if !lines.isEmpty { lines.append("") }
            lines.append(pad("\(layer.name) scenario", width) + o.backends.map { pad($0, column) }.joined())
            for row in layer.rows {
                lines.append(pad(row.scenario, width) + o.backends.map { backend -> String in
                    guard let cell = row.results[backend] else { return pad("", column) }
                    if let detail = cell.detail { notes.append("\(cell.outcome) \(row.scenario) on \(backend): \(detail)") }
                    return pad(cell.outcome, column)
                }.joined())
            }
            lines.append(pad("passed/failed/skipped", width) + o.backends.map { b in
                let t = layer.totals[b, default: .zero]
                return pad("\(t.passed)/\(t.failed)/\(t.skipped)", column)
            }.joined())
            lines.append(pad("seconds", width) + o.backends.map { pad(String(format: "%.2f", layer.totals[$0, default: .zero].seconds), column) }.joined())
        }
        lines.append("differential: \(o.differentialScripts) random scripts on all backends, \(o.differential.count) differences")
        lines.append("async differential: \(o.differentialAsyncScripts) random scripts on all backends, \(o.differentialAsync.count) differences")
        lines.append(contentsOf: notes)
        lines.append(contentsOf: o.differential)
        lines.append(contentsOf: o.differentialAsync)
        return lines.joined(separator: "\n")
    }
}

/// The value of a task the tool's main thread waits for (written before the semaphore is signalled,
/// read after it is waited for).
final class ResultBox<T>: @unchecked Sendable {
    var value: T?
}
