#if canImport(Glibc)
import Glibc
#endif
import ReadinessCore
import ReadinessNet

/// A waiting direction of a resource.
enum Direction: UInt8, Sendable {
    case read = 1
    case write = 2
    var interest: Interest { self == .read ? .readable : .writable }
    /// The purpose of this direction's deadline timer.
    var deadline: TimerPurpose { self == .read ? .readDeadline : .writeDeadline }
}

/// How a wait ended. A plain enum (no `any Error` box): resuming allocates nothing.
enum Outcome {
    case ready
    case failed(LoopError)
}

/// One direction's waiter: the continuation is taken exactly once (resolve), on the loop thread.
/// With the completion driver the waiter may instead be an operation in the kernel (`op`): its task
/// resumes on the operation's last completion, never before (a failure only cancels it: `resolve`).
struct WaitSlot {
    var continuation: UnsafeContinuation<Outcome, Never>?
    /// The completion driver's operation in the kernel for this direction (its continuation is the op's).
    var op: CompletionOperation?
    var operation: UInt64 = 0
    /// The waiter's deadline, ``noDeadline`` for none.
    var deadline = WaitSlot.noDeadline
    /// The direction's deadline timer, armed lazily: it outlives the wait that armed it, a later wait
    /// whose deadline is no earlier keeps it, and when it fires before its waiter's deadline it is
    /// armed again for the rest (LoopWaits.swift: `armDeadline`, `deadlineFired`). Cancelled when the
    /// resource is closed.
    var timer: TimerID?
    /// Resumed since the last event: the next event with nobody waiting keeps the interest once (the
    /// resumed task has probably not read yet), the one after drops it.
    var lingering = false
    /// An operation of this direction is running (waiting, or resumed and not yet run again): a
    /// second one waits for its turn for the whole of the first, not only while it waits
    /// (`LoopState.claim`); it stays set while the turn is handed over (LoopClaims.swift).
    var inUse = false
    /// A try of this direction (`tryRead`, `tryWrite`, `tryReceive`, `trySend`) moved something, and
    /// none would block since (tokio's cached readiness, cleared only by a "would block"): `readable()`
    /// and `writable()` return at once while it is set, where the kernel's poll may already say "not
    /// ready" (POLLOUT needs a third of a TCP send buffer free, three quarters of a Unix one) though a
    /// try would still succeed. Any wait of the direction clears it (`install` makes a new slot): a
    /// stale one costs one try that would block, never a spin.
    var knownReady = false
    /// The last try of this direction would block (cleared as ``knownReady`` is): where poll reports
    /// only an error that no try takes (an ICMP error in an IP_RECVERR error queue), a datagram
    /// socket's `readable()`/`writable()` then waits, paused, rather than return for a wait-then-try
    /// loop to spin on; before any try, the error is believed (a receive would report it).
    var knownBlocked = false
    /// Somebody waits: a task for readiness, or an operation in the kernel (a second one is `busy`).
    var isWaiting: Bool { continuation != nil || op != nil }
    /// A task waits for readiness (an operation in the kernel wants no readiness events).
    var waitsForReadiness: Bool { continuation != nil }
    /// ``deadline`` when the waiter has none.
    static let noDeadline = Int64.max
}

