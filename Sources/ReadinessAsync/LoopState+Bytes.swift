import ReadinessCore
import ReadinessNet

extension LoopState {
    /// The retry loop of one stream operation whose attempts the caller makes (the owned-bytes forms of
    /// `AsyncSocket`): `attempt` runs on the loop thread, synchronously, at once (or, with `waitFirst`,
    /// only once the direction is ready), and again each time the direction is ready, until it returns
    /// something other than ``IOResult/wouldBlock``. No pointer an attempt takes outlives it: none
    /// crosses a suspension. `waitFirst` is for a read that would have to allocate its buffer: it holds
    /// no memory while it waits.
    ///
    /// Busy, closed, shutdown, deadline and cancellation rules are those of `read`/`write`.
    nonisolated(nonsending) func perform(_ id: UInt64, _ direction: Direction, deadline: Int64?, waitFirst: Bool,
                                         _ attempt: (StreamSocket) throws(SocketError) -> IOResult) async throws(LoopError) -> IOResult {
        var (entry, socket) = try streamEntry(id)
        if direction == .read ? entry.read.isWaiting : entry.write.isWaiting { throw .busy }
        var wait = waitFirst
        while true {
            if !wait {
                let result: IOResult
                do { result = try attempt(socket) } catch { throw .socket(error) }
                if result != .wouldBlock { return result }
            }
            wait = false
            if case .failed(let error) = await self.wait(entry, direction, deadline: deadline, interest: true) { throw error }
            (entry, socket) = try streamEntry(id)
        }
    }

    /// The open stream `id` (what `LoopState.stream` does, kept apart so that this file stands alone).
    private func streamEntry(_ id: UInt64) throws(LoopError) -> (Entry, StreamSocket) {
        if isShutDown { throw .shutdown }
        guard let entry = entries[id], case .stream(let socket) = entry.resource else { throw .closed }
        return (entry, socket)
    }
}
