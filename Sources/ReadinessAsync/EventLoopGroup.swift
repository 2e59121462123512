#if canImport(Glibc)
import Glibc
#endif
import CReadinessCore
import ReadinessCore
import ReadinessNet
import Synchronization

/// N event loops (one per core by default), each its own thread and poller, and a simple way to pick
/// one: ``next()`` goes round the loops. With ``listen(on:options:)`` every loop gets its own
/// listener on the same port (`SO_REUSEPORT`, with more than one loop) and the kernel spreads
/// connections over them.
public final class EventLoopGroup: Sendable {
    /// The loops, each with its own thread and poller.
    public let loops: [EventLoop]
    private let counter = Atomic<Int>(0)

    /// The number of cores this process may use, as SwiftNIO's `System.coreCount` counts them: the
    /// CPUs in the thread's affinity mask (`taskset`, a cpuset), at most the CPU quota of the cgroup
    /// mounted at `/sys/fs/cgroup` rounded up (a container's `--cpus`, read at its cgroup namespace's
    /// root: cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`; a quota set on a
    /// service's own cgroup below the root, systemd's `CPUQuota=`, is not read); the online CPUs when
    /// the mask cannot be read. At least 1.
    public static var coreCount: Int {
        let affinity = Int(rd_affinity_cpu_count())
        var count = affinity > 0 ? affinity : Int(sysconf(CInt(_SC_NPROCESSORS_ONLN)))
        if let quota = cgroupCPUQuota() { count = min(count, quota) }
        return max(1, count)
    }

    /// The cgroup's CPU quota in whole CPUs (rounded up), if it has one: v2 first, then v1.
    static func cgroupCPUQuota() -> Int? {
        if let text = smallFile("/sys/fs/cgroup/cpu.max") { return cpuQuota(cgroup2: text) }
        if let quota = smallFile("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
           let period = smallFile("/sys/fs/cgroup/cpu/cpu.cfs_period_us") {
            return cpuQuota(cgroup1Quota: quota, period: period)
        }
        return nil
    }

    /// cgroup v2's `cpu.max` ("QUOTA PERIOD", QUOTA `max` for none) in whole CPUs, rounded up.
    static func cpuQuota(cgroup2 text: String) -> Int? {
        let fields = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard fields.count >= 2 else { return nil }
        return cpuQuota(quota: Int(fields[0]), period: Int(fields[1]))
    }

    /// cgroup v1's `cpu.cfs_quota_us` (-1 for none) and `cpu.cfs_period_us` in whole CPUs, rounded up.
    static func cpuQuota(cgroup1Quota quota: String, period: String) -> Int? {
        func number(_ text: String) -> Int? { Int(text.split(whereSeparator: { $0 == "\n" || $0 == " " }).first ?? "") }
        return cpuQuota(quota: number(quota), period: number(period))
    }

    private static func cpuQuota(quota: Int?, period: Int?) -> Int? {
        guard let quota, let period, quota > 0, period > 0 else { return nil }
        return quota / period + (quota % period == 0 ? 0 : 1)
    }

    /// The first bytes of a small file (a cgroup setting), or nil.
    private static func smallFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        var bytes = [UInt8](repeating: 0, count: 128)
        let count = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return nil }
        return String(decoding: bytes[..<count], as: UTF8.self)
    }

    /// The default number of loops: one per core, at most ``maximumLoops``.
    public static var defaultCount: Int { min(coreCount, maximumLoops) }

    /// The most loops a group starts (each is a thread with a poller).
    public static let maximumLoops = 1024

    /// Starts `count` loops (1 to ``maximumLoops``; another count fails with
    /// `PollerError.system(operation:errno: EINVAL)`), each creating its poller with `makePoller` on its
    /// own thread; if one cannot start, those already started are shut down and the error is thrown.
    public init(count: Int = EventLoopGroup.defaultCount, name: String = "readiness-loop",
                makePoller: @escaping @Sendable () throws(PollerError) -> any Poller) throws(PollerError) {
        guard (1...Self.maximumLoops).contains(count) else {
            throw .system(operation: "EventLoopGroup(count: \(count)): 1 to \(Self.maximumLoops) loops", errno: EINVAL)
        }
        var loops: [EventLoop] = []
        for index in 0..<count {
            do {
                loops.append(try EventLoop(name: "\(name)-\(index)", makePoller: makePoller))
            } catch {
                for loop in loops { loop.syncShutdown() }
                throw error
            }
        }
        self.loops = loops
    }

    /// The next loop, round robin.
    public func next() -> EventLoop {
        loops[Self.index(ofTurn: counter.wrappingAdd(1, ordering: .relaxed).oldValue, count: loops.count)]
    }

    /// The loop index of the counter's turn: the counter wraps after `Int.max` calls, and taken as
    /// unsigned it never indexes below zero.
    static func index(ofTurn turn: Int, count: Int) -> Int {
        Int(UInt(bitPattern: turn) % UInt(count))
    }

    /// The loop whose thread this is, if any.
    public var current: EventLoop? { loops.first { $0.inLoop } }

    /// One listener per loop on the same address (SO_REUSEPORT; a port-0 address takes the first
    /// listener's port for the others). A Unix-domain address cannot be shared that way (SO_REUSEPORT
    /// is for IP; a second bind of the path fails): with more than one loop it is refused
    /// (``LoopError/invalidArgument(_:)``) before anything is bound; listen on one loop instead.
    ///
    /// A port something else is bound to fails with ``/ReadinessNet/SocketError/Kind/addressInUse``, as one
    /// loop's listen does, even when that is another group's (or process's) SO_REUSEPORT listeners,
    /// which the kernel would otherwise let this group join and split the connections with. Set
    /// `options.reusePort` to join such a group on purpose. A one-loop group does not set SO_REUSEPORT.
    public func listen(on address: SocketAddress, options: Listener.Options = Listener.Options()) async throws(LoopError) -> [AsyncListener] {
        if address.family == .unix, loops.count > 1 {
            throw .invalidArgument("listen on \(address): a Unix-domain address cannot be shared by the group's \(loops.count) loops (SO_REUSEPORT is for IP): listen on one loop")
        }
        // The options' own check first, as one loop's listen makes it: the same misuse, the same error.
        do throws(SocketError) { try Listener.checkOptions(options, for: address) } catch { throw .socket(error) }
        var options = options
        if loops.count > 1, !options.reusePort {
            do throws(SocketError) { try Listener.checkUnshared(address, options: options) } catch { throw .socket(error) }
            options.reusePort = true
        }
        var listeners: [AsyncListener] = []
        var target = address
        for loop in loops {
            do {
                let listener = try await loop.listen(on: target, options: options)
                listeners.append(listener)
                target = listener.address
            } catch {
                for listener in listeners { await listener.close() }
                throw error
            }
        }
        return listeners
    }

    /// Shuts every loop down (``EventLoop/shutdown()``).
    public func shutdown() async {
        // All at once: a loop shut down while another still runs its tasks' last jobs would fail
        // their work on it for longer than it has to.
        await withTaskGroup(of: Void.self) { group in
            for loop in loops {
                group.addTask { await loop.shutdown() }
            }
        }
    }

    /// Shuts every loop down, blocking the calling thread until all have finished. On a loop's thread
    /// (any loop's) it only asks each to stop and returns at once, as ``EventLoop/syncShutdown()``
    /// does there: use `await shutdown()` on a loop.
    public func syncShutdown() {
        // Every loop asked first, then each waited for: they stop at once, not one after another
        // (as `shutdown()` does; review).
        for loop in loops { loop.requestShutdown() }
        for loop in loops { loop.syncShutdown() }
    }
}
