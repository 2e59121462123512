#if canImport(Glibc)
import Glibc
#endif
@_spi(Backend) import ReadinessCore
import ReadinessNet

/// A waiting direction of an entry.
enum Direction: UInt8, Sendable {
    case read = 1
    case write = 2
    var interest: Interest { self == .read ? .readable : .writable }
}

/// How a wait ended. A plain enum (no `any Error` box): resuming allocates nothing.
enum Outcome {
    case ready
    case failed(LoopError)
}

/// One direction's waiter: the continuation is taken exactly once (resolve), on the loop thread.
struct WaitSlot {
    var continuation: UnsafeContinuation<Outcome, Never>?
    var operation: UInt64 = 0
    var timer: TimerID?
    /// Resumed since the last event: the next event with nobody waiting keeps the interest once (the
    /// resumed task has probably not read yet), the one after drops it.
    var lingering = false
    var isWaiting: Bool { continuation != nil }
}

/// What the loop owns or watches, by number. Tokens: the entry's registration is `id << 2`; its timers
/// `id << 2 | 1` (read deadline), `| 2` (write deadline), `| 3` (accept back-off). A connect's Happy
/// Eyeballs uses `connectBit | id << 5` and the 31 tokens after it.
final class Entry {
    enum Resource {
        case stream(StreamSocket)
        case listener(Listener)
        /// A caller-owned descriptor, watched only while a task waits on it.
        case foreign(CInt)
        case connect(HappyEyeballs)
        /// A connect to one address: the state machine's driver alone (token `connectBit | id << 5 | 1`).
        case attempt(ConnectAttempt)
        case sleep
    }

    let id: UInt64
    /// Changes once at most: a one-address connect's entry becomes its socket's (`.attempt` to
    /// `.stream`), on the loop thread, when the attempt has handed the socket over.
    private(set) var resource: Resource
    var read = WaitSlot()
    var write = WaitSlot()
    /// The interest registered with the poller (empty: not registered).
    var registered: Interest = []
    var connectOutcome: HappyEyeballs.Progress?
    /// A one-address connect's attempt timeout (``HappyEyeballs/Options/attemptTimeout``).
    var connectTimer: TimerID?
    var backoffTimer: TimerID?
    var isBackingOff = false
    /// The descriptor this entry owns (a stream or a listener), -1 otherwise: marked in
    /// `LoopState.owned` while the entry lives.
    var ownedFD: CInt = -1

    init(id: UInt64, resource: Resource) {
        self.id = id
        self.resource = resource
    }

    var token: Token { Token(rawValue: id << 2) }

    /// The connected socket takes the attempt's place (same id: no second entry, no second lookup).
    /// Nobody waits on the entry then; the attempt is finished and no longer registered.
    func becomeStream(_ socket: StreamSocket) {
        resource = .stream(socket)
        connectOutcome = nil
        read = WaitSlot()
        write = WaitSlot()
        registered = []
    }
}

let connectBit: UInt64 = 1 << 62

/// Everything the loop thread owns. Not Sendable: it is reached only through
/// `EventLoop.loopState`/`onLoop`, on the loop thread (the invariant is written on ``EventLoop``).
final class LoopState {
    /// Set in the loop's init, cleared when the loop has finished (breaks the cycle).
    unowned(unsafe) var loop: EventLoop!
    var poller: (any Poller)?
    let timers = Timers(capacity: 1024)
    let events = EventBuffer(capacity: 512)
    var entries: [UInt64: Entry] = [:]
    var foreign: [CInt: UInt64] = [:]
    /// By descriptor number: whether a stream or listener of this loop owns it (so that a descriptor
    /// is never adopted twice, nor waited on as a caller's while the loop owns it).
    private var owned: [Bool] = []
    /// Connects whose name is still being resolved (they take answers on the waker's events).
    var resolving: Set<UInt64> = []
    var backingOff: Set<UInt64> = []
    var nextID: UInt64 = 1
    var nextOperation: UInt64 = 1
    var isShutDown = false
    /// Counters (loop-only): jobs run, loop iterations (poller waits).
    var jobsRun = 0
    var iterations = 0

