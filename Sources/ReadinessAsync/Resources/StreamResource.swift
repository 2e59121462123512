#if canImport(Glibc)
import Glibc
#endif
@_spi(Backend) import ReadinessCore
import ReadinessNet

/// A connected stream socket the loop owns (``AsyncSocket``), or one being connected to one address
/// (`EventLoop.connect(to:)`): then the ``ConnectAttempt`` drives it under the stream's own token, and
/// the connected socket takes the attempt's place in the same resource (same key: no second slot, no
/// second object).
final class StreamResource: LoopResource {
    let key: ResourceKey
    @exclusivity(unchecked) var record = LoopRecord()   // loop thread only, never overlapping (LoopResource)
    /// The socket, once connected (nil while the attempt runs, and for an attempt that failed).
    @exclusivity(unchecked) private(set) var socket: StreamSocket?
    /// The connect to one address, while it runs.
    @exclusivity(unchecked) private(set) var attempt: ConnectAttempt?
    /// The attempt's outcome, kept until the connecting task takes it.
    @exclusivity(unchecked) var outcome: ConnectProgress?
    /// The attempt's timeout (``HappyEyeballs/Options/attemptTimeout``), while it runs.
    @exclusivity(unchecked) var attemptTimer: TimerID?

    init(key: ResourceKey, socket: StreamSocket) {
        self.key = key
        self.socket = socket
    }

    /// Connecting: `makeAttempt` builds the attempt with this resource's token.
    init(key: ResourceKey, connecting makeAttempt: (Token) -> ConnectAttempt) {
        self.key = key
        attempt = makeAttempt(key.token)
    }

    /// The connected socket takes the attempt's place. Nobody waits on it then; the attempt is
    /// finished and no longer registered.
    func becomeStream(_ socket: StreamSocket) {
        attempt = nil
        outcome = nil
        self.socket = socket
        record.read = WaitSlot()
        record.write = WaitSlot()
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
        if let attemptTimer { loop.timers.cancel(attemptTimer) }
        attemptTimer = nil
        // A connect whose socket was handed over after its waiter gave up (cancelled, or it had not
        // installed yet): nobody will take the socket, so it is closed here, once.
        if case .connected(let connected)? = outcome {
            outcome = nil
            Sys.close(connected.fd)
        }
        attempt?.cancel()        // deregisters and closes its socket (nothing once it was handed over)
        if let socket {
            socket.close()       // deregisters first (registered through StreamSocket.register)
            record.registered = []
            loop.descriptorFreed()
        }
    }
}
