// FlyingSocks' `EventQueue` over any Readiness `Poller`, so that FlyingSocks' own `SocketPool` (its
// actor, its waiting lists, its dispatch queue) runs on any backend:
//
//     let pool = SocketPool(queue: ReadinessEventQueue())                  // READINESS_BACKEND or the best
//     let pool = SocketPool(queue: ReadinessEventQueue(backend: .select))
//
// .ci/flyingfox also compiles this file inside FlyingSocks itself (READINESS_INSIDE_FLYINGSOCKS).
#if !READINESS_INSIDE_FLYINGSOCKS
import FlyingSocks
#endif
@_spi(Backend) import Readiness

/// An `EventQueue` over a Readiness `Poller` of any backend. Sendable: every call takes one lock, and
/// copies (SocketPool copies it for its dispatch queue) share one state.
///
/// FlyingSocks' `SocketPool` calls `getNotifications()` on its dispatch queue while its actor calls
/// `addEvents`/`removeEvents`; a Readiness poller is used from one thread at a time (Docs/Contract.md).
/// So a change made while a wait is in progress is recorded and the poller's waker is woken; the
/// waiting thread applies it before it waits again (a change made while nobody waits is applied at
/// once, and its error thrown, as FlyingSocks' epoll queue does). A change that fails on the waiting
/// thread is reported as a notification for that descriptor with `.error`, which `SocketPool` turns
/// into `SocketError.disconnected` for its waiters. `close()` during a wait is done by the waiting
/// thread when the wait returns.
///
/// Registrations are level-triggered (every backend has it); `SocketPool` removes a descriptor's
/// events as soon as nobody waits for them, so a ready descriptor is not reported again and again.
/// Notifications map as FlyingSocks' epoll queue maps its events: readable is `.read`, writable is
/// `.write`; a hang-up or read-closed without readable is the error `.endOfFile`, `error` is `.error`,
/// and a notification with errors and no event carries the events registered for the descriptor.
public struct ReadinessEventQueue: EventQueue, Sendable {

    private let shared: Shared

    /// A queue whose pollers are `backend`'s (nil: `Backend.default()`, `READINESS_BACKEND` or the best),
    /// made by `open()`; at most `maxEvents` notifications per `getNotifications()`.
    public init(backend: Backend? = nil, maxEvents: Int = 20) {
        self.init(maxEvents: maxEvents) { () throws(PollerError) -> any Poller in
            let chosen: Backend
            if let backend { chosen = backend } else {
                do throws(SelectionError) { chosen = try Backend.default() } catch {
                    // The factory speaks PollerError: a selection failure as the default backend's
                    // unavailability, with the selection's reason.
                    throw .unavailable(backend: "default", reason: error.description)
                }
            }
            return try Self.makePoller(chosen)
        }
    }

    /// `backend`'s poller, as this queue uses it. io_uring's without deferred completions
    /// (IORING_SETUP_DEFER_TASKRUN): `SocketPool` waits on one thread (a dispatch queue's) and removes
    /// descriptors from another (its actor's), and a deferred-completion ring belongs to the thread
    /// that first submitted to it, so every such removal moved the ring to a new one and the next
    /// wait moved it back: two ring set-ups and a re-queue of every registration per resumed waiter.
    static func makePoller(_ backend: Backend) throws(PollerError) -> any Poller {
        if backend.kind == .ioUring { return try IOUringSeam.makePoller(allowing: IOUringSeam.Features.all.subtracting(.deferredCompletions)) }
        return try backend.makePoller()
    }

    /// A queue whose pollers `makePoller` creates (one per `open()`); `maxEvents` is clamped to 1 ...
    /// `EventBuffer.maximumCapacity - 1` (one more slot holds the waker's event).
    public init(maxEvents: Int = 20, makePoller: @escaping @Sendable () throws(PollerError) -> any Poller) {
        self.shared = Shared(maxEvents: min(max(1, maxEvents), EventBuffer.maximumCapacity - 1), makePoller: makePoller)
    }

    /// The name of the open poller's backend (its capabilities' name), for tests and logs.
    public var backendName: String? { shared.backendName }

    public mutating func open() throws { try shared.open() }
    public mutating func stop() throws { try shared.stop() }
    public mutating func close() throws { try shared.close() }

    public mutating func addEvents(_ events: Socket.Events, for socket: Socket.FileDescriptor) throws {
        try shared.change(socket.rawValue) { $0.union(Self.interest(events)) }
    }

    public mutating func removeEvents(_ events: Socket.Events, for socket: Socket.FileDescriptor) throws {
        try shared.change(socket.rawValue) { $0.subtracting(Self.interest(events)) }
    }

    public func getNotifications() throws -> [EventNotification] {
        try shared.getNotifications()
    }

    static func interest(_ events: Socket.Events) -> Interest {
        var interest: Interest = []
        if events.contains(.read) { interest.insert(.readable) }
        if events.contains(.write) { interest.insert(.writable) }
        return interest
    }

    static func events(_ interest: Interest) -> Socket.Events {
        var events = Socket.Events()
        if interest.contains(.readable) { events.insert(.read) }
        if interest.contains(.writable) { events.insert(.write) }
        return events
    }

