#if canImport(Glibc)
import Glibc
import CReadinessConformance
#endif
@_spi(Backend) import Readiness
import Synchronization

/// One step as run: what the script expected and what the backend observed.
public struct TraceLine: Sendable, Hashable, CustomStringConvertible {
    public let index: Int
    public let step: String
    public let expected: Observation
    public let observed: Observation
    public var description: String { "\(index). \(step): \(observed)" }
}

/// The result of one scenario on one backend.
public struct ScenarioResult: Sendable {
    public enum Outcome: Sendable, Hashable {
        case passed
        /// A readable diff naming the first steps that differ.
        case failed(String)
        /// The backend lacks a capability, or the machine a facility; the reason says which.
        case skipped(String)
    }
    public let scenario: String
    public let backend: String
    public let outcome: Outcome
    public let trace: [TraceLine]
    public let duration: Duration

    public var passed: Bool { outcome == .passed }
    public var isSkipped: Bool { if case .skipped = outcome { true } else { false } }
}

/// A step that cannot run on this machine (no network namespaces, no IPv6): the scenario is skipped.
struct Unsupported: Error { let reason: String }

/// Runs scripts against a poller and records normalized observations.
final class ScenarioRun {
    private var poller: (any Poller)?
    private let makePoller: Conformance.Factory
    private var endpoints: [String: CInt] = [:]
    private var listeners: [String: (fd: CInt, address: SocketAddress)] = [:]
    private var extras: [CInt] = []
    /// Numbers of endpoints closed by a step: misuse steps still name them.
    private var closedNumbers: [String: CInt] = [:]
    private var paths: [String] = []
    /// Child processes of `childProcess` fixtures, with a pidfd of the run's own (the scenario may
    /// close its endpoint): ended and reaped through it at the tear-down.
    private var children: [(pidfd: CInt, pid: CInt)] = []
    private let buffer = EventBuffer(capacity: 64)
    /// The descriptor limit before ``Step/exhaustDescriptors``, restored by the next step or tear-down.
    private var savedLimit: rlimit?
    /// Descriptors holding free numbers while the limit is exhausted.
    private var placeholders: [CInt] = []
    /// Whether the tear-down gave back the SIGPIPE action borrowed at the start (it runs twice:
    /// called, then from `deinit`).
    private var pipeReleased = false

    init(poller: any Poller, makePoller: @escaping Conformance.Factory) {
        // Scenarios write to sockets and pipes whose other end is gone: EPIPE, not a fatal SIGPIPE
        // (the program's own action is back at the tear-down).
        BorrowedAction.brokenPipe.acquire()
        self.poller = poller
        self.makePoller = makePoller
    }

    deinit { tearDown() }

    func tearDown() {
        defer {
            if !pipeReleased {
                pipeReleased = true
                BorrowedAction.brokenPipe.release()
            }
        }
        restoreLimit()
        for fd in endpoints.values { close(fd) }
        for (fd, _) in listeners.values { close(fd) }
        for fd in extras { close(fd) }
        for path in paths { unlink(path) }
        for child in children { rd_end_pidfd_child(child.pidfd, child.pid) }
        children.removeAll()
        endpoints.removeAll()
        listeners.removeAll()
        extras.removeAll()
        paths.removeAll()
        try? poller?.close()
        poller = nil
    }

