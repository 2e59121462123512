@_spi(Backend) import ReadinessCore
import ReadinessNet

/// A connect over several addresses, or a name then its addresses (``HappyEyeballs``): its attempts'
/// registrations and its timers use tokens it allocates from the loop's slab (aliases of this
/// resource: as many as it has attempts, no block, no cap), and a name resolution's answers come on a
/// token of their own, through the loop's queue (not on the waker's event).
final class ConnectResource: LoopResourceBase, LoopResource, TokenAllocator {
    /// Set once, right after the resource takes its slot (it allocates the connect's tokens).
    private(set) var connect: HappyEyeballs!
    /// The connect's outcome, kept until the connecting task takes it.
    var outcome: HappyEyeballs.Progress?
    /// The token resolution answers come on (nil without a resolution).
    private(set) var resolutionToken: Token?
    /// Every alias slot it took (freed with it).
    private var aliases: [ResourceKey] = []
    /// Whether a token was asked for with the slab full: the connect ends with
    /// ``LoopError/resourceExhausted`` (its waiter is resumed, the resource closed by the driver).
    private(set) var isExhausted = false
    private unowned(unsafe) let loop: LoopState

    init(key: ResourceKey, loop: LoopState) {
        self.loop = loop
        super.init(key: key)
    }

    /// Over known addresses.
    func start(addresses: [SocketAddress], poller: any Poller, options: HappyEyeballs.Options, deadline: Int64?) -> HappyEyeballs.Progress {
        connect = HappyEyeballs(addresses: addresses, poller: poller, timers: loop.timers, tokens: self, options: options)
        connect.startDeadline = deadline
        connect.willRegister = loop.connectWillRegister
        connect.deregisterRefused = loop.connectDeregisterRefused
        return connect.start()
    }

    /// Over a name being resolved: each answer is submitted to the loop with the resolution's token.
    func start(host: String, port: UInt16, resolver: any HostResolver, poller: any Poller,
               options: HappyEyeballs.Options, deadline: Int64?) -> HappyEyeballs.Progress {
        let token = makeToken()
        resolutionToken = token
        let eventLoop = loop.loop!
        let resolution = Resolution(host: host, port: port, resolver: resolver) {
            eventLoop.submit(.resolved(token))
        }
        connect = HappyEyeballs(resolution: resolution, poller: poller, timers: loop.timers, tokens: self, options: options)
        connect.startDeadline = deadline
        connect.willRegister = loop.connectWillRegister
        connect.deregisterRefused = loop.connectDeregisterRefused
        return connect.start()
    }

    /// A fresh token of the loop's slab that dispatches here. With the slab full, the resource's own
    /// token (its events are ignored from then on) and the connect is marked exhausted: the caller of
    /// `start` or `progress` ends it at once, before the poller is waited on again.
    func makeToken() -> Token {
        do throws(LoopError) {
            let alias = try loop.slab.insertAlias(of: self)
            aliases.append(alias)
            return alias.token
        } catch {
            isExhausted = true
            return key.token
        }
    }

    func ready(_ ready: Ready, token: Token, loop: LoopState) {
        guard !isExhausted else { return }
        if token == resolutionToken {
            progress(connect.handle(Event(token: .waker, ready: .readable)), loop: loop)
        } else {
            progress(connect.handle(Event(token: token, ready: ready)), loop: loop)
        }
    }

    func timerFired(_ purpose: TimerPurpose, token: Token, now: Int64, loop: LoopState) {
        guard purpose == .none, !isExhausted else { return }
        progress(connect.handleTimer(token, now: now), loop: loop)
    }

    func progress(_ progress: HappyEyeballs.Progress, loop: LoopState) {
        if !progress.isInProgress { outcome = progress }   // a winner is closed by `release` if not taken
        guard !progress.isInProgress || isExhausted else { return }
        record.isDone = true
        loop.resolve(self, .write, .ready)
    }

    func release(loop: LoopState) {
        // A winner handed over after its waiter gave up: nobody will take the socket.
        var freed = false        // only a descriptor closed here lets a backing-off listener retry
        if case .connected(let socket)? = outcome {
            outcome = nil
            Sys.close(socket.fd)
            freed = true
        }
        if let connect, connect.attempts.contains(where: { $0.fd >= 0 || $0.closedSocket }) { freed = true }
        connect?.cancel()        // deregisters and closes every attempt's socket, drops the resolution
        connect = nil            // it holds this resource (its token allocator): the cycle ends here
        for alias in aliases { loop.slab.remove(alias: alias) }
        aliases.removeAll()
        if freed { loop.descriptorFreed() }   // a listener out of descriptors tries again now
    }
}
