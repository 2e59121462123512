#if canImport(Glibc)
import Glibc
#endif
import ReadinessCore
import ReadinessNet

extension EventLoop {
    /// The deliveries of `signals` to the process, from now on, as an async sequence waited on by this
    /// loop (no Dispatch, no handler code of the caller's):
    ///
    /// ```swift
    /// for await signal in try loop.signals([.interrupt, .terminate]) {
    ///     print("\(signal): shutting down"); break
    /// }
    /// ```
    ///
    /// While the sequence watches, the signals' default actions (SIGINT's and SIGTERM's exit) do not
    /// happen; they are put back when it stops. It stops when ``SignalSequence/finish()`` is called,
    /// when the iterating task is cancelled, or when the loop shuts down (then iteration ends with
    /// nil). Every sequence of a signal gets every delivery (several loops, several watchers);
    /// repeats of one signal may merge, as the kernel merges them (``/ReadinessNet/SignalSubscription``).
    /// One task iterates a sequence at a time: ask for one sequence per task. An empty set, or a signal
    /// that cannot be watched (``/ReadinessNet/Signal/invalidReason``), is
    /// ``LoopError/invalidArgument(_:)``; a shut-down loop is ``LoopError/shutdown`` (or the poller's
    /// failure, `.poller(error)`, that ended it); a pipe the loop's
    /// poller cannot wait on (select past FD_SETSIZE) is `.poller(.descriptorTooLarge)`. The process
    /// holds at most 256 subscriptions at once (every loop's sequences and the
    /// ``/ReadinessNet/SignalSubscription``s made directly): the next, or one for which no descriptor
    /// is left for its pipe, is `.socket(error)` (kind ``/ReadinessNet/SocketError/Kind/resourceExhausted``,
    /// or the `pipe2` errno's).
    public func signals(_ signals: some Sequence<Signal>) throws(LoopError) -> SignalSequence {
        if let stopped = stopError { throw stopped }   // `.poller(error)` when the poller ended the loop
        let subscription: SignalSubscription
        do {
            subscription = try SignalSubscription(signals)
        } catch {
            throw error.kind == .invalidArgument ? .invalidArgument(error.operation) : .socket(error)
        }
        // A pipe this loop's poller cannot wait on (select, past FD_SETSIZE) would end the iteration at
        // once, with no signal, as if one had come: refused here instead.
        let limit = maxDescriptor
        if subscription.descriptor > limit {
            let fd = subscription.descriptor
            Self.giveBack(subscription)
            throw .poller(.descriptorTooLarge(fd, limit: limit &+ 1))
        }
        // Stopped by the loop's shutdown, iterated or not; a loop that began shutting down since the
        // check above takes none.
        guard watch(subscription) else {
            Self.giveBack(subscription)
            throw stopError ?? .shutdown   // the poller's failure, if that is what ended the loop
        }
        // The loop thread stops blocking them while the sequence watches (before any job queued
        // after this call runs), so that a `raise` by code on the loop is delivered; raises made
        // there before the call, while nothing watched, are taken off first (applySignalMask).
        watchSignals(Array(subscription.signals), true)
        return SignalSequence(loop: self, subscription: subscription)
    }

    /// Closes a subscription that will not be returned. A signal that came since the handler was
    /// installed is given back to the action it had before (the process's default, a handler of its
    /// own): raised again once that is back. Not while another subscription still watches it (the
    /// action stays the package's): that one has its own copy of the delivery already.
    private static func giveBack(_ subscription: SignalSubscription) {
        subscription.stop()
        let caught = Set(subscription.drain())
        subscription.close()
        for signal in caught where !SignalSubscription.isWatched(signal) { kill(getpid(), signal.rawValue) }
    }
}

/// A signal subscription a loop stops at its shutdown, held weakly (the sequence owns it).
struct WeakSubscription {
    weak var subscription: SignalSubscription?
}

/// Signals as they are delivered to the process (``EventLoop/signals(_:)``).
public final class SignalSequence: AsyncSequence, @unchecked Sendable {
    // Sendable: `backlog` is touched only under `lock`; the rest is immutable.
    /// Each element is one delivery of a watched signal.
    public typealias Element = Signal
    /// Iteration never throws: it ends with nil.
    public typealias Failure = Never

