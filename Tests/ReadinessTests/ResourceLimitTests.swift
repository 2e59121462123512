import Glibc
@_spi(Backend) import Readiness
@testable import ReadinessAsync
import Testing

/// A loop at its limit of resources (the slab's 2^24 slots, lowered here through the slab's internal
/// `maximumSlots`): every operation that needs a slot fails with `LoopError.resourceExhausted`, never a
/// trap, and leaks nothing.
@Suite("Loop resource limit", .serialized)
struct ResourceLimitTests {
    /// The slots of the lowered slab in the loop test: a listener, a datagram socket, an adopted socket.
    static let slots = 3

    @Test("slab: a full slab refuses a resource and an alias with resourceExhausted, without calling make; a freed slot is taken again")
    func slabFull() throws {
        var slab = Slab(capacity: 2, maximumSlots: 2)
        let first = try slab.insert { RecordingResource(key: $0) }
        let alias = try slab.insertAlias(of: first)
        #expect(slab.isFull)
        var made = 0
        #expect(throws: LoopError.resourceExhausted) {
            try slab.insert { key in made += 1; return RecordingResource(key: key) }
        }
        #expect(made == 0)
        #expect(throws: LoopError.resourceExhausted) { try slab.insertAlias(of: first) }
        #expect(slab.count == 1)
        slab.remove(alias: alias)
        #expect(!slab.isFull)
        let second = try slab.insert { RecordingResource(key: $0) }
        #expect(slab[second.key] === second && slab[first.key] === first)
        // The limit is at most what a key can number.
        #expect(Slab(capacity: 0, maximumSlots: .max).maximumSlots == ResourceKey.maximumSlots)
    }

    @Test("serve on a full loop: the next connection waits queued (no failure, no spin) and is served once a slot is free",
          arguments: backends)
    func serveFull(backend: Backend) async throws {
        // serve pauses with Task.sleep, whose first use makes the concurrency runtime's own timer
        // descriptor (kept for the process): made here, before the loop counts descriptors.
        try await Task.sleep(for: .milliseconds(1))
        try await withLoop(backend) { loop in
            try await loop.onLoop { (state) async throws(LoopError) in
                state.slab = Slab(capacity: 2, maximumSlots: 2)   // the listener and one connection
            }
            let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
            let served = Counter()
            let server = Task {
                try await listener.serve { socket in
                    // Each connection: one byte in, one byte back, then closed by serve.
                    if let byte = try? await socket.read(upTo: 1, timeout: .seconds(5)), !byte.isEmpty {
                        served.increment()
                        try? await socket.write(byte, timeout: .seconds(5))
                    }
                }
            }
            var clients: [CInt] = []
            defer { for fd in clients { close(fd) } }
            for _ in 0..<3 {
                let fd = socket(AF_INET, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
                clients.append(fd)
                #expect(listener.address.withSockaddr { Glibc.connect(fd, $0, $1) } == 0)
            }
            // One at a time: each answers once the connection before it was closed (its slot freed).
            for fd in clients {
                var byte: UInt8 = 7
                #expect(write(fd, &byte, 1) == 1)
                var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                #expect(poll(&entry, 1, 5_000) == 1)
                #expect(read(fd, &byte, 1) == 1 && byte == 7)
            }
            #expect(served.value == 3)
            await listener.close()
            try await server.value
        }
    }

    @Test("a full loop: adopt, listen, bind, connect (one address or several), accept, sleep and readable fail with resourceExhausted; nothing leaks; the caller's descriptor stays open; closing makes room",
          arguments: backends)
    func loopFull(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            try await Task(executorPreference: loop) {
                try await loop.onLoop { (state) async throws(LoopError) in
                    state.slab = Slab(capacity: Self.slots, maximumSlots: Self.slots)
                }
                let loopback = try SocketAddress("127.0.0.1:0")
                let listener = try await loop.listen(on: loopback)
                let datagram = try await loop.bindDatagram(to: loopback)
                let (x, y) = try socketPair()
                defer { close(y) }
                let adopted = try await loop.adopt(descriptor: x)
                #expect(try await loop.entryCount() == Self.slots)

                // A connection queued on the listener, not yet accepted.
                let client = socket(AF_INET, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
                defer { close(client) }
                #expect(listener.address.withSockaddr { Glibc.connect(client, $0, $1) } == 0)

                let before = openDescriptorCount()
                await #expect(throws: LoopError.resourceExhausted) { _ = try await loop.adopt(descriptor: y) }
                #expect(fcntl(y, F_GETFD) >= 0)   // still the caller's, open
                await #expect(throws: LoopError.resourceExhausted) { _ = try await loop.listen(on: loopback) }
                await #expect(throws: LoopError.resourceExhausted) { _ = try await loop.bindDatagram(to: loopback) }
                await #expect(throws: LoopError.resourceExhausted) { _ = try await loop.connectDatagram(to: listener.address) }
                await #expect(throws: LoopError.resourceExhausted) {
                    _ = try await loop.connect(to: listener.address, timeout: .seconds(5))
                }
                await #expect(throws: LoopError.resourceExhausted) {
                    _ = try await loop.connect(to: [listener.address, listener.address], timeout: .seconds(5))
                }
                await #expect(throws: LoopError.resourceExhausted) { _ = try await listener.accept(timeout: .seconds(5)) }
                await #expect(throws: LoopError.resourceExhausted) { try await loop.sleep(for: .milliseconds(1)) }
                await #expect(throws: LoopError.resourceExhausted) { try await loop.readable(y, timeout: .seconds(5)) }
                #expect(openDescriptorCount() == before)
                #expect(try await loop.entryCount() == Self.slots)

                // One slot free: a connect over several addresses takes it, then finds no token for
                // its timer: it ends at once, its slot freed, no socket left.
                await adopted.close()
                await #expect(throws: LoopError.resourceExhausted) {
                    _ = try await loop.connect(to: [try closedPort(), listener.address], timeout: .seconds(5))
                }
                #expect(openDescriptorCount() == before - 1)
                #expect(try await loop.entryCount() == Self.slots - 1)

                // The queued connection was left queued: accepted now that there is room.
                let server = try await listener.accept(timeout: .seconds(5))
                try await server.write([7])
                var byte: UInt8 = 0
                #expect(recv(client, &byte, 1, 0) == 1 && byte == 7)
                await server.close()
                await datagram.close()
                await listener.close()
                #expect(try await loop.entryCount() == 0)
            }.value
        }
    }

    /// A full loop is a passing state for `serve` and the graceful shutdown; a signal sequence's wait
    /// stopped watching on it for good, putting SIGTERM's default action back (review, stop 35).
    @Test("a signal sequence on a full loop keeps watching: the signal is delivered once a slot is free",
          .timeLimit(.minutes(1)), arguments: backends)
    func signalsOnAFullLoop(backend: Backend) async throws {
        try await Task.sleep(for: .milliseconds(1))   // the runtime's timer descriptor, before the count
        var saved = sigaction()
        sigaction(SIGUSR2, nil, &saved)
        defer { sigaction(SIGUSR2, &saved, nil) }
        try await withLoop(backend) { loop in
            try await loop.onLoop { (state) async throws(LoopError) in
                state.slab = Slab(capacity: 1, maximumSlots: 1)
            }
            let signals = try loop.signals([.user2])
            let (x, y) = try socketPair()
            defer { close(y) }
            let filler = try await loop.adopt(descriptor: x)   // the one slot
            let got = Task(executorPreference: loop) { () async -> Signal? in
                var iterator = signals.makeAsyncIterator()
                return await iterator.next()
            }
            try await Task.sleep(for: .milliseconds(50))
            #expect(signals.signals == [.user2])
            await filler.close()
            kill(getpid(), SIGUSR2)
            #expect(await got.value == .user2)
            signals.finish()
        }
    }
}
