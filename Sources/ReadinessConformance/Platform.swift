#if canImport(Glibc)
import Glibc
#endif
@_spi(Backend) import Readiness
import CReadinessConformance
import Synchronization

/// Socket and thread plumbing for fixtures and steps. Every failure is a thrown ``SetupError``.
struct SetupError: Error, CustomStringConvertible {
    let description: String
    init(_ what: String, _ code: CInt = errno) { description = "\(what): \(ErrnoTable.name(code))" }
}

enum Net {
    /// Whether ThreadSanitizer's runtime is in the process (it exports `__tsan_init`).
    static let underThreadSanitizer = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "__tsan_init") != nil

    static let streamFlags = CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue) | CInt(SOCK_CLOEXEC.rawValue)

    static func socketPair() throws -> (CInt, CInt) {
        var fds: [CInt] = [-1, -1]
        guard socketpair(AF_UNIX, streamFlags, 0, &fds) == 0 else { throw SetupError("socketpair") }
        return (fds[0], fds[1])
    }

    static func pipe() throws -> (CInt, CInt) {
        guard let fds = Sys.pipe() else { throw SetupError("pipe2") }
        return (fds.read, fds.write)
    }

    static func listener(_ address: SocketAddress, backlog: CInt) throws -> CInt {
        let fd = socket(address.domain, streamFlags, 0)
        guard fd >= 0 else { throw SetupError("socket") }
        var one: CInt = 1
        if address.family != .unix { setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<CInt>.size)) }
        guard address.withSockaddr({ bind(fd, $0, $1) }) == 0, listen(fd, backlog) == 0 else {
            let e = errno
            close(fd)
            throw SetupError("bind/listen \(address)", e)
        }
        return fd
    }

    static func localAddress(_ fd: CInt) throws -> SocketAddress {
        do { return try SocketAddress.local(of: fd) } catch { throw SetupError("getsockname") }
    }

    /// A loopback port that nothing listens on (bound, read, closed).
    static func freePort() throws -> UInt16 {
        let fd = try listener(try SocketAddress("127.0.0.1:0"), backlog: 1)
        defer { close(fd) }
        return try localAddress(fd).port ?? 0
    }

    /// A loopback listener whose accept queue is full, so that a connect to it never completes (its SYN
    /// is dropped): connects until one no longer completes. Each filler connection is handed to
    /// `keep` as it is made (the caller closes them), so that none leaks when this throws.
    static func fullListener(keep: (CInt) -> Void) throws -> (fd: CInt, address: SocketAddress) {
        let fd = try listener(try SocketAddress("127.0.0.1:0"), backlog: 0)
        let address = try localAddress(fd)
        for _ in 0..<16 {
            let client = socket(AF_INET, streamFlags, 0)
            guard client >= 0 else { close(fd); throw SetupError("socket") }
            keep(client)
            _ = address.withSockaddr { Glibc.connect(client, $0, $1) }
            if !waitFor(client, Int16(POLLOUT), milliseconds: fillerWaitMilliseconds) { return (fd, address) }
        }
        close(fd)
        throw SetupError("the accept queue never filled", 0)
    }

    /// How long a filler connection of ``fullListener(keep:)`` may take to complete.
    static let fillerWaitMilliseconds: CInt = 100

    /// Waits up to `milliseconds` for `events` on one descriptor with poll(2).
    static func waitFor(_ fd: CInt, _ events: Int16, milliseconds: CInt) -> Bool {
        var entry = pollfd(fd: fd, events: events, revents: 0)
        return poll(&entry, 1, milliseconds) == 1
    }

    /// A blocking-style connect for fixtures: returns the connected client.
    static func connectNow(_ address: SocketAddress) throws -> CInt {
        let fd = socket(address.domain, streamFlags, 0)
        guard fd >= 0 else { throw SetupError("socket") }
        let status = address.withSockaddr { Glibc.connect(fd, $0, $1) }
        if status != 0 && errno != EINPROGRESS {
            let e = errno
            close(fd)
            throw SetupError("connect \(address)", e)
        }
        guard status == 0 || waitFor(fd, Int16(POLLOUT), milliseconds: 2000) else {
            close(fd)
            throw SetupError("connect \(address) did not finish", ETIMEDOUT)
        }
        return fd
    }

    static func accept(_ listener: CInt, milliseconds: CInt = 2000) throws -> CInt {
        guard waitFor(listener, Int16(POLLIN), milliseconds: milliseconds) else { throw SetupError("accept: nothing", ETIMEDOUT) }
        let fd = Sys.accept(listener)
        guard fd >= 0 else { throw SetupError("accept4") }
        return fd
    }

    static func lingerZero(_ fd: CInt) {
        var option = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &option, socklen_t(MemoryLayout<linger>.size))
    }

    static var uniquePath: String {
        // $TMPDIR when set and short enough for sun_path (108 bytes with the name), else /tmp.
        let dir = getenv("TMPDIR").map { String(cString: $0) }.flatMap { $0.isEmpty || $0.utf8.count > 64 ? nil : $0 } ?? "/tmp"
        return "\(dir)/readiness-\(getpid())-\(counter.add(1, ordering: .relaxed).newValue).sock"
    }
    private static let counter = Atomic<Int>(0)
}

