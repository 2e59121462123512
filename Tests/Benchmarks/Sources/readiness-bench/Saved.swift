import Glibc

/// The results of the last run, saved beside the build (Tests/Benchmarks/.build/last-run.tsv) so that
/// `--render-only` can rewrite Docs/Benchmarks.md (for instance after Analysis.md changed) from the
/// same measurements, without measuring again.
enum Saved {
    static func clean(_ s: String) -> String { String(s.map { $0 == "\t" || $0 == "\n" ? " " : $0 }) }

    static func encode(results: [Result], plan: Plan, machine: Machine, seconds: Double, loadAtEnd: String) -> String {
        var lines = [
            "mode\t\(plan.mode.rawValue)", "passes\t\(plan.passes)", "connectPasses\t\(plan.connectPasses)",
            "seconds\t\(seconds)", "loadAtEnd\t\(loadAtEnd)", "allocations\t\(Allocations.available)",
            "cpus\t\(machine.cpus)", "cpuModel\t\(clean(machine.cpuModel))", "kernel\t\(clean(machine.kernel))",
            "swift\t\(clean(machine.swift))", "libevent\t\(machine.libevent)", "libeventMethod\t\(machine.libeventMethod)",
            "nio\t\(machine.nio)", "date\t\(machine.date)", "loadAverage\t\(machine.loadAverage)", "fdLimit\t\(machine.fdLimit)",
        ]
        for r in results {
            let fields: [String] = [
                "result", String(r.scenario), clean(r.scenarioTitle), clean(r.parameters), String(r.x),
                clean(r.contender.name), r.contender.family.rawValue, r.contender.mechanism,
                r.values.map { String($0) }.joined(separator: ","), String(r.waits), String(r.units), String(r.failures),
                r.allocationsPerUnit.map { String($0) } ?? "", r.allocationsPerWait.map { String($0) } ?? "",
                r.skipped.map(clean) ?? "", String(r.cpuNanoseconds), String(r.wallNanoseconds), String(r.unaccepted),
            ]
            lines.append(fields.joined(separator: "\t"))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    struct Loaded {
        var results: [Result] = []
        var plan: Plan
        var machine: Machine
        var seconds: Double = 0
        var loadAtEnd = ""
    }

    static func decode(_ text: String) throws -> Loaded {
        var keys: [String: String] = [:]
        var results: [Result] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            let f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            if f.first == "result" {
                guard f.count >= 17, let scenario = Int(f[1]), let x = Int(f[4]), let family = Family(rawValue: f[6]) else {
                    throw BenchError("malformed result line: \(line)")
                }
                var r = Result(scenario: scenario, scenarioTitle: f[2], parameters: f[3], x: x,
                               contender: Contender(name: f[5], family: family, mechanism: f[7]))
                r.values = f[8].split(separator: ",").compactMap { Double($0) }
                r.waits = Int64(f[9]) ?? 0
                r.units = Int64(f[10]) ?? 0
                r.failures = Int64(f[11]) ?? 0
                r.allocationsPerUnit = Double(f[12])
                r.allocationsPerWait = Double(f[13])
                r.skipped = f[14].isEmpty ? nil : f[14]
                r.cpuNanoseconds = Int64(f[15]) ?? 0
                r.wallNanoseconds = Int64(f[16]) ?? 0
                r.unaccepted = f.count > 17 ? Int64(f[17]) ?? 0 : 0
                results.append(r)
            } else if f.count >= 2 {
                keys[f[0]] = f[1]
            }
        }
        guard let mode = keys["mode"].flatMap(RunMode.init(rawValue:)) else { throw BenchError("no mode in saved results") }
        var plan = Plan.make(mode)
        plan.passes = Int(keys["passes"] ?? "") ?? plan.passes
        plan.connectPasses = Int(keys["connectPasses"] ?? "") ?? plan.connectPasses
        Allocations.available = keys["allocations"] == "true"
        let machine = Machine(
            cpus: Int(keys["cpus"] ?? "") ?? 0, cpuModel: keys["cpuModel"] ?? "", kernel: keys["kernel"] ?? "",
            swift: keys["swift"] ?? "", libevent: keys["libevent"] ?? "", libeventMethod: keys["libeventMethod"] ?? "",
            nio: keys["nio"] ?? "", date: keys["date"] ?? "", loadAverage: keys["loadAverage"] ?? "",
            fdLimit: keys["fdLimit"] ?? "")
        return Loaded(results: results, plan: plan, machine: machine, seconds: Double(keys["seconds"] ?? "") ?? 0,
                      loadAtEnd: keys["loadAtEnd"] ?? "")
    }
}