    init() {
        entries.reserveCapacity(1024)
    }

    func newID() -> UInt64 {
        defer { nextID += 1 }
        return nextID
    }

    // MARK: Waiting

    /// Suspends until the direction is ready, the deadline passes, the task is cancelled, the entry is
    /// closed or the loop shuts down; whichever comes first resolves the slot, exactly once.
    nonisolated(nonsending) func wait(_ entry: Entry, _ direction: Direction, deadline: Int64?, interest: Bool) async -> Outcome {
        let operation = nextOperation
        nextOperation &+= 1
        // The cancellation handler's operation is a plain nonisolated closure: it runs on the generic
        // executor, which is the loop for a task preferring the loop. A caller on the loop that does not
        // prefer it (an actor isolated to the loop, in a task with no preference) would run it on the
        // global pool instead: such a wait is given the loop's preference while it lasts.
        if prefersLoop() { return await suspend(entry, direction, operation, deadline: deadline, interest: interest) }
        return await withTaskExecutorPreference(loop) { () async -> Outcome in
            await suspend(entry, direction, operation, deadline: deadline, interest: interest)
        }
    }

    /// Whether the current task prefers this loop as its task executor.
    private func prefersLoop() -> Bool {
        let loop = self.loop.asUnownedTaskExecutor()
        return withUnsafeCurrentTask { task in task?.unownedTaskExecutor == loop }
    }

    nonisolated(nonsending) private func suspend(_ entry: Entry, _ direction: Direction, _ operation: UInt64, deadline: Int64?, interest: Bool) async -> Outcome {
        let loop = self.loop!
        let id = entry.id
        return await withTaskCancellationHandler {
            await withUnsafeContinuation { (continuation: UnsafeContinuation<Outcome, Never>) in
                self.install(entry, direction, operation, continuation, deadline: deadline, interest: interest)
            }
        } onCancel: {
            // Any thread: the loop resolves the slot (if this operation still waits there).
            loop.submit(.cancel(entry: id, direction: direction, operation: operation))
        }
    }

    private func install(_ entry: Entry, _ direction: Direction, _ operation: UInt64,
                         _ continuation: UnsafeContinuation<Outcome, Never>, deadline: Int64?, interest: Bool) {
        if isShutDown { return continuation.resume(returning: .failed(.shutdown)) }
        guard entries[entry.id] === entry else { return continuation.resume(returning: .failed(.closed)) }
        let busy = direction == .read ? entry.read.isWaiting : entry.write.isWaiting
        if busy { return continuation.resume(returning: .failed(.busy)) }
        // A cancel submitted before this point found no waiter; the flag it set is seen here.
        if Task.isCancelled { return continuation.resume(returning: .failed(.cancelled)) }
        // A connect may have ended between its start and this wait (the task can be enqueued again in
        // between): its outcome is kept on the entry.
        if entry.connectOutcome != nil { return continuation.resume(returning: .ready) }
        if interest, !entry.registered.contains(direction.interest) {
            do {
                try updateInterest(entry, entry.registered.union(direction.interest))
            } catch {
                return continuation.resume(returning: .failed(.poller(error)))
            }
        }
        var slot = WaitSlot(continuation: continuation, operation: operation)
        if let deadline {
            slot.timer = timers.schedule(at: deadline, token: Token(rawValue: entry.id << 2 | UInt64(direction.rawValue)))
        }
        if direction == .read { entry.read = slot } else { entry.write = slot }
    }