    /// One open poller and what is registered on it.
    private final class Session {
        let poller: any Poller
        let buffer: EventBuffer
        /// What the poller has now.
        var registered: [Int32: Interest] = [:]
        /// What is wanted, to apply before the next wait (recorded while a wait is in progress).
        var pending: [Int32: Interest] = [:]
        /// Numbers whose interest went to none during a wait: the descriptor may have been closed and
        /// its number reused since, so the registration is made anew when the pending interest is
        /// applied, even if it equals the old file's (which the kernel may have dropped with it).
        var removedDuringWait: Set<Int32> = []
        var waiting = false
        var stopped = false
        var closeRequested = false
        var closed = false

        init(poller: any Poller, maxEvents: Int) {
            self.poller = poller
            self.buffer = EventBuffer(capacity: maxEvents + 1)   // + the waker's event
        }

        /// Makes the poller's registration of `fd` be `interest` (nothing: deregistered). A registration
        /// already as wanted is applied again (reregister): the number may name another file since it
        /// was made (the old one closed under its waiter, the number reused by the next socket), which
        /// epoll never watched; the contract's reregister applies it to the file the number names now.
        func apply(_ fd: Int32, _ interest: Interest) throws(PollerError) {
            guard fd >= 0 else { throw .invalidDescriptor(fd) }
            let current = registered[fd]
            if interest.isEmpty {
                guard current != nil else { return }
                // Forgotten only once the poller has let it go: a failed deregister keeps it watched,
                // and forgetting it then would leave its events with no waiter (a spin) and make the
                // next add `alreadyRegistered`.
                try poller.deregister(fd)
                registered[fd] = nil
            } else if current != nil {
                // reregister applies the registration to whatever file the number names now (the
                // contract); on failure the registration stays as it was, for the other direction's waiter.
                try poller.reregister(fd, token: Token(UInt64(fd)), interest: interest)
                registered[fd] = interest
            } else {
                try poller.register(fd, token: Token(UInt64(fd)), interest: interest)
                registered[fd] = interest
            }
        }

        /// Applies the changes recorded during a wait; the failures as notifications for their waiters.
        func applyPending() -> [EventNotification] {
            var failed: [EventNotification] = []
            let pending = self.pending
            let removed = removedDuringWait
            removedDuringWait = []
            self.pending = [:]
            for (fd, interest) in pending {
                if removed.contains(fd), !interest.isEmpty, registered[fd] != nil {
                    registerAnew(fd)   // the number may name another file now
                }
                do throws(PollerError) { try apply(fd, interest) } catch {
                    // Every waiter of the descriptor hears of it: the directions registered and the
                    // ones the failed change added (SocketPool resumes waiters by direction; a waiter
                    // of a new direction would stay suspended).
                    let events = ReadinessEventQueue.events((registered[fd] ?? []).union(interest))
                    failed.append(EventNotification(file: .init(rawValue: fd), events: events, errors: [.error]))
                }
            }
            return failed
        }

        /// Drops `fd`'s registration so that the next `apply` registers it anew (the number may name
        /// another file since its interest went to none). A failed deregister keeps the registration
        /// as it was (the next `apply` changes it in place, as before).
        func registerAnew(_ fd: Int32) {
            do throws(PollerError) {
                try poller.deregister(fd)
                registered[fd] = nil
            } catch {}
        }

        func closePoller() {
            guard !closed else { return }
            closed = true
            try? poller.close()
        }
    }

    private final class Shared: @unchecked Sendable {
        let maxEvents: Int
        let makePoller: @Sendable () throws(PollerError) -> any Poller
        /// Guards `session` and every field of every session; a session's poller is touched only with
        /// the lock held and `waiting` false, or by the thread that set `waiting`.
        let lock = ReadinessLocked<Session?>(nil)

        init(maxEvents: Int, makePoller: @escaping @Sendable () throws(PollerError) -> any Poller) {
            self.maxEvents = maxEvents
            self.makePoller = makePoller
        }

        var backendName: String? {
            lock.withLock { $0.map { $0.poller.capabilities.name } }
        }

        func open() throws {
            try lock.withLock { (session: inout Session?) throws in
                if let open = session {
                    if !open.stopped { return }          // already open
                    // Stopped but not closed: retire it (by the waiting thread if one waits).
                    if open.waiting { open.closeRequested = true; try? open.poller.waker.wake() } else { open.closePoller() }
                }
                let poller: any Poller
                do throws(PollerError) {
                    poller = try makePoller()
                } catch {
                    throw FlyingSocks.SocketError.failed(type: "Readiness poller", errno: 0, message: error.description)
                }
                session = Session(poller: poller, maxEvents: maxEvents)
            }
        }

        func stop() throws {
            let waker = try lock.withLock { (session: inout Session?) throws -> Waker? in
                guard let open = session, !open.stopped else { throw FlyingSocks.SocketError.disconnected }
                open.stopped = true
                open.pending = [:]
                open.removedDuringWait = []
                return open.waiting ? open.poller.waker : nil
            }
            try? waker?.wake()
        }

