import ReadinessCore
import ReadinessNet

/// Waits and their continuations: a task suspends on one direction of a resource until it is ready,
/// its deadline passes, the task is cancelled, the resource is closed or the loop shuts down;
/// whichever comes first resolves the wait, exactly once, on the loop thread.
extension LoopState {
    /// Suspends until the direction is ready, the deadline passes, the task is cancelled, the resource
    /// is closed or the loop shuts down; whichever comes first resolves the slot, exactly once.
    /// `interest`: register the direction with the poller while waiting (false: something else
    /// resolves the wait, a connect's progress or a listener's back-off).
    ///
    /// Not inlined: each operation's frame would otherwise hold room for its locals (Docs/Async.md,
    /// "Memory per idle connection"). Every wait runs in a task preferring the loop (`EventLoop.onLoop`
    /// sees to it), and suspends in this frame itself.
    @inline(never)
    nonisolated(nonsending) func wait(_ resource: any LoopResource, _ direction: Direction, deadline: Int64?, interest: Bool) async -> Outcome {
        await waitInFrame(resource, direction, deadline: deadline, interest: interest)
    }

    /// `wait` in its caller's frame: for the copying read (`IODriver.readCopying`), where most idle
    /// connections wait. One frame fewer in the chain such a task holds (a frame's header and the
    /// arguments' copies: 112 bytes), which keeps the chain in two slabs of the task allocator, not
    /// three (Docs/Async.md, "Memory per idle connection").
    @inline(__always)
    nonisolated(nonsending) func waitInFrame(_ resource: any LoopResource, _ direction: Direction, deadline: Int64?, interest: Bool) async -> Outcome {
        // The cancellation handler's operation is a plain nonisolated closure: it runs on the generic
        // executor, which is the loop for a task preferring the loop. Every wait runs inside
        // `EventLoop.onLoop`, which gives the task the loop's preference for the whole operation when
        // it has none (an actor isolated to the loop, `Task.immediate` started there): asked once
        // there, not again here.
        assert(prefersLoop(), "a loop wait outside EventLoop.onLoop's preference")
        let operation = nextOperation
        nextOperation &+= 1
        let loop = self.loop!
        let key = resource.key
        return await withTaskCancellationHandler {
            await withUnsafeContinuation { (continuation: UnsafeContinuation<Outcome, Never>) in
                self.install(resource, direction, operation, continuation, deadline: deadline, interest: interest)
            }
        } onCancel: {
            // Any thread: the loop resolves the slot (if this operation still waits there).
            loop.submit(.cancel(key: key, direction: direction, operation: operation))
        }
    }

    /// Whether the current task prefers this loop as its task executor.
    private func prefersLoop() -> Bool {
        let loop = self.loop.asUnownedTaskExecutor()
        return withUnsafeCurrentTask { task in task?.unownedTaskExecutor == loop }
    }

    /// Whether `deadline` passed by the loop's last look at its timers. An operation the poller woke
    /// whose attempt still would block asks this before it waits again: its deadline timer fires in
    /// the same iteration as the readiness, after it, while the operation is between the wake and its
    /// next wait, and then resolves nothing; readiness that wakes it every iteration for nothing (an
    /// error condition nothing clears) would otherwise keep it waiting past its deadline for ever.
    /// Not asked by a first wait: an operation whose deadline passed before it began still waits one
    /// poll (what is ready then is taken).
    func expired(_ deadline: Int64?) -> Bool {
        guard let deadline else { return false }
        return deadline <= timersCheckedAt
    }

    /// Not inlined: its locals would otherwise take room in the async frame of every waiting task
    /// (Docs/Async.md, "Memory per idle connection").
    @inline(never)
    private func install(_ resource: any LoopResource, _ direction: Direction, _ operation: UInt64,
                         _ continuation: UnsafeContinuation<Outcome, Never>, deadline: Int64?, interest: Bool) {
        if isShutDown { return continuation.resume(returning: .failed(shutdownReason)) }
        guard slab.contains(resource) else { return continuation.resume(returning: .failed(.closed)) }
        if resource.record[direction].isWaiting { return continuation.resume(returning: .failed(.busy)) }
        // A cancel submitted before this point found no waiter; the flag it set is seen here.
        if Task.isCancelled { return continuation.resume(returning: .failed(.cancelled)) }
        // A connect may have ended between its start and this wait (the task can be enqueued again in
        // between): its outcome is kept on the resource.
        if resource.record.isDone { return continuation.resume(returning: .ready) }
        if interest, !resource.record.registered.contains(direction.interest) {
            do {
                try updateInterest(resource, resource.record.registered.union(direction.interest))
            } catch {
                return continuation.resume(returning: .failed(.poller(error)))
            }
        }
        var slot = WaitSlot(continuation: continuation, operation: operation, timer: resource.record[direction].timer)
        slot.inUse = resource.record[direction].inUse   // the operation waiting is still running
        if let deadline {
            slot.deadline = deadline
            slot.timer = armDeadline(slot.timer, at: deadline, token: resource.key.token(direction.deadline))
        }
        resource.record[direction] = slot
    }

