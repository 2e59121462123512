import MallocInterposerSwift
import Glibc

/// Shared by readiness-net-bench and readiness-async-bench.
/// Heap allocations counted by malloc-interposer (re-executing under LD_PRELOAD when linking alone
/// does not interpose), as the main benchmark does.
nonisolated(unsafe) public var probeSink: [Int] = []

public enum Allocations {
    nonisolated(unsafe) public static var available = false

    public static func selfTest() -> Bool {
        MallocInterposerSwift.initialize()
        MallocInterposerSwift.reset()
        MallocInterposerSwift.hook()
        // An allocation the optimizer cannot remove: it escapes into a global.
        probeSink = [Int](repeating: CommandLine.arguments.count, count: 64 + CommandLine.arguments.count)
        MallocInterposerSwift.unhook()
        let stats = MallocInterposerSwift.getStatistics()
        MallocInterposerSwift.reset()
        return stats.mallocCount >= 1
    }

    public static func ensureInterposed() {
        if selfTest() { available = true; return }
        // Set once this process re-executed itself with the interposer preloaded.
        let marker = "READINESS_BENCH_PRELOADED"
        guard getenv(marker) == nil else { print("note: allocations are not counted here"); return }
        let directory = executablePath().split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        let library = directory + "/libMallocInterposerSwift.so"
        guard access(library, R_OK) == 0 else { print("note: \(library) not found; allocations are not counted"); return }
        setenv("LD_PRELOAD", library, 1)
        setenv(marker, "1", 1)
        var argv: [UnsafeMutablePointer<CChar>?] = CommandLine.arguments.map { strdup($0) }
        argv.append(nil)
        execv(executablePath(), &argv)
    }

    public static func count(_ body: () throws -> Void) rethrows -> Int {
        MallocInterposerSwift.reset()
        MallocInterposerSwift.hook()
        defer { MallocInterposerSwift.unhook() }
        try body()
        MallocInterposerSwift.unhook()
        return MallocInterposerSwift.getStatistics().mallocCount
    }
}

public func executablePath() -> String {
    var path = [CChar](repeating: 0, count: 4096)
    let length = readlink("/proc/self/exe", &path, path.count - 1)
    return String(decoding: path[0..<max(0, length)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
