@_spi(Backend) import ReadinessCore
import ReadinessNet

/// A listening socket the loop owns (``AsyncListener``), with its out-of-descriptors back-off: while
/// backing off it is not watched, and accepting resumes at the back-off's time or as soon as a
/// descriptor of this loop is closed.
final class ListenerResource: LoopResourceBase, LoopResource {
    let listener: Listener
    private(set) var isBackingOff = false
    private var backoffTimer: TimerID?
    /// The completion driver's multishot accept, while armed, and the connections it accepted that no
    /// `accept` has taken yet (at most `CompletionDriver.acceptQueueLimit` or so; closed with the
    /// listener), and the error that ended it, for the next `accept` to meet by readiness.
    var multishot: CompletionOperation?
    var acceptQueue: [CInt] = []
    var acceptFailure: Int32?

    init(key: ResourceKey, listener: Listener) {
        self.listener = listener
        super.init(key: key)
    }

    var watchedDescriptor: CInt? { listener.fd }

    /// The poller would not let the registration go when a back-off began: it was made one-shot instead
    /// (one report at most while backing off), and is made level again when the back-off ends.
    private var quieted = false

    /// Out of descriptors: stop watching (a readable listener would wake the loop in a spin), try
    /// again at `until` or when this loop closes a descriptor. A deregister the poller refuses (it keeps
    /// the registration: out of memory, an io_uring cancel that could not be submitted) makes the
    /// registration one-shot instead, as `Listener`'s own back-off does (Docs/Sockets.md); before, the
    /// refusal was dropped, the level registration stayed, and the queued connection woke every wait
    /// and resumed the accept, which backed off again: a spin for as long as the refusal lasted.
    func beginBackoff(until: Int64, loop: LoopState) {
        if !record.registered.isEmpty, !quieted {
            do throws(PollerError) { try loop.updateInterest(self, []) } catch {
                if !error.leavesRegistrationInPlace {
                    record.registered = []
                } else if let poller = loop.poller,
                          (try? poller.reregister(listener.fd, token: key.token, interest: .readable, trigger: .oneShot)) != nil {
                    quieted = true
                } else {
                    // Refused too (io_uring: both are a cancel that could not be submitted): let go
                    // through the loop's kept deregisters, asked again after every wait (the wait
                    // kept short meanwhile); the next accept's wait registers afresh.
                    record.registered = []
                    loop.keepDeregister(listener.fd)
                }
            }
        }
        isBackingOff = true
        loop.backingOff.insert(key)
        if backoffTimer == nil {
            backoffTimer = loop.timers.schedule(at: until, token: key.token(.backoff))
        }
    }

    func endBackoff(loop: LoopState) {
        guard isBackingOff else { return }
        isBackingOff = false
        loop.backingOff.remove(key)
        if let backoffTimer { loop.timers.cancel(backoffTimer) }
        backoffTimer = nil
        try? listener.resume()   // never registered through the Listener: this only ends its back-off
        if quieted {
            quieted = false
            // Level again; refused, the registration (one-shot, perhaps spent) is let go through the
            // loop's kept deregisters, and the next wait registers afresh.
            if let poller = loop.poller,
               (try? poller.reregister(listener.fd, token: key.token, interest: record.registered, trigger: .level)) == nil {
                record.registered = []
                loop.keepDeregister(listener.fd)
            }
        }
        loop.resolve(self, .read, .ready)
    }

    /// While backing off, only the back-off's end (its timer, a descriptor freed) resumes the accept:
    /// a readiness event then is a registration the poller would not let go, not the listener's cue.
    func ready(_ ready: Ready, token: Token, loop: LoopState) {
        if isBackingOff { return }
        loop.deliver(self, ready)
    }

    func timerFired(_ purpose: TimerPurpose, token: Token, now: Int64, loop: LoopState) {
        guard purpose == .backoff else { return }
        backoffTimer = nil
        endBackoff(loop: loop)
    }

    func release(loop: LoopState) {
        // The multishot accept is cancelled before the descriptor is closed; what it accepted and
        // nobody took is reset, as the kernel resets what waits in a closed listener's queue.
        if let multishot {
            self.multishot = nil
            loop.completions?.abandon(multishot, reason: .closed)
        }
        for fd in acceptQueue { Self.reset(fd) }
        acceptQueue = []
        if let backoffTimer { loop.timers.cancel(backoffTimer) }
        backoffTimer = nil
        if isBackingOff { loop.backingOff.remove(key) }
        let listener = self.listener
        loop.dropRegistration(self, fd: listener.fd) { listener.close() }
        loop.descriptorFreed()   // another listener out of descriptors tries again now
    }

    /// Closes a connection accepted ahead (io_uring's multishot accept) that no `accept` will take,
    /// with a reset (SO_LINGER 0): the client sees what it sees when a listener is closed with the
    /// connection still in the kernel's queue, not an end of stream as if a server had closed it.
    static func reset(_ fd: CInt) {
        let socket = StreamSocket(owning: fd)
        try? socket.setLinger(.resetOnClose)
        socket.close()
    }
}

extension TimerPurpose {
    /// A listener's accept back-off has ended.
    static let backoff = TimerPurpose(rawValue: 3)
}