/// What the loop keeps on every resource, whatever its kind: its two waiters, the interest registered
/// with the poller, the descriptor it owns.
struct LoopRecord {
    var read = WaitSlot()
    var write = WaitSlot()
    /// The interest registered with the poller (empty: not registered).
    var registered: Interest = []
    /// The descriptor this resource owns (a stream or a listener), -1 otherwise: marked in
    /// `LoopState.owned` while the resource lives.
    var ownedFD: CInt = -1
    /// A one-shot operation (a connect) has its outcome: a wait on it returns at once (the task can
    /// be enqueued again between the operation's start and its wait).
    var isDone = false
    /// The last read of this stream got fewer bytes than it had room for, so the socket's receive
    /// queue was empty then, and no readiness event for reading has come since: the next read waits
    /// for readiness before it tries (a try would fail with `EAGAIN`: one system call per request
    /// saved in a request-response exchange, as nginx's and tokio's short-read rule does). Only a
    /// hint: the registrations are level-triggered, so a wait with data already queued is reported
    /// at the loop's next poll, whatever the hint says (urgent data, a read through the escape hatch).
    /// Cleared by any readiness event for reading (`LoopState.deliver`) and when the registration is
    /// rebuilt (`reconcile`). The completion driver sets and clears it by its reads alone (its
    /// receives register no readiness): a hinted read is submitted to the ring, where the kernel tries
    /// the receive at once, so bytes already queued complete it and no wake-up is lost either.
    var readDrained = false

    subscript(direction: Direction) -> WaitSlot {
        get { direction == .read ? read : write }
        set { if direction == .read { read = newValue } else { write = newValue } }
    }
}

/// What every resource holds for the loop, whatever its kind: stored in this base class, not behind
/// protocol requirements, so that the loop reaches them as fields. Through a requirement a read of
/// `record` was a call that copied the whole record (two wait slots, retaining the operation in one),
/// several times per read and write (`perf`: the record's value-witness copy and its retains).
class LoopResourceBase {
    /// Its slot in the loop's slab (its registration token: `key.token`).
    final let key: ResourceKey
    /// Its waiters and registration, kept by the loop. Stored `@exclusivity(unchecked)`: only the loop
    /// thread touches it, in short accesses that call nothing out (a continuation is resumed after its
    /// slot was cleared), so the dynamic check of each access would be pure cost.
    @exclusivity(unchecked) final var record = LoopRecord()

    init(key: ResourceKey) { self.key = key }
}

/// What the loop owns: one type per kind, each in its own file (Resources/: stream, listener,
/// connect, caller-owned descriptor, sleep). The loop dispatches events and timers to it by its key
/// and closes it through this protocol alone, so that a new kind (a datagram socket, a signal) is a new
/// file and no new case in any switch.
///
/// Everything here runs on the loop thread.
protocol LoopResource: LoopResourceBase {
    /// The descriptor the loop registers for its waits, nil when it has none to watch (a connect
    /// registers its own sockets; a sleep watches nothing).
    var watchedDescriptor: CInt? { get }
    /// Makes the poller's interest `wanted` (was `old`) under `token`; false when it watches nothing.
    func applyInterest(_ wanted: Interest, old: Interest, token: Token, poller: any Poller) throws(PollerError) -> Bool
    /// A readiness event for `token` (its key's, or one of its aliases').
    func ready(_ ready: Ready, token: Token, loop: LoopState)
    /// A timer of its own purpose (not a wait deadline: the loop handles those) is due.
    func timerFired(_ purpose: TimerPurpose, token: Token, now: Int64, loop: LoopState)
    /// Releases what it owns, once: the loop has resumed its waiters and freed its slot already.
    func release(loop: LoopState)
}

extension LoopResource {
    var watchedDescriptor: CInt? { nil }

    /// Registers the watched descriptor with the loop's poller directly.
    func applyInterest(_ wanted: Interest, old: Interest, token: Token, poller: any Poller) throws(PollerError) -> Bool {
        guard let fd = watchedDescriptor else { return false }
        if old.isEmpty {
            try poller.register(fd, token: token, interest: wanted)
        } else if wanted.isEmpty {
            try poller.deregister(fd)
        } else {
            try poller.reregister(fd, token: token, interest: wanted)
        }
        return true
    }

    /// Readiness resumes the waiters (level-triggered bookkeeping in `LoopState.deliver`).
    func ready(_ ready: Ready, token: Token, loop: LoopState) {
        loop.deliver(self, ready)
    }

    func timerFired(_ purpose: TimerPurpose, token: Token, now: Int64, loop: LoopState) {}
}
