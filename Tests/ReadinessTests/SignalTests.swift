import Glibc
import Readiness
import Testing

/// Signals as async sequences (Sources/ReadinessAsync/Signals.swift over ReadinessNet's
/// SignalSubscription), on every backend. Every signal raised here is watched when it is raised:
/// SIGUSR1's and SIGUSR2's default action ends the process.
@Suite("Signals", .serialized)
struct SignalTests {
    /// Sends `signal` to the process (not `raise`, which sends it to the calling thread: a Swift
    /// concurrency thread blocks signals, so it would stay pending there).
    static func send(_ signal: CInt) { kill(getpid(), signal) }

    /// The action installed for `signal` now, as its handler's address (0 is SIG_DFL, 1 SIG_IGN).
    static func action(_ signal: CInt) -> Int {
        var current = sigaction()
        sigaction(signal, nil, &current)
        return unsafeBitCast(current.__sigaction_handler.sa_handler, to: Int.self)
    }

    @Test("a watched signal arrives in order, on the loop, and its old action is put back after finish",
          .timeLimit(.minutes(1)), arguments: backends)
    func delivered(backend: Backend) async throws {
        warmUp(backend)
        let before = openDescriptorCount()
        // SIGUSR1's action is put back as it was (a conformance run installs a handler for it once per
        // process and relies on it later: SIG_DFL would end the process at its next SIGUSR1).
        var user1Before = sigaction()
        sigaction(SIGUSR1, nil, &user1Before)
        defer { sigaction(SIGUSR1, &user1Before, nil) }
        signal(SIGUSR1, SIG_IGN)
        #expect(Self.action(SIGUSR1) == 1)
        // SIGUSR2's action before (SIG_DFL, or SIG_IGN once a conformance run's SignalWake has
        // uninstalled itself earlier in the same process): what finish must put back.
        let user2Before = Self.action(SIGUSR2)
        try await withLoop(backend) { loop in
            let signals = try loop.signals([.user1, .user2])
            #expect(Self.action(SIGUSR1) > 1)
            Self.send(SIGUSR1)
            Self.send(SIGUSR2)
            let got = await Task(executorPreference: loop) { () async -> [Signal] in
                var got: [Signal] = []
                for await signal in signals {
                    #expect(loop.inLoop)
                    got.append(signal)
                    if got.count == 2 { break }
                }
                return got
            }.value
            #expect(got == [.user1, .user2])
            // A signal raised while nobody iterates waits in the pipe for the next iteration.
            Self.send(SIGUSR2)
            var iterator = signals.makeAsyncIterator()
            #expect(await iterator.next() == .user2)
            signals.finish()
            #expect(await iterator.next() == nil)
            #expect(Self.action(SIGUSR1) == 1)
            #expect(Self.action(SIGUSR2) == user2Before)
        }
        #expect(await settledDescriptorCount(before) == before)
    }

    @Test("two sequences of one signal (two loops) both get every delivery", .timeLimit(.minutes(1)), arguments: backends)
    func broadcast(backend: Backend) async throws {
        let first = try EventLoop(backend: backend), second = try EventLoop(backend: backend)
        let a = try first.signals([.user1]), b = try second.signals([.user1])
        Self.send(SIGUSR1)
        var ia = a.makeAsyncIterator(), ib = b.makeAsyncIterator()
        #expect(await ia.next() == .user1)
        #expect(await ib.next() == .user1)
        a.finish()
        // b still watches: raising is safe, and it arrives.
        Self.send(SIGUSR1)
        #expect(await ib.next() == .user1)
        b.finish()
        await first.shutdown()
        await second.shutdown()
    }

    @Test("an iteration waiting for a signal ends with nil when its task is cancelled, when finish is called, and at shutdown",
          .timeLimit(.minutes(1)), arguments: backends)
    func ends(backend: Backend) async throws {
        let loop = try EventLoop(backend: backend)
        let cancelled = try loop.signals([.user2])
        let waiting = Task { () async -> Signal? in
            var iterator = cancelled.makeAsyncIterator()
            return await iterator.next()
        }
        try await loop.sleep(for: .milliseconds(20))
        waiting.cancel()
        #expect(await waiting.value == nil)

        let finished = try loop.signals([.user2])
        let waitingForFinish = Task { () async -> Signal? in
            var iterator = finished.makeAsyncIterator()
            return await iterator.next()
        }
        try await loop.sleep(for: .milliseconds(20))
        finished.finish()
        #expect(await waitingForFinish.value == nil)

        let shut = try loop.signals([.user2])
        let waitingForShutdown = Task { () async -> Signal? in
            var iterator = shut.makeAsyncIterator()
            return await iterator.next()
        }
        try await loop.sleep(for: .milliseconds(20))
        await loop.shutdown()
        #expect(await waitingForShutdown.value == nil)
        #expect(throws: LoopError.shutdown) { try loop.signals([.user2]) }
    }

    @Test("signals that cannot be watched are refused with a typed error, and leave nothing open", arguments: backends)
    func refused(backend: Backend) async throws {
        warmUp(backend)
        let before = openDescriptorCount()
        let user1Before = Self.action(SIGUSR1)   // SIG_DFL, or a conformance run's handler
        try await withLoop(backend) { loop in
            for set: [Signal] in [[], [Signal(rawValue: SIGKILL)], [Signal(rawValue: SIGSTOP)], [Signal(rawValue: SIGSEGV)],
                                  [Signal(rawValue: 0)], [Signal(rawValue: -1)], [Signal(rawValue: 65)],
                                  [Signal(rawValue: .max)], [.user1, Signal(rawValue: SIGKILL)]] {
                #expect {
                    _ = try loop.signals(set)
                } throws: { error in
                    guard case LoopError.invalidArgument = error else { return false }
                    return true
                }
            }
        }
        #expect(Self.action(SIGUSR1) == user1Before)
        #expect(await settledDescriptorCount(before) == before)
    }
}