/// A joinable pthread running a closure.
extension Observation {
    /// How the note of a wait that returned late after a worker's action begins (``Runner/inTime``).
    static let lateMark = "returned late: "
    /// That note, if this is one.
    var lateness: String? {
        if case .note(let text) = self, text.hasPrefix(Observation.lateMark) { return text }
        return nil
    }
}

/// A lock ThreadSanitizer sees: a pthread mutex around the state. Synchronization's `Mutex` locks in
/// code the sanitizer does not instrument, so two threads' accesses under it were reported as a race
/// (the run's finish log, touched from the global pool once a graceful shutdown ended the loop).
final class Locked<State>: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var state: State

    init(_ state: State) {
        self.state = state
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` on the state, under the lock.
    func withLock<R, E: Error>(_ body: (inout State) throws(E) -> R) throws(E) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&state)
    }
}

/// When a worker thread acted (monotonic nanoseconds; 0 until then).
final class ActedAt: Sendable {
    private let value = Atomic<Int64>(0)
    func mark() { value.store(MonotonicClock.nowNanoseconds, ordering: .releasing) }
    var at: Int64 { value.load(ordering: .acquiring) }
}

final class Worker: @unchecked Sendable {
    private var thread = pthread_t()
    private let body: () -> Void
    init(_ body: @escaping () -> Void) throws {
        self.body = body
        let box = Unmanaged.passRetained(self)
        let status = pthread_create(&thread, nil, { raw in
            guard let raw else { return nil }
            let worker = Unmanaged<Worker>.fromOpaque(raw).takeRetainedValue()
            // Threads inherit the creator's mask, and a test runner's threads may block signals.
            var unblocked = sigset_t()
            sigemptyset(&unblocked)
            sigaddset(&unblocked, SIGUSR1)
            sigaddset(&unblocked, SIGUSR2)
            pthread_sigmask(SIG_UNBLOCK, &unblocked, nil)
            worker.body()
            return nil
        }, box.toOpaque())
        if status != 0 {
            box.release()
            throw SetupError("pthread_create", status)
        }
    }
    func signal(_ number: CInt) { pthread_kill(thread, number) }
    func join() { pthread_join(thread, nil) }
    /// Leaves the thread to end on its own (it is not joined).
    func detach() { pthread_detach(thread) }
}

/// A process-wide signal action the suite needs for a while, borrowed from the program that runs it:
/// the first ``acquire()`` installs it, the last ``release()`` puts back the action that was there
/// (runs may overlap on several threads). The suite is run inside other programs' processes: it leaves
/// their actions as it found them (libevent's `test_signal_restore`).
final class BorrowedAction: Sendable {
    private let number: CInt
    private let handler: (@convention(c) (CInt) -> Void)?
    /// How many runs hold it, and the action it replaced.
    private let state = Locked<(users: Int, saved: sigaction)>((0, sigaction()))

    /// `handler` nil: ignore the signal (SIG_IGN). No SA_RESTART: a blocked wait returns EINTR.
    init(_ number: CInt, handler: (@convention(c) (CInt) -> Void)?) {
        self.number = number
        self.handler = handler
    }

    func acquire() {
        state.withLock { state in
            if state.users == 0 {
                var action = sigaction()
                if let handler { action.__sigaction_handler.sa_handler = handler } else { action.__sigaction_handler.sa_handler = SIG_IGN }
                sigemptyset(&action.sa_mask)
                action.sa_flags = 0
                sigaction(number, &action, &state.saved)
            }
            state.users += 1
        }
    }

    func release() {
        state.withLock { state in
            guard state.users > 0 else { return }
            state.users -= 1
            if state.users == 0 { sigaction(number, &state.saved, nil) }
        }
    }

    /// SIGPIPE ignored while a run writes to sockets and pipes whose other end is gone (EPIPE, not
    /// the end of the process).
    static let brokenPipe = BorrowedAction(SIGPIPE, handler: nil)
}

/// SIGUSR1 without SA_RESTART, so a blocked wait returns EINTR (borrowed for the step).
enum Interrupts {
    static let delivered = Atomic<Int>(0)
    static let action = BorrowedAction(SIGUSR1) { _ in Interrupts.delivered.add(1, ordering: .relaxed) }
}

/// A socket in a new, empty network namespace: no route goes anywhere from it.
enum IsolatedNetwork {
    /// Creates an IPv4 stream socket inside a fresh network namespace (on a throwaway thread, so the
    /// process stays where it is). Throws when namespaces are not permitted here.
    static func socket() throws -> CInt {
        let result = Locked<(CInt, CInt)>((-1, 0))
        let worker = try Worker {
            guard rd_unshare_network() == 0 else {  // unshare(CLONE_NEWNET), this thread only
                result.withLock { $0 = (-1, errno) }
                return
            }
            let fd = Glibc.socket(AF_INET, Net.streamFlags, 0)
            result.withLock { $0 = (fd, fd < 0 ? errno : 0) }
        }
        worker.join()
        let (fd, code) = result.withLock { $0 }
        guard fd >= 0 else { throw SetupError("unshare(CLONE_NEWNET)/socket", code) }
        return fd
    }
}

/// Real system calls, except that `socket` comes from a private network namespace.
struct IsolatedSyscalls: ConnectSyscalls {
    let base = SystemConnectSyscalls()
    let socketFD: CInt
    func socket(domain: CInt) -> (fd: CInt, errno: CInt) { (socketFD, 0) }
    func bind(_ fd: CInt, to address: SocketAddress) -> CInt { base.bind(fd, to: address) }
    func connect(_ fd: CInt, to address: SocketAddress) -> CInt { base.connect(fd, to: address) }
    func socketError(_ fd: CInt) -> ConnectStateMachine.SocketErrorResult { base.socketError(fd) }
    func peerName(_ fd: CInt) -> (errno: CInt, address: SocketAddress?) { base.peerName(fd) }
    func localName(_ fd: CInt) -> (errno: CInt, address: SocketAddress?) { base.localName(fd) }
    func close(_ fd: CInt) { base.close(fd) }
}

/// A SIGUSR2 handler that wakes a poller, as a program's SIGINT/SIGTERM handler would: what it may
/// touch from a signal handler is only the waker.
enum SignalWake {
    nonisolated(unsafe) private static var target: Waker?
    private static let lock = Locked(())
    private static let action = BorrowedAction(SIGUSR2) { _ in try? SignalWake.target?.wake() }

    static func install(_ waker: Waker) {
        lock.withLock { _ in
            target = waker
            action.acquire()
        }
    }

    /// After the signalled thread was joined (no delivery is still on its way): the program's own
    /// SIGUSR2 action is back.
    static func uninstall() {
        lock.withLock { _ in
            action.release()
            target = nil
        }
    }
}
