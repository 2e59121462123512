import CReadinessBench
import Glibc
import Readiness

/// The machine and software a run came from, read at run time.
struct Machine {
    var cpus: Int
    var cpuModel: String
    var kernel: String
    var swift: String
    var libevent: String
    var libeventMethod: String
    var nio: String
    var date: String
    var loadAverage: String
    var fdLimit: String

    var summary: String {
        "\(cpus) × \(cpuModel), Linux \(kernel), \(swift), libevent \(libevent), SwiftNIO \(nio)"
    }

    static func describe(repositoryRoot: String) -> Machine {
        var name = utsname()
        uname(&name)
        let kernel = withUnsafeBytes(of: name.release) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        let cpuModel = readFile("/proc/cpuinfo")?
            .split(separator: "\n").first { $0.hasPrefix("model name") }
            .map { String($0.split(separator: ":", maxSplits: 1).last ?? "").trimmingSpaces } ?? "unknown"
        let swift = run("swift --version 2>/dev/null")?.split(separator: "\n").first.map(String.init)?.trimmingSpaces
            ?? "Swift (version unknown)"
        let nio = readFile(repositoryRoot + "/Tests/Benchmarks/Package.resolved").flatMap { resolvedVersion($0, of: "swift-nio") } ?? "unknown"
        var limit = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        return Machine(
            cpus: Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))),
            cpuModel: cpuModel,
            kernel: kernel,
            swift: swift,
            libevent: String(cString: rb_libevent_version()),
            libeventMethod: Contenders.libeventDefaultMethod,
            nio: nio,
            date: run("date -u '+%Y-%m-%d %H:%M UTC'")?.trimmingSpaces ?? "unknown",
            loadAverage: loadAverage(),
            fdLimit: String(limit.rlim_cur))
    }

    static func loadAverage() -> String {
        readFile("/proc/loadavg").map { $0.split(separator: " ").prefix(3).joined(separator: " ") } ?? "unknown"
    }

    static func readFile(_ path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&chunk, 1, chunk.count, file)
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func run(_ command: String) -> String? {
        guard let pipe = popen(command, "r") else { return nil }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&chunk, 1, chunk.count, pipe)
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        pclose(pipe)
        let text = String(decoding: bytes, as: UTF8.self)
        return text.isEmpty ? nil : text
    }

    /// The "version" of a pin in a Package.resolved file.
    static func resolvedVersion(_ json: String, of identity: String) -> String? {
        guard let pin = json.firstRange(of: "\"identity\" : \"\(identity)\"") else { return nil }
        let rest = json[pin.upperBound...]
        guard let key = rest.firstRange(of: "\"version\" : \"") else { return nil }
        let value = rest[key.upperBound...]
        guard let end = value.firstIndex(of: "\"") else { return nil }
        return String(value[..<end])
    }
}

extension StringProtocol {
    var trimmingSpaces: String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" || f == "\n" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\n" { s.removeLast() }
        return String(s)
    }
}