    /// Resumes the direction's waiter, if any, exactly once.
    func resolve(_ entry: Entry, _ direction: Direction, _ outcome: Outcome) {
        let slot = direction == .read ? entry.read : entry.write
        guard let continuation = slot.continuation else { return }
        if let timer = slot.timer { timers.cancel(timer) }
        var cleared = WaitSlot()
        if case .ready = outcome { cleared.lingering = true }
        if direction == .read { entry.read = cleared } else { entry.write = cleared }
        continuation.resume(returning: outcome)
    }

    func cancel(entry id: UInt64, direction: Direction, operation: UInt64) {
        guard let entry = entries[id] else { return }
        let slot = direction == .read ? entry.read : entry.write
        guard slot.isWaiting, slot.operation == operation else { return }
        resolve(entry, direction, .failed(.cancelled))
    }

    /// Registers, changes or removes the entry's poller interest.
    func updateInterest(_ entry: Entry, _ wanted: Interest) throws(PollerError) {
        let old = entry.registered
        guard wanted != old else { return }
        guard let poller else { throw .closed }
        let fd: CInt
        switch entry.resource {
        case .stream(let socket):
            if old.isEmpty {
                try socket.register(on: poller, token: entry.token, interest: wanted)
            } else if wanted.isEmpty {
                try socket.deregister()
            } else {
                try socket.reregister(token: entry.token, interest: wanted)
            }
            entry.registered = wanted
            return
        case .listener(let listener): fd = listener.fd
        case .foreign(let descriptor): fd = descriptor
        case .connect, .attempt, .sleep: return
        }
        if old.isEmpty {
            try poller.register(fd, token: entry.token, interest: wanted)
        } else if wanted.isEmpty {
            try poller.deregister(fd)
        } else {
            try poller.reregister(fd, token: entry.token, interest: wanted)
        }
        entry.registered = wanted
    }

    // MARK: Events and timers

    func dispatchEvents() {
        for event in events {
            if event.isWakeup {
                if !resolving.isEmpty { takeResolutionAnswers() }
                continue
            }
            let raw = event.token.rawValue
            if raw & connectBit != 0 {
                guard let entry = entries[(raw & ~connectBit) >> 5] else { continue }
                switch entry.resource {
                case .connect(let connect): connectProgress(entry, connect.handle(event))
                case .attempt(let attempt): connectProgress(entry, attempt.handle(event.ready))
                default: break
                }
                continue
            }
            guard let entry = entries[raw >> 2] else { continue }
            deliver(entry, event.ready)
        }
    }

    private func deliver(_ entry: Entry, _ ready: Ready) {
        var keep = entry.registered
        if entry.registered.contains(.readable), !ready.isDisjoint(with: [.readable, .readClosed, .hangup, .error]) {
            if entry.read.isWaiting {
                resolve(entry, .read, .ready)
            } else if entry.read.lingering {
                entry.read.lingering = false
            } else {
                keep.remove(.readable)
            }
        }
        if entry.registered.contains(.writable), !ready.isDisjoint(with: [.writable, .hangup, .error]) {
            if entry.write.isWaiting {
                resolve(entry, .write, .ready)
            } else if entry.write.lingering {
                entry.write.lingering = false
            } else {
                keep.remove(.writable)
            }
        }
        if keep != entry.registered { try? updateInterest(entry, keep) }
    }

    func fireTimers(now: Int64) {
        while let token = timers.popDue(now: now) {
            let raw = token.rawValue
            if raw & connectBit != 0 {
                guard let entry = entries[(raw & ~connectBit) >> 5] else { continue }
                switch entry.resource {
                case .connect(let connect): connectProgress(entry, connect.handleTimer(token, now: now))
                case .attempt(let attempt):
                    entry.connectTimer = nil
                    connectProgress(entry, attempt.checkDeadline(now: now))
                default: break
                }
                continue
            }
            guard let entry = entries[raw >> 2] else { continue }
            switch raw & 3 {
            case 1:
                entry.read.timer = nil
                resolve(entry, .read, .failed(.timedOut))
            case 2:
                entry.write.timer = nil
                resolve(entry, .write, .failed(.timedOut))
            default:
                entry.backoffTimer = nil
                endBackoff(entry)
            }
        }
    }

