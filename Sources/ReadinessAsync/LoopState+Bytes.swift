#if canImport(Glibc)
import Glibc
#endif
import ReadinessCore
import ReadinessNet

extension LoopState {
    /// The retry loop of one stream operation whose attempts the caller makes (the owned-bytes forms of
    /// `AsyncSocket`): `attempt` runs on the loop thread, synchronously, at once, and again each time
    /// the direction is ready, until it returns something other than ``IOResult/wouldBlock``. No
    /// pointer an attempt takes outlives it: none crosses a suspension.
    ///
    /// `waitFirst` is for a read that would have to allocate its buffer: the first attempt is made only
    /// once a read would not block, which a one-byte `recv(MSG_PEEK)` into the stack tells without a
    /// buffer, or the wait for readability; so the read holds no memory while it waits, and a read with
    /// data ready still returns it without suspending (as in a cancelled task).
    ///
    /// Busy, closed, shutdown, deadline and cancellation rules are those of `read`/`write`.
    nonisolated(nonsending) func perform(_ id: UInt64, _ direction: Direction, deadline: Int64?, waitFirst: Bool,
                                         _ attempt: (StreamSocket) throws(SocketError) -> IOResult) async throws(LoopError) -> IOResult {
        var (stream, socket) = try self.stream(id)
        if direction == .read ? stream.record.read.isWaiting : stream.record.write.isWaiting { throw .busy }
        var wait = waitFirst && direction == .read && !Self.readWouldNotBlock(socket)
        while true {
            if !wait {
                let result: IOResult
                do { result = try attempt(socket) } catch { throw .socket(error) }
                if result != .wouldBlock { return result }
            }
            wait = false
            if case .failed(let error) = await self.wait(stream, direction, deadline: deadline, interest: true) { throw error }
            (stream, socket) = try self.stream(id)
        }
    }

    /// Whether a read of `socket` would not block now (bytes, the end of the stream or an error to
    /// report), asked without a buffer: `recv` of one byte with MSG_PEEK into the stack.
    private static func readWouldNotBlock(_ socket: StreamSocket) -> Bool {
        var byte: UInt8 = 0
        while true {
            let n = recv(socket.fd, &byte, 1, CInt(MSG_PEEK) | CInt(MSG_DONTWAIT))
            if n >= 0 { return true }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return false
            default: return true   // the read reports it
            }
        }
    }
}
