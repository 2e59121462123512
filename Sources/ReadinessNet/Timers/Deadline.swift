/// An instant on the monotonic clock (`CLOCK_MONOTONIC`, which no wall-clock change moves), in whole
/// nanoseconds: when a timer fires, when a listener's back-off ends, when a connect attempt gives up.
///
/// All arithmetic saturates: a deadline a `Duration` too long to represent away is
/// ``distantFuture``, which never passes; nothing here traps.
///
/// ```swift
/// let deadline = Deadline.after(.seconds(2))
/// try poller.wait(into: events, timeout: deadline.timeout())   // the time left, zero once passed
/// ```
public struct Deadline: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// Nanoseconds since the monotonic clock's origin (boot on Linux).
    public var nanoseconds: Int64

    /// The instant `nanoseconds` after the monotonic clock's origin.
    @inlinable public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

    /// Now.
    @inlinable public static var now: Deadline { Deadline(nanoseconds: MonotonicClock.nowNanoseconds) }

    /// A deadline that never passes.
    public static let distantFuture = Deadline(nanoseconds: .max)

    /// `now + duration`, saturating at ``distantFuture``; a negative duration counts as zero.
    @_disfavoredOverload
    @inlinable public static func after(_ duration: Duration, now: Deadline = .now) -> Deadline {
        Deadline(nanoseconds: MonotonicClock.deadline(after: duration.clampedNanoseconds, from: now.nanoseconds))
    }

    /// The wait timeout that ends at this deadline: zero once it has passed, otherwise the time left.
    @inlinable public func timeout(now: Deadline = .now) -> Duration {
        Deadline.timeout(until: nanoseconds, now: now.nanoseconds)
    }

    /// Whether the deadline has come (`now` is at or after it).
    @inlinable public func hasPassed(now: Deadline = .now) -> Bool { now >= self }

    /// The time from `start` to `end` (negative when `end` is earlier), saturating.
    @inlinable public static func - (end: Deadline, start: Deadline) -> Duration {
        let (difference, overflow) = end.nanoseconds.subtractingReportingOverflow(start.nanoseconds)
        return .nanoseconds(overflow ? (end > start ? Int64.max : Int64.min) : difference)
    }

    /// Earlier deadlines first.
    @inlinable public static func < (a: Deadline, b: Deadline) -> Bool { a.nanoseconds < b.nanoseconds }

    /// "Deadline(N ns)".
    public var description: String { "Deadline(\(nanoseconds) ns)" }

    // MARK: Raw nanoseconds, inside the package only

    /// ``after(_:now:)`` in raw monotonic nanoseconds. Inside the package only: the event loop's
    /// state and Happy Eyeballs keep raw nanoseconds until their restructuring (issue 21, item 1), and
    /// this overload is the one an unannotated `Deadline.after(...)` there picks.
    @inlinable
    package static func after(_ duration: Duration, now: Int64 = MonotonicClock.nowNanoseconds) -> Int64 {
        MonotonicClock.deadline(after: duration.clampedNanoseconds, from: now)
    }

    /// The wait timeout that ends at `deadline` (raw nanoseconds): zero when it has passed, otherwise
    /// the time left (saturating at `Int64.max` nanoseconds, whatever `deadline` and `now` are).
    @inlinable
    package static func timeout(until deadline: Int64, now: Int64 = MonotonicClock.nowNanoseconds) -> Duration {
        if deadline <= now { return .zero }
        let (left, overflow) = deadline.subtractingReportingOverflow(now)
        return .nanoseconds(overflow ? .max : left)
    }
}
