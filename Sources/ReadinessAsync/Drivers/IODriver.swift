import ReadinessCore
import ReadinessNet

/// How the loop does the async operations' I/O: the seam between ``AsyncSocket``/``AsyncListener``
/// (and `EventLoop.connect`) and the kernel.
///
/// - ``ReadinessDriver`` (today, every backend): try the syscall, and on EAGAIN wait for the poller's
///   readiness event, then try again. It is the only place these retry loops live.
/// - A completion driver (io_uring submission and completion, a later issue) belongs in
///   `Backends/IOUring/`: it submits the read, write, accept or connect itself and resumes the task
///   with the completion's result, behind the same ``AsyncSocket`` API and held to the same async
///   conformance scenarios. It is chosen where `LoopState.driver` is set, for a loop whose poller can
///   complete operations; this protocol then becomes `package` (the driver's target, in that folder,
///   depends on ReadinessAsync). The ``/ReadinessCore/Poller`` seam stays readiness-only: the completion driver
///   reaches its ring by other means (Backends/IOUring/README.md, "Completion I/O").
///
/// Every requirement runs on the loop thread (`EventLoop.onLoop` took the task there) and fails
/// with the loop's errors (``LoopError``); `id` is the resource's number (its slab key).
protocol IODriver: Sendable {
    /// Reads up to `buffer.count` bytes as soon as some are there (0: end of stream).
    /// An operation whose attempts the caller makes (the owned-bytes forms), retried until it does
    /// not return `wouldBlock`; `waitFirst`: a read that allocates waits before its first attempt.
    /// `start`: a write's, taken at its call (``LoopState/WriteStart``); nil for a read or a wait.
    nonisolated(nonsending) func perform(_ id: UInt64, _ direction: Direction, deadline: Int64?, waitFirst: Bool,
                                         start: LoopState.WriteStart?, on loop: LoopState,
                                         _ attempt: (StreamSocket) throws(SocketError) -> IOResult) async throws(LoopError) -> IOResult
    nonisolated(nonsending) func read(_ id: UInt64, into buffer: UnsafeMutableRawBufferPointer, deadline: Int64?,
                                      on loop: LoopState) async throws(LoopError) -> Int
    /// Reads up to `maximum` bytes (at least 1; at most `LoopState.readScratchSize`) as soon as some
    /// are there into memory that is the driver's, not the caller's, and hands them to `take` on the
    /// loop thread, synchronously, before anything else uses that memory (an empty buffer: the end of
    /// the stream); `take` copies them into storage of the size read. So the caller allocates nothing
    /// while the read waits: an idle connection's read holds no buffer. The readiness driver reads
    /// into the loop's scratch buffer (one per loop); a completion driver would read into a buffer
    /// the kernel picks when data arrives (io_uring's provided buffers) and give it back after `take`.
    nonisolated(nonsending) func readCopying<T>(_ id: UInt64, maximum: Int, deadline: Int64?, on loop: LoopState,
                                                _ take: (UnsafeRawBufferPointer) throws(SocketError) -> T) async throws(LoopError) -> T
    /// Writes every byte (`start`: taken at the write's call, for its yields).
    nonisolated(nonsending) func write(_ id: UInt64, _ buffer: UnsafeRawBufferPointer, deadline: Int64?,
                                       start: LoopState.WriteStart, on loop: LoopState) async throws(LoopError)
    /// Writes every byte of every buffer, in order.
    nonisolated(nonsending) func write(_ id: UInt64, vectored buffers: [UnsafeRawBufferPointer], deadline: Int64?,
                                       start: LoopState.WriteStart, on loop: LoopState) async throws(LoopError)
    /// Accepts a connection: the new stream's number and its peer.
    nonisolated(nonsending) func accept(_ id: UInt64, deadline: Int64?, on loop: LoopState) async throws(LoopError) -> (UInt64, SocketAddress)
    /// Connects to one address: the stream's number and its peer.
    nonisolated(nonsending) func connect(to address: SocketAddress, from local: SocketAddress?, deadline: Int64?,
                                         on loop: LoopState) async throws(LoopError) -> (UInt64, SocketAddress?)
    /// Connects by Happy Eyeballs steps to a list, or to a name being resolved.
    nonisolated(nonsending) func connect(addresses: [SocketAddress], resolution: (host: String, port: UInt16, resolver: any HostResolver)?,
                                         options: HappyEyeballs.Options, deadline: Int64?,
                                         on loop: LoopState) async throws(LoopError) -> (UInt64, ConnectedSocket)
    /// One datagram operation on datagram socket `id` whose attempts the caller makes (``AsyncDatagramSocket``):
    /// `attempt` runs on the loop thread, at once (or, with `waitFirst`, once a datagram is queued),
    /// and again each time `direction` is ready, until it returns a value (nil: it would block). One
    /// waiter per direction (``LoopError/busy``); no pointer an attempt takes outlives it.
    nonisolated(nonsending) func datagram<R>(_ id: UInt64, _ direction: Direction, deadline: Int64?, waitFirst: Bool,
                                             on loop: LoopState,
                                             _ attempt: (DatagramSocket) throws(SocketError) -> R?) async throws(LoopError) -> R
}