    private func takeResolutionAnswers() {
        for id in Array(resolving) {
            guard let entry = entries[id], case .connect(let connect) = entry.resource else {
                resolving.remove(id)
                continue
            }
            connectProgress(entry, connect.handle(Event(token: .waker, ready: .readable)))
        }
    }

    private func connectProgress(_ entry: Entry, _ progress: ConnectProgress) {
        switch progress {
        case .inProgress: return
        case .connected(let socket): connectProgress(entry, HappyEyeballs.Progress.connected(socket))
        case .failed(let error): connectProgress(entry, HappyEyeballs.Progress.failed(error))
        }
    }

    private func connectProgress(_ entry: Entry, _ progress: HappyEyeballs.Progress) {
        guard !progress.isInProgress else { return }
        if let timer = entry.connectTimer { timers.cancel(timer) }
        entry.connectTimer = nil
        entry.connectOutcome = progress
        resolving.remove(entry.id)
        resolve(entry, .write, .ready)
    }

    // MARK: Accept back-off

    private func endBackoff(_ entry: Entry) {
        guard entry.isBackingOff, case .listener(let listener) = entry.resource else { return }
        entry.isBackingOff = false
        backingOff.remove(entry.id)
        if let timer = entry.backoffTimer { timers.cancel(timer) }
        entry.backoffTimer = nil
        try? listener.resume()   // never registered through the Listener: this only ends its back-off
        resolve(entry, .read, .ready)
    }

    /// A descriptor was closed on this loop: listeners out of descriptors try again now.
    private func descriptorFreed() {
        guard !backingOff.isEmpty else { return }
        for id in Array(backingOff) {
            if let entry = entries[id] { endBackoff(entry) } else { backingOff.remove(id) }
        }
    }

    // MARK: Closing

    /// Removes the entry, resumes its waiters with `reason`, and releases what it owns, exactly once
    /// (a second call finds no entry).
    func close(_ entry: Entry, reason: LoopError) {
        guard entries[entry.id] === entry else { return }
        resolve(entry, .read, .failed(reason))
        resolve(entry, .write, .failed(reason))
        entries.removeValue(forKey: entry.id)
        if let timer = entry.backoffTimer { timers.cancel(timer) }
        entry.backoffTimer = nil
        if let timer = entry.connectTimer { timers.cancel(timer) }
        entry.connectTimer = nil
        if !backingOff.isEmpty { backingOff.remove(entry.id) }
        // A connect whose socket was handed over after its waiter gave up (cancelled, or it had not
        // installed yet): nobody will take the socket, so it is closed here, once.
        if case .connected(let socket)? = entry.connectOutcome {
            entry.connectOutcome = nil
            Sys.close(socket.fd)
        }
        if entry.ownedFD >= 0 {
            owned[Int(entry.ownedFD)] = false
            entry.ownedFD = -1
        }
        switch entry.resource {
        case .stream(let socket):
            socket.close()          // deregisters first (registered through StreamSocket.register)
            entry.registered = []
            descriptorFreed()
        case .listener(let listener):
            try? updateInterest(entry, [])
            listener.close()
        case .foreign(let fd):
            try? updateInterest(entry, [])
            foreign.removeValue(forKey: fd)
        case .connect(let connect):
            resolving.remove(entry.id)
            connect.cancel()        // deregisters and closes every attempt's socket
        case .attempt(let attempt):
            attempt.cancel()        // deregisters and closes its socket (nothing once it was handed over)
        case .sleep:
            break
        }
    }

    /// Shutdown: every waiter resumes with `reason` (`.shutdown`, or `.poller` when the poller could
    /// no longer wait), everything owned is closed once.
    func shutDown(reason: LoopError = .shutdown) {
        isShutDown = true
        for entry in Array(entries.values) { close(entry, reason: reason) }
        timers.removeAll()
    }

