/// What a backend can do, as data. Tests and the conformance suite read these instead of the name.
public struct Capabilities: Hashable, Sendable, Codable, CustomStringConvertible {
    /// How a backend provides ``Trigger/oneShot``.
    public enum OneShot: String, Hashable, Sendable, Codable {
        /// The kernel disarms the registration (EPOLLONESHOT, libevent without EV_PERSIST).
        case native
        /// The backend stops watching the descriptor after reporting it.
        case emulated
    }
    /// The backend's name as selected ("epoll", "libevent:poll", ...).
    public var name: String
    /// The kernel mechanism underneath ("epoll", "poll", "select"; for libevent, what
    /// `event_base_get_method` reports).
    public var mechanism: String
    /// Whether ``Trigger/edge`` is accepted.
    public var edgeTriggered: Bool
    /// How ``Trigger/oneShot`` is provided.
    public var oneShot: OneShot
    /// The granularity of the underlying timeout (epoll/poll: 1 ms; select: 1 µs).
    public var timeoutResolution: Duration
    /// The largest descriptor the backend accepts.
    public var maxDescriptor: CInt
    /// Whether ``Ready/readClosed`` is reported.
    public var reportsReadClosed: Bool
    /// Whether ``Ready/hangup`` and ``Ready/error`` are reported (select and libevent fold them into
    /// readable/writable).
    public var reportsHangupAndError: Bool
    /// Whether closing a registered descriptor closes its file at once, as the caller expects (false on
    /// io_uring, whose armed poll request holds a reference to the file until the registration is
    /// deregistered: only then does the peer see the close). Docs/Contract.md, "A descriptor closed
    /// while registered".
    public var closeReleasesFile: Bool

    /// Capabilities with every field given; `mechanism` defaults to `name`.
    @_spi(Backend) public init(name: String, mechanism: String? = nil, edgeTriggered: Bool, oneShot: OneShot, timeoutResolution: Duration,
                maxDescriptor: CInt, reportsReadClosed: Bool, reportsHangupAndError: Bool, closeReleasesFile: Bool = true) {
        self.name = name
        self.mechanism = mechanism ?? name
        self.edgeTriggered = edgeTriggered
        self.oneShot = oneShot
        self.timeoutResolution = timeoutResolution
        self.maxDescriptor = maxDescriptor
        self.reportsReadClosed = reportsReadClosed
        self.reportsHangupAndError = reportsHangupAndError
        self.closeReleasesFile = closeReleasesFile
    }

    /// The readiness bits this backend can report: what two backends are compared on.
    public var observableReady: Ready {
        var bits: Ready = [.readable, .writable]
        if reportsReadClosed { bits.insert(.readClosed) }
        if reportsHangupAndError { bits.formUnion([.hangup, .error]) }
        return bits
    }

    /// Every capability on one line.
    public var description: String {
        "\(name) (\(mechanism)): edge=\(edgeTriggered) oneShot=\(oneShot.rawValue) resolution=\(timeoutResolution) "
            + "maxfd=\(maxDescriptor) readClosed=\(reportsReadClosed) hangup/error=\(reportsHangupAndError)"
    }
}
