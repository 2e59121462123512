import Glibc
@_spi(Backend) import Readiness
import ReadinessAsync
import Synchronization
import Testing

/// Scenarios from the peers' test suites, the async differential and the outside readers of stop 40.
@Suite("Peer scenarios 12", .serialized)
struct PeerScenarioTests12 {
    // MARK: A read's "the socket is empty" hint never changes what a read returns (the async
    // differential, seed 72017)

    /// A read times out (nothing queued), a byte and the end of the stream arrive, and a task starts a
    /// read just before the loop shuts down: the read takes the byte, on every backend and driver.
    /// io_uring's completion driver kept the "empty" hint of the timed-out read's failed try: with no
    /// readiness event to clear it (no poll registration), the new read went to the ring without
    /// trying, and the shutdown ended it with `.shutdown` (failed before on io_uring, both forms; the
    /// readiness backends returned the byte).
    @Test("a read started before the shutdown takes bytes queued after an earlier read timed out",
          .timeLimit(.minutes(1)), arguments: backends)
    func readAfterTimedOutRead(backend: Backend) async throws {
        for form in ["read(into:)", "readAvailable"] {
            let loop = try EventLoop(backend: backend)
            let (listener, client, server) = try await connectedPair(loop)
            func read() async throws(LoopError) -> Int {
                if form == "read(into:)" { return try await readOnce(client, timeout: .zero) }
                return try await client.readAvailable(maximum: 1, timeout: .zero).count
            }
            await #expect(throws: LoopError.timedOut) { _ = try await read() }
            try await server.write([9])
            try await server.shutdown(.write)
            try await loop.sleep(for: .milliseconds(20))   // the byte and the end are queued at the client
            // Started from the loop: the yield lets the reader's first job run (submission order),
            // and the shutdown comes before the loop's next poller wait.
            let result = await Task(executorPreference: loop) { () async -> Result<Int, LoopError> in
                let reader = Task(executorPreference: loop) { () async -> Result<Int, LoopError> in
                    do throws(LoopError) {
                        if form == "read(into:)" { return .success(try await readOnce(client)) }
                        return .success(try await client.readAvailable(maximum: 5).count)
                    } catch {
                        return .failure(error)
                    }
                }
                await Task.yield()
                await loop.shutdown()
                return await reader.value
            }.value
            #expect(result == .success(1), "\(backend.name) \(form)")
            _ = listener
        }
    }
}