    // MARK: Operations (each runs on the loop thread; `EventLoop.onLoop` took it there)

    func adopt(_ socket: StreamSocket) -> UInt64 {
        let id = newID()
        let entry = Entry(id: id, resource: .stream(socket))
        entries[id] = entry
        own(entry, socket.fd)
        return id
    }

    /// Whether a stream or listener of this loop owns `fd`.
    func owns(_ fd: CInt) -> Bool { fd >= 0 && Int(fd) < owned.count && owned[Int(fd)] }

    private func own(_ entry: Entry, _ fd: CInt) {
        guard fd >= 0 else { return }
        if Int(fd) >= owned.count { owned.append(contentsOf: repeatElement(false, count: Int(fd) + 1 - owned.count)) }
        owned[Int(fd)] = true
        entry.ownedFD = fd
    }

    /// A descriptor a caller may hand over or wait on: not one this loop owns or already watches.
    func checkForeign(_ fd: CInt, _ operation: String) throws(LoopError) {
        if owns(fd) { throw .invalidArgument("\(operation): descriptor \(fd) belongs to a socket or listener of this loop") }
    }

    private func openEntry(_ id: UInt64) throws(LoopError) -> Entry {
        if isShutDown { throw .shutdown }
        guard let entry = entries[id] else { throw .closed }
        return entry
    }

    private func stream(_ id: UInt64) throws(LoopError) -> (Entry, StreamSocket) {
        let entry = try openEntry(id)
        guard case .stream(let socket) = entry.resource else { throw .closed }
        return (entry, socket)
    }

    nonisolated(nonsending) func read(_ id: UInt64, into buffer: UnsafeMutableRawBufferPointer, deadline: Int64?) async throws(LoopError) -> Int {
        var (entry, socket) = try stream(id)
        if entry.read.isWaiting { throw .busy }
        while true {
            let result: IOResult
            do { result = try socket.read(into: buffer) } catch { throw .socket(error) }
            switch result {
            case .transferred(let n): return n
            case .endOfStream: return 0
            case .wouldBlock: break
            }
            if case .failed(let error) = await wait(entry, .read, deadline: deadline, interest: true) { throw error }
            (entry, socket) = try stream(id)
        }
    }

    nonisolated(nonsending) func write(_ id: UInt64, _ buffer: UnsafeRawBufferPointer, deadline: Int64?) async throws(LoopError) {
        var (entry, socket) = try stream(id)
        if entry.write.isWaiting { throw .busy }
        var offset = 0
        while offset < buffer.count {
            let result: IOResult
            do {
                result = try socket.write(UnsafeRawBufferPointer(rebasing: buffer[offset...]))
            } catch { throw .socket(error) }
            if case .transferred(let n) = result {
                offset += n
                continue
            }
            if case .failed(let error) = await wait(entry, .write, deadline: deadline, interest: true) { throw error }
            (entry, socket) = try stream(id)
        }
    }

    nonisolated(nonsending) func write(_ id: UInt64, vectored buffers: [UnsafeRawBufferPointer], deadline: Int64?) async throws(LoopError) {
        var (entry, socket) = try stream(id)
        if entry.write.isWaiting { throw .busy }
        var remaining = RemainingBuffers(buffers: buffers)
        while !remaining.isEmpty {
            let result: IOResult
            do { result = try socket.write(vectored: remaining) } catch { throw .socket(error) }
            if case .transferred(let n) = result {
                remaining.advance(by: n)
                continue
            }
            if case .failed(let error) = await wait(entry, .write, deadline: deadline, interest: true) { throw error }
            (entry, socket) = try stream(id)
        }
    }

