@_spi(Backend) import ReadinessCore
import ReadinessNet

// Repeating timers on the loop's timer heap: tokio's `Interval` (`tick()` and `MissedTickBehavior`),
// libuv's repeating `uv_timer_t`, libevent's persistent timeout, SwiftNIO's `scheduleRepeatedTask`,
// Go's `time.Ticker`. Each tick is a sleep until the tick's deadline, so an interval holds nothing
// on the loop between ticks, and nothing is left behind when the task that ticks it ends.

/// What an ``Interval`` does when a tick comes late (the task was busy, the loop was held, the process
/// was stopped), as tokio's `MissedTickBehavior`.
public enum MissedTicks: Sendable, Hashable {
    /// The missed ticks come at once, one per `tick()`, until the schedule is caught up; the schedule
    /// never moves (tokio's default: a tick for every period that passed).
    case burst
    /// The next tick is one period after the late one was taken: the schedule moves back by the delay
    /// (SwiftNIO's `scheduleRepeatedTask`, libuv's repeating timer). A tick taken within 5 ms of its
    /// instant is on time (tokio's tolerance): the schedule does not drift by the loop's own jitter.
    case delay
    /// The ticks missed are dropped: the next is the first one of the original schedule still to come
    /// (Go's `Ticker`, which drops ticks a slow reader misses). A tick taken within 5 ms of its instant
    /// is on time, as for every behaviour (tokio's tolerance): the next is then one period after it,
    /// even if that has passed too.
    case skip
}

/// A repeating timer on one loop (``EventLoop/interval(every:startingAt:missedTicks:)``): each
/// ``tick()`` suspends until the next tick of the schedule and returns that tick's instant.
///
/// ```swift
/// var interval = try loop.interval(every: .seconds(1))
/// while true {
///     let tick = try await interval.tick()      // the first one at once
///     try await sendHeartbeat()
/// }
/// ```
///
/// A value type, as tokio's (`&mut self`): one task ticks it. It holds no timer between ticks; a
/// cancelled `tick()` leaves the schedule as it was, so the next call waits for the same tick.
public struct Interval: Sendable {
    /// The loop whose timers it uses.
    public let loop: EventLoop
    /// The time between ticks (at least 1 ns).
    public let period: Duration
    /// What a late tick does to the schedule (``MissedTicks``); it may be changed between ticks.
    public var missedTicks: MissedTicks
    /// When the next ``tick()`` returns (at once, if this has passed).
    public private(set) var nextTick: Deadline

    init(loop: EventLoop, period: Duration, start: Deadline, missedTicks: MissedTicks) {
        self.loop = loop
        self.period = period
        self.missedTicks = missedTicks
        self.nextTick = start
    }

    /// Suspends until the next tick (on the loop's timers; always a suspension, at least a pass of the
    /// loop, even for a tick already due, so that a task catching up a burst never holds the loop),
    /// then schedules the one after it (``missedTicks``) and returns the instant this one was due.
    ///
    /// Fails with ``LoopError/cancelled`` (the task was cancelled: the schedule is unchanged),
    /// ``LoopError/shutdown`` (``LoopError/poller(_:)`` when the loop ended because its poller failed)
    /// and ``LoopError/resourceExhausted`` (the loop holds as many resources as it can: a tick takes a
    /// slot while it waits; the schedule is unchanged, the next call tries again).
    public mutating func tick() async throws(LoopError) -> Deadline {
        let due = nextTick
        try await loop.sleep(until: due)
        nextTick = Self.following(due, period: period, now: .now, missedTicks: missedTicks)
        return due
    }

    /// Starts the schedule again: the next tick one period from now (tokio's `reset`).
    public mutating func reset() { nextTick = Deadline.after(period) }

    /// Starts the schedule again from `deadline`: the next tick then.
    public mutating func reset(to deadline: Deadline) { nextTick = deadline }

    /// How late a tick may be taken and still count as on time, whatever ``MissedTicks`` says (tokio's
    /// 5 ms): the schedule goes on unmoved, as after a tick taken on time.
    static let delayTolerance = Duration.milliseconds(5)

    /// The tick after `due`, taken at `now` (saturating: a schedule past the clock's range stays at
    /// ``Deadline/distantFuture``).
    static func following(_ due: Deadline, period: Duration, now: Deadline, missedTicks: MissedTicks) -> Deadline {
        let next: Deadline = Deadline.after(period, now: due)
        // Within the tolerance a tick is on time for every behaviour, as tokio looks at the lateness
        // before the missed-tick behaviour (a period below 5 ms would otherwise skip ticks that a
        // loop's ordinary jitter made a little late).
        if now - due <= delayTolerance { return next }
        switch missedTicks {
        case .burst:
            return next
        case .delay:
            return Deadline.after(period, now: now)
        case .skip:
            guard next <= now else { return next }   // no tick missed: the schedule as it is
            // The first tick of the schedule after `now`: `next` plus whole periods.
            // In 128 bits: a start the caller put far in the past (`reset(to:)`) is no overflow.
            let step = Int128(period.clampedNanoseconds)   // at least 1
            let behind = Int128(now.nanoseconds) - Int128(next.nanoseconds)   // >= 0
            let first = Int128(next.nanoseconds) + (behind / step + 1) * step
            return first > Int128(Int64.max) ? .distantFuture : Deadline(nanoseconds: Int64(first))
        }
    }
}

extension EventLoop {
    /// Suspends until `deadline` on the loop's timers (cancellable: ``LoopError/cancelled``); a deadline
    /// that has passed still suspends, for a pass of the loop (tokio's `sleep_until`, SwiftNIO's
    /// `scheduleTask(deadline:)`). Also fails as ``EventLoop/sleep(for:)`` does.
    nonisolated(nonsending) public func sleep(until deadline: Deadline) async throws(LoopError) {
        try await onLoop { (state) async throws(LoopError) in try await state.sleep(until: deadline.nanoseconds) }
    }

    /// A repeating timer on this loop: ticks `period` apart, the first at `start` (now by default, so
    /// that the first ``Interval/tick()`` returns at once, as tokio's `interval`), late ticks handled
    /// as `missedTicks` says.
    ///
    /// Fails with ``LoopError/invalidArgument(_:)`` for a period that is not positive (tokio panics
    /// there; a zero period would tick without ever waiting).
    public func interval(every period: Duration, startingAt start: Deadline = .now,
                         missedTicks: MissedTicks = .burst) throws(LoopError) -> Interval {
        guard period > .zero else { throw .invalidArgument("interval: the period must be positive (was \(period))") }
        return Interval(loop: self, period: period, start: start, missedTicks: missedTicks)
    }
}
