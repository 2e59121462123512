#if canImport(Glibc)
import Glibc
#endif
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

    /// The number of online cores.
    public static var coreCount: Int { max(1, Int(sysconf(CInt(_SC_NPROCESSORS_ONLN)))) }

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
        for loop in loops { loop.syncShutdown() }
    }
}