    /// The loop that waits for them.
    public let loop: EventLoop
    let subscription: SignalSubscription
    /// Deliveries drained from the pipe and not yet returned: kept by the sequence, not by an
    /// iterator, so that an iteration that ends early (`break` after the first of two signals) loses
    /// none; the next iteration returns them first.
    private var backlog: [Signal] = []
    private let lock = ConditionLock()

    init(loop: EventLoop, subscription: SignalSubscription) {
        self.loop = loop
        self.subscription = subscription
    }

    /// The signals it watches.
    public var signals: Set<Signal> { subscription.signals }

    /// Stops watching at once (the signals' previous actions are put back); an iteration in progress
    /// returns what had come, then nil.
    public func finish() {
        // The loop thread's mask first (at once on the loop thread; else the loop's next submission),
        // then the old actions.
        releaseMask()
        subscription.stop()
        subscription.wake()
    }

    deinit {
        releaseMask()
        subscription.close()
    }

    /// Whether the loop thread's mask was given back (`EventLoop.watchSignals`), under `lock`.
    private var maskReleased = false

    /// Once the sequence stops watching: the loop thread blocks again what it blocked at its start.
    func releaseMask() {
        let first = lock.withLock { () -> Bool in
            defer { maskReleased = true }
            return !maskReleased
        }
        if first { loop.watchSignals(Array(subscription.signals), false) }
    }

    /// An iterator over the deliveries (one task at a time).
    public func makeAsyncIterator() -> Iterator { Iterator(sequence: self) }

    /// The oldest delivery not returned yet: the backlog's, else the pipe's (drained into the backlog).
    func nextDelivered() -> Signal? {
        lock.withLock {
            if backlog.isEmpty { backlog = subscription.drain() }
            return backlog.isEmpty ? nil : backlog.removeFirst()
        }
    }

    /// Iterates the deliveries; holds the sequence (and so its pipe) while it exists.
    public struct Iterator: AsyncIteratorProtocol {
        let sequence: SignalSequence
        /// Set once `next` returned nil: every later call returns nil too (`AsyncIteratorProtocol`).
        private var ended = false

        init(sequence: SignalSequence) { self.sequence = sequence }

        /// The next signal; nil once the sequence stopped (finished, the task cancelled, the loop shut
        /// down, or another task iterating it at the same time), and from then on.
        public mutating func next(isolation actor: isolated (any Actor)? = #isolation) async -> Signal? {
            guard !ended else { return nil }
            let signal = await nextSignal(isolation: actor)
            if signal == nil { ended = true }
            return signal
        }

        private func nextSignal(isolation actor: isolated (any Actor)?) async -> Signal? {
            let subscription = sequence.subscription
            var pause = AsyncListener.fullLoopPause   // doubles while shortages follow one another, up to 100 ms
            while true {
                if let signal = sequence.nextDelivered() { return signal }
                // Stopped between that look and this one: a signal its handler wrote to the pipe in
                // between is still returned (Go's TestAtomicStop: a signal is caught or its default
                // action runs, never lost; review), as `finish()` promises.
                if subscription.stopped { return sequence.nextDelivered() }
                do throws(LoopError) {
                    try await sequence.loop.readableAlone(subscription.descriptor)
                    pause = AsyncListener.fullLoopPause
                } catch {
                    // Another task iterates this sequence: this iteration ends, the other goes on
                    // (and the signals stay watched).
                    if case .busy = error { return nil }
                    // The loop holds as many resources as it can, or the poller could not watch the
                    // pipe for want of memory: a passing state, as for `serve`; pause (on the task's
                    // clock: a loop timer would need a slot) and wait again, rather than put SIGTERM's
                    // default action back.
                    if error == .resourceExhausted || (error.isPassingShortage && !sequence.loop.isShuttingDown),
                       (try? await Task.sleep(for: pause)) != nil {
                        pause = Swift.min(pause * 2, AsyncListener.longestShortagePause)
                        continue
                    }
                    // Cancelled, shut down, or the poller failed: watching ends for this sequence.
                    sequence.releaseMask()
                    subscription.stop()
                    return sequence.nextDelivered()
                }
            }
        }

        /// ``next(isolation:)`` without an actor.
        public mutating func next() async -> Signal? { await next(isolation: nil) }
    }
}
