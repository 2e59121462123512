import Glibc
@_spi(Backend) import Readiness
@testable import ReadinessAsync
import Synchronization
import Testing

/// A resource kind the loop has never heard of, declared here: it needs no case in any switch of the
/// loop (issue 21). It records what the loop hands it.
final class RecordingResource: LoopResourceBase, LoopResource {
    var timers: [TimerPurpose] = []
    var events: [Token] = []
    var released = 0
    func ready(_ ready: Ready, token: Token, loop: LoopState) { events.append(token) }
    func timerFired(_ purpose: TimerPurpose, token: Token, now: Int64, loop: LoopState) { timers.append(purpose) }
    func release(loop: LoopState) { released += 1 }
}

extension TimerPurpose {
    static let recordingTest = TimerPurpose(rawValue: 9)
}

/// Issue 21: the loop's slab of typed resources, tokens by index and generation, Happy Eyeballs on a
/// token allocator, resolution answers on a token of their own.
@Suite("Loop structure")
struct LoopStructureTests {
    @Test("slab: a freed slot is reused under a new generation; the old key and its tokens find nothing")
    func slabReuse() throws {
        var slab = Slab(capacity: 4)
        let first = try slab.insert { RecordingResource(key: $0) }
        let oldKey = first.key
        #expect(slab[oldKey] === first)
        #expect(slab[oldKey.token(.readDeadline)] === first)
        slab.remove(oldKey)
        #expect(slab[oldKey] == nil)
        let second = try slab.insert { RecordingResource(key: $0) }
        #expect(second.key.index == oldKey.index)
        #expect(second.key.generation != oldKey.generation)
        #expect(slab[oldKey] == nil)
        #expect(slab[oldKey.token(.recordingTest)] == nil)
        #expect(slab[second.key] === second)
        // Aliases dispatch to their resource, are not counted, and are freed on their own.
        let alias = try slab.insertAlias(of: second)
        #expect(slab[alias] === second)
        #expect(slab.count == 1)
        slab.remove(alias: alias)
        #expect(slab[alias] == nil)
        #expect(slab.count == 1)
        // No key is the waker's token, whatever its purpose.
        #expect(second.key.token(TimerPurpose(rawValue: (1 << TimerPurpose.bits) - 1)) != .waker)
    }

    @Test("a timer or event of a closed resource comes after its slot was reused: ignored; the new one's is delivered")
    func staleTimerIgnored() throws {
        let state = LoopState()
        let old = try state.slab.insert { RecordingResource(key: $0) }
        state.timers.schedule(at: 0, token: old.key.token(.recordingTest))
        state.close(old, reason: .closed)
        #expect(old.released == 1)
        let reused = try state.slab.insert { RecordingResource(key: $0) }
        #expect(reused.key.index == old.key.index)
        state.fireTimers(now: 1)
        #expect(reused.timers.isEmpty)
        #expect(old.timers.isEmpty)
        state.timers.schedule(at: 0, token: reused.key.token(.recordingTest))
        state.fireTimers(now: 1)
        #expect(reused.timers == [.recordingTest])
        // A readiness event under the old token (a registration closed since): ignored; the new
        // resource's token reaches it, by index.
        state.events.removeAll()
        _ = state.events.append(Event(token: old.key.token, ready: .readable))
        _ = state.events.append(Event(token: reused.key.token, ready: .writable))
        state.dispatchEvents()
        #expect(reused.events == [reused.key.token])
        #expect(old.events.isEmpty)
        reused.events.removeAll()
        // A stale resolution answer (its connect gone) is ignored too.
        state.resolutionAnswered(old.key.token)
        #expect(reused.events.isEmpty)
        state.resolutionAnswered(reused.key.token)
        #expect(reused.events == [reused.key.token])
        state.close(reused, reason: .closed)
        state.close(reused, reason: .closed)
        #expect(reused.released == 1)
        #expect(state.resourceCount == 0)
    }