    func listen(_ address: SocketAddress, options: Listener.Options) throws(LoopError) -> (UInt64, SocketAddress) {
        if isShutDown { throw .shutdown }
        let listener: Listener
        do { listener = try Listener(bind: address, options: options) } catch { throw .socket(error) }
        let id = newID()
        let entry = Entry(id: id, resource: .listener(listener))
        entries[id] = entry
        own(entry, listener.fd)
        return (id, listener.address)
    }

    nonisolated(nonsending) func accept(_ id: UInt64, deadline: Int64?) async throws(LoopError) -> (UInt64, SocketAddress) {
        var entry = try openEntry(id)
        guard case .listener(let listener) = entry.resource else { throw .closed }
        if entry.read.isWaiting { throw .busy }
        while true {
            let result: AcceptResult
            do { result = try listener.accept() } catch { throw .socket(error) }
            let outcome: Outcome
            switch result {
            case .accepted(let socket, let peer):
                return (adopt(socket), peer)
            case .wouldBlock:
                outcome = await wait(entry, .read, deadline: deadline, interest: true)
            case .backingOff(let until):
                // Out of descriptors: stop watching (a readable listener would wake the loop in a
                // spin), try again at the back-off's time or when this loop closes a descriptor.
                try? updateInterest(entry, [])
                entry.isBackingOff = true
                backingOff.insert(entry.id)
                if entry.backoffTimer == nil {
                    entry.backoffTimer = timers.schedule(at: until, token: Token(rawValue: entry.id << 2 | 3))
                }
                outcome = await wait(entry, .read, deadline: deadline, interest: false)
            }
            if case .failed(let error) = outcome { throw error }
            entry = try openEntry(id)
        }
    }

    nonisolated(nonsending) func connect(addresses: [SocketAddress], resolution: (host: String, port: UInt16, resolver: any HostResolver)?,
                 options: HappyEyeballs.Options, deadline: Int64?) async throws(LoopError) -> (UInt64, ConnectedSocket) {
        if isShutDown { throw .shutdown }
        guard let poller else { throw .shutdown }
        if let reason = options.invalidReason { throw .invalidArgument(reason) }
        if resolution == nil, addresses.isEmpty { throw .connect(ConnectError(.noAddress)) }
        let id = newID()
        let base = Token(rawValue: connectBit | id << 5)
        var options = options
        options.maximumAttempts = min(options.maximumAttempts, 31)
        if resolution == nil, addresses.count == 1 {
            // The attempt driver alone, with the options' attempt timeout as for any list.
            return try await connect(to: addresses[0], id: id, base: base, poller: poller, deadline: deadline,
                                     attemptTimeout: options.attemptTimeout)
        }
        let connect: HappyEyeballs
        if let resolution {
            let lookup = Resolution(host: resolution.host, port: resolution.port, waker: poller.waker, resolver: resolution.resolver)
            connect = HappyEyeballs(resolution: lookup, poller: poller, timers: timers, tokenBase: base, options: options)
            resolving.insert(id)
        } else {
            connect = HappyEyeballs(addresses: addresses, poller: poller, timers: timers, tokenBase: base, options: options)
        }
        let entry = Entry(id: id, resource: .connect(connect))
        entries[id] = entry
        var progress = connect.start()
        if progress.isInProgress {
            let outcome = await wait(entry, .write, deadline: deadline, interest: false)
            if case .failed(let error) = outcome {
                close(entry, reason: error)   // cancels every attempt: deregistered, closed once
                throw error
            }
            // Ended, but the loop shut down before this task ran again: the winner (if any) was closed
            // with the entry.
            guard entries[id] === entry, !isShutDown else {
                close(entry, reason: .shutdown)
                throw .shutdown
            }
            progress = entry.connectOutcome ?? .failed(ConnectError(.cancelled))
        }
        entry.connectOutcome = nil            // taken: `close` must not close the winner's socket
        close(entry, reason: .closed)         // the winner was handed over; the rest are cancelled
        switch progress {
        case .connected(let socket): return (adopt(StreamSocket(socket)), socket)
        case .failed(let error): throw .connect(error)
        case .unresolved(let error): throw .resolution(error)
        case .inProgress: throw .closed
        }
    }

