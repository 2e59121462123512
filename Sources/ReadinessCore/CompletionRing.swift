#if canImport(Glibc)
import Glibc
#endif

/// What a ``Poller`` may offer besides readiness: operations the kernel completes itself (io_uring).
/// The async layer's completion driver (Sources/ReadinessAsync/Drivers/CompletionDriver.swift) uses
/// it when the loop's poller implements it; the ``Poller`` contract is unchanged by it.
///
/// Each operation is queued with a `tag` (at most ``CompletionRing/maximumTag``) and submitted with the
/// poller's next wait (or at once by ``submitNow()``); that wait, or a later one, reaps its completion
/// and keeps it for ``takeCompletions(_:)``. A wait that reaped completions returns even when no
/// registration is ready (it then reports a waker event). Memory an operation names (a buffer, a
/// `msghdr`) must stay valid until its completion is taken. Used from the poller's thread only.
@_spi(Backend)
public protocol CompletionRing: AnyObject {
    /// Which optional kernel features this ring has (provided buffers).
    var completionFeatures: CompletionFeatures { get }
    /// The size of each provided buffer: the most one provided-buffer receive takes.
    var providedBufferSize: Int { get }
    /// Queues a receive of up to `buffer.count` bytes into `buffer`.
    func receive(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer, tag: UInt64) throws(PollerError)
    /// Queues a receive of up to `maximum` bytes into a provided buffer the kernel takes when data is
    /// there (``CompletionFeatures/providedBuffers``); the completion names it (``OperationCompletion/bufferID``).
    func receiveProvided(_ fd: CInt, maximum: Int, tag: UInt64) throws(PollerError)
    /// Queues a send of `buffer` (MSG_NOSIGNAL).
    func send(_ fd: CInt, _ buffer: UnsafeRawBufferPointer, tag: UInt64) throws(PollerError)
    /// Queues a sendmsg of `message` (MSG_NOSIGNAL); the message and its iovecs stay valid until the completion.
    func sendMessage(_ fd: CInt, _ message: UnsafePointer<msghdr>, tag: UInt64) throws(PollerError)
    /// Queues an accept4 (non-blocking, close-on-exec) on listening socket `fd`; `multishot`: it stays
    /// armed and completes once per connection (``OperationCompletion/more`` set while it stays armed).
    func accept(_ fd: CInt, tag: UInt64, multishot: Bool) throws(PollerError)
    /// Asks the kernel to cancel the operation `tag` and submits at once: its completion (-ECANCELED,
    /// or its result if it was completing) follows.
    func cancel(tag: UInt64) throws(PollerError)
    /// Submits what is queued without waiting.
    func submitNow() throws(PollerError)
    /// Hands every operation completion the last waits reaped to `body`, oldest first, and forgets them.
    func takeCompletions(_ body: (OperationCompletion) -> Void)
    /// Where provided buffer `id` starts (``OperationCompletion/bufferID``; a completion's bytes are
    /// at ``OperationCompletion/bufferOffset`` from there): valid until ``giveBack(_:)``, nil once the
    /// ring is closed.
    func providedBuffer(_ id: UInt16) -> UnsafeMutableRawPointer?
    /// Gives back the part of provided buffer `id` one completion used (once per completion that
    /// named it): the buffer goes back to the kernel when the kernel is done with it and every part
    /// was given back.
    func giveBack(_ id: UInt16)
}

@_spi(Backend)
extension CompletionRing {
    /// The largest tag an operation may carry (62 bits: the ring keeps the top two bits of its
    /// requests' `user_data` to tell operations from polls and cancels).
    public static var maximumTag: UInt64 { (1 << 62) - 1 }
}

/// Optional features of a ``CompletionRing``.
@_spi(Backend)
public struct CompletionFeatures: OptionSet, Sendable {
    /// The feature bits.
    public let rawValue: Int
    /// Features from their bits.
    public init(rawValue: Int) { self.rawValue = rawValue }
    /// Receives into buffers the kernel picks when data arrives (IORING_REGISTER_PBUF_RING, Linux 5.19).
    public static let providedBuffers = CompletionFeatures(rawValue: 1)
}

/// One operation's completion: its tag, its result (a count, or a negative errno) and its flags.
@_spi(Backend)
public struct OperationCompletion: Sendable {
    /// The operation's tag.
    public var tag: UInt64
    /// Bytes moved, a descriptor (accept), or a negative errno.
    public var result: Int32
    /// The provided buffer the data went to, if any (give it back with ``CompletionRing/giveBack(_:)``).
    public var bufferID: UInt16?
    /// Where in that buffer the data starts (buffers consumed incrementally hold several receives).
    public var bufferOffset: Int
    /// The receive ended at its buffer's end: it may have been cut short, more may be waiting.
    public var filledBuffer: Bool
    /// The operation stays armed (a multishot one): more completions of it follow.
    public var more = false
    /// A completion with its parts.
    public init(tag: UInt64, result: Int32, bufferID: UInt16?, bufferOffset: Int = 0, filledBuffer: Bool = false) {
        self.tag = tag
        self.result = result
        self.bufferID = bufferID
        self.bufferOffset = bufferOffset
        self.filledBuffer = filledBuffer
    }
}
