/// A timer's handle, for ``Timers/cancel(_:)``. A handle of a timer that fired or was cancelled is
/// stale: cancelling it does nothing, even when its slot has been reused.
public struct TimerID: Hashable, Sendable {
    @usableFromInline let slot: Int32
    @usableFromInline let generation: UInt32
}

/// The deadlines a loop waits for: a binary min-heap of (deadline, token).
///
/// A loop uses it in two places (Docs/Sockets.md, "the deadline-to-timeout rule"):
/// ```swift
/// try poller.wait(into: events, timeout: timers.timeout())   // the nearest deadline, or nil: none
/// /* handle events */
/// let now = Deadline.now
/// while let token = timers.popDue(now: now) { /* that timer's work */ }
/// ```
/// The wait never returns before the timeout (the poller contract), so a due timer is never missed and
/// never spun on; a deadline already passed gives a zero timeout: events are still collected, then the
/// timer fires.
///
/// Scheduling, cancelling and firing are O(log n) and allocate nothing once the arrays have grown to
/// the most timers pending at once (slots are reused through a free list).
///
/// Timers due at the same deadline fire in the order they were scheduled (as libuv's and SwiftNIO's
/// do): each carries a sequence number that breaks ties.
public final class Timers {
    @usableFromInline struct Slot {
        var deadline: Int64
        /// Scheduling order, for timers with the same deadline.
        var sequence: UInt64
        var token: Token
        var generation: UInt32
        /// Position in `heap`, or -1 when the slot is free.
        var heapIndex: Int32
        var nextFree: Int32
    }
    // Used from one thread at a time (a loop's) and never accessed overlapping (no method calls out
    // while it holds an access): the dynamic exclusivity check of each element access
    // (swift_beginAccess, a dozen a schedule and cancel) was most of what a deadline cost an awaited
    // operation (Docs/Async.md, "Figures": deadline cost).
    @exclusivity(unchecked) @usableFromInline var slots: [Slot] = []
    @exclusivity(unchecked) @usableFromInline var heap: [Int32] = []
    @exclusivity(unchecked) @usableFromInline var freeHead: Int32 = -1
    @exclusivity(unchecked) @usableFromInline var nextSequence: UInt64 = 0
    /// The drain in progress (``popDue(now:)`` until nil): its `now`, and the first sequence
    /// number scheduled since it began. A timer scheduled during it is due no earlier than just after
    /// that `now` (so it waits for the next drain, behind the timers already due; at the largest `now`,
    /// at that `now`, behind every timer already due there), and never fires in it (the cutoff). Nil
    /// between drains.
    @exclusivity(unchecked) var drain: (now: Int64, cutoff: UInt64)?

    /// - Parameter capacity: timers to make room for at once, clamped to 0 ... ``maximumReservedCapacity``
    ///   (a hint: more timers than that still fit, the arrays grow). Before the clamp, a huge capacity
    ///   (`Int.max`) ended the process in the allocator.
    public init(capacity: Int = 64) {
        let reserved = Swift.min(Swift.max(0, capacity), Self.maximumReservedCapacity)
        slots.reserveCapacity(reserved)
        heap.reserveCapacity(reserved)
    }

    /// The most timers ``init(capacity:)`` makes room for in advance (65,536: 2.9 MB).
    public static let maximumReservedCapacity = 1 << 16

    /// Pending timers.
    public var count: Int { heap.count }
    /// Whether no timer is pending.
    public var isEmpty: Bool { heap.isEmpty }

    /// The earliest pending deadline.
    public var nearestDeadline: Deadline? { heap.first.map { Deadline(nanoseconds: slots[Int($0)].deadline) } }

    /// The wait timeout until the nearest deadline: nil (block) when no timer is pending, zero when one
    /// is due. Asking it ends a drain in progress (``popDue(now:)``): ask it before the wait, not from
    /// a timer's handler. `limit` caps it (for a loop that must also look at something else now and then); a
    /// negative limit counts as zero.
    public func timeout(now: Deadline = .now, limit: Duration? = nil) -> Duration? {
        timeout(now: now.nanoseconds, limit: limit)
    }

    /// ``timeout(now:limit:)`` at a raw monotonic instant (inside the package only).
    package func timeout(now: Int64, limit: Duration? = nil) -> Duration? {
        drain = nil   // asked before a wait: a drain left before nil is over
        let cap = limit.map { $0 < .zero ? .zero : $0 }
        guard let nearest = heap.first.map({ slots[Int($0)].deadline }) else { return cap }
        let timeout = Deadline.timeout(until: nearest, now: now)
        if let cap, cap < timeout { return cap }
        return timeout
    }

    /// Schedules `token` at `deadline`.
    @discardableResult
    public func schedule(at deadline: Deadline, token: Token) -> TimerID {
        schedule(at: deadline.nanoseconds, token: token)
    }

    /// ``schedule(at:token:)`` at a raw monotonic deadline (inside the package only).
    @discardableResult
    package func schedule(at deadline: Int64, token: Token) -> TimerID {
        var deadline = deadline
        if let drain, deadline <= drain.now { deadline = drain.now == .max ? .max : drain.now + 1 }
        let slot: Int32
        let sequence = nextSequence
        nextSequence &+= 1
        if freeHead >= 0 {
            slot = freeHead
            freeHead = slots[Int(slot)].nextFree
            slots[Int(slot)].deadline = deadline
            slots[Int(slot)].sequence = sequence
            slots[Int(slot)].token = token
            slots[Int(slot)].generation &+= 1
        } else {
            slot = Int32(slots.count)
            slots.append(Slot(deadline: deadline, sequence: sequence, token: token, generation: 0, heapIndex: -1, nextFree: -1))
        }
        let index = heap.count
        heap.append(slot)
        slots[Int(slot)].heapIndex = Int32(index)
        siftUp(index)
        return TimerID(slot: slot, generation: slots[Int(slot)].generation)
    }

