import CReadinessBench
import Glibc
import MallocInterposerSwift

/// Heap allocations, counted by ordo-one/malloc-interposer (every thread's malloc, calloc, realloc,
/// posix_memalign... while hooked).
///
/// The interposer only sees allocations when its library comes before libc in symbol resolution:
/// linking it is usually enough, and otherwise ``ensureInterposed(arguments:)`` re-executes the
/// benchmark with `LD_PRELOAD` naming it.
enum Allocations {
    nonisolated(unsafe) static var available = false

    /// Checks that counting works (a malloc between hook and unhook is seen).
    static func selfTest() -> Bool {
        MallocInterposerSwift.initialize()
        MallocInterposerSwift.reset()
        MallocInterposerSwift.hook()
        rb_malloc_probe()
        MallocInterposerSwift.unhook()
        let stats = MallocInterposerSwift.getStatistics()
        MallocInterposerSwift.reset()
        return stats.mallocCount >= 1
    }

    /// Makes ``available`` true, re-executing under LD_PRELOAD if linking alone did not interpose.
    static func ensureInterposed(arguments: [String]) {
        if selfTest() {
            available = true
            return
        }
        let marker = "READINESS_BENCH_PRELOADED"
        guard getenv(marker) == nil else {
            print("note: malloc-interposer is not active even under LD_PRELOAD; allocations are not counted")
            return
        }
        var path = [CChar](repeating: 0, count: 4096)
        let length = readlink("/proc/self/exe", &path, path.count - 1)
        guard length > 0 else { return }
        let exe = String(decoding: path[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let directory = exe.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        let library = directory + "/libMallocInterposerSwift.so"
        guard access(library, R_OK) == 0 else {
            print("note: \(library) not found; allocations are not counted")
            return
        }
        setenv("LD_PRELOAD", library, 1)
        setenv(marker, "1", 1)
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        argv.append(nil)
        execv(exe, &argv)
        print("note: re-executing under LD_PRELOAD failed (errno \(errno)); allocations are not counted")
    }

    /// Heap allocations made (by any thread) while `body` runs.
    static func count(_ body: () throws -> Void) rethrows -> Int {
        MallocInterposerSwift.reset()
        MallocInterposerSwift.hook()
        defer { MallocInterposerSwift.unhook() }
        try body()
        MallocInterposerSwift.unhook()
        return MallocInterposerSwift.getStatistics().mallocCount
    }
}