    func setUp(_ fixture: Fixture) throws {
        switch fixture {
        case .socketPair(let a, let b):
            (endpoints[a], endpoints[b]) = try Net.socketPair()
        case .pipe(let r, let w):
            (endpoints[r], endpoints[w]) = try Net.pipe()
        case .tcpPair(let client, let server):
            let listener = try Net.listener(try SocketAddress("127.0.0.1:0"), backlog: 4)
            defer { close(listener) }
            endpoints[client] = try Net.connectNow(try Net.localAddress(listener))
            endpoints[server] = try Net.accept(listener)
        case .tcpListener(let name, let ipv6):
            do {
                let fd = try Net.listener(try SocketAddress(ipv6 ? "[::1]:0" : "127.0.0.1:0"), backlog: 16)
                listeners[name] = (fd, try Net.localAddress(fd))
            } catch where ipv6 {
                throw Unsupported(reason: "IPv6 loopback is unavailable here (\(error))")
            }
        case .fullTCPListener(let name):
            listeners[name] = try Net.fullListener { extras.append($0) }
        case .unixListener(let name):
            let path = Net.uniquePath
            let address = try SocketAddress(unixPath: path)
            listeners[name] = (try Net.listener(address, backlog: 16), address)
            paths.append(path)
        case .fullUnixListener(let name):
            let path = Net.uniquePath
            let address = try SocketAddress(unixPath: path)
            listeners[name] = (try Net.listener(address, backlog: 0), address)
            paths.append(path)
            for _ in 0..<64 {
                let client = socket(AF_UNIX, Net.streamFlags, 0)
                guard client >= 0 else { throw SetupError("socket") }
                extras.append(client)
                if address.withSockaddr({ Glibc.connect(client, $0, $1) }) != 0 && errno == EAGAIN { return }
            }
            throw SetupError("the Unix-domain backlog never filled", 0)
        case .socketPairs(let name, let count):
            guard count >= 0 else { throw SetupError("socketPairs(\(name), count: \(count)): a negative count", 0) }
            for i in 0..<count { (endpoints["\(name)\(i)"], endpoints["\(name)\(i)'"]) = try Net.socketPair() }
        case .device(let name, let path):
            let fd = open(path, O_RDWR | O_CLOEXEC)
            guard fd >= 0 else { throw Unsupported(reason: "\(path) cannot be opened here (\(ErrnoTable.name(errno)))") }
            endpoints[name] = fd
        case .anonymousUnpollable(let name):
            let fd = rd_landlock_ruleset()
            guard fd >= 0 else { throw Unsupported(reason: "no Landlock here to make a file without poll (\(ErrnoTable.name(errno)))") }
            endpoints[name] = fd
        case .childProcess(let name, let release):
            var releaseEnd: CInt = -1
            var child: CInt = 0
            let fd = rd_spawn_pidfd_child(&releaseEnd, &child)
            guard fd >= 0 else { throw Unsupported(reason: "no child process with a pidfd here (\(ErrnoTable.name(errno)))") }
            endpoints[name] = fd
            endpoints[release] = releaseEnd
            let own = fcntl(fd, F_DUPFD_CLOEXEC, 0)
            guard own >= 0 else {
                let code = errno
                kill(child, SIGKILL)   // not reaped yet: the number is still the child's
                while waitpid(child, nil, 0) < 0 && errno == EINTR {}
                throw SetupError("fcntl(F_DUPFD_CLOEXEC) of a pidfd", code)
            }
            children.append((own, child))
        case .pathOnly(let name):
            // A FIFO opened with O_PATH (a location, not an open file), its path removed at once.
            let path = Net.uniquePath + ".fifo"
            guard mkfifo(path, 0o600) == 0 else { throw SetupError("mkfifo \(path)") }
            let fd = open(path, Self.pathOnlyFlag | O_CLOEXEC)
            unlink(path)
            guard fd >= 0 else { throw Unsupported(reason: "O_PATH is not supported here (\(ErrnoTable.name(errno)))") }
            endpoints[name] = fd
        case .regularFile(let name):
            let path = Net.uniquePath + ".file"
            let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw SetupError("open \(path)") }
            endpoints[name] = fd
            paths.append(path)
        }
    }

    private func fd(_ name: String) -> CInt { endpoints[name] ?? closedNumbers[name] ?? -1 }

    /// The token of each descriptor number the scenario registered (and has not deregistered): a
    /// wait reporting a token more often than registrations carry it breaks "at most one event per
    /// registration per wait".
    private var registeredTokens: [CInt: Token] = [:]

    private func registering(_ number: CInt, _ token: Token, _ body: () throws(PollerError) -> Void) -> Observation {
        attempt { () throws(PollerError) in
            try body()
            registeredTokens[number] = token
        }
    }

    private func attempt(_ body: () throws(PollerError) -> Void) -> Observation {
        do {
            try body()
            return .ok
        } catch {
            return .error(error.caseName)
        }
    }

    /// O_PATH, which Swift's Glibc does not export (Linux's value on every architecture but alpha,
    /// parisc and sparc).
    static let pathOnlyFlag: CInt = 0o10000000

    /// Sleeps for `duration` (any: a negative one not at all, a long one in full, never a trap on a
    /// conversion to `usleep`'s 32 bits).
    static func pause(_ duration: Duration) {
        var left = duration.clampedNanoseconds
        while left > 0 {
            let chunk = min(left, 1_000_000_000)
            var request = timespec(tv_sec: 0, tv_nsec: Int(chunk))
            if chunk == 1_000_000_000 { request = timespec(tv_sec: 1, tv_nsec: 0) }
            nanosleep(&request, nil)   // EINTR: the chunk is cut short, the whole still bounded
            left -= chunk
        }
    }

    private func livePoller() throws(PollerError) -> any Poller {
        guard let poller else { throw .closed }
        return poller
    }

    private func observeWait(_ timeout: Duration?, into events: EventBuffer) -> Observation {
        let returned: Int
        do {
            returned = try livePoller().wait(into: events, timeout: timeout)
        } catch {
            // A failed wait reports nothing: events left in the buffer (the last wait's) would be
            // handled twice by a caller that catches the error and goes through it.
            if !events.isEmpty { return .note("\(error.caseName), leaving \(events.count) events in the buffer") }
            return .error(error.caseName)
        }
        if returned != events.count { return .note("wait returned \(returned) with \(events.count) events in the buffer") }
        var out: [Token: Ready] = [:]
        var times: [Token: Int] = [:]
        for event in events {
            // Masking to what a backend can show drops a token with no bits: an event with none is
            // a wake-up for nothing (a caller that waits again spins), reported as such.
            if event.ready.isEmpty { return .note("an event with no readiness for token \(event.token.rawValue)") }
            out[event.token, default: []].formUnion(event.ready)
            times[event.token, default: 0] += 1
        }
        for (token, count) in times where count > 1 {
            let carriers = token == .waker ? 1 : max(1, registeredTokens.values.filter { $0 == token }.count)
            if count > carriers { return .note("token \(token.rawValue) reported \(count) times in one wait (\(carriers) registrations carry it)") }
        }
        return .events(out)
    }

    func run(_ step: Step) throws -> Observation {
        if let problem = step.invalidValue { return .note("invalid step: \(problem)") }
        switch step {
        case .register(let e, let token, let interest, let trigger):
            return registering(fd(e), Token(token)) { () throws(PollerError) in try livePoller().register(fd(e), token: Token(token), interest: interest, trigger: trigger) }
        case .reregister(let e, let token, let interest, let trigger):
            return registering(fd(e), Token(token)) { () throws(PollerError) in try livePoller().reregister(fd(e), token: Token(token), interest: interest, trigger: trigger) }
        case .deregister(let e):
            return attempt { () throws(PollerError) in
                try livePoller().deregister(fd(e))
                registeredTokens[fd(e)] = nil
            }
        case .registerNumber(let number, let token, let interest):
            return registering(number, Token(token)) { () throws(PollerError) in try livePoller().register(number, token: Token(token), interest: interest, trigger: .level) }
        case .registerWaker(let token):
            return attempt { () throws(PollerError) in
                let poller = try livePoller()
                try poller.register(poller.waker.fd, token: Token(token), interest: .readable, trigger: .level)
            }
        case .registerBadArguments(let e, let token, let interest):
            return registering(fd(e), Token(token)) { () throws(PollerError) in try livePoller().register(fd(e), token: Token(token), interest: interest, trigger: .level) }
        case .registerAboveLimit(let token):
            let limit: CInt
            do { limit = try livePoller().capabilities.maxDescriptor } catch { return .error(error.caseName) }
            guard limit < CInt.max else { return .note("no declared limit to go above") }
            let number = limit &+ 1
            do {
                try livePoller().register(number, token: Token(token), interest: .readable, trigger: .level)
                registeredTokens[number] = Token(token)
                return .ok
            } catch {
                if case .descriptorTooLarge(let fd, let said) = error, fd == number, said == number {
                    return .error("descriptorTooLarge(declared limit)")
                }
                return .error(error.caseName)
            }
        // I/O goes only to open endpoints: a closed endpoint's number may name anything by now.
        case .write(let e, let bytes):
            guard let fd = endpoints[e] else { return Self.closedEndpoint }
            let data = [UInt8](repeating: 0x2a, count: bytes)
            let n = write(fd, data, data.count)
            return n == bytes ? .ok : .note("write returned \(n) (\(ErrnoTable.name(errno)))")
        case .fill(let e):
            guard let fd = endpoints[e] else { return Self.closedEndpoint }
            let chunk = [UInt8](repeating: 0, count: 65536)
            var rounds = 0
            while write(fd, chunk, chunk.count) > 0 && rounds < 4096 { rounds += 1 }
            return .ok
        case .isOpen(let e):
            guard let fd = endpoints[e] else { return Self.closedEndpoint }
            return fcntl(fd, F_GETFD) >= 0 ? .ok : .note("\(e) was closed by the poller (\(ErrnoTable.name(errno)))")
        case .forkedCalls(let e, let token):
            guard let fd = endpoints[e] else { return Self.closedEndpoint }
            let poller: any Poller
            do { poller = try livePoller() } catch { return .error(error.caseName) }
            return Self.forkedCalls(poller, fd, Token(token))
        case .writeUrgent(let e):
            guard let fd = endpoints[e] else { return Self.closedEndpoint }
            var byte: UInt8 = 0x21
            let n = send(fd, &byte, 1, CInt(MSG_OOB) | CInt(MSG_NOSIGNAL))
            return n == 1 ? .ok : .note("send(MSG_OOB) returned \(n) (\(ErrnoTable.name(errno)))")
        case .drain(let e):
            guard let fd = endpoints[e] else { return Self.closedEndpoint }
            var chunk = [UInt8](repeating: 0, count: 65536)
            while read(fd, &chunk, chunk.count) > 0 {}
            return .ok
        case .shutdownWrite(let e):
            guard let fd = endpoints[e] else { return Self.closedEndpoint }
            return shutdown(fd, CInt(SHUT_WR)) == 0 ? .ok : .note("shutdown failed: \(ErrnoTable.name(errno))")
        case .close(let e):
            guard endpoints[e] != nil else { return Self.closedEndpoint }
            close(fd(e))
            closedNumbers[e] = endpoints.removeValue(forKey: e)
            return .ok
        case .resetClose(let e):
            guard endpoints[e] != nil else { return Self.closedEndpoint }
            Net.lingerZero(fd(e))
            close(fd(e))
            closedNumbers[e] = endpoints.removeValue(forKey: e)
            return .ok
        case .reopenOnNumber(let e, let peer, let closed):
            guard let number = closedNumbers[closed] else { throw SetupError("\(closed) was not closed", 0) }
            var (first, second) = try Net.socketPair()
            if second == number { swap(&first, &second) }   // a Unix socket pair is symmetric
            if first != number {
                // Onto the number only while it is still free: dup2 would close whatever another
                // thread opened on it meanwhile (scenarios may run in parallel).
                let moved = Self.duplicate(first, ontoFree: number)
                close(first)
                guard moved else {
                    close(second)
                    throw SetupError("number \(number) was taken by another thread", EBUSY)
                }
            }
            closedNumbers[closed] = nil
            endpoints[e] = number
            endpoints[peer] = second
            return .ok
        case .waitRounds(let capacity, let rounds):
            let small = EventBuffer(capacity: capacity)
            var seen: [Token: Ready] = [:]
            for round in 0..<rounds {
                // A round's own checks (a count that is not the buffer's, an empty event, an error)
                // fail the step as they fail a single wait: dropped, a miscount read as "no events".
                let observed = observeWait(.zero, into: small)
                guard case .events(let events) = observed else { return .note("round \(round + 1): \(observed)") }
                for (token, ready) in events { seen[token, default: []].formUnion(ready) }
            }
            return .events(seen)
        case .duplicate(let e, let name, let atLeast):
            let copy = fcntl(fd(e), F_DUPFD_CLOEXEC, atLeast)
            guard copy >= 0 else {
                // At or above the process's open-file limit (RLIMIT_NOFILE, often 1024): the scenario
                // cannot run here, which says nothing of the backend.
                if errno == EINVAL || errno == EMFILE {
                    throw Unsupported(reason: "no descriptor of \(atLeast) or more under this process's open-file limit")
                }
                throw SetupError("fcntl(F_DUPFD)")
            }
            endpoints[name] = copy
            return .ok
        case .wait(let timeout):
            return observeWait(timeout, into: buffer)
        case .waitSmall(let capacity, let timeout):
            return observeWait(timeout, into: EventBuffer(capacity: capacity))
        case .waitTimed(let timeout):
            // Never early, and not late by more than the backend's resolution plus a margin for the
            // scheduler: a wait that oversleeps (a 4 ms coarse clock for a 300 µs timeout) fails.
            // Lateness is judged on the best of a few tries, so one preemption does not fail it.
            let resolution = (try? livePoller().capabilities.timeoutResolution.clampedNanoseconds) ?? 1_000_000
            let wanted = timeout.clampedNanoseconds
            let bound = wanted.saturatingAdd(max(resolution, 1_000_000)).saturatingAdd(max(2_000_000, wanted / 10))
            var best = Int64.max
            for _ in 0..<Self.lateTries {
                let start = MonotonicClock.nowNanoseconds
                let cpuStart = Self.threadCPUNanoseconds()
                let observed = observeWait(timeout, into: buffer)
                let elapsed = MonotonicClock.nowNanoseconds - start
                let cpu = Self.threadCPUNanoseconds() - cpuStart
                // A wait that burns CPU for most of its timeout is a busy loop, whatever it returns.
                if elapsed >= 20_000_000, cpu * 2 > elapsed {
                    return .note("busy loop: \(cpu / 1_000_000) ms of CPU in a \(elapsed / 1_000_000) ms wait")
                }
                let verdict = timing(observed, timeout: timeout, elapsed: elapsed, signals: nil)
                guard verdict == .note(Self.inTime), elapsed > bound else { return verdict }
                best = min(best, elapsed)
            }
            return .note("overslept: the best of \(Self.lateTries) waits of \(timeout) took \(Double(best) / 1e6) ms")
        case .waitInterrupted(let timeout, let signals):
            Interrupts.action.acquire()
            defer { Interrupts.action.release() }   // after the join: no delivery is on its way
            let before = Interrupts.delivered.load(ordering: .relaxed)
            var observed = Observation.ok
            var elapsed: Int64 = 0
            let box = UnsafeSendable(self)
            let worker = try Worker {
                let start = MonotonicClock.nowNanoseconds
                observed = box.value.observeWait(timeout, into: box.value.buffer)
                elapsed = MonotonicClock.nowNanoseconds - start
            }
            let gap = Duration.nanoseconds(max(1_000, timeout.clampedNanoseconds / Int64(signals + 1)))
            for _ in 0..<signals {
                Self.pause(gap)
                worker.signal(SIGUSR1)
            }
            worker.join()
            let delivered = Interrupts.delivered.load(ordering: .relaxed) - before
            return timing(observed, timeout: timeout, elapsed: elapsed, signals: delivered)
        case .wake(let times, let threads):
            let poller = try livePoller()
            let waker = poller.waker
            let failures = Locked<[String]>([])
            let workers = try (0..<threads).map { _ in
                try Worker {
                    for _ in 0..<times {
                        do throws(PollerError) { try waker.wake() } catch { failures.withLock { $0.append(error.caseName) } }
                    }
                }
            }
            for worker in workers { worker.join() }
            return failures.withLock { $0.first.map { .error($0) } ?? .ok }
        case .waitWokenByThread(let after):
            return try run(.waitWithTimeoutWokenByThread(nil, after: after))
        case .waitWithTimeoutWokenByThread(let timeout, let after):
            // The best of three when late and otherwise right (woken, nothing else): one stall of a loaded
            // machine is not the backend's. A late attempt that also saw something else is the outcome.
            let waker = try livePoller().waker
            var observed = Observation.ok
            for attempt in 0..<3 {
                if attempt > 0 { _ = observeWait(.zero, into: buffer) }   // no wake left over from the last try
                let acted = ActedAt()
                let worker = try Worker {
                    Self.pause(after)
                    acted.mark()
                    try? waker.wake()
                }
                let seen = observeWait(timeout, into: buffer)
                observed = Self.inTime(seen, returned: MonotonicClock.nowNanoseconds,
                                       worker: worker, acted: acted, by: "the wake", limit: Self.wakeLatencyLimit)
                guard observed.lateness != nil, seen == .events([.waker: .readable]) else { return observed }
            }
            return observed
        case .waitClosedByThread(let after):
            nonisolated(unsafe) let closing = try livePoller()
            let worker = try Worker {
                Self.pause(after)
                try? closing.close()
            }
            let observed = observeWait(nil, into: buffer)
            worker.join()
            return observed
        case .waitWhileWrittenByThread(let e, let after):
            guard endpoints[e] != nil else { return Self.closedEndpoint }
            let number = fd(e)
            let acted = ActedAt()
            let worker = try Worker {
                Self.pause(after)
                var byte: UInt8 = 0x78
                acted.mark()
                _ = Glibc.write(number, &byte, 1)
            }
            let observed = observeWait(nil, into: buffer)
            // One try (the byte stays readable): a wider bound.
            return Self.inTime(observed, returned: MonotonicClock.nowNanoseconds, worker: worker, acted: acted, by: "the write",
                               limit: Self.writeLatencyLimit)
        case .waitWhileClosedByThread(let e, let after):
            guard endpoints[e] != nil else { return Self.closedEndpoint }
            let waker = try livePoller().waker
            let number = fd(e)
            let worker = try Worker {
                Self.pause(after)
                close(number)
                usleep(5_000)
                try? waker.wake()
            }
            let observed = observeWait(nil, into: buffer)
            worker.join()
            closedNumbers[e] = endpoints.removeValue(forKey: e)
            return observed
        case .closePoller:
            return attempt { () throws(PollerError) in try livePoller().close() }
        case .connect(let target, let timeout):
            return try connect(target, timeout: timeout)
        case .duplicateOnto(let e, let name, let closed):
            guard let number = closedNumbers[closed] else { throw SetupError("\(closed) was not closed", 0) }
            guard Self.duplicate(fd(e), ontoFree: number) else { throw SetupError("number \(number) was taken by another thread", EBUSY) }
            closedNumbers[closed] = nil
            endpoints[name] = number
            return .ok
        case .exhaustDescriptors:
            return exhaustLimit(leaving: 0) ? .ok : .note("the descriptor limit could not be lowered")
        case .restoreDescriptors:
            restoreLimit()
            return .ok
        case .createPollersExhausted(let most):
            return createPollersExhausted(upTo: most)
        case .registerEach(let prefix, let count, let first, let interest):
            for i in 0..<count {
                do throws(PollerError) {
                    try livePoller().register(fd("\(prefix)\(i)"), token: Token(first + UInt64(i)), interest: interest, trigger: .level)
                    registeredTokens[fd("\(prefix)\(i)")] = Token(first + UInt64(i))
                } catch { return .error(error.caseName) }
            }
            return .ok
        case .writeEach(let prefix, let count):
            for i in 0..<count where write(fd("\(prefix)\(i)'"), "x", 1) != 1 { return .note("write failed: \(ErrnoTable.name(errno))") }
            return .ok
        case .closeEach(let prefix, let count):
            for i in 0..<count { _ = try run(.close("\(prefix)\(i)")) }
            return .ok
        case .deregisterEach(let prefix, let count):
            for i in 0..<count {
                do throws(PollerError) { try livePoller().deregister(fd("\(prefix)\(i)")) } catch { return .error(error.caseName) }
                registeredTokens[fd("\(prefix)\(i)")] = nil
            }
            return .ok
        case .waitCounting(let capacity, let timeout):
            let counted = EventBuffer(capacity: capacity)
            do throws(PollerError) { try livePoller().wait(into: counted, timeout: timeout) } catch { return .error(error.caseName) }
            return .note("\(counted.count) events")
        case .waitWokenBySignalHandler(let after):
            let poller = try livePoller()
            SignalWake.install(poller.waker)
            defer { SignalWake.uninstall() }
            var observed = Observation.ok
            let box = UnsafeSendable(self)
            let worker = try Worker { observed = box.value.observeWait(nil, into: box.value.buffer) }
            Self.pause(after)
            worker.signal(SIGUSR2)
            worker.join()
            return observed
        case .wakeReenteredBySignalHandler(let signals):
            let poller = try livePoller()
            let waker = poller.waker
            SignalWake.install(waker)
            // Given back only once the signalled thread has finished: a SIGUSR2 still pending on a
            // thread stuck in the backend's wake would otherwise meet the program's own action (the
            // default ends the process). A deadlocked run keeps it borrowed, and says so.
            var joined = false
            defer { if joined { SignalWake.uninstall() } }
            let finished = Atomic<Bool>(false)
            let worker = try Worker {
                for _ in 0..<Self.wakesUnderSignals { try? waker.wake() }
                finished.store(true, ordering: .releasing)
            }
            for _ in 0..<signals {
                worker.signal(SIGUSR2)
                usleep(50)
            }
            // A wake that a signal handler re-enters must not deadlock (a lock held by the interrupted
            // wake): the loop finishes within seconds or the waker is not async-signal-safe.
            let deadline = MonotonicClock.deadline(after: 10_000_000_000)
            while !finished.load(ordering: .acquiring), MonotonicClock.nowNanoseconds < deadline { usleep(1000) }
            guard finished.load(ordering: .acquiring) else {
                return .note("deadlock: a wake() re-entered from a signal handler never returned (SIGUSR2's action stays the suite's)")
            }
            worker.join()
            joined = true
            return .ok
        case .deregisterAll(let names):
            for name in names {
                do throws(PollerError) { try livePoller().deregister(fd(name)) } catch { return .error(error.caseName) }
                registeredTokens[fd(name)] = nil
            }
            return .ok
        }
    }

    /// Exhausts descriptors as a busy process does: the soft RLIMIT_NOFILE is set just above the
    /// highest open descriptor (so none is above the limit, as in a process that never lowered it), and
    /// every free number below it is taken by a placeholder, until only `leaving` can be opened.
    private func exhaustLimit(leaving: Int) -> Bool {
        var current = rlimit()
        guard getrlimit(CInt(RLIMIT_NOFILE.rawValue), &current) == 0 else { return false }
        let highest = Self.openDescriptorNumbers().max() ?? 2
        if savedLimit == nil { savedLimit = current }
        var lowered = current
        lowered.rlim_cur = rlim_t(Int(highest) + 1 + leaving)
        guard setrlimit(CInt(RLIMIT_NOFILE.rawValue), &lowered) == 0 else { return false }
        while true {
            // Pollable placeholders (sockets): a closed endpoint's number now names one, as a new
            // connection's would, and registering it behaves alike on every backend.
            let fd = Self.makePlaceholder()
            if fd < 0 { break }
            placeholders.append(fd)
        }
        for _ in 0..<min(leaving, placeholders.count) { close(placeholders.removeLast()) }
        return true
    }

    private func restoreLimit() {
        for fd in placeholders { close(fd) }
        placeholders.removeAll()
        guard var saved = savedLimit else { return }
        setrlimit(CInt(RLIMIT_NOFILE.rawValue), &saved)
        savedLimit = nil
    }

    /// One descriptor: an unconnected Unix datagram socket (pollable, never readable).
    private static func makePlaceholder() -> CInt {
        socket(AF_UNIX, CInt(SOCK_DGRAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
    }

    private static func openDescriptorNumbers() -> [CInt] {
        guard let dir = opendir("/proc/self/fd") else { return [] }
        defer { closedir(dir) }
        var numbers: [CInt] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if let number = CInt(name) { numbers.append(number) }
        }
        return numbers
    }

    private func createPollersExhausted(upTo most: Int) -> Observation {
        let before = Self.openDescriptors()
        var problems: [String] = []
        for leaving in 0...most {
            guard exhaustLimit(leaving: leaving) else { return .note("the descriptor limit could not be lowered") }
            do {
                let made = try makePoller()
                try? made.close()
            } catch let error as PollerError where error.isResourceExhausted {
                // The typed error the contract asks for.
            } catch {
                problems.append("\(leaving) left: \(error)")
            }
            restoreLimit()
        }
        let after = Self.openDescriptors()
        if after != before { problems.append("descriptors open: \(before) before, \(after) after") }
        return problems.isEmpty ? .note(Self.createdOrExhausted) : .note(problems.joined(separator: "; "))
    }

    static let closedEndpoint = Observation.note("not done: the endpoint is closed")

    /// ``Step/forkedCalls(_:token:)``: the child answers each call with one byte (0 succeeded, 1
    /// `forked`, 2 another error) on a pipe and exits. It runs no code that may wait for a lock another
    /// thread of the parent held at the fork (no allocation of its own, no cast, no printing); a child
    /// stuck anyway is killed after 10 s and reported.
    static func forkedCalls(_ poller: any Poller, _ fd: CInt, _ token: Token) -> Observation {
        let names = ["register", "reregister", "deregister", "wait", "wake", "close"]
        let expected: [UInt8] = [1, 1, 1, 1, 1, 0]
        let buffer = EventBuffer(capacity: 4)
        guard let (reading, writing) = Sys.pipe() else { return .note("pipe2 failed: \(ErrnoTable.name(errno))") }
        let pid = fork()
        if pid == 0 {
            alarm(10)
            func answer(_ body: () throws(PollerError) -> Void) -> UInt8 {
                do throws(PollerError) {
                    try body()
                    return 0
                } catch {
                    if case .forked = error { return 1 }
                    return 2
                }
            }
            var answers: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (
                answer { () throws(PollerError) in try poller.register(fd, token: token, interest: .readable, trigger: .level) },
                answer { () throws(PollerError) in try poller.reregister(fd, token: token, interest: .writable, trigger: .level) },
                answer { () throws(PollerError) in try poller.deregister(fd) },
                answer { () throws(PollerError) in _ = try poller.wait(into: buffer, timeout: .zero) },
                answer { () throws(PollerError) in try poller.waker.wake() },
                answer { () throws(PollerError) in try poller.close() })
            _ = withUnsafeBytes(of: &answers) { write(writing, $0.baseAddress, $0.count) }
            _exit(0)
        }
        close(writing)
        defer { close(reading) }
        guard pid > 0 else { return .note("fork failed: \(ErrnoTable.name(errno))") }
        var answers: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: names.count)
        let deadline = MonotonicClock.nowNanoseconds &+ 10_000_000_000
        while answers.count < names.count {
            let left = deadline &- MonotonicClock.nowNanoseconds
            guard left > 0 else { break }
            var entry = pollfd(fd: reading, events: Int16(POLLIN), revents: 0)
            if poll(&entry, 1, CInt(min(left / 1_000_000 + 1, 1_000))) < 0, errno != EINTR { break }
            let n = read(reading, &chunk, names.count - answers.count)
            if n > 0 { answers += chunk[..<n] } else if n == 0 || (errno != EINTR && errno != EAGAIN) { break }
        }
        var status: CInt = 0
        if answers.count < names.count { kill(pid, SIGKILL) }
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        guard answers.count == names.count else {
            return .note("the forked child answered \(answers.count) of \(names.count) calls (wait status \(status))")
        }
        if answers == expected { return .ok }
        let said = zip(names, answers).map { name, code in "\(name) " + (code == 0 ? "succeeded" : code == 1 ? "forked" : "another error") }
        return .note("in a forked child: " + said.joined(separator: ", ") + " (every call but close must fail with forked)")
    }

    /// How late after another thread's wake a blocked wait may return, the best of three (Go's
    /// TestNetpollBreak bounds it too): generous, for a loaded machine and the sanitizers; a backend
    /// that notices late (a wake that waits for the next timer tick) fails.
    static let wakeLatencyLimit: Int64 = 150_000_000
    /// The same after another thread's write, tried once (the byte it wrote stays readable).
    static let writeLatencyLimit: Int64 = 500_000_000

    /// `observed`, or a note when the wait returned more than `limit` after the worker's action
    /// (joined first).
    static func inTime(_ observed: Observation, returned: Int64, worker: Worker, acted: ActedAt, by action: String,
                       limit: Int64) -> Observation {
        worker.join()
        let late = returned - acted.at
        guard acted.at > 0, late > limit else { return observed }
        return .note(Observation.lateMark + "\(Double(late) / 1e6) ms after \(action) (at most \(limit / 1_000_000) ms)")
    }
    static let createdOrExhausted = "each creation succeeded or failed with resourceExhausted; nothing leaked"
    static let inTime = "no events, not before the timeout"
    private static let lateTries = 5
    private static let wakesUnderSignals = 20_000

    private static func openDescriptors() -> Int {
        guard let dir = opendir("/proc/self/fd") else { return -1 }
        defer { closedir(dir) }
        var count = 0
        while readdir(dir) != nil { count += 1 }
        return count
    }

    private func timing(_ observed: Observation, timeout: Duration, elapsed: Int64, signals: Int?) -> Observation {
        guard observed == .none else { return observed }
        let wanted = timeout.clampedNanoseconds
        let ms = Double(elapsed) / 1e6
        if signals == 0 { return .note("no signal reached the waiting thread") }
        if elapsed < wanted { return .note("returned early, after \(ms) ms of \(timeout)") }
        if wanted == 0 && elapsed > 200_000_000 { return .note("a zero timeout blocked for \(ms) ms") }
        // Signals must not start the timeout again: a wait that retried EINTR with the whole timeout
        // ends near the last signal plus the timeout. Half the timeout and 100 ms are the slack (a
        // loaded machine, sanitizers).
        if let signals, signals > 0, elapsed > wanted &+ wanted / 2 &+ 100_000_000 {
            return .note("returned late, after \(ms) ms of \(timeout) with \(signals) signals (the timeout restarted by a signal?)")
        }
        return .note(Self.inTime)
    }

    private static let connectToken: UInt64 = 900

    private static func threadCPUNanoseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
        return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
    }

    private func connect(_ target: ConnectTarget, timeout: Duration) throws -> Observation {
        let poller = try livePoller()
        var address: SocketAddress
        var local: SocketAddress?
        var syscalls: any ConnectSyscalls = SystemConnectSyscalls()
        var peer = ConnectTarget.Peer.silent
        var listener: CInt = -1
        switch target {
        case .listener(let name, let behaviour):
            guard let entry = listeners[name] else { throw SetupError("no listener \(name)", 0) }
            address = entry.address
            listener = entry.fd
            peer = behaviour
        case .closedPort:
            address = try SocketAddress(ip: "127.0.0.1", port: try Net.freePort())
        case .missingUnixPath:
            address = try SocketAddress(unixPath: Net.uniquePath + ".missing")
        case .selfConnect:
            address = try SocketAddress(ip: "127.0.0.1", port: try Net.freePort())
            local = address
        case .unreachable:
            let fd: CInt
            do { fd = try IsolatedNetwork.socket() } catch { throw Unsupported(reason: "no private network namespace here (\(error))") }
            syscalls = IsolatedSyscalls(socketFD: fd)
            address = try SocketAddress("192.0.2.1:80")  // TEST-NET-1, inside an empty namespace: no route
        }
        let attempt = ConnectAttempt(to: address, poller: poller, token: Token(Self.connectToken), timeout: timeout,
                                     localAddress: local, syscalls: syscalls)
        var progress = attempt.start()
        if peer != .silent, progress == .inProgress || { if case .connected = progress { true } else { false } }() {
            let accepted = try Net.accept(listener)
            if peer == .writes {
                _ = write(accepted, "hello", 5)
                extras.append(accepted)
            } else {
                Net.lingerZero(accepted)
                close(accepted)
            }
        }
        while progress == .inProgress {
            let remaining = attempt.deadline.map { $0.timeout() }
            do {
                try poller.wait(into: buffer, timeout: remaining)
            } catch {
                attempt.cancel()
                return .error(error.caseName)
            }
            for event in buffer where event.token.rawValue == Self.connectToken {
                progress = attempt.handle(event.ready)
            }
            if progress == .inProgress { progress = attempt.checkDeadline() }
        }
        // The attempt must agree that it has ended (a caller's loop relies on isFinished).
        if progress != .inProgress, !attempt.isFinished {
            if case .connected(let socket) = progress { close(socket.fd) }
            return .note("the attempt ended (\(progress)) but isFinished is false")
        }
        switch progress {
        case .connected(let socket):
            close(socket.fd)
            return .connect("connected")
        case .failed(let error):
            return .connect("failed:\(error.cause.rawValue)")
        case .inProgress:
            return .connect("in progress")
        }
    }
}

/// Hands a value to a worker thread that is joined before the value is used again.
struct UnsafeSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

extension ScenarioRun {
    /// Duplicates `fd` onto `number` if that number is free, and only then (`F_DUPFD_CLOEXEC` gives
    /// the lowest free number at or above it); never replaces a file another thread opened there.
    static func duplicate(_ fd: CInt, ontoFree number: CInt) -> Bool {
        let got = fcntl(fd, F_DUPFD_CLOEXEC, number)
        if got == number { return true }
        if got >= 0 { close(got) }
        return false
    }
}
