#if canImport(Glibc)
import Glibc
#endif
@_spi(Backend) import ReadinessCore
import ReadinessNet

/// The readiness driver over any ``/ReadinessCore/Poller`` (every backend): each operation tries its syscall until
/// it would block, then waits for the poller's readiness event on the resource (`LoopState.wait`) and
/// tries again. The only place the async retry loops live (``IODriver``).
struct ReadinessDriver: IODriver {
    /// The retry loop of an operation whose attempts the caller makes (the owned-bytes forms of
    /// `AsyncSocket`): `attempt` runs on the loop thread, synchronously, at once and again each time
    /// the direction is ready, until it returns something other than `wouldBlock`. No pointer an
    /// attempt takes outlives it: none crosses a suspension.
    ///
    /// `waitFirst` is for a read that would have to allocate its buffer: the first attempt is made only
    /// once a read would not block, which a one-byte `recv(MSG_PEEK)` into the stack tells without a
    /// buffer, or after the wait for readability; so the read holds no memory while it waits, and a
    /// read with data ready still returns it without suspending (as in a cancelled task).
    nonisolated(nonsending) func perform(_ id: UInt64, _ direction: Direction, deadline: Int64?, waitFirst: Bool,
                                         start: LoopState.WriteStart?, on loop: LoopState,
                                         _ attempt: (StreamSocket) throws(SocketError) -> IOResult) async throws(LoopError) -> IOResult {
        var (stream, socket) = try loop.stream(id)
        if direction == .read ? stream.record.read.isWaiting : stream.record.write.isWaiting { throw .busy }
        var wait = waitFirst && direction == .read && !Self.readWouldNotBlock(socket)
        var woken = false
        var recheck = Self.unknownFamily
        while true {
            if !wait {
                let result: IOResult
                do throws(SocketError) { result = try attempt(socket) } catch { throw .socket(error) }
                if result == .endOfStream, direction == .read, let failure = CompletionDriver.takeReadFailure(id, loop: loop) {
                    throw failure   // io_uring: a send took the reset this read would have met
                }
                if result != .wouldBlock { return result }
                if let start, loop.writeYieldDue {
                    // The attempt's sends spent the job's budget (`LoopState.chargeSend`): the next
                    // poller pass, then on, without a wait for room.
                    try await loop.yieldInWrite(deadline: deadline, start)
                    (stream, socket) = try loop.stream(id)
                    continue
                }
            }
            wait = false
            if woken, loop.expired(deadline) { throw .timedOut }
            if direction == .write {
                try await Self.waitForRoom(id, stream, socket, deadline: deadline, recheck: &recheck, on: loop)
            } else if case .failed(let error) = await loop.wait(stream, direction, deadline: deadline, interest: true) {
                throw error
            }
            woken = true
            (stream, socket) = try loop.stream(id)
        }
    }

