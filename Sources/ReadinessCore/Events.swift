/// A caller-chosen 64-bit value that comes back with every event of a registration.
///
/// ``Token/waker`` (the largest value) is reserved for the poller's wake-up event; registering with it
/// fails with ``PollerError/reservedToken``.
public struct Token: RawRepresentable, Hashable, Sendable, ExpressibleByIntegerLiteral, CustomStringConvertible {
    /// The value chosen by the caller.
    public var rawValue: UInt64
    /// A token of this value.
    @inlinable public init(rawValue: UInt64) { self.rawValue = rawValue }
    /// A token of this value.
    @inlinable public init(_ value: UInt64) { self.rawValue = value }
    /// A token written as an integer literal.
    @inlinable public init(integerLiteral value: UInt64) { self.rawValue = value }
    /// The token of the wake-up event produced by ``Waker/wake()``.
    public static let waker = Token(rawValue: .max)
    /// The value, or "waker".
    public var description: String { self == .waker ? "waker" : String(rawValue) }
}

/// What a registration waits for.
public struct Interest: OptionSet, Hashable, Sendable, CustomStringConvertible {
    /// The bits: 1 readable, 2 writable.
    public var rawValue: UInt8
    /// An interest of these bits.
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// Watch for reads that will not block.
    public static let readable = Interest(rawValue: 1)
    /// Watch for writes that will not block.
    public static let writable = Interest(rawValue: 2)
    /// Watch both directions.
    public static let both: Interest = [.readable, .writable]
    /// "readable", "writable" or "readable|writable".
    public var description: String {
        switch self {
        case .readable: "readable"
        case .writable: "writable"
        case .both: "readable|writable"
        default: "none"
        }
    }
}

/// How a registration reports readiness.
public enum Trigger: String, Hashable, Sendable, CaseIterable, Codable {
    /// Reported on every wait while the condition holds (the default, on every backend).
    case level
    /// Reported once per change of state. Only where ``Capabilities/edgeTriggered`` is true.
    case edge
    /// Level-triggered, but the first event disarms the registration until it is re-armed with
    /// ``Poller/reregister(_:token:interest:trigger:)``. Every backend has it (native or emulated).
    case oneShot
}

/// Normalized readiness, the same bits on every backend.
public struct Ready: OptionSet, Hashable, Sendable, CustomStringConvertible {
    /// The bits.
    public var rawValue: UInt8
    /// Readiness of these bits.
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// A read will not block (data, end of file, or a pending error).
    public static let readable = Ready(rawValue: 1 << 0)
    /// A write will not block (buffer space, or a pending error).
    public static let writable = Ready(rawValue: 1 << 1)
    /// The peer shut down its sending side (EPOLLRDHUP, POLLRDHUP, EV_CLOSED); only where
    /// ``Capabilities/reportsReadClosed``.
    public static let readClosed = Ready(rawValue: 1 << 2)
    /// Both directions are shut down, or (for a pipe's read end) its writer is gone; only where
    /// ``Capabilities/reportsHangupAndError``.
    public static let hangup = Ready(rawValue: 1 << 3)
    /// An error is pending on the descriptor: for a socket, read it with SO_ERROR; for a pipe's write
    /// end, its reader is gone (the next write fails with EPIPE; SO_ERROR would say ENOTSOCK). Only
    /// where ``Capabilities/reportsHangupAndError``.
    public static let error = Ready(rawValue: 1 << 4)

    /// The one normalization rule every backend applies to what its kernel said (`raw`):
    /// - readable and writable are reported only if asked for;
    /// - read-closed implies readable (a read returns 0), and is reported only with readable interest;
    /// - hang-up and error are always reported, and wake every direction that was asked for,
    ///   so a waiter is never left asleep on a dead descriptor.
    @inlinable
    @_spi(Backend) public static func normalized(_ raw: Ready, interest: Interest) -> Ready {
        let asked = Ready(rawValue: interest.rawValue & 0b11)
        var out = raw.intersection([.hangup, .error])
        if !out.isEmpty { out.formUnion(asked) }
        if interest.contains(.readable), raw.contains(.readClosed) { out.formUnion([.readable, .readClosed]) }
        out.formUnion(raw.intersection(asked))
        return out
    }

    /// The bits' names joined by "|", or "none".
    public var description: String {
        var parts: [String] = []
        if contains(.readable) { parts.append("readable") }
        if contains(.writable) { parts.append("writable") }
        if contains(.readClosed) { parts.append("readClosed") }
        if contains(.hangup) { parts.append("hangup") }
        if contains(.error) { parts.append("error") }
        return parts.isEmpty ? "none" : parts.joined(separator: "|")
    }
}

/// One readiness event: the registration's token and what is ready.
public struct Event: Hashable, Sendable, CustomStringConvertible {
    /// The token of the registration.
    public var token: Token
    /// What is ready, normalized.
    public var ready: Ready
    /// An event for `token`.
    @inlinable public init(token: Token, ready: Ready) {
        self.token = token
        self.ready = ready
    }
    /// True for the event produced by ``Waker/wake()``.
    @inlinable public var isWakeup: Bool { token == .waker }
    /// "token:ready".
    public var description: String { "\(token):\(ready)" }
}

/// A reusable, caller-owned buffer that ``Poller/wait(into:timeout:)`` fills. Allocated once; a wait
/// never allocates.
public final class EventBuffer: RandomAccessCollection {
    /// The most events one wait returns.
    public let capacity: Int
    @usableFromInline let storage: UnsafeMutablePointer<Event>
    @exclusivity(unchecked) @usableFromInline var storedCount: Int = 0
    /// How many events the last wait put in.
    @inlinable public var count: Int { storedCount }

    /// - Parameter capacity: the most events one wait returns, clamped to 1 ... ``maximumCapacity``.
    public init(capacity: Int = 256) {
        self.capacity = Swift.min(Swift.max(1, capacity), Self.maximumCapacity)
        storage = .allocate(capacity: self.capacity)
    }

    /// The largest buffer (2^20 events, 16 MiB): a larger capacity asked for is clamped to it.
    public static let maximumCapacity = 1 << 20
    deinit { storage.deallocate() }

    /// Always 0.
    @inlinable public var startIndex: Int { 0 }
    /// ``count``.
    @inlinable public var endIndex: Int { storedCount }
    /// The event at `position` (0..<``count``).
    @inlinable public subscript(position: Int) -> Event {
        precondition(position >= 0 && position < count, "EventBuffer index out of range")
        return storage[position]
    }
    /// True when a wait filled every slot (more events may be pending).
    @inlinable public var isFull: Bool { storedCount == capacity }

    /// For backend implementations: empties the buffer before a wait.
    @_spi(Backend) @inlinable public func removeAll() { storedCount = 0 }
    /// For backend implementations: appends one event; false when full.
    @inlinable @discardableResult
    @_spi(Backend) public func append(_ event: Event) -> Bool {
        guard storedCount < capacity else { return false }
        (storage + storedCount).initialize(to: event)
        storedCount += 1
        return true
    }
    /// For backend implementations: adds `ready` to the event at `position` (one this wait put in:
    /// a registration seen again later in the same wait with more ready). Out of range: nothing.
    @_spi(Backend) public func merge(_ ready: Ready, at position: Int) {
        guard position >= 0, position < storedCount else { return }
        storage[position].ready.formUnion(ready)
    }
}