    /// One address: the `ConnectAttempt` driver alone (the same state machine; no Happy Eyeballs
    /// bookkeeping). The deadline is the wait's.
    /// One address (`EventLoop.connect(to:timeout:)`): the connect's id becomes the socket's.
    nonisolated(nonsending) func connect(to address: SocketAddress, deadline: Int64?) async throws(LoopError) -> (UInt64, SocketAddress?) {
        if isShutDown { throw .shutdown }
        guard let poller else { throw .shutdown }
        let id = newID()
        let (socketID, socket) = try await connect(to: address, id: id, base: Token(rawValue: connectBit | id << 5), poller: poller,
                                                   deadline: deadline, attemptTimeout: nil)
        return (socketID, socket.peer)
    }

    /// One address: the `ConnectAttempt` driver alone (the same state machine; no Happy Eyeballs
    /// bookkeeping). The deadline is the wait's; `attemptTimeout` (a list's option) ends the attempt
    /// itself with `ConnectError(.timedOut)`, as it does for an attempt of several. On success the entry
    /// becomes the socket's (same id).
    nonisolated(nonsending) private func connect(to address: SocketAddress, id: UInt64, base: Token, poller: any Poller,
                                                 deadline: Int64?, attemptTimeout: Duration?) async throws(LoopError) -> (UInt64, ConnectedSocket) {
        let attempt = ConnectAttempt(to: address, poller: poller, token: Token(rawValue: base.rawValue | 1), timeout: attemptTimeout)
        let entry = Entry(id: id, resource: .attempt(attempt))
        entries[id] = entry
        var progress = attempt.start()
        if case .inProgress = progress {
            entry.connectTimer = attempt.scheduleDeadline(on: timers)
            let outcome = await wait(entry, .write, deadline: deadline, interest: false)
            if case .failed(let error) = outcome {
                close(entry, reason: error)   // cancels the attempt: deregistered, closed once
                throw error
            }
            // Ended, but the loop shut down before this task ran again: the socket (if any) was
            // closed with the entry.
            guard entries[id] === entry, !isShutDown else {
                close(entry, reason: .shutdown)
                throw .shutdown
            }
            switch entry.connectOutcome {
            case .connected(let socket)?: progress = .connected(socket)
            case .failed(let error)?: progress = .failed(error)
            default: progress = .failed(ConnectError(.cancelled, address: address))
            }
        }
        switch progress {
        case .connected(let socket):
            // Handed over (deregistered by the attempt, nobody waits): the entry is the socket's now.
            // Closed meanwhile (shutdown ran while the task was queued)? Then `close` closed the socket
            // it found on the entry; an entry still there is closed now, which closes it.
            guard entries[id] === entry, !isShutDown else {
                close(entry, reason: .shutdown)
                throw .shutdown
            }
            entry.becomeStream(StreamSocket(socket))
            own(entry, socket.fd)
            return (id, socket)
        case .failed(let error):
            close(entry, reason: .closed)
            throw .connect(error)
        case .inProgress:
            close(entry, reason: .closed)
            throw .closed
        }
    }

    nonisolated(nonsending) func sleep(until deadline: Int64) async throws(LoopError) {
        if isShutDown { throw .shutdown }
        let entry = Entry(id: newID(), resource: .sleep)
        entries[entry.id] = entry
        let outcome = await wait(entry, .read, deadline: deadline, interest: false)
        close(entry, reason: .closed)
        switch outcome {
        case .ready, .failed(.timedOut): return
        case .failed(let error): throw error
        }
    }

