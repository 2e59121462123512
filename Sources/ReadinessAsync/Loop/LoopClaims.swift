import ReadinessCore
import ReadinessNet

/// The operations waiting for their turn in one direction of one resource, in order of arrival: a
/// second reader, writer or accepter of a socket waits until the operation before it ends, as Go's
/// descriptor lock serialises reads and writes and as tokio lets many tasks accept on one listener
/// (rather than failing: a task cancelled in a read, and the next read asked for at once, as
/// asyncio's `sock_recv` racing tests do, meets the cancelled one still ending).
struct TurnLine {
    struct Key: Hashable {
        let id: UInt64
        let direction: Direction
    }

    /// One operation waiting for its turn. Resumed exactly once, on the loop thread: with nil when the
    /// claim is handed to it (`LoopState.release`), with the failure that ends its wait otherwise.
    struct Waiter {
        let operation: UInt64
        let continuation: UnsafeContinuation<LoopError?, Never>
        /// Its operation's deadline, ``WaitSlot/noDeadline`` for none; its timer while it waits.
        let deadline: Int64
        let timer: TimerID?
    }

    var waiters: [Waiter] = []
}

extension Direction {
    /// The purpose of the timer that ends a wait for this direction's turn at its deadline.
    var turnDeadline: TimerPurpose { self == .read ? .readTurnDeadline : .writeTurnDeadline }
}

extension LoopState {
    /// Waits until the operation holding `direction`'s claim on resource `id` releases it to this one
    /// (it is then this one's), the deadline passes (`.timedOut`), the task is cancelled
    /// (`.cancelled`), the resource is closed (`.closed`) or the loop shuts down. Not inlined: only a
    /// task that finds the direction taken comes here, and its frame would otherwise grow every
    /// operation's.
    @inline(never)
    nonisolated(nonsending) func waitForTurn(_ id: UInt64, _ direction: Direction, deadline: Int64?) async throws(LoopError) {
        let resource = try resource(id)
        let operation = nextOperation
        nextOperation &+= 1
        let loop = self.loop!
        let key = resource.key
        let failure = await withTaskCancellationHandler {
            await withUnsafeContinuation { (continuation: UnsafeContinuation<LoopError?, Never>) in
                self.enterLine(resource, direction, operation, continuation, deadline: deadline)
            }
        } onCancel: {
            // Any thread: the loop takes the waiter out of the line (if it still waits there).
            loop.submit(.cancel(key: key, direction: direction, operation: operation))
        }
        if let failure { throw failure }
        // Cancelled as the turn came (the cancel found it no longer in the line): the turn goes on to
        // the next, and nothing is taken that the next would get (review).
        if Task.isCancelled {
            release(id, direction)
            throw .cancelled
        }
    }

    private func enterLine(_ resource: any LoopResource, _ direction: Direction, _ operation: UInt64,
                           _ continuation: UnsafeContinuation<LoopError?, Never>, deadline: Int64?) {
        if isShutDown { return continuation.resume(returning: shutdownReason) }
        guard slab.contains(resource) else { return continuation.resume(returning: .closed) }
        // A cancel submitted before this point found no waiter; the flag it set is seen here.
        if Task.isCancelled { return continuation.resume(returning: .cancelled) }
        if !resource.record[direction].inUse {
            resource.record[direction].inUse = true
            return continuation.resume(returning: nil)
        }
        let timer = deadline.map { timers.schedule(at: $0, token: resource.key.token(direction.turnDeadline)) }
        let waiter = TurnLine.Waiter(operation: operation, continuation: continuation,
                                     deadline: deadline ?? WaitSlot.noDeadline, timer: timer)
        turnLines[TurnLine.Key(id: resource.key.raw, direction: direction), default: TurnLine()].waiters.append(waiter)
    }

    /// Hands `direction`'s claim to the first operation waiting for its turn: false when none waits.
    func handOver(_ resource: any LoopResource, _ direction: Direction) -> Bool {
        let key = TurnLine.Key(id: resource.key.raw, direction: direction)
        guard var line = turnLines[key], !line.waiters.isEmpty else { return false }
        let next = line.waiters.removeFirst()
        turnLines[key] = line.waiters.isEmpty ? nil : line
        if let timer = next.timer { timers.cancel(timer) }
        next.continuation.resume(returning: nil)   // the claim stays set: it is `next`'s now
        return true
    }

    /// Whether a read that gave up (`error`: its deadline passed, or its task was cancelled) leaves
    /// the bytes queued now to the read waiting for its turn behind it, rather than taking them in a
    /// last try: a task that cancels a read and reads again at once must get what comes next in its
    /// new read (asyncio's `sock_recv` racing tests), not lose it to the cancelled one (review).
    func leavesBytesToNextReader(_ id: UInt64, after error: LoopError) -> Bool {
        guard !turnLines.isEmpty, error == .cancelled || error == .timedOut else { return false }
        return turnLines[TurnLine.Key(id: id, direction: .read)] != nil
    }

    /// A waiter for its turn was cancelled: false when no waiter of that operation is in the line.
    func leaveLine(_ key: ResourceKey, _ direction: Direction, operation: UInt64, _ failure: LoopError) -> Bool {
        let lineKey = TurnLine.Key(id: key.raw, direction: direction)
        guard var line = turnLines[lineKey],
              let index = line.waiters.firstIndex(where: { $0.operation == operation }) else { return false }
        let waiter = line.waiters.remove(at: index)
        turnLines[lineKey] = line.waiters.isEmpty ? nil : line
        if let timer = waiter.timer { timers.cancel(timer) }
        waiter.continuation.resume(returning: failure)
        return true
    }

    /// A turn deadline's timer fired: every waiter of the direction whose deadline has passed by `now`
    /// times out (the others keep their own timers).
    func turnDeadlineFired(_ resource: any LoopResource, _ direction: Direction, now: Int64) {
        let key = TurnLine.Key(id: resource.key.raw, direction: direction)
        guard var line = turnLines[key] else { return }
        var expired: [TurnLine.Waiter] = []
        line.waiters.removeAll { waiter in
            guard waiter.deadline <= now else { return false }
            expired.append(waiter)
            return true
        }
        turnLines[key] = line.waiters.isEmpty ? nil : line
        for waiter in expired {
            if let timer = waiter.timer { timers.cancel(timer) }
            waiter.continuation.resume(returning: .timedOut)
        }
    }

    /// The resource is closed (or the loop shuts down): everyone waiting for a turn on it ends with
    /// `reason`.
    func endLines(of resource: any LoopResource, _ reason: LoopError) {
        guard !turnLines.isEmpty else { return }
        for direction in [Direction.read, .write] {
            guard let line = turnLines.removeValue(forKey: TurnLine.Key(id: resource.key.raw, direction: direction)) else { continue }
            for waiter in line.waiters {
                if let timer = waiter.timer { timers.cancel(timer) }
                waiter.continuation.resume(returning: reason)
            }
        }
    }
}
