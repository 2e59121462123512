/// The contract every backend keeps. Docs/Contract.md is its specification; each rule is written
/// there once.
///
/// A poller is used from one thread at a time, except ``waker`` (and so ``wakeup()``), which any
/// thread may use while another waits, and ``close()``, which another thread may call during a wait
/// or any other call: the wait then ends with ``PollerError/closed``, as does every call begun after.
public protocol Poller: AnyObject {
    /// What this backend can do.
    var capabilities: Capabilities { get }
    /// Wakes a wait from any thread; the wait reports one event with ``Token/waker``.
    var waker: Waker { get }
    /// Starts watching `fd`.
    func register(_ fd: CInt, token: Token, interest: Interest, trigger: Trigger) throws(PollerError)
    /// Changes the token, interest or trigger of a registered descriptor, and re-arms a one-shot one.
    func reregister(_ fd: CInt, token: Token, interest: Interest, trigger: Trigger) throws(PollerError)
    /// Stops watching `fd`. Succeeds for a descriptor that was closed while registered.
    func deregister(_ fd: CInt) throws(PollerError)
    /// Waits for events and puts them in `events` (emptied first). `nil` blocks until an event, zero
    /// does not block, any other timeout is never cut short by rounding or by signals.
    /// Returns the number of events (0 only when the timeout passed).
    @discardableResult
    func wait(into events: EventBuffer, timeout: Duration?) throws(PollerError) -> Int
    /// Releases the poller's own descriptors, exactly once. Registered descriptors stay open: they
    /// belong to the caller. Every later call fails with ``PollerError/closed``. Called from another
    /// thread during a wait, it wakes that wait (which fails with `closed`); it returns once every call
    /// in progress ended.
    func close() throws(PollerError)
    /// Whether ``close()`` has begun (any thread may ask): every call now fails with
    /// ``PollerError/closed``, and nothing is registered any more. A socket type that remembers its
    /// poller asks this to let itself be registered on another one.
    var isClosed: Bool { get }
}

extension Poller {
    /// A backend that does not say answers false (its sockets must then be deregistered, which
    /// fails with ``PollerError/closed`` and forgets the poller, before they move to another).
    public var isClosed: Bool { false }

    /// Registers `fd` level-triggered.
    public func register(_ fd: CInt, token: Token, interest: Interest) throws(PollerError) {
        try register(fd, token: token, interest: interest, trigger: .level)
    }
    /// Changes a level-triggered registration.
    public func reregister(_ fd: CInt, token: Token, interest: Interest) throws(PollerError) {
        try reregister(fd, token: token, interest: interest, trigger: .level)
    }
    /// Same as `waker.wake()`.
    public func wakeup() throws(PollerError) { try waker.wake() }
    /// Blocks until at least one event.
    @discardableResult
    public func wait(into events: EventBuffer) throws(PollerError) -> Int {
        try wait(into: events, timeout: nil)
    }
}
