import Readiness
import Testing

@Suite("Timers")
struct TimersTests {
    @Test("fires in deadline order, everything due and nothing early")
    func order() {
        let timers = Timers()
        timers.schedule(at: 300, token: 3)
        timers.schedule(at: 100, token: 1)
        timers.schedule(at: 200, token: 2)
        timers.schedule(at: 100, token: 4)
        #expect(timers.nearestDeadline == Deadline(nanoseconds: 100))
        #expect(timers.popDue(now: 99) == nil)
        var fired: [UInt64] = []
        while let token = timers.popDue(now: 200) { fired.append(token.rawValue) }
        #expect(fired.sorted() == [1, 2, 4] && fired.last == 2)
        #expect(timers.count == 1)
    }

    /// A handler that scheduled its timer again at the current time kept the drain going for ever.
    @Test("libuv test-timer (a timer restarted from its callback with timeout 0): a timer scheduled during a drain fires in the next drain, not in the same one")
    func rescheduledDuringDrain() {
        let timers = Timers()
        timers.schedule(at: 100, token: 1)
        timers.schedule(at: 100, token: 2)
        var fired: [UInt64] = []
        while let token = timers.popDue(now: 100), fired.count < 10 {
            fired.append(token.rawValue)
            timers.schedule(at: 100, token: token)   // again, due at once
            timers.schedule(at: 50, token: 9)        // even earlier than what is left
        }
        #expect(fired == [1, 2])
        // Due just after the drain's time, in the order they were scheduled: the next drain fires them.
        #expect(timers.popDue(now: 100) == nil)
        var next: [UInt64] = []
        while let token = timers.popDue(now: 101), next.count < 10 { next.append(token.rawValue) }
        #expect(next == [1, 9, 2, 9])
        #expect(timers.count == 0)
        // At the largest time there is no later deadline: the drain still ends, and still fires every
        // timer that was due before it began, whatever the handlers schedule (here, earlier ones).
        timers.schedule(at: 10, token: 7)
        timers.schedule(at: 20, token: 8)
        var atLatest: [UInt64] = []
        while let token = timers.popDue(now: Deadline(nanoseconds: .max)), atLatest.count < 10 {
            atLatest.append(token.rawValue)
            timers.schedule(at: 5, token: token)
        }
        #expect(atLatest == [7, 8] && timers.count == 2)
    }

    @Test("the deadline-to-timeout rule: none pending blocks, a due one gives zero, otherwise the time left")
    func timeout() {
        let timers = Timers()
        #expect(timers.timeout(now: 0) == nil)
        #expect(timers.timeout(now: 0, limit: .milliseconds(5)) == .milliseconds(5))
        timers.schedule(at: 1_000_000_000, token: 1)
        #expect(timers.timeout(now: 250_000_000) == .milliseconds(750))
        #expect(timers.timeout(now: 250_000_000, limit: .milliseconds(10)) == .milliseconds(10))
        #expect(timers.timeout(now: 1_000_000_000) == .zero)
        #expect(timers.timeout(now: 2_000_000_000) == .zero)
        // Saturation: a deadline a very long way off does not overflow.
        #expect(Deadline.after(.seconds(Int64.max), now: 1_000) >= Int64.max / 2)
        #expect(Deadline.after(.seconds(1), now: Int64.max - 10) == Int64.max)
    }

    @Test("cancel removes exactly that timer; stale handles do nothing, even after slot reuse")
    func cancel() {
        let timers = Timers()
        let a = timers.schedule(at: 10, token: 1)
        let b = timers.schedule(at: 20, token: 2)
        #expect(timers.cancel(a))
        #expect(!timers.cancel(a))
        #expect(!timers.isPending(a))
        let c = timers.schedule(at: 5, token: 3)  // reuses a's slot
        #expect(!timers.cancel(a))
        #expect(timers.isPending(c))
        #expect(timers.popDue(now: 100) == 3)
        #expect(timers.popDue(now: 100) == 2)
        #expect(!timers.cancel(b))
        #expect(timers.isEmpty)
    }

    @Test("a random workload matches a sorted list")
    func differential() {
        var generator = SplitMix(seed: 42)
        let timers = Timers(capacity: 8)
        var model: [(deadline: Int64, id: TimerID, token: UInt64)] = []
        var now: Int64 = 0
        var nextToken: UInt64 = 0
        for _ in 0..<20_000 {
            switch generator.next() % 4 {
            case 0, 1:
                let deadline = now + Int64(generator.next() % 1000)
                nextToken += 1
                model.append((deadline, timers.schedule(at: deadline, token: Token(nextToken)), nextToken))
            case 2:
                if !model.isEmpty {
                    let index = Int(generator.next() % UInt64(model.count))
                    #expect(timers.cancel(model.remove(at: index).id))
                }
            default:
                now += Int64(generator.next() % 300)
                var fired: [UInt64] = []
                while let token = timers.popDue(now: now) { fired.append(token.rawValue) }
                let due = model.filter { $0.deadline <= now }
                #expect(fired.sorted() == due.map(\.token).sorted())
                model.removeAll { $0.deadline <= now }
            }
            #expect(timers.count == model.count)
            if let nearest = model.map(\.deadline).min() { #expect(timers.nearestDeadline?.nanoseconds == nearest) }
        }
    }
}

/// A small deterministic generator for tests.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