    nonisolated(nonsending) func waitForeign(_ fd: CInt, _ direction: Direction, deadline: Int64?) async throws(LoopError) {
        if isShutDown { throw .shutdown }
        guard fd >= 0 else { throw .poller(.invalidDescriptor(fd)) }
        try checkForeign(fd, direction == .read ? "readable" : "writable")
        let entry: Entry
        if let id = foreign[fd], let existing = entries[id] {
            entry = existing
        } else {
            entry = Entry(id: newID(), resource: .foreign(fd))
            entries[entry.id] = entry
            foreign[fd] = entry.id
        }
        let outcome = await wait(entry, direction, deadline: deadline, interest: true)
        // Watched only while waited on: the caller may close the descriptor as soon as this returns.
        if entries[entry.id] === entry {
            var still: Interest = []
            if entry.read.isWaiting { still.insert(.readable) }
            if entry.write.isWaiting { still.insert(.writable) }
            try? updateInterest(entry, entry.registered.intersection(still))
            if still.isEmpty { close(entry, reason: .closed) }
        }
        if case .failed(let error) = outcome { throw error }
    }

    func close(_ id: UInt64) {
        guard let entry = entries[id] else { return }
        close(entry, reason: .closed)
    }

    func withStream<T>(_ id: UInt64, _ body: (StreamSocket) throws(SocketError) -> T) throws(LoopError) -> T {
        let (entry, socket) = try stream(id)
        defer { reconcile(entry, socket) }
        do { return try body(socket) } catch { throw .socket(error) }
    }

    /// After the escape hatch (`withStreamSocket`), which may have closed, released, deregistered or
    /// re-registered the socket behind the loop's back: the loop's record of the registration is made
    /// true again, so that no wait trusts a registration that is gone.
    private func reconcile(_ entry: Entry, _ socket: StreamSocket) {
        guard entries[entry.id] === entry else { return }
        if socket.isClosed {
            close(entry, reason: .closed)   // closed or released by the body: the loop forgets it
            return
        }
        let intact: Bool
        if entry.registered.isEmpty {
            intact = socket.poller == nil
        } else if let registration = socket.registration, socket.poller === poller {
            intact = registration.token == entry.token && registration.interest == entry.registered && registration.trigger == .level
        } else {
            intact = false
        }
        guard !intact else { return }
        try? socket.deregister()
        // The loop's poller may still hold the number (the body registered the socket elsewhere
        // without deregistering here first): drop it too, so the number is clean for the next owner.
        if !entry.registered.isEmpty, socket.poller == nil { try? poller?.deregister(socket.fd) }
        entry.registered = []
        var wanted: Interest = []
        if entry.read.isWaiting || entry.read.lingering { wanted.insert(.readable) }
        if entry.write.isWaiting || entry.write.lingering { wanted.insert(.writable) }
        do {
            try updateInterest(entry, wanted)
        } catch {
            resolve(entry, .read, .failed(.poller(error)))
            resolve(entry, .write, .failed(.poller(error)))
        }
    }
}

/// The unwritten part of a vectored write, without copying the buffer list.
struct RemainingBuffers: Collection {
    let buffers: [UnsafeRawBufferPointer]
    var first = 0
    var offset = 0

    init(buffers: [UnsafeRawBufferPointer]) {
        self.buffers = buffers
        skipEmpty()
    }

    var startIndex: Int { first }
    var endIndex: Int { buffers.count }
    func index(after i: Int) -> Int { i + 1 }
    subscript(position: Int) -> UnsafeRawBufferPointer {
        position == first ? UnsafeRawBufferPointer(rebasing: buffers[position][offset...]) : buffers[position]
    }

    mutating func advance(by count: Int) {
        var left = count
        while left > 0, first < buffers.count {
            let available = buffers[first].count - offset
            if left < available {
                offset += left
                return
            }
            left -= available
            first += 1
            offset = 0
        }
        skipEmpty()
    }

    private mutating func skipEmpty() {
        while first < buffers.count, buffers[first].count - offset == 0 {
            first += 1
            offset = 0
        }
    }
}