    /// A wait's deadline timer. The direction's timer still pending from an earlier wait is kept when
    /// it fires no later than `deadline` (it is armed again for the rest then: `deadlineFired`), so a
    /// deadline that only moves forward, as a server's per-read timeout does, touches the timer heap
    /// once per expiry of the timer rather than twice per read (nginx and libuv do the same); an
    /// earlier deadline moves it.
    private func armDeadline(_ armed: TimerID?, at deadline: Int64, token: Token) -> TimerID {
        if let armed, let at = timers.deadline(of: armed) {
            if at <= deadline { return armed }
            timers.cancel(armed)
        }
        return timers.schedule(at: deadline, token: token)
    }

    /// The direction's deadline timer fired: its waiter times out if its deadline has passed; a waiter
    /// with a later deadline (the timer was kept from an earlier wait) gets the timer again, at its own
    /// deadline. Nobody waiting, or a waiter without a deadline: nothing.
    func deadlineFired(_ resource: any LoopResource, _ direction: Direction, token: Token, now: Int64) {
        // Another timer of this direction still pending is the one that decides (it fires no later
        // than the waiter's deadline).
        if let armed = resource.record[direction].timer, timers.isPending(armed) { return }
        resource.record[direction].timer = nil
        let slot = resource.record[direction]
        guard slot.isWaiting, slot.deadline != WaitSlot.noDeadline else { return }
        if slot.deadline <= now {
            if let foreign = resource as? ForeignResource {
                resolve(resource, direction, foreign.readyNow(direction) ? .ready : .failed(.timedOut))
                settleForeign(foreign)
                return
            }
            resolve(resource, direction, .failed(.timedOut))
            return
        }
        resource.record[direction].timer = timers.schedule(at: slot.deadline, token: token)
    }

    /// Resumes the direction's waiter, if any, exactly once.
    ///
    /// An operation in the kernel (the completion driver) is not resumed here: a failure (deadline,
    /// cancellation, close, shutdown) frees the slot and asks the kernel to cancel the operation, and
    /// its task resumes with that failure on the operation's last completion, once the kernel is done
    /// with the caller's buffer. Readiness does nothing to it.
    func resolve(_ resource: any LoopResource, _ direction: Direction, _ outcome: Outcome) {
        let slot = resource.record[direction]
        if let op = slot.op {
            guard case .failed(let reason) = outcome else { return }
            var cleared = WaitSlot(timer: slot.timer)   // the deadline timer stays armed (lazy)
            cleared.inUse = slot.inUse   // its operation runs on until the kernel's last completion
            resource.record[direction] = cleared
            completions?.abandon(op, reason: reason)
            return
        }
        guard let continuation = slot.continuation else { return }
        var cleared = WaitSlot(timer: slot.timer)   // the deadline timer stays armed for the next wait
        if case .ready = outcome { cleared.lingering = true }
        cleared.inUse = slot.inUse   // resumed, its operation runs on until it returns
        resource.record[direction] = cleared
        continuation.resume(returning: outcome)
    }

    /// Suspends until the operation `start` submits (the completion driver) has completed for good:
    /// the slot holds it meanwhile (one per direction: ``LoopError/busy``), a deadline or a
    /// cancellation cancels it (`resolve`). `.ready` once it completed (its result is on `op`, with
    /// `op.failure` if it was cancelled meanwhile); a failure when it was never submitted.
    @inline(never)
    nonisolated(nonsending) func wait(for op: CompletionOperation, _ resource: any LoopResource, _ direction: Direction,
                                      deadline: Int64?, start: (CompletionOperation) throws(PollerError) -> Void) async -> Outcome {
        let operation = nextOperation
        nextOperation &+= 1
        assert(prefersLoop(), "a loop wait outside EventLoop.onLoop's preference")
        return await suspend(for: op, resource, direction, operation, deadline: deadline, start: start)
    }

