#if canImport(Glibc)
import Glibc
#endif
@_spi(Backend) import ReadinessCore
import ReadinessNet

/// A connected stream socket the loop owns (``AsyncSocket``), or one being connected to one address
/// (`EventLoop.connect(to:)`): then the ``ConnectAttempt`` drives it under the stream's own token, and
/// the connected socket takes the attempt's place in the same resource (same key: no second slot, no
/// second object).
final class StreamResource: LoopResourceBase, LoopResource {
    /// A connection this loop made (``EventLoop/connect(to:timeout:)`` and the other connects), not
    /// one it accepted or adopted: a graceful shutdown does not wait for it (an idle pooled connection
    /// to an upstream would hold every drain for the whole grace period). Declared first: it takes
    /// padding after the base class's fields, so the object stays 144 bytes.
    @exclusivity(unchecked) private(set) var isOutbound = false
    /// The socket, once connected (nil while the attempt runs, and for an attempt that failed).
    @exclusivity(unchecked) private(set) var socket: StreamSocket?
    /// What a connect to one address keeps while it runs, in a box of its own: nil once connected, so
    /// that a connected socket (most of them, idle or not) holds no room for it (an outcome holds two
    /// addresses: about 330 bytes; Docs/Async.md, "Memory per idle connection").
    @exclusivity(unchecked) private var connecting: Connecting?

    /// A connect's state (``StreamResource/connecting``).
    private final class Connecting {
        /// The connect to one address, while it runs.
        var attempt: ConnectAttempt?
        /// The attempt's outcome, kept until the connecting task takes it.
        var outcome: ConnectProgress?
        /// The attempt's timeout (``HappyEyeballs/Options/attemptTimeout``), while it runs.
        var timer: TimerID?
        init(_ attempt: ConnectAttempt) { self.attempt = attempt }
    }

    /// The connect to one address, while it runs.
    var attempt: ConnectAttempt? { connecting?.attempt }
    /// The attempt's outcome, kept until the connecting task takes it.
    var outcome: ConnectProgress? {
        get { connecting?.outcome }
        set { connecting?.outcome = newValue }
    }
    /// The attempt's timeout (``HappyEyeballs/Options/attemptTimeout``), while it runs.
    var attemptTimer: TimerID? {
        get { connecting?.timer }
        set { connecting?.timer = newValue }
    }

    init(key: ResourceKey, socket: StreamSocket, outbound: Bool = false) {
        self.socket = socket
        isOutbound = outbound
        super.init(key: key)
    }

    /// Connecting: `makeAttempt` builds the attempt with this resource's token.
    init(key: ResourceKey, connecting makeAttempt: (Token) -> ConnectAttempt) {
        connecting = Connecting(makeAttempt(key.token))
        super.init(key: key)
    }

    /// The connected socket takes the attempt's place. Nobody waits on it then; the attempt is
    /// finished and no longer registered.
    func becomeStream(_ socket: StreamSocket) {
        connecting = nil
        self.socket = socket
        isOutbound = true
        record.read = WaitSlot(timer: record.read.timer)     // a deadline timer stays the resource's
        record.write = WaitSlot(timer: record.write.timer)
        record.registered = []
        record.isDone = false
    }

    /// Registered through the socket (`StreamSocket.register`), so that the escape hatch sees the
    /// registration and `close` deregisters first.
    func applyInterest(_ wanted: Interest, old: Interest, token: Token, poller: any Poller) throws(PollerError) -> Bool {
        guard let socket else { return false }
        if old.isEmpty {
            try socket.register(on: poller, token: token, interest: wanted)
        } else if wanted.isEmpty {
            try socket.deregister()
        } else {
            try socket.reregister(token: token, interest: wanted)
        }
        return true
    }

    func ready(_ ready: Ready, token: Token, loop: LoopState) {
        if let attempt {
            progress(attempt.handle(ready), loop: loop)
        } else {
            loop.deliver(self, ready)
        }
    }

    /// The attempt's own timer (scheduled with its token) is due.
    func timerFired(_ purpose: TimerPurpose, token: Token, now: Int64, loop: LoopState) {
        guard let attempt, purpose == .none else { return }
        attemptTimer = nil
        progress(attempt.checkDeadline(now: now), loop: loop)
    }

    func progress(_ progress: ConnectProgress, loop: LoopState) {
        if case .inProgress = progress { return }
        if let attemptTimer { loop.timers.cancel(attemptTimer) }
        attemptTimer = nil
        outcome = progress
        record.isDone = true
        loop.resolve(self, .write, .ready)
    }

    func release(loop: LoopState) {
        if !loop.readFailures.isEmpty { loop.readFailures.removeValue(forKey: key) }
        if let attemptTimer { loop.timers.cancel(attemptTimer) }
        attemptTimer = nil
        // A connect whose socket was handed over after its waiter gave up (cancelled, or it had not
        // installed yet): nobody will take the socket, so it is closed here, once.
        // Whether a descriptor was freed (closed here, or by the connect attempt when it failed):
        // only then may a listener out of descriptors try again (a connect whose socket() failed for
        // want of one, or a socket the escape hatch's body released, frees none: a retry would fail
        // again and double its back-off; one the body closed is counted by the hatch).
        var freed = false
        if case .connected(let connected)? = outcome {
            outcome = nil
            Sys.close(connected.fd)
            freed = true
        }
        if let attempt, attempt.fd >= 0 || attempt.closedSocket { freed = true }
        attempt?.cancel()        // deregisters and closes its socket (nothing once it was handed over)
        if let socket {
            if !socket.isClosed { freed = true }
            // Deregistered first (registered through StreamSocket.register); a deregister the
            // poller refuses even after the close is kept and asked again (``LoopState/dropRegistration``).
            if socket.isClosed || record.registered.isEmpty {
                socket.close()
            } else {
                loop.dropRegistration(self, fd: socket.fd) { socket.close() }
            }
            record.registered = []
        }
        if freed { loop.descriptorFreed() }   // a listener out of descriptors tries again now
    }
}