    /// Whether a read of `socket` would not block now (bytes, the end of the stream or an error to
    /// report), asked without a buffer: `poll` with a zero timeout. Not `recv(MSG_PEEK)`, which takes a
    /// pending error (a reset would then read as the end of the stream).
    private static func readWouldNotBlock(_ socket: StreamSocket) -> Bool {
        var entry = pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0)
        while true {
            let n = poll(&entry, 1, 0)
            if n >= 0 { return n > 0 }
            if errno != EINTR { return true }   // the read reports it
        }
    }

    /// Each attempt reads into the loop's scratch buffer and, when it read something (or the end of
    /// the stream), hands it to `take` in the same attempt: no suspension between the read and the
    /// copy, so the one scratch buffer serves every read of the loop. The first attempt is made here,
    /// in the caller's frame: a read with data ready calls no other async function (with
    /// ``EventLoop/JobIsolation/serialExecutor`` jobs each such call would cost a hop); the waits are
    /// `readCopyingWaiting`'s.
    @inline(__always)
    nonisolated(nonsending) func readCopying<T>(_ id: UInt64, maximum: Int, deadline: Int64?, on loop: LoopState,
                                                _ take: (UnsafeRawBufferPointer) throws(SocketError) -> T) async throws(LoopError) -> T {
        let (stream, socket) = try loop.stream(id)
        if stream.record.read.isWaiting { throw .busy }
        // After a short read with no readiness event since, a try would fail: wait first (LoopRecord.readDrained).
        let untried = stream.record.readDrained
        if !untried, let taken = try Self.readCopyingAttempt(stream, socket, maximum: maximum, loop: loop, take) {
            return taken
        }
        return try await readCopyingWaiting(stream, id, maximum: maximum, deadline: deadline, untried: untried, on: loop, take)
    }

    /// `readCopying` once its first attempt would block: wait for readability, then try again. Not
    /// inlined, with its own retry loop (not `perform`'s, whose attempt closure and its captures would
    /// take room here) and the wait in this frame (`waitInFrame`): this frame is held by every task
    /// waiting in such a read, most idle connections' (Docs/Async.md, "Memory per idle connection").
    @inline(never)
    nonisolated(nonsending) private func readCopyingWaiting<T>(_ stream: StreamResource, _ id: UInt64, maximum: Int, deadline: Int64?,
                                                               untried: Bool, on loop: LoopState,
                                                               _ take: (UnsafeRawBufferPointer) throws(SocketError) -> T) async throws(LoopError) -> T {
        var stream = stream
        var untried = untried
        while true {
            if case .failed(let error) = await loop.waitInFrame(stream, .read, deadline: deadline, interest: true) {
                if untried, let taken = try Self.readCopyingLastTry(id, after: error, maximum: maximum, loop: loop, take) { return taken }
                throw error
            }
            untried = false
            let socket: StreamSocket
            (stream, socket) = try loop.stream(id)
            if let taken = try Self.readCopyingAttempt(stream, socket, maximum: maximum, loop: loop, take) { return taken }
            // Woken for nothing: wait again only before the deadline (`LoopState.expired`).
            if loop.expired(deadline) { throw .timedOut }
        }
    }

    /// A read that waited without trying first (the short-read hint) and failed with a timeout, a
    /// cancellation or the poller's refusal to watch the socket (select above FD_SETSIZE) tries once
    /// before it reports that: bytes that were queued all along (the hint was stale) are returned as
    /// they would have been without the hint (a deadline already passed, a cancelled task or a socket
    /// the poller cannot watch still takes data that is there). Nil: report `error`.
    @inline(never)
    static func readCopyingLastTry<T>(_ id: UInt64, after error: LoopError, maximum: Int, loop: LoopState,
                                              _ take: (UnsafeRawBufferPointer) throws(SocketError) -> T) throws(LoopError) -> T? {
        switch error {
        case .timedOut, .cancelled, .poller:
            guard !loop.leavesBytesToNextReader(id, after: error), let (stream, socket) = try? loop.stream(id) else { return nil }
            return try readCopyingAttempt(stream, socket, maximum: maximum, loop: loop, take)
        default:
            return nil
        }
    }

    /// One attempt of `readCopying`: what `take` made of the bytes read (or of the end of the
    /// stream), nil when the read would block. Not inlined: its locals would otherwise take room in
    /// the async frame of every task waiting in such a read. The completion driver's first try too.
    @inline(never)
    static func readCopyingAttempt<T>(_ stream: StreamResource, _ socket: StreamSocket, maximum: Int, loop: LoopState,
                                              _ take: (UnsafeRawBufferPointer) throws(SocketError) -> T) throws(LoopError) -> T? {
        do throws(SocketError) {
            let scratch = try loop.readScratch(for: maximum)
            let room = UnsafeMutableRawBufferPointer(rebasing: scratch[..<Swift.min(Swift.max(maximum, 1), scratch.count)])
            switch try socket.read(into: room) {
            case .transferred(let n):
                stream.record.readDrained = n < room.count
                return try take(UnsafeRawBufferPointer(rebasing: room[..<n]))
            case .endOfStream:
                if case .socket(let failure)? = CompletionDriver.takeReadFailure(stream.key.raw, loop: loop) { throw failure }
                return try take(UnsafeRawBufferPointer(start: nil, count: 0))
            case .wouldBlock: return nil
            }
        } catch {
            throw .socket(error)
        }
    }

    nonisolated(nonsending) func read(_ id: UInt64, into buffer: UnsafeMutableRawBufferPointer, deadline: Int64?,
                                      on loop: LoopState) async throws(LoopError) -> Int {
        var (stream, socket) = try loop.stream(id)
        if stream.record.read.isWaiting { throw .busy }
        // After a short read with no readiness event since, a try would fail: wait first (LoopRecord.readDrained).
        var wait = stream.record.readDrained && !buffer.isEmpty
        var woken = false
        while true {
            if !wait {
                let result: IOResult
                do { result = try socket.read(into: buffer) } catch { throw .socket(error) }
                switch result {
                case .transferred(let n):
                    stream.record.readDrained = n < buffer.count
                    return n
                case .endOfStream:
                    if let failure = CompletionDriver.takeReadFailure(id, loop: loop) { throw failure }
                    return 0
                case .wouldBlock: break
                }
            }
            if woken, loop.expired(deadline) { throw .timedOut }
            if case .failed(let error) = await loop.wait(stream, .read, deadline: deadline, interest: true) {
                // Waited without trying first (the hint): a deadline already passed, a cancelled task
                // or an unwatchable socket still takes bytes that were queued all along (`readCopyingLastTry`).
                guard wait, Self.triesLast(after: error), !loop.leavesBytesToNextReader(id, after: error),
                      let (_, socket) = try? loop.stream(id) else { throw error }
                switch try Self.lastTry(socket, into: buffer) {
                case .transferred(let n):
                    if let (stream, _) = try? loop.stream(id) { stream.record.readDrained = n < buffer.count }
                    return n
                case .endOfStream:
                    if let failure = CompletionDriver.takeReadFailure(id, loop: loop) { throw failure }
                    return 0
                case .wouldBlock: throw error
                }
            }
            wait = false
            woken = true
            (stream, socket) = try loop.stream(id)
        }
    }

    /// Whether a read that waited without trying first tries once after `error` (`readCopyingLastTry`).
    private static func triesLast(after error: LoopError) -> Bool {
        switch error {
        case .timedOut, .cancelled, .poller: return true
        default: return false
        }
    }

    private static func lastTry(_ socket: StreamSocket, into buffer: UnsafeMutableRawBufferPointer) throws(LoopError) -> IOResult {
        do { return try socket.read(into: buffer) } catch { throw .socket(error) }
    }

    nonisolated(nonsending) func write(_ id: UInt64, _ buffer: UnsafeRawBufferPointer, deadline: Int64?,
                                       start: LoopState.WriteStart, on loop: LoopState) async throws(LoopError) {
        var (stream, socket) = try loop.stream(id)
        if stream.record.write.isWaiting { throw .busy }
        var offset = 0
        var woken = false
        var recheck = Self.unknownFamily
        while offset < buffer.count {
            let result: IOResult
            do {
                let end = Swift.min(buffer.count, offset &+ LoopState.sendLimit)
                result = try socket.write(UnsafeRawBufferPointer(rebasing: buffer[offset..<end]))
            } catch { throw .socket(error) }
            if case .transferred(let n) = result {
                offset += n
                // The job's budget spent with bytes left: the next poller pass, then on.
                if loop.chargeSend(n, more: offset < buffer.count) {
                    try await loop.yieldInWrite(deadline: deadline, start)
                    (stream, socket) = try loop.stream(id)
                }
                continue
            }
            if woken, loop.expired(deadline) { throw .timedOut }
            try await Self.waitForRoom(id, stream, socket, deadline: deadline, recheck: &recheck, on: loop)
            woken = true
            (stream, socket) = try loop.stream(id)
        }
    }

    nonisolated(nonsending) func write(_ id: UInt64, vectored buffers: [UnsafeRawBufferPointer], deadline: Int64?,
                                       start: LoopState.WriteStart, on loop: LoopState) async throws(LoopError) {
        var (stream, socket) = try loop.stream(id)
        if stream.record.write.isWaiting { throw .busy }
        var remaining = RemainingBuffers(buffers: buffers)
        var woken = false
        var recheck = Self.unknownFamily
        while !remaining.isEmpty {
            let result: IOResult
            do { result = try socket.write(vectored: remaining.limited(to: LoopState.sendLimit)) } catch { throw .socket(error) }
            if case .transferred(let n) = result {
                remaining.advance(by: n)
                if loop.chargeSend(n, more: !remaining.isEmpty) {
                    try await loop.yieldInWrite(deadline: deadline, start)
                    (stream, socket) = try loop.stream(id)
                }
                continue
            }
            if woken, loop.expired(deadline) { throw .timedOut }
            try await Self.waitForRoom(id, stream, socket, deadline: deadline, recheck: &recheck, on: loop)
            woken = true
            (stream, socket) = try loop.stream(id)
        }
    }

    nonisolated(nonsending) func accept(_ id: UInt64, deadline: Int64?, on loop: LoopState) async throws(LoopError) -> (UInt64, SocketAddress) {
        var listener = try loop.listener(id)
        if listener.record.read.isWaiting { throw .busy }
        var woken = false
        while true {
            // No slot for the connection: it stays queued (accepted once resources are closed).
            try loop.checkRoom()
            let result: AcceptResult
            do { result = try listener.listener.accept() } catch { throw .socket(error) }
            let outcome: Outcome
            switch result {
            case .accepted(let socket, let peer):
                do throws(LoopError) { return (try loop.adopt(socket), peer) } catch {
                    socket.close()
                    throw error
                }
            case .wouldBlock:
                if woken, loop.expired(deadline) { throw .timedOut }
                outcome = await loop.wait(listener, .read, deadline: deadline, interest: true)
            case .backingOff(let until):
                // Out of descriptors: not watched until the back-off ends (its time, or a descriptor
                // of this loop closed).
                if woken, loop.expired(deadline) { throw .timedOut }
                listener.beginBackoff(until: until.nanoseconds, loop: loop)
                outcome = await loop.wait(listener, .read, deadline: deadline, interest: false)
            }
            if case .failed(let error) = outcome { throw error }
            woken = true
            listener = try loop.listener(id)
        }
    }

    /// One address (`EventLoop.connect(to:timeout:)`): the connect's resource becomes the socket's.
    nonisolated(nonsending) func connect(to address: SocketAddress, from local: SocketAddress?, deadline: Int64?,
                                         on loop: LoopState) async throws(LoopError) -> (UInt64, SocketAddress?) {
        if loop.isShutDown { throw loop.shutdownReason }
        guard let poller = loop.poller else { throw loop.shutdownReason }
        // A task cancelled already starts nothing: no socket, no SYN, no lookup (Go's DialContext).
        if Task.isCancelled { throw .cancelled }
        let (id, socket) = try await connect(to: address, from: local, poller: poller, deadline: deadline, attemptTimeout: nil, on: loop)
        return (id, socket.peer)
    }

    /// One address: the ``ConnectAttempt`` driver alone (the same state machine; no Happy Eyeballs
    /// bookkeeping). The deadline is the wait's; `attemptTimeout` (a list's option) ends the attempt
    /// itself with `ConnectError(.timedOut)`, as it does for an attempt of several. On success the
    /// resource becomes the socket's (same key).
    nonisolated(nonsending) private func connect(to address: SocketAddress, from local: SocketAddress? = nil, poller: any Poller, deadline: Int64?,
                                                 attemptTimeout: Duration?, on loop: LoopState) async throws(LoopError) -> (UInt64, ConnectedSocket) {
        let stream = try loop.slab.insert { key in
            StreamResource(key: key) { token in
                ConnectAttempt(to: address, poller: poller, token: token, timeout: attemptTimeout, localAddress: local)
            }
        }
        let id = stream.key.raw
        loop.noteMayHoldUnowned(stream)
        stream.attempt!.willRegister = loop.connectWillRegister
        stream.attempt!.deregisterRefused = loop.connectDeregisterRefused
        var progress = stream.attempt!.start()
        if case .inProgress = progress {} else {
            // Kept by the resource, so that the socket of a connect that succeeded at once (a Unix
            // path) is closed with the resource if a shutdown comes first.
            stream.outcome = progress
        }
        if case .inProgress = progress {
            stream.attemptTimer = stream.attempt!.scheduleDeadline(on: loop.timers)
            let outcome = await loop.wait(stream, .write, deadline: deadline, interest: false)
            if case .failed(let error) = outcome {
                loop.close(stream, reason: error)   // cancels the attempt: deregistered, closed once
                throw error
            }
            // Ended, but the loop shut down before this task ran again: the socket (if any) was
            // closed with the resource.
            guard loop.slab.contains(stream), !loop.isShutDown else {
                loop.close(stream, reason: loop.shutdownReason)
                throw loop.shutdownReason
            }
            progress = stream.outcome ?? .failed(ConnectError(.cancelled, address: address))
        }
        switch progress {
        case .connected(let socket):
            // Handed over (deregistered by the attempt, nobody waits): the resource is the socket's
            // now. Closed meanwhile (shutdown ran while the task was queued)? Then `close` closed the
            // socket it found; a resource still there is closed now, which closes it.
            guard loop.slab.contains(stream), !loop.isShutDown else {
                loop.close(stream, reason: loop.shutdownReason)
                throw loop.shutdownReason
            }
            stream.becomeStream(StreamSocket(socket))
            loop.noteHoldsNoUnowned(stream)
            loop.own(stream, socket.fd)
            return (id, socket)
        case .failed(let error):
            loop.close(stream, reason: .closed)
            throw .connect(error)
        case .inProgress:
            loop.close(stream, reason: .closed)
            throw .closed
        }
    }

    nonisolated(nonsending) func connect(addresses: [SocketAddress], resolution: (host: String, port: UInt16, resolver: any HostResolver)?,
                                         options: HappyEyeballs.Options, deadline: Int64?,
                                         on loop: LoopState) async throws(LoopError) -> (UInt64, ConnectedSocket) {
        if loop.isShutDown { throw loop.shutdownReason }
        guard let poller = loop.poller else { throw loop.shutdownReason }
        if let reason = options.invalidReason { throw .invalidArgument(reason) }
        if Task.isCancelled { throw .cancelled }   // nothing started (see above)
        if resolution == nil, addresses.isEmpty { throw .connect(ConnectError(.noAddress)) }
        if resolution == nil, addresses.count == 1 {
            // The attempt driver alone, with the options' attempt timeout as for any list.
            return try await connect(to: addresses[0], poller: poller, deadline: deadline,
                                     attemptTimeout: options.attemptTimeout, on: loop)
        }
        let connect = try loop.slab.insert { ConnectResource(key: $0, loop: loop) }
        loop.noteMayHoldUnowned(connect)
        var progress: HappyEyeballs.Progress
        if let resolution {
            progress = connect.start(host: resolution.host, port: resolution.port, resolver: resolution.resolver,
                                     poller: poller, options: options, deadline: deadline)
        } else {
            progress = connect.start(addresses: addresses, poller: poller, options: options, deadline: deadline)
        }
        if progress.isInProgress, !connect.isExhausted {
            let outcome = await loop.wait(connect, .write, deadline: deadline, interest: false)
            if case .failed(let error) = outcome {
                loop.close(connect, reason: error)   // cancels every attempt: deregistered, closed once
                throw error
            }
            // Ended, but the loop shut down before this task ran again: the winner (if any) was closed
            // with the resource.
            guard loop.slab.contains(connect), !loop.isShutDown else {
                loop.close(connect, reason: loop.shutdownReason)
                throw loop.shutdownReason
            }
            progress = connect.outcome ?? .failed(ConnectError(.cancelled))
        }
        if connect.isExhausted {
            // An attempt found no token: the connect ends (`close` closes a winner it holds too).
            if !progress.isInProgress { connect.outcome = progress }
            loop.close(connect, reason: .resourceExhausted)
            throw .resourceExhausted
        }
        let endedByDeadline = connect.connect?.endedByDeadline == true
        connect.outcome = nil                      // taken: `close` must not close the winner's socket
        loop.close(connect, reason: .closed)       // the winner was handed over; the rest are cancelled
        switch progress {
        case .connected(let socket):
            let stream = StreamSocket(socket)
            do throws(LoopError) { return (try loop.adopt(stream, outbound: true), socket) } catch {
                stream.close()
                throw error
            }
        case .failed(let error):
            // Stopped by the connect's deadline (HappyEyeballs.startDeadline, in the same turn as the
            // deadline's own timer, or before it): the form the deadline's timer gives. The state
            // machine says so itself: it reads the clock, and a lookup's answer handled before this
            // turn's timers (a busy loop) stopped it past a deadline the loop had not seen yet (review:
            // that connect ended as .connect(timedOut) where its timer gives .timedOut).
            if error.cause == .timedOut, endedByDeadline || loop.expired(deadline) { throw .timedOut }
            throw .connect(error)
        case .unresolved(let error): throw .resolution(error)
        case .inProgress: throw .closed
        }
    }

    nonisolated(nonsending) func datagram<R>(_ id: UInt64, _ direction: Direction, deadline: Int64?, waitFirst: Bool,
                                             on loop: LoopState,
                                             _ attempt: (DatagramSocket) throws(SocketError) -> R?) async throws(LoopError) -> R {
        var datagram = try loop.datagram(id)
        if datagram.record[direction].isWaiting { throw .busy }
        // A receive that would allocate first asks whether a datagram is queued (poll, no buffer: a
        // MSG_PEEK would take a pending error).
        var wait = waitFirst && direction == .read && !datagram.socket.hasQueuedDatagram()
        var woke = false
        var pause = Self.retryPause
        // A Unix send waiting for its peer: poll never tells the sender of the receiver's
        // `shutdown(SHUT_RD)` (each send then fails with EPIPE), so its waits are cut as a Unix stream
        // write's are (`waitForRoom`). At a pause's end a send to the connected peer asks the kernel's
        // socket diagnostics first and sends again only if the peer reads no more (or that cannot be
        // told): a datagram goes when poll reports room, never at a moment the clock sets (the kernel
        // takes one while up to the whole send buffer is held, poll reports room at a quarter).
        var recheck = direction == .write && datagram.socket.family == .unix ? Self.unixWriteRecheck : Self.notUnix
        var pauseEnded = false
        while true {
            if !wait {
                let result: R?
                do { result = try attempt(datagram.socket) } catch { throw .socket(error) }
                if let result { return result }
            }
            wait = false
            if woke, Self.readinessLies(datagram.socket, direction, datagram.sendTarget) {
                // Ready by the poller, yet the attempt would block, and the kernel will report it ready
                // again at once and wake nobody when the condition ends: level-triggered readiness would
                // wake this wait every iteration. Pause instead, not watching the direction, doubling the
                // pause up to a cap, then try again.
                try? loop.updateInterest(datagram, datagram.record.registered.subtracting(direction.interest))
                _ = try await Self.pausedWait(datagram, direction, deadline: deadline, pause: &pause, cap: Self.retryPauseCap,
                                              watching: false, on: loop)
            } else if recheck != Self.notUnix {
                if woke, loop.expired(deadline) { throw .timedOut }
                // Not woken by readiness (the pause ended): the next try that blocks waits again.
                woke = try await Self.pausedWait(datagram, direction, deadline: deadline, pause: &recheck,
                                                 cap: Self.unixWriteRecheckCap, watching: true, on: loop)
                pauseEnded = !woke
            } else {
                if woke, loop.expired(deadline) { throw .timedOut }
                if case .failed(let error) = await loop.wait(datagram, direction, deadline: deadline, interest: true) { throw error }
                woke = true
            }
            datagram = try loop.datagram(id)
            if pauseEnded {
                pauseEnded = false
                if case .peer = datagram.sendTarget, datagram.socket.peerReadingShutDown == false { wait = true }
            }
        }
    }

    /// Whether a datagram socket the poller reported ready, whose attempt still would block, is in one
    /// of the states where poll says ready for ever and nothing wakes a waiter when they end (asked
    /// only then: a system call). A send: an IP socket with an error in its error queue (IP_RECVERR)
    /// and no room (POLLERR without POLLOUT); a Unix datagram socket sending to a destination it names
    /// (from an unconnected socket, or a connected one naming a destination, which Linux allows; even
    /// its peer's address, which a receiver restarted on the same path now holds): the kernel's poll
    /// checks only a connected sender's own peer's queue, and wakes no other sender when a queue
    /// drains. A connected sender writing to its peer (no destination) is told the truth by poll (and
    /// woken when the peer reads), but for the peer's `shutdown(SHUT_RD)`, which the waits' recheck
    /// meets. A receive: an error condition with nothing to
    /// read (an ICMP error in the error queue of a socket with IP_RECVERR, which a receive never takes),
    /// or a socket shut down for reading (`shutdown(SHUT_RD)`, which Linux applies to a datagram
    /// socket even when it answers ENOTCONN): readable for ever (POLLRDHUP), each receive EAGAIN.
    static func readinessLies(_ socket: DatagramSocket, _ direction: Direction, _ target: SendTarget) -> Bool {
        if direction == .write {
            guard socket.family == .unix else {
                // IP: an ICMP error left in the error queue (IP_RECVERR, which a send never takes)
                // makes poll report POLLERR, and POLLOUT only once the send buffer drained below half
                // of it (datagrams held by a neighbour not yet resolved): the wait would wake at once
                // for the error, again and again, until the buffer drains (libuv's
                // UV_UDP_LINUX_RECVERR sends; a spin of seconds before).
                var entry = pollfd(fd: socket.fd, events: Int16(POLLOUT), revents: 0)
                guard poll(&entry, 1, 0) == 1 else { return false }
                return entry.revents & Int16(POLLERR) != 0 && entry.revents & Int16(POLLOUT) == 0
            }
            switch target {
            // A named destination, even the connected peer's address: the socket bound there now may
            // not be the one connected to (a receiver restarted on the same path), whose queue poll
            // looks at.
            case .address, .slots: return true
            case .peer:
                do { _ = try SocketAddress.peer(of: socket.fd) } catch { return error.errno == ENOTCONN }
                return false
            }
        }
        let readShutdown = Int16(truncatingIfNeeded: Ready.pollRDHUP)
        var entry = pollfd(fd: socket.fd, events: Int16(POLLIN) | readShutdown, revents: 0)
        guard poll(&entry, 1, 0) == 1 else { return false }
        if entry.revents & readShutdown != 0 { return true }
        return entry.revents & Int16(POLLERR) != 0 && entry.revents & Int16(POLLIN) == 0
    }

    /// A stream write's wait for room. On a Unix-domain socket the kernel's poll never reports the
    /// peer's `shutdown(SHUT_RD)` to the writer (no POLLOUT, POLLHUP or POLLERR; each send then fails
    /// with EPIPE), so the wait is cut into pauses (``unixWriteRecheck`` doubling up to
    /// ``unixWriteRecheckCap``) after each of which a send of nothing asks whether sending is over
    /// (``StreamSocket/sendFailsNow``): if it is, the write tries again and meets the EPIPE; if not, it
    /// waits again. Only readiness lets bytes go, as with io_uring's completion driver, whose send the
    /// kernel retries when poll reports room (and fails at once on EPIPE): a write retried after a
    /// pause moved bytes where poll reported no room yet (a Unix socket takes more than poll's quarter
    /// of its buffer), at a moment that depended on the clock (the async differential under
    /// ThreadSanitizer found it). Before the pauses, such a write slept to its deadline (for ever
    /// without one). `recheck`: ``unknownFamily`` until the first wait asks the socket's domain (one
    /// system call per write that waits), then the next pause, or ``notUnix`` (TCP: woken by its
    /// FIN/RST as ever).
    @inline(__always)
    nonisolated(nonsending) private static func waitForRoom(_ id: UInt64, _ stream: StreamResource, _ socket: StreamSocket,
                                                            deadline: Int64?, recheck: inout Int64,
                                                            on loop: LoopState) async throws(LoopError) {
        if recheck == unknownFamily { recheck = socket.isUnixDomain ? unixWriteRecheck : notUnix }
        if recheck == notUnix {
            if case .failed(let error) = await loop.wait(stream, .write, deadline: deadline, interest: true) { throw error }
            return
        }
        var stream = stream
        while try await !pausedWait(stream, .write, deadline: deadline, pause: &recheck, cap: unixWriteRecheckCap,
                                    watching: true, on: loop) {
            let (current, socket) = try loop.stream(id)   // closed during the pause: .closed
            if socket.sendFailsNow { return }
            stream = current
        }
    }

    /// A wait cut short after `pause` (which then doubles, up to `cap`), for conditions readiness does
    /// not report (see ``readinessLies(_:_:_:)`` and ``waitForRoom(_:_:_:deadline:recheck:on:)``): the
    /// caller tries its operation again after it. Returns whether readiness ended it (`false`: the
    /// pause did); throws the wait's error, `.timedOut` only once the caller's own `deadline` passed.
    /// `watching`: whether the direction's interest stays on during the pause.
    nonisolated(nonsending) private static func pausedWait(_ resource: any LoopResource, _ direction: Direction,
                                                           deadline: Int64?, pause: inout Int64, cap: Int64,
                                                           watching: Bool, on loop: LoopState) async throws(LoopError) -> Bool {
        let retryAt = MonotonicClock.nowNanoseconds &+ pause
        pause = Swift.min(pause &* 2, cap)
        let until = deadline.map { Swift.min($0, retryAt) } ?? retryAt
        guard case .failed(let error) = await loop.wait(resource, direction, deadline: until, interest: watching) else { return true }
        guard case .timedOut = error, deadline.map({ $0 > retryAt }) ?? true else { throw error }
        return false
    }

    static let unknownFamily: Int64 = 0
    static let notUnix: Int64 = -1
    /// A Unix stream write's first recheck while it waits for room (10 ms), and its longest (1 s).
    static let unixWriteRecheck: Int64 = 10_000_000
    static let unixWriteRecheckCap: Int64 = 1_000_000_000

    /// A datagram operation's first pause when readiness keeps waking it for nothing (1 ms), and
    /// its longest (64 ms).
    static let retryPause: Int64 = 1_000_000
    static let retryPauseCap: Int64 = 64_000_000
}