        func close() throws {
            let waker = try lock.withLock { (session: inout Session?) throws -> Waker? in
                guard let open = session else { throw FlyingSocks.SocketError.disconnected }
                session = nil
                open.stopped = true
                if open.waiting {
                    open.closeRequested = true
                    return open.poller.waker
                }
                open.closePoller()
                return nil
            }
            try? waker?.wake()
        }

        func change(_ fd: Int32, _ transform: (Interest) -> Interest) throws {
            let waker = try lock.withLock { (session: inout Session?) throws -> Waker? in
                guard let open = session, !open.stopped else { throw FlyingSocks.SocketError.disconnected }
                let wanted = transform(open.pending[fd] ?? open.registered[fd] ?? [])
                if open.waiting {
                    // What the poller would refuse without looking at the descriptor is refused now,
                    // as a change applied at once is (FlyingSocks' epoll queue fails addEvents at
                    // once): applied by the waiting thread, any failure reaches the waiter as
                    // `.disconnected`, which FlyingFox takes for a clean end (a connection above
                    // select's FD_SETSIZE closed with nothing said).
                    if fd < 0 { throw Shared.socketError(.invalidDescriptor(fd), fd: fd) }
                    let limit = open.poller.capabilities.maxDescriptor
                    if fd > limit, !wanted.isEmpty { throw Shared.socketError(.descriptorTooLarge(fd, limit: limit &+ 1), fd: fd) }
                    open.pending[fd] = wanted
                    if wanted.isEmpty { open.removedDuringWait.insert(fd) }
                    return open.poller.waker
                }
                // Applied now: a change recorded during an earlier wait is superseded (left behind, it
                // would be applied over this one by the next wait). A removal recorded then still counts:
                // the number may name a new file now, whose registration is made anew.
                open.pending[fd] = nil
                if open.removedDuringWait.remove(fd) != nil, !wanted.isEmpty, open.registered[fd] != nil {
                    open.registerAnew(fd)
                }
                do throws(PollerError) { try open.apply(fd, wanted) } catch {
                    throw Shared.socketError(error, fd: fd)
                }
                return nil
            }
            try? waker?.wake()
        }

        func getNotifications() throws -> [EventNotification] {
            while true {
                // Apply what changed while nobody waited, and start waiting.
                let (session, failed) = try lock.withLock { (current: inout Session?) throws -> (Session, [EventNotification]) in
                    guard let open = current, !open.stopped else { throw FlyingSocks.SocketError.disconnected }
                    let failed = open.applyPending()
                    if failed.isEmpty { open.waiting = true }
                    return (open, failed)
                }
                if !failed.isEmpty { return failed }

                var waitError: PollerError?
                do throws(PollerError) {
                    try session.poller.wait(into: session.buffer, timeout: nil)
                } catch {
                    waitError = error
                }

                let notifications = try lock.withLock { (_: inout Session?) throws -> [EventNotification] in
                    session.waiting = false
                    if session.closeRequested {
                        session.closePoller()
                        throw FlyingSocks.SocketError.disconnected
                    }
                    if session.stopped { throw FlyingSocks.SocketError.disconnected }
                    if let waitError { throw Shared.socketError(waitError, fd: -1) }
                    var notifications: [EventNotification] = []
                    for event in session.buffer where !event.isWakeup {
                        let fd = Int32(truncatingIfNeeded: event.token.rawValue)
                        notifications.append(Shared.notification(fd: fd, ready: event.ready, registered: session.registered[fd]))
                    }
                    // The changes made during the wait, applied now, not only before the next wait:
                    // SocketPool waits again only once a task waits, and until then a removal would
                    // keep watching a descriptor its owner may close (on io_uring the poll request
                    // holds the file: the peer saw no end of stream).
                    if !notifications.isEmpty { notifications += session.applyPending() }
                    return notifications
                }
                if !notifications.isEmpty { return notifications }
                // Only the waker (a change to apply): wait again.
            }
        }

        /// FlyingSocks' epoll mapping (`EventNotification.make(from: epoll_event)`), from Readiness's `Ready`.
        static func notification(fd: Int32, ready: Ready, registered: Interest?) -> EventNotification {
            var events = Socket.Events()
            if ready.contains(.readable) { events.insert(.read) }
            if ready.contains(.writable) { events.insert(.write) }
            var errors = Set<EventNotification.Error>()
            if !ready.contains(.readable), ready.contains(.hangup) || ready.contains(.readClosed) {
                errors.insert(.endOfFile)
            }
            if ready.contains(.error) { errors.insert(.error) }
            if events.isEmpty, let registered { events = ReadinessEventQueue.events(registered) }
            return EventNotification(file: .init(rawValue: fd), events: events, errors: errors)
        }

        static func socketError(_ error: PollerError, fd: Int32) -> FlyingSocks.SocketError {
            switch error {
            case .invalidDescriptor, .badDescriptor, .closed, .notRegistered:
                return .disconnected
            case .system(_, let code), .resourceExhausted(_, let code):
                return .failed(type: "Readiness", errno: code, message: error.description)
            default:
                return .failed(type: "Readiness", errno: 0, message: error.description)
            }
        }
    }
}