    @Test("a closed socket's handle, its slot reused by a new socket: .closed, and the new socket untouched", arguments: backends)
    func staleHandle(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            try await Task(executorPreference: loop) {
                let (listener, stale, staleServer) = try await connectedPair(loop)
                await stale.close()
                await staleServer.close()
                async let accepted = listener.accept(timeout: .seconds(5))
                let fresh = try await loop.connect(to: listener.address, timeout: .seconds(5))
                let server = try await accepted
                #expect(ResourceKey(fresh.id).index == ResourceKey(stale.id).index || ResourceKey(server.id).index == ResourceKey(stale.id).index)
                await #expect(throws: LoopError.closed) { _ = try await stale.read(upTo: 8, timeout: .milliseconds(50)) }
                await #expect(throws: LoopError.closed) { try await stale.write([1]) }
                await stale.close()   // a second close of the old handle: nothing of the new socket's
                try await server.write([7])
                #expect(try await fresh.read(upTo: 8, timeout: .seconds(5)) == [7])
                await fresh.close(); await server.close(); await listener.close()
                #expect(try await loop.entryCount() == 0)
            }.value
        }
    }

    @Test("Happy Eyeballs takes its tokens from an allocator: 40 attempts, one token each, no cap")
    func allocatorTokens() throws {
        let poller = try Backend.poll.makePoller()
        defer { try? poller.close() }
        let refused = try closedPort()
        final class Counting: TokenAllocator {
            var made: [Token] = []
            func makeToken() -> Token {
                made.append(Token(UInt64(1_000 + made.count * 7)))
                return made.last!
            }
        }
        let tokens = Counting()
        var options = HappyEyeballs.Options()
        options.maximumAttempts = 40
        options.attemptDelay = .milliseconds(1)
        let timers = Timers()
        let connect = HappyEyeballs(addresses: Array(repeating: refused, count: 40), poller: poller, timers: timers,
                                    tokens: tokens, options: options)
        let (progress, _) = try runLoop(connect, poller: poller, timers: timers)
        guard case .failed(let error) = progress else { Issue.record("\(progress)"); return }
        #expect(error.attempts.count == 40)
        #expect(tokens.made.count == 41)   // the timer's, then one per attempt
        #expect(Set(connect.attempts.map(\.token)).count == 40)
        #expect(connect.tokenBase == tokens.made[0])
    }

    @Test("EventLoop.connect over more than 31 addresses tries every one (no packed token block)", arguments: backends)
    func manyAttempts(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let refused = try closedPort()
            var options = HappyEyeballs.Options()
            options.maximumAttempts = 40
            options.attemptDelay = .milliseconds(1)
            let error = await #expect(throws: LoopError.self) {
                _ = try await loop.connect(to: Array(repeating: refused, count: 40), timeout: .seconds(10), options: options)
            }
            if case .connect(let connectError)? = error {
                #expect(connectError.attempts.count == 40)
            } else {
                Issue.record("\(String(describing: error))")
            }
            #expect(try await loop.entryCount() == 0)
        }
    }

    @Test("resolution answers come through the notify hook, once per answer, never a poller's waker")
    func resolutionNotify() throws {
        let answers = Atomic<Int>(0)
        let address = try SocketAddress("127.0.0.1:80")
        let resolution = Resolution(host: "example.test", port: 80,
                                    resolver: ScriptedResolver(v6: [], v6Delay: .zero, v4: [address], v4Delay: .milliseconds(5))) {
            answers.add(1, ordering: .relaxed)
        }
        let giveUp = ContinuousClock.now + .seconds(10)
        var taken: [Resolution.Answer] = []
        while !resolution.isComplete, ContinuousClock.now < giveUp {
            taken += resolution.takeAnswers()
            usleep(1_000)
        }
        taken += resolution.takeAnswers()
        #expect(answers.load(ordering: .relaxed) == 2)
        #expect(taken.count == 2)
    }

    @Test("connect by name on the loop: answers on the connect's own token, its tokens freed after", arguments: backends)
    func resolutionOnItsToken(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            let listener = try await loop.listen(on: try SocketAddress("127.0.0.1:0"))
            // Other wake-ups meanwhile (a task hopping onto the loop) take no answer: only the
            // resolution's own submissions do.
            let busy = Task(executorPreference: loop) {
                while !Task.isCancelled { try? await loop.sleep(for: .milliseconds(1)) }
            }
            let resolver = ScriptedResolver(v6: [], v6Delay: .milliseconds(20), v4: [listener.address], v4Delay: .milliseconds(40))
            let client = try await loop.connect(host: "example.test", port: listener.address.port!, timeout: .seconds(5),
                                                resolver: resolver)
            let server = try await listener.accept(timeout: .seconds(5))
            busy.cancel()
            _ = await busy.value
            await client.close()
            await server.close()
            await listener.close()
            #expect(try await loop.entryCount() == 0)
        }
    }
}
