import ReadinessCore
import ReadinessNet

/// Every error of the async layer: misuse and the loop's own outcomes are cases of their own, and the
/// errors of the layers below are carried as they are.
public enum LoopError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The task was cancelled while (or before) it waited; what the operation owned was released.
    case cancelled
    /// The operation's deadline passed.
    case timedOut
    /// The socket or listener is closed, or was closed by another task while this one waited.
    case closed
    /// Another task's operation holds the direction and this one cannot wait for its turn:
    /// ``AsyncSocket/tryWrite(_:)`` during another write, a second wait on a caller's descriptor in
    /// the same direction (``EventLoop/readable(_:timeout:)``). (Reads, writes, accepts, sends and
    /// receives take turns instead: Docs/Async.md, "Taking turns".)
    case busy
    /// The loop is shut down (or shut down while this operation waited).
    case shutdown
    /// A socket call failed.
    case socket(SocketError)
    /// A connect failed (through the connect state machine: SO_ERROR and getpeername).
    ///
    /// Boxed (`indirect`): a ``/ReadinessNet/ConnectError`` holds an address (over 150 bytes inline), and every
    /// typed-throw slot and wait outcome in an awaited operation's frame is a `LoopError`; unboxed, it
    /// made each task waiting in a read several KiB larger (Docs/Async.md, "Memory per idle connection").
    indirect case connect(ConnectError)
    /// The name did not resolve.
    case resolution(ResolutionError)
    /// The poller refused a registration.
    case poller(PollerError)
    /// The caller passed a value the operation cannot take (an empty read buffer, a negative count,
    /// options out of range); the text names it. Nothing was done: no system call, nothing owned.
    case invalidArgument(String)
    /// The loop already holds as many resources as it can number (sockets, listeners, waits, sleeps and
    /// connect attempts, 2^24 at once). Nothing was done: a descriptor handed to
    /// ``EventLoop/adopt(descriptor:)`` stays the caller's, open; a connection waiting to be accepted
    /// stays queued; a socket the operation had made is closed. Closing resources makes room again.
    case resourceExhausted

    /// True for a shortage that can pass: ``resourceExhausted`` (the loop's), or the poller refusing a
    /// registration for want of memory or descriptors (``/ReadinessCore/PollerError/resourceExhausted(operation:errno:)``:
    /// ENOMEM, or ENOSPC, epoll's per-user limit of watched descriptors). Nothing was changed; the same
    /// call can succeed once something is released. ``AsyncListener/serve(_:)`` and signal sequences
    /// pause and try again on these. Only the loop's and the poller's shortages: a socket the call
    /// could not make (`.connect` or `.socket` with kind `resourceExhausted`, EMFILE) is the caller's
    /// to retry or not. A loop whose waits failed for want of resources for a second ended for good
    /// and reports that shortage to every later call: a retry loop checks
    /// ``EventLoop/isShuttingDown`` too, as `serve` does.
    public var isPassingShortage: Bool {
        switch self {
        case .resourceExhausted: true
        case .poller(let error): error.isResourceExhausted
        default: false
        }
    }

    /// The error in words.
    public var description: String {
        switch self {
        case .cancelled: "cancelled"
        case .timedOut: "timed out"
        case .closed: "the socket is closed"
        case .busy: "another task's operation holds this direction, and this call cannot wait for its turn"
        case .shutdown: "the event loop is shut down"
        case .socket(let error): "\(error)"
        case .connect(let error): "connect: \(error)"
        case .resolution(let error): "\(error)"
        case .poller(let error): "poller: \(error)"
        case .invalidArgument(let what): "invalid argument: \(what)"
        case .resourceExhausted: "the event loop holds as many resources as it can"
        }
    }
}

/// Which I/O driver a loop's async operations use (``EventLoop/ioDriver()``), with its counters.
public struct IODriverInfo: Sendable, Hashable {
    /// The drivers.
    public enum Kind: String, Sendable, Hashable {
        /// Try the system call, and on EAGAIN wait for the poller's readiness event (every backend).
        case readiness
        /// Reads, writes that would block and accepts submitted to the io_uring ring, resumed by their completions.
        case completion
    }
    /// The loop's driver.
    public var kind: Kind
    /// Operations submitted to the kernel whose last completion has not come yet (0 for the readiness driver).
    public var operationsInKernel: Int
    /// Operations the completion driver handed to the readiness path because the ring could not do
    /// them (no provided buffer free, EAGAIN, a listener out of descriptors, a cancelled task).
    public var readinessFallbacks: Int
    /// Operations the completion driver saw complete.
    public var completed: Int
}