    nonisolated(nonsending) private func suspend(for op: CompletionOperation, _ resource: any LoopResource, _ direction: Direction,
                                                 _ operation: UInt64, deadline: Int64?,
                                                 start: (CompletionOperation) throws(PollerError) -> Void) async -> Outcome {
        let loop = self.loop!
        let key = resource.key
        return await withTaskCancellationHandler {
            await withUnsafeContinuation { (continuation: UnsafeContinuation<Outcome, Never>) in
                self.install(op, resource, direction, operation, continuation, deadline: deadline, start: start)
            }
        } onCancel: {
            loop.submit(.cancel(key: key, direction: direction, operation: operation))
        }
    }

    /// `wait(for:)` for the completion driver's receive into a provided buffer, in its caller's frame
    /// (`CompletionDriver.receiveProvided`, where most idle connections wait on io_uring), as
    /// `waitInFrame` is for the readiness driver's read: one frame fewer, and no `start` closure held
    /// across the suspension (`op` carries the receive: `CompletionDriver.submitReceive`), which keeps
    /// the chain in two slabs of the task allocator (Docs/Async.md, "Memory per idle connection").
    @inline(__always)
    nonisolated(nonsending) func waitInFrame(receiving op: CompletionOperation, on stream: StreamResource, deadline: Int64?) async -> Outcome {
        assert(prefersLoop(), "a loop wait outside EventLoop.onLoop's preference")
        let operation = nextOperation
        nextOperation &+= 1
        let loop = self.loop!
        let key = stream.key
        return await withTaskCancellationHandler {
            await withUnsafeContinuation { (continuation: UnsafeContinuation<Outcome, Never>) in
                self.install(receiving: op, stream, operation, continuation, deadline: deadline)
            }
        } onCancel: {
            loop.submit(.cancel(key: key, direction: .read, operation: operation))
        }
    }

    @inline(never)
    private func install(receiving op: CompletionOperation, _ stream: StreamResource, _ operation: UInt64,
                         _ continuation: UnsafeContinuation<Outcome, Never>, deadline: Int64?) {
        install(op, stream, .read, operation, continuation, deadline: deadline) { (op) throws(PollerError) in
            // Only the completion driver waits this way (never nil here: no trap if it were).
            guard let completions else { throw PollerError.closed }
            try completions.submitReceive(op)
        }
    }

    @inline(never)
    private func install(_ op: CompletionOperation, _ resource: any LoopResource, _ direction: Direction, _ operation: UInt64,
                         _ continuation: UnsafeContinuation<Outcome, Never>, deadline: Int64?,
                         start: (CompletionOperation) throws(PollerError) -> Void) {
        if isShutDown { return continuation.resume(returning: .failed(shutdownReason)) }
        guard slab.contains(resource) else { return continuation.resume(returning: .failed(.closed)) }
        if resource.record[direction].isWaiting { return continuation.resume(returning: .failed(.busy)) }
        if Task.isCancelled { return continuation.resume(returning: .failed(.cancelled)) }
        do throws(PollerError) { try start(op) } catch { return continuation.resume(returning: .failed(.poller(error))) }
        op.continuation = continuation
        op.key = resource.key
        op.direction = direction
        var slot = WaitSlot(continuation: nil, op: op, operation: operation, timer: resource.record[direction].timer)
        slot.inUse = resource.record[direction].inUse
        if let deadline {
            slot.deadline = deadline
            slot.timer = armDeadline(slot.timer, at: deadline, token: resource.key.token(direction.deadline))
        }
        resource.record[direction] = slot
    }

    /// A waiting task was cancelled (submitted from any thread).
    func cancel(key: ResourceKey, direction: Direction, operation: UInt64) {
        guard let resource = slab[key], resource.key == key else { return }
        let slot = resource.record[direction]
        guard slot.isWaiting, slot.operation == operation else {
            // Perhaps an operation waiting for its turn (LoopClaims.swift).
            if !turnLines.isEmpty { _ = leaveLine(key, direction, operation: operation, .cancelled) }
            return
        }
        resolve(resource, direction, .failed(.cancelled))
        if let foreign = resource as? ForeignResource { settleForeign(foreign) }
    }
}