    /// Schedules `token` after `delay` from now (saturating). A negative delay is zero: timers due at
    /// once fire in the order they were scheduled (as Go's do; asyncio and SwiftNIO would order two
    /// negative delays by their value).
    @discardableResult
    public func schedule(after delay: Duration, token: Token, now: Deadline = .now) -> TimerID {
        schedule(at: Deadline.after(delay, now: now.nanoseconds), token: token)
    }

    /// ``schedule(after:token:now:)`` from a raw monotonic instant (inside the package only).
    @discardableResult
    package func schedule(after delay: Duration, token: Token, now: Int64) -> TimerID {
        schedule(at: Deadline.after(delay, now: now), token: token)
    }

    /// Cancels a pending timer; false when it already fired or was cancelled.
    @discardableResult
    public func cancel(_ id: TimerID) -> Bool {
        guard isPending(id) else { return false }
        remove(at: Int(slots[Int(id.slot)].heapIndex))
        return true
    }

    /// Whether the timer is still pending.
    public func isPending(_ id: TimerID) -> Bool {
        let index = Int(id.slot)
        guard index >= 0, index < slots.count else { return false }
        return slots[index].generation == id.generation && slots[index].heapIndex >= 0
    }

    /// The deadline of a pending timer; nil when it fired or was cancelled (inside the package only).
    package func deadline(of id: TimerID) -> Int64? {
        isPending(id) ? slots[Int(id.slot)].deadline : nil
    }

    /// Removes and returns the token of the earliest timer if it is due at `now`; nil otherwise.
    /// Call it until nil to fire everything due. A timer scheduled during that drain (a handler that
    /// schedules itself again at `now`, or earlier) is not due in it: its deadline becomes just after
    /// `now`, so it fires in the next drain, after the next wait, as libuv's timers do; a drain never
    /// runs for ever. (A drain left before nil lasts until ``timeout(now:limit:)`` is asked, before the
    /// next wait.)
    public func popDue(now: Deadline = .now) -> Token? { popDue(now: now.nanoseconds) }

    /// ``popDue(now:)`` at a raw monotonic instant (inside the package only).
    package func popDue(now: Int64) -> Token? {
        let cutoff = drain?.cutoff ?? nextSequence
        guard let first = heap.first, slots[Int(first)].deadline <= now, slots[Int(first)].sequence < cutoff else {
            drain = nil
            return nil
        }
        drain = (now, cutoff)
        let token = slots[Int(first)].token
        remove(at: 0)
        return token
    }

    /// Removes every timer.
    public func removeAll() {
        while !heap.isEmpty { remove(at: heap.count - 1) }
    }

    private func remove(at index: Int) {
        let slot = heap[index]
        let last = heap.count - 1
        if index != last {
            heap[index] = heap[last]
            slots[Int(heap[index])].heapIndex = Int32(index)
        }
        heap.removeLast()
        slots[Int(slot)].heapIndex = -1
        slots[Int(slot)].nextFree = freeHead
        freeHead = slot
        if index < heap.count {
            siftDown(index)
            siftUp(index)
        }
    }

    private func less(_ a: Int, _ b: Int) -> Bool {
        let x = Int(heap[a]), y = Int(heap[b])
        let dx = slots[x].deadline, dy = slots[y].deadline
        return dx < dy || (dx == dy && slots[x].sequence < slots[y].sequence)
    }

    private func swapAt(_ a: Int, _ b: Int) {
        heap.swapAt(a, b)
        slots[Int(heap[a])].heapIndex = Int32(a)
        slots[Int(heap[b])].heapIndex = Int32(b)
    }

    private func siftUp(_ start: Int) {
        var child = start
        while child > 0 {
            let parent = (child - 1) / 2
            guard less(child, parent) else { return }
            swapAt(child, parent)
            child = parent
        }
    }

    private func siftDown(_ start: Int) {
        var parent = start
        while true {
            let left = 2 * parent + 1
            guard left < heap.count else { return }
            let right = left + 1
            let smaller = right < heap.count && less(right, left) ? right : left
            guard less(smaller, parent) else { return }
            swapAt(smaller, parent)
            parent = smaller
        }
    }
}

extension ConnectAttempt {
    /// Schedules the attempt's deadline (if it has one) on `timers` with the attempt's token: when the
    /// token fires, call ``checkDeadline(now:)``. Scheduled before ``start()``, the deadline stays
    /// counted from the attempt's creation (the timer and the check agree on when it is).
    @discardableResult
    public func scheduleDeadline(on timers: Timers) -> TimerID? {
        guard let deadline else { return nil }
        deadlineScheduled = true
        return timers.schedule(at: deadline, token: token)
    }
}

extension HappyEyeballs {
    /// A timer popped from ``Timers`` whose token it owns, handled at `now`.
    @_disfavoredOverload
    public func handleTimer(_ token: Token, now: Deadline = .now) -> Progress {
        handleTimer(token, now: now.nanoseconds)
    }
}
