import Readiness

// The scenario catalogue. Each line is a step and what a backend that reports every readiness bit
// (epoll, poll) observes; a backend that cannot report a bit is compared with that bit removed.

private let soon: Duration = .seconds(2)
private let now: Duration = .zero
private let quiet = Observation.note("no events, not before the timeout")

private func ev(_ pairs: (UInt64, Ready)...) -> Observation {
    var out: [Token: Ready] = [:]
    for (token, ready) in pairs { out[Token(token)] = ready }
    return .events(out)
}
private let woken = Observation.events([.waker: .readable])
private func err(_ name: String) -> Observation { .error(name) }
private func line(_ step: Step, _ expect: Observation = .ok) -> ScriptLine { ScriptLine(step, expect) }
private func reg(_ e: String, _ token: UInt64, _ interest: Interest, _ trigger: Trigger = .level,
                 _ expect: Observation = .ok) -> ScriptLine {
    line(.register(e, token: token, interest: interest, trigger: trigger), expect)
}
private func rereg(_ e: String, _ token: UInt64, _ interest: Interest, _ trigger: Trigger = .level,
                   _ expect: Observation = .ok) -> ScriptLine {
    line(.reregister(e, token: token, interest: interest, trigger: trigger), expect)
}
private func wait(_ timeout: Duration?, _ expect: Observation) -> ScriptLine { line(.wait(timeout: timeout), expect) }
private func write(_ e: String, _ bytes: Int = 1) -> ScriptLine { line(.write(e, bytes: bytes)) }
private func connect(_ target: ConnectTarget, _ timeout: Duration = soon, _ outcome: String) -> ScriptLine {
    line(.connect(target, timeout: timeout), .connect(outcome))
}
private let pair: [Fixture] = [.socketPair("a", "b")]
/// A timeout no program waits out: the largest whole number of seconds whose nanoseconds fit in 64
/// bits, a few seconds short of `Int64.max` nanoseconds, and `Duration`'s largest value.
private let enormous: Duration = .seconds(9_223_372_030)
private let largest = Duration(secondsComponent: .max, attosecondsComponent: 999_999_999_999_999_999)
private let twoPairs: [Fixture] = [.socketPair("a", "b"), .socketPair("c", "d")]

extension Conformance {
    /// Every scenario, by area.
    public static let scenarios: [Scenario] = misuse + readiness + changes + oneShot + endings + timing
        + closing + limits + wakeups + buffers + connects + hardening

    static let misuse: [Scenario] = [
        Scenario("misuse/register-twice", checks: "A second register of a descriptor fails and leaves the first registration as it was.", fixtures: pair, [
            reg("a", 1, .readable), reg("a", 2, .writable, .level, err("alreadyRegistered")),
            write("b"), wait(soon, ev((1, .readable))),
        ]),
        Scenario("misuse/not-registered", checks: "reregister and deregister of an unregistered descriptor fail; a second deregister fails.", fixtures: pair, [
            rereg("a", 1, .readable, .level, err("notRegistered")), line(.deregister("a"), err("notRegistered")),
            reg("a", 1, .readable), line(.deregister("a")), line(.deregister("a"), err("notRegistered")),
            write("b"), wait(now, .none),
        ]),
        Scenario("misuse/negative-descriptor", checks: "A negative descriptor is refused before any system call.", [
            line(.registerNumber(-1, token: 1, interest: .readable), err("invalidDescriptor")),
            line(.registerNumber(-42, token: 1, interest: .both), err("invalidDescriptor")),
            // reregister and deregister of a negative number (a name no fixture made is -1).
            rereg("none", 1, .readable, .level, err("invalidDescriptor")), line(.deregister("none"), err("invalidDescriptor")),
        ]),
        Scenario("misuse/closed-descriptor", checks: "A descriptor that is not open is refused with badDescriptor.", fixtures: pair, [
            line(.close("a")), reg("a", 1, .readable, .level, err("badDescriptor")), wait(now, .none),
        ]),
        Scenario("misuse/reserved-token", checks: "The waker's token cannot be registered.", fixtures: pair, [
            line(.registerBadArguments("a", token: .max, interest: .readable), err("reservedToken")),
        ]),
        Scenario("misuse/poller-own-descriptor", checks: "The poller's own waker descriptor cannot be registered (alreadyRegistered); wake-ups still arrive once and drain.", fixtures: pair, [
            line(.registerWaker(token: 1), err("alreadyRegistered")),
            line(.wake(times: 1, threads: 1)), wait(soon, woken), wait(now, .none),
        ]),
        Scenario("misuse/empty-interest", checks: "An empty interest is refused.", fixtures: pair, [
            line(.registerBadArguments("a", token: 1, interest: []), err("emptyInterest")),
            reg("a", 1, .readable), rereg("a", 1, [], .level, err("emptyInterest")),
            write("b"), wait(soon, ev((1, .readable))),
        ]),
        Scenario("misuse/regular-file", checks: "A regular file cannot be polled and is refused.", fixtures: [.regularFile("f")], [
            reg("f", 1, .readable, .level, err("unsupportedDescriptor")),
        ]),
        Scenario("misuse/edge-unsupported", checks: "Edge triggering is refused where the backend has no edges.", fixtures: pair,
                 requires: [Requirement("needs a backend without edge triggering") { !$0.edgeTriggered }], [
            reg("a", 1, .readable, .edge, err("unsupportedTrigger(edge)")), wait(now, .none),
            // reregister checks the trigger too, and leaves the registration as it was.
            reg("a", 1, .readable), rereg("a", 1, .readable, .edge, err("unsupportedTrigger(edge)")),
            write("b"), wait(soon, ev((1, .readable))),
        ]),
        Scenario("misuse/path-only", checks: "An O_PATH descriptor (a location, not an open file) is refused with badDescriptor, as epoll_ctl refuses it.",
                 fixtures: [.pathOnly("p")], [
            reg("p", 1, .readable, .level, err("badDescriptor")), reg("p", 1, .writable, .level, err("badDescriptor")), wait(now, .none),
        ]),
        Scenario("misuse/use-after-close", checks: "Every call after close fails with closed, close included; a wait after close leaves nothing of the last wait's events in the buffer.", fixtures: pair, [
            reg("a", 1, .readable), write("b"), wait(soon, ev((1, .readable))),
            line(.closePoller), reg("a", 2, .readable, .level, err("closed")),
            rereg("a", 2, .readable, .level, err("closed")), line(.deregister("a"), err("closed")), wait(now, err("closed")),
            line(.wake(times: 1, threads: 1), err("closed")), line(.closePoller, err("closed")),
        ]),
        Scenario("misuse/close-keeps-caller-descriptors", checks: "Closing the poller closes none of the caller's descriptors, registered or not (CPython test_selectors test_close: the file objects stay usable).", fixtures: [.socketPair("a", "b"), .pipe(read: "r", write: "w")], [
            reg("a", 1, .readable), reg("w", 2, .writable), write("b"), wait(soon, ev((1, .readable), (2, .writable))),
            line(.closePoller), line(.isOpen("a")), line(.isOpen("b")), line(.isOpen("r")), line(.isOpen("w")),
        ]),
        Scenario("misuse/forked-child", checks: "In a child made by fork(), every call on the parent's poller but close fails with forked and changes nothing (the kernel's set is the parent's too); close succeeds; the parent's registration goes on (libevent's event_reinit, libuv's uv_loop_fork tests).", fixtures: pair, requires: [.fork], [
            reg("a", 1, .readable), line(.forkedCalls("a", token: 2)), write("b"), wait(soon, ev((1, .readable))),
            line(.drain("a")), wait(now, .none),
        ]),
        Scenario("misuse/rollback", checks: "A failed call leaves no trace: the descriptor can be registered afresh.", fixtures: pair, [
            reg("a", 1, .readable), reg("a", 2, .readable, .level, err("alreadyRegistered")),
            line(.deregister("a")), reg("a", 3, .readable), write("b"), wait(soon, ev((3, .readable))),
        ]),
    ]

    static let readiness: [Scenario] = [
        Scenario("readiness/socketpair", checks: "Readable after the peer writes, not before, not after draining.", fixtures: pair, [
            reg("a", 1, .readable), wait(now, .none), write("b"), wait(soon, ev((1, .readable))),
            wait(now, ev((1, .readable))), line(.drain("a")), wait(now, .none),
        ]),
        Scenario("readiness/writable", checks: "Writable while there is buffer space, not when full, again once the peer reads.", fixtures: pair, [
            reg("a", 1, .writable), wait(soon, ev((1, .writable))), line(.fill("a")), wait(now, .none),
            line(.drain("b")), wait(soon, ev((1, .writable))),
        ]),
        Scenario("readiness/both", checks: "Interest in both directions reports each as it becomes true, and only that one: readable alone while the socket is full.", fixtures: pair, [
            reg("a", 1, .both), wait(soon, ev((1, .writable))), write("b"), wait(soon, ev((1, [.readable, .writable]))),
            line(.fill("a")), wait(now, ev((1, .readable))), line(.drain("b")), wait(soon, ev((1, [.readable, .writable]))),
        ]),
        Scenario("readiness/pipe", checks: "A pipe's write end is writable, its read end readable once written.", fixtures: [.pipe(read: "r", write: "w")], [
            reg("r", 1, .readable), reg("w", 2, .writable), wait(soon, ev((2, .writable))),
            write("w"), wait(soon, ev((1, .readable), (2, .writable))),
        ]),
        Scenario("readiness/several", checks: "Several ready descriptors are reported in one wait, each with its own token.", fixtures: twoPairs, [
            reg("a", 1, .readable), reg("c", 2, .readable), write("b"), write("d"),
            wait(soon, ev((1, .readable), (2, .readable))),
        ]),
        Scenario("readiness/nothing-ready", checks: "With nothing ready a wait times out with no event.", fixtures: pair, [
            reg("a", 1, .readable), line(.waitTimed(.milliseconds(30)), quiet),
        ]),
    ]

    static let changes: [Scenario] = [
        Scenario("interest/change", checks: "reregister switches interest and token; the next wait reflects it.", fixtures: pair, [
            reg("a", 1, .readable), write("b"), wait(soon, ev((1, .readable))),
            rereg("a", 2, .writable), wait(soon, ev((2, .writable))),
            rereg("a", 3, .readable), wait(soon, ev((3, .readable))),
            rereg("a", 4, .both), wait(soon, ev((4, [.readable, .writable]))),
        ]),
        Scenario("interest/token-only", checks: "Changing only the token changes what the next events carry.", fixtures: pair, [
            reg("a", 1, .readable), write("b"), rereg("a", 99, .readable), wait(soon, ev((99, .readable))),
        ]),
        Scenario("interest/narrowed-quiet", checks: "A registration narrowed from both directions to readable reports nothing more of writable: a timed wait with nothing to read stays quiet to its timeout (mio registering.rs reregister_different_interest_without_poll, CPython test_selectors test_modify; a kernel filter left in place woke the caller with empty events).", fixtures: pair, [
            reg("a", 1, .both), wait(soon, ev((1, .writable))), rereg("a", 2, .readable), line(.waitTimed(.milliseconds(30)), quiet),
            write("b"), wait(soon, ev((2, .readable))),
        ]),
        Scenario("interest/token-range", checks: "A token is any 64-bit value but the waker's: 0, one above 32 bits and ones near the top come back whole (mio's Token(0) and usize::MAX - 1).", fixtures: twoPairs, [
            reg("a", 0, .writable), reg("b", 1 << 40 | 7, .writable), reg("c", .max - 1, .writable), reg("d", 1 << 63 | 5, .writable),
            wait(soon, ev((0, .writable), (1 << 40 | 7, .writable), (.max - 1, .writable), (1 << 63 | 5, .writable))),
        ]),
    ]

    static let oneShot: [Scenario] = [
        Scenario("oneshot/rearm", checks: "A one-shot registration fires once, stays silent while disarmed, and fires again when re-armed.", fixtures: pair, [
            reg("a", 1, .readable, .oneShot), write("b"), wait(soon, ev((1, .readable))), wait(now, .none),
            rereg("a", 1, .readable, .oneShot), wait(soon, ev((1, .readable))), wait(now, .none),
            rereg("a", 2, .readable), wait(soon, ev((2, .readable))), wait(now, ev((2, .readable))),
        ]),
        Scenario("oneshot/silent-after-hangup", checks: "A disarmed one-shot registration reports nothing, not even the peer's hang-up (a poll-style backend that only clears the interest bits still gets POLLHUP: a busy loop); re-armed, it reports the hang-up.", fixtures: pair, [
            reg("a", 1, .readable, .oneShot), write("b"), wait(soon, ev((1, .readable))),
            line(.close("b")), wait(now, .none), line(.waitTimed(.milliseconds(30)), quiet),
            rereg("a", 1, .readable, .oneShot), wait(soon, ev((1, [.readable, .readClosed, .hangup]))), wait(now, .none),
        ]),
        Scenario("deregister/silent-after-hangup", checks: "A deregistered descriptor whose peer then hangs up reports nothing, not even the hang-up.", fixtures: pair, [
            reg("a", 1, .readable), line(.deregister("a")), line(.close("b")), wait(now, .none), line(.waitTimed(.milliseconds(30)), quiet),
        ]),
        Scenario("oneshot/deregister-disarmed", checks: "A disarmed one-shot registration can be deregistered and registered again.", fixtures: pair, [
            reg("a", 1, .readable, .oneShot), write("b"), wait(soon, ev((1, .readable))),
            line(.deregister("a")), reg("a", 2, .readable, .oneShot), wait(soon, ev((2, .readable))),
        ]),
        Scenario("edge/once-per-change", checks: "Edge triggering reports a change once, not the lasting state.", fixtures: pair,
                 requires: [.edgeTriggered], [
            reg("a", 1, .readable, .edge), write("b"), wait(soon, ev((1, .readable))), wait(now, .none),
            write("b"), wait(soon, ev((1, .readable))), wait(now, .none),
        ]),
        Scenario("edge/ready-at-register", checks: "Readiness already there when an edge registration is made is reported once.", fixtures: pair,
                 requires: [.edgeTriggered], [
            write("b"), reg("a", 1, .readable, .edge), wait(soon, ev((1, .readable))), wait(now, .none),
        ]),
        Scenario("edge/writable-once-per-change", checks: "An edge registration for writing reports room once, not while it lasts, and once more when the buffer that filled has drained.", fixtures: pair,
                 requires: [.edgeTriggered], [
            reg("a", 1, .writable, .edge), wait(soon, ev((1, .writable))), wait(now, .none),
            line(.fill("a")), wait(now, .none), line(.drain("b")), wait(soon, ev((1, .writable))), wait(now, .none),
        ]),
        Scenario("edge/hangup-once", checks: "An edge registration reports the peer's hang-up once, not on every wait.", fixtures: pair,
                 requires: [.edgeTriggered], [
            reg("a", 1, .readable, .edge), line(.close("b")), wait(soon, ev((1, [.readable, .readClosed, .hangup]))), wait(now, .none),
        ]),
        Scenario("edge/overflow-not-lost", checks: "Edge events that do not fit in the buffer are reported by the next waits, each once (the change happened once: nothing would report it again).",
                 fixtures: [.socketPair("a", "b"), .socketPair("c", "d"), .socketPair("e", "f")], requires: [.edgeTriggered], [
            reg("a", 1, .readable, .edge), reg("c", 2, .readable, .edge), reg("e", 3, .readable, .edge),
            write("b"), write("d"), write("f"),
            line(.waitRounds(capacity: 1, rounds: 3), ev((1, .readable), (2, .readable), (3, .readable))),
            wait(now, .none),
        ]),
    ]

    static let endings: [Scenario] = [
        Scenario("eof/peer-closed", checks: "The peer's close makes a socketpair end readable (EOF), read-closed and hung up.", fixtures: pair, [
            reg("a", 1, .readable), line(.close("b")), wait(soon, ev((1, [.readable, .readClosed, .hangup]))),
        ]),
        Scenario("eof/half-close", checks: "A TCP half-close is read-closed and readable; the socket stays writable, not hung up.",
                 fixtures: [.tcpPair(client: "c", server: "s")], [
            reg("s", 1, .readable), line(.shutdownWrite("c")), wait(soon, ev((1, [.readable, .readClosed]))),
            rereg("s", 2, .both), wait(soon, ev((2, [.readable, .writable, .readClosed]))),
        ]),
        Scenario("reset/readable-interest", checks: "A TCP reset wakes a reader with readable, read-closed, hang-up and error.",
                 fixtures: [.tcpPair(client: "c", server: "s")], [
            reg("c", 1, .readable), line(.resetClose("s")), wait(soon, ev((1, [.readable, .readClosed, .hangup, .error]))),
        ]),
        Scenario("reset/writable-interest", checks: "A TCP reset wakes a writer too: an error always wakes the direction asked for.",
                 fixtures: [.tcpPair(client: "c", server: "s")], [
            reg("c", 1, .writable), wait(soon, ev((1, .writable))), line(.fill("c")), wait(now, .none),
            line(.resetClose("s")), wait(soon, ev((1, [.writable, .hangup, .error]))),
        ]),
        Scenario("hangup/pipe-writer-closed", checks: "A pipe whose writer is gone is readable (EOF) and hung up.", fixtures: [.pipe(read: "r", write: "w")], [
            reg("r", 1, .readable), line(.close("w")), wait(soon, ev((1, [.readable, .hangup]))),
        ]),
        Scenario("hangup/level-persists", checks: "A level registration keeps reporting a hang-up while it lasts: every wait, not only the first (the contract's level rule; a multishot request needs its re-check for this).", fixtures: pair, [
            reg("a", 1, .readable), line(.close("b")), wait(soon, ev((1, [.readable, .readClosed, .hangup]))),
            wait(now, ev((1, [.readable, .readClosed, .hangup]))), wait(soon, ev((1, [.readable, .readClosed, .hangup]))),
        ]),
        Scenario("hangup/pipe-reader-closed", checks: "A pipe whose reader is gone is writable with an error (EPIPE).", fixtures: [.pipe(read: "r", write: "w")], [
            reg("w", 1, .writable), line(.close("r")), wait(soon, ev((1, [.writable, .error]))),
        ]),
        Scenario("hangup/pipe-reader-closed-full", checks: "A full pipe whose reader is gone wakes its writer: the kernel says error without room (POLLERR, no POLLOUT), and an error always wakes the direction asked for (a backend that gives errors to readers only leaves the writer asleep).", fixtures: [.pipe(read: "r", write: "w")], [
            reg("w", 1, .writable), line(.fill("w")), wait(now, .none), line(.close("r")), wait(soon, ev((1, [.writable, .error]))),
        ]),
        Scenario("readiness/urgent-alone-quiet", checks: "TCP urgent data alone wakes no registration (Contract: no priority interest; Linux does not count an urgent byte at the read position as readable), and without spinning; ordinary data after it does.", fixtures: [.tcpPair(client: "c", server: "s")], [
            reg("s", 1, .readable), line(.writeUrgent("c")), line(.waitTimed(.milliseconds(30)), quiet),
            write("c"), wait(soon, ev((1, .readable))),
        ]),
    ]

    static let timing: [Scenario] = [
        Scenario("timeout/not-early", checks: "A wait never returns empty before its timeout, long ones (1.2 s) included.", [
            line(.waitTimed(.milliseconds(50)), quiet), line(.waitTimed(.milliseconds(7)), quiet), line(.waitTimed(.milliseconds(1_200)), quiet),
        ]),
        Scenario("timeout/zero", checks: "A zero timeout looks and returns at once.", fixtures: pair, [
            reg("a", 1, .readable), line(.waitTimed(.zero), quiet), write("b"), wait(now, ev((1, .readable))),
        ]),
        Scenario("timeout/negative-nothing-ready", checks: "A negative timeout counts as zero with nothing ready too (epoll_wait and poll would block for ever on a negative count of milliseconds).", fixtures: pair, [
            reg("a", 1, .readable), wait(.nanoseconds(-1), .none), wait(.seconds(-1), .none),
            wait(.nanoseconds(Int64.min), .none), wait(Duration(secondsComponent: .min, attosecondsComponent: 0), .none),
        ]),
        Scenario("timeout/sub-millisecond", checks: "A sub-millisecond timeout is not rounded down to a busy zero nor returned early.", [
            line(.waitTimed(.microseconds(300)), quiet), line(.waitTimed(.microseconds(1500)), quiet),
        ]),
        Scenario("eintr/signals", checks: "Signals during a wait neither end it early nor lose its timeout.", [
            line(.waitInterrupted(.milliseconds(150), signals: 5), quiet),
        ]),
        Scenario("eintr/time-left", checks: "A wait interrupted by 40 signals goes on with the time left, not the whole timeout again: it ends within half its timeout (and 100 ms) of it.", [
            line(.waitInterrupted(.milliseconds(400), signals: 40), quiet),
        ]),
    ]

    static let closing: [Scenario] = [
        Scenario("closed/while-registered", checks: "A descriptor closed while registered never wedges the poller; it is dropped and deregisters cleanly.", fixtures: twoPairs, [
            reg("a", 1, .readable), reg("c", 2, .readable), line(.close("a")), write("d"),
            wait(soon, ev((2, .readable))), line(.drain("c")), wait(now, .none), wait(now, .none),
            line(.deregister("a")), write("d"), wait(soon, ev((2, .readable))),
        ]),
        Scenario("closed/number-reuse", checks: "A number reused by a new file after close needs the old registration removed first.", fixtures: pair, [
            reg("a", 1, .readable), line(.close("a")), line(.waitTimed(.milliseconds(30)), quiet),
            line(.reopenOnNumber("x", peer: "y", numberOf: "a")),
            reg("x", 2, .readable, .level, err("alreadyRegistered")), line(.deregister("x")),
            reg("x", 2, .readable), write("y"), wait(soon, ev((2, .readable))),
        ]),
        Scenario("closed/dup-lingers", checks: "Deregistering a closed descriptor whose file lives on through a dup stops its events.", fixtures: pair, [
            reg("a", 1, .readable), line(.duplicate("a", as: "a2", atLeast: 100)), line(.close("a")),
            line(.deregister("a")), write("b"), wait(now, .none), line(.waitTimed(.milliseconds(40)), quiet),
            reg("a2", 2, .readable), wait(soon, ev((2, .readable))),
        ]),
        Scenario("dup/both-registered", checks: "A descriptor and its dup register independently and report under their own tokens.", fixtures: pair, [
            reg("a", 1, .readable), line(.duplicate("a", as: "a2", atLeast: 100)), reg("a2", 2, .readable),
            write("b"), wait(soon, ev((1, .readable), (2, .readable))),
            line(.deregister("a")), wait(soon, ev((2, .readable))),
        ]),
    ]

    static let limits: [Scenario] = [
        Scenario("limit/fd-setsize-refused", checks: "select refuses a descriptor at or above FD_SETSIZE, naming the limit, before FD_SET.", fixtures: pair,
                 requires: [.selectLimit], [
            line(.duplicate("a", as: "big", atLeast: 1500)),
            reg("big", 1, .readable, .level, err("descriptorTooLarge(limit: 1024)")), write("b"), wait(now, .none),
            line(.registerNumber(.max, token: 2, interest: .readable), err("descriptorTooLarge(limit: 1024)")),
        ]),
        Scenario("limit/huge-number", checks: "Numbers far above any open descriptor (2^20, CInt.max) are refused with badDescriptor before any change, as a just-closed one is (a backend with no declared limit; one with a limit refuses them as too large: limit/declared-limit).",
                 requires: [.noDescriptorLimit], [
            line(.registerNumber(1 << 20, token: 1, interest: .readable), err("badDescriptor")),
            line(.registerNumber(.max, token: 2, interest: .both), err("badDescriptor")), wait(now, .none),
        ]),
        Scenario("limit/declared-limit", checks: "A backend with a declared descriptor limit enforces it: the number just above it is descriptorTooLarge naming the limit, before anything else is looked at (rule 3; nothing is open there), and the poller goes on.",
                 fixtures: pair, requires: [.declaredLimit], [
            line(.registerAboveLimit(token: 1), err("descriptorTooLarge(declared limit)")), wait(now, .none),
            reg("a", 2, .readable), write("b"), wait(soon, ev((2, .readable))),
        ]),
        Scenario("limit/large-descriptor", checks: "Backends without select's limit accept and report a descriptor above 1024.", fixtures: pair,
                 requires: [.noSmallLimit], [
            line(.duplicate("a", as: "big", atLeast: 1500)), reg("big", 1, .readable), write("b"), wait(soon, ev((1, .readable))),
        ]),
    ]

    static let wakeups: [Scenario] = [
        Scenario("wake/coalesced", checks: "Many wakes from many threads give one wake-up event.", [
            line(.wake(times: 100, threads: 4)), wait(soon, woken), wait(now, .none),
        ]),
        Scenario("wake/by-descriptor-while-blocked", checks: "A wait with no timeout, already blocked, is ended by a registered descriptor becoming ready (written by another thread), not only by the waker.", fixtures: pair, [
            reg("a", 1, .readable), line(.waitWhileWrittenByThread("b", after: .milliseconds(20)), ev((1, .readable))),
        ]),
        Scenario("wake/while-blocked", checks: "A wake from another thread ends a wait that has no timeout.", [
            line(.waitWokenByThread(after: .milliseconds(20)), woken),
        ]),
        Scenario("wake/long-block", checks: "A wait with no timeout blocks until woken, however long (here 300 ms): it never returns empty on its own.", [
            line(.waitWokenByThread(after: .milliseconds(300)), woken),
        ]),
        Scenario("timeout/enormous-blocks", checks: "The largest timeouts block until woken, with nothing ready: none wraps to a zero wait or is cut to a short one (2^32 + 10 ms truncated to 32 bits is 10 ms).", [
            line(.waitWithTimeoutWokenByThread(.seconds(Int64.max), after: .milliseconds(50)), woken),
            line(.waitWithTimeoutWokenByThread(Duration(secondsComponent: .max, attosecondsComponent: 999_999_999_999_999_999), after: .milliseconds(50)), woken),
            line(.waitWithTimeoutWokenByThread(.milliseconds(Int64(Int32.max) + 1), after: .milliseconds(50)), woken),
            // Truncated to 32 bits of milliseconds this is 10 ms (mio #1948's kind of bug).
            line(.waitWithTimeoutWokenByThread(.milliseconds((1 << 32) + 10), after: .milliseconds(50)), woken),
        ]),
        Scenario("close/from-another-thread", checks: "Closing the poller from another thread ends a wait that has no timeout: it fails with closed.", [
            line(.waitClosedByThread(after: .milliseconds(30)), err("closed")),
        ]),
        Scenario("wake/with-events", checks: "A wake-up and ready descriptors are reported together.", fixtures: pair, [
            reg("a", 1, .readable), write("b"), line(.wake(times: 1, threads: 1)), wait(soon, ev((1, .readable)).adding(woken)),
        ]),
    ]

    static let buffers: [Scenario] = [
        Scenario("buffer/kept-events-follow-changes", checks: "Events a backend keeps from a full buffer are not reported for registrations deregistered since, and carry the token of a reregister since.",
                 fixtures: [.socketPair("a", "b"), .socketPair("c", "d"), .socketPair("e", "f")], [
            reg("a", 1, .readable), reg("c", 2, .readable), reg("e", 3, .readable), write("b"), write("d"), write("f"),
            line(.waitSmall(capacity: 1, timeout: soon), .anyOf([ev((1, .readable)), ev((2, .readable)), ev((3, .readable))])),
            rereg("a", 11, .readable), rereg("c", 12, .readable), rereg("e", 13, .readable),
            wait(soon, ev((11, .readable), (12, .readable), (13, .readable))),
            line(.waitSmall(capacity: 1, timeout: soon), .anyOf([ev((11, .readable)), ev((12, .readable)), ev((13, .readable))])),
            line(.deregisterAll(["a", "c", "e"])), wait(now, .none),
        ]),
        Scenario("buffer/level-fair", checks: "More ready descriptors than the buffer holds: every one is reported over successive waits.",
                 fixtures: [.socketPair("a", "b"), .socketPair("c", "d"), .socketPair("e", "f")], [
            reg("a", 1, .readable), reg("c", 2, .readable), reg("e", 3, .readable), write("b"), write("d"), write("f"),
            line(.waitRounds(capacity: 1, rounds: 3), ev((1, .readable), (2, .readable), (3, .readable))),
        ]),
        Scenario("buffer/one-shot-not-lost", checks: "One-shot events that do not fit in the buffer are delivered later, each once.",
                 fixtures: [.socketPair("a", "b"), .socketPair("c", "d"), .socketPair("e", "f")], [
            reg("a", 1, .readable, .oneShot), reg("c", 2, .readable, .oneShot), reg("e", 3, .readable, .oneShot),
            write("b"), write("d"), write("f"),
            line(.waitRounds(capacity: 1, rounds: 3), ev((1, .readable), (2, .readable), (3, .readable))),
            wait(now, .none),
        ]),
        Scenario("buffer/fired-one-shot-above-the-rest", checks: "After the highest-numbered registration fires one-shot (and so leaves the set), a lower ready descriptor is reported by every non-blocking wait.",
                 fixtures: [.socketPair("a", "b"), .socketPair("c", "d")], [
            line(.duplicate("c", as: "high", atLeast: 600)),
            reg("high", 1, .readable, .oneShot), reg("a", 2, .readable),
            write("d"), wait(soon, ev((1, .readable))),
            write("b"), wait(now, ev((2, .readable))), wait(now, ev((2, .readable))), wait(now, ev((2, .readable))),
        ]),
    ]

    static let connects: [Scenario] = [
        Scenario("connect/success", checks: "A loopback connect completes, confirmed by SO_ERROR and getpeername.", fixtures: [.tcpListener("l", ipv6: false)], [
            connect(.listener("l", peer: .silent), soon, "connected"),
        ]),
        Scenario("connect/peer-writes-first", checks: "A connect whose peer wrote at once (readable and writable) is a success, not an error.",
                 fixtures: [.tcpListener("l", ipv6: false)], [
            connect(.listener("l", peer: .writes), soon, "connected"),
        ]),
        Scenario("connect/refused", checks: "A port with no listener fails as refused, though the socket is writable.", [
            connect(.closedPort, soon, "failed:refused"),
        ]),
        Scenario("connect/reset", checks: "A peer that resets at once (SO_LINGER 0) fails as reset.", fixtures: [.tcpListener("l", ipv6: false)], [
            connect(.listener("l", peer: .resets), soon, "failed:reset"),
        ]),
        Scenario("connect/timeout", checks: "A listener whose queue is full never answers: the connect times out.", fixtures: [.fullTCPListener("l")], [
            connect(.listener("l", peer: .silent), .milliseconds(150), "failed:timedOut"),
        ]),
        Scenario("connect/ipv6", checks: "An IPv6 loopback connect completes.", fixtures: [.tcpListener("l", ipv6: true)], [
            connect(.listener("l", peer: .silent), soon, "connected"),
        ]),
        Scenario("connect/unix", checks: "A Unix-domain connect completes (connect returns 0; SO_ERROR still checked).", fixtures: [.unixListener("u")], [
            connect(.listener("u", peer: .silent), soon, "connected"),
        ]),
        Scenario("connect/unix-missing-path", checks: "A Unix-domain path that does not exist fails at once as noSuchPath.", [
            connect(.missingUnixPath, soon, "failed:noSuchPath"),
        ]),
        Scenario("connect/unix-backlog-full", checks: "A full Unix-domain backlog (EAGAIN) is backlogFull, never in progress.", fixtures: [.fullUnixListener("u")], [
            connect(.listener("u", peer: .silent), soon, "failed:backlogFull"),
        ]),
        Scenario("connect/self", checks: "A loopback connect to its own address and port is detected and refused as selfConnect.", [
            connect(.selfConnect, soon, "failed:selfConnect"),
        ]),
        Scenario("connect/unreachable", checks: "A network with no route fails as unreachable (in a private network namespace).", [
            connect(.unreachable, soon, "failed:unreachable"),
        ]),
    ]
}

extension Conformance {
    /// Corners outside test suites reached (libevent's, CPython's, mio's, SwiftNIO's, Go's, libuv's):
    /// each scenario failed on at least one backend before the fix that it pins.
    static let hardening: [Scenario] = [
        Scenario("closed/deregister-many-closed", checks: "Deregistering several descriptors closed while registered succeeds once each, and the others keep working.",
                 fixtures: [.socketPair("a", "b"), .socketPair("c", "d"), .socketPair("e", "f")], [
            reg("a", 1, .readable), reg("c", 2, .readable), reg("e", 3, .readable), line(.close("a")), line(.close("c")),
            line(.deregister("a")), line(.deregister("c")), line(.deregister("a"), err("notRegistered")),
            write("f"), wait(soon, ev((3, .readable))), line(.deregister("e")), wait(now, .none),
        ]),
        Scenario("closed/deregister-hundreds-closed", checks: "Closing 300 registered descriptors, then deregistering each, leaves a working poller.",
                 fixtures: [.socketPairs("p", count: 300), .socketPair("a", "b")], [
            line(.registerEach("p", count: 300, firstToken: 10, interest: .readable)), reg("a", 1, .readable),
            line(.closeEach("p", count: 300)), line(.deregisterEach("p", count: 300)),
            write("b"), wait(soon, ev((1, .readable))), line(.waitTimed(.milliseconds(30)), .events([Token(1): .readable])),
        ]),
        Scenario("closed/dup-reused-deregistered", checks: "A closed descriptor kept open by a dup, its number reused, then deregistered: no event, no busy loop.",
                 fixtures: pair, [
            reg("a", 1, .readable), line(.duplicate("a", as: "a2", atLeast: 100)), line(.close("a")),
            line(.reopenOnNumber("x", peer: "y", numberOf: "a")), line(.deregister("x")), write("b"),
            line(.waitTimed(.milliseconds(200)), quiet), wait(now, .none),
            reg("x", 2, .readable), write("y"), wait(soon, ev((2, .readable))),
        ]),
        Scenario("closed/dup-reused-registered-again", checks: "A closed descriptor kept open by a dup, its number reused, deregistered and registered again for the new file: the old file's readiness is never reported under the new registration.",
                 fixtures: pair, [
            reg("a", 1, .readable), line(.duplicate("a", as: "a2", atLeast: 100)), line(.close("a")),
            line(.reopenOnNumber("x", peer: "y", numberOf: "a")), line(.deregister("x")), reg("x", 2, .readable), write("b"),
            line(.waitTimed(.milliseconds(200)), quiet), wait(now, .none),
            write("y"), wait(soon, ev((2, .readable))),
        ]),
        Scenario("closed/rebuild-exhausted", checks: "With no descriptor left, a stale file's event never costs a ready one-shot event.",
                 fixtures: [.socketPair("a", "b"), .socketPair("x", "y")], [
            reg("x", 1, .readable, .oneShot), reg("a", 2, .readable), line(.duplicate("a", as: "a2", atLeast: 100)),
            line(.close("a")), line(.deregister("a")), write("y"), write("b"), line(.exhaustDescriptors),
            wait(soon, ev((1, .readable))), wait(now, .none), line(.restoreDescriptors), wait(now, .none),
            rereg("x", 1, .readable, .oneShot), wait(soon, ev((1, .readable))),
        ]),
        Scenario("dup/back-on-same-number", checks: "The same file put back (dup2) on a number it was deregistered from registers again.", fixtures: pair, [
            reg("a", 1, .readable), line(.duplicate("a", as: "a2", atLeast: 100)), reg("a2", 2, .readable),
            line(.close("a2")), line(.deregister("a2")), line(.duplicateOnto("a", as: "a3", numberOf: "a2")),
            reg("a3", 3, .readable), write("b"), wait(soon, ev((1, .readable), (3, .readable))),
        ]),
        Scenario("closed/reregister-reused", checks: "reregister of a registration whose descriptor was closed applies it to the file that has the number now.",
                 fixtures: pair, [
            reg("a", 1, .readable), line(.close("a")), wait(now, .none), line(.reopenOnNumber("x", peer: "y", numberOf: "a")),
            rereg("x", 2, .both), write("y"), wait(soon, ev((2, [.readable, .writable]))), wait(now, ev((2, [.readable, .writable]))),
        ]),
        Scenario("closed/reregister-token-only-reused", checks: "A token-only reregister after close and reuse behaves as any reregister.",
                 fixtures: pair, [
            reg("a", 1, .readable), line(.close("a")), wait(now, .none), line(.reopenOnNumber("x", peer: "y", numberOf: "a")),
            rereg("x", 5, .readable), write("y"), wait(soon, ev((5, .readable))),
            rereg("x", 6, .readable, .oneShot), wait(soon, ev((6, .readable))), wait(now, .none),
        ]),
        Scenario("closed/number-reused-before-wait", checks: "A number closed while registered and reused before any wait: the old token may report the new file (poll, select watch numbers) or not (epoll watches files); deregistering mends it.",
                 fixtures: pair, [
            reg("a", 1, .readable), line(.close("a")), line(.reopenOnNumber("x", peer: "y", numberOf: "a")), write("y"),
            ScriptLine(.wait(timeout: .milliseconds(50)), anyOf: [.none, ev((1, .readable))]),
            line(.deregister("x")), reg("x", 2, .readable), wait(soon, ev((2, .readable))),
        ]),
        Scenario("closed/by-another-thread-during-wait", checks: "A descriptor closed by another thread while a wait blocks is not reported (select's kernel call reports such a number ready); it deregisters cleanly.",
                 fixtures: twoPairs, [
            reg("a", 1, .readable), line(.fill("c")), reg("c", 2, [.readable, .writable]),
            line(.waitWhileClosedByThread("a", after: .milliseconds(20)), woken),
            line(.waitWhileClosedByThread("c", after: .milliseconds(20)), woken),
            line(.deregister("a")), line(.deregister("c")), wait(now, .none),
        ]),
        Scenario("wake/buffer-full", checks: "A wake-up is never lost when ready descriptors fill the buffer.", fixtures: twoPairs, [
            reg("a", 1, .readable), reg("c", 2, .readable), write("b"), write("d"), line(.wake(times: 1, threads: 1)),
            line(.waitRounds(capacity: 1, rounds: 3), ev((1, .readable), (2, .readable)).adding(woken)),
        ]),
        Scenario("wake/signal-handler", checks: "wake() called from a signal handler ends a wait that has no timeout.", [
            line(.waitWokenBySignalHandler(after: .milliseconds(20)), woken),
        ]),
        Scenario("wake/signal-handler-reentry", checks: "wake() from a signal handler that interrupted a wake() in progress neither deadlocks nor loses the wake-up.", [
            line(.wakeReenteredBySignalHandler(signals: 200)), wait(soon, woken), wait(now, .none),
        ]),
        Scenario("closed/reregister-reused-dup-lingers", checks: "A registration revived on a reused number reports the new file only, though a dup keeps the old file open.",
                 fixtures: pair, [
            reg("a", 1, .readable), line(.duplicate("a", as: "a2", atLeast: 100)), line(.close("a")), wait(now, .none),
            line(.reopenOnNumber("x", peer: "y", numberOf: "a")), rereg("x", 2, .readable), write("b"), wait(now, .none),
            line(.waitTimed(.milliseconds(100)), quiet), write("y"), wait(soon, ev((2, .readable))),
        ]),
        Scenario("buffer/fills", checks: "A wait fills the caller's buffer when that many descriptors are ready, and takes no more than it holds.",
                 fixtures: [.socketPairs("p", count: 70)], [
            line(.registerEach("p", count: 70, firstToken: 1, interest: .readable)), line(.writeEach("p", count: 70)),
            line(.waitCounting(capacity: 128, timeout: soon), .note("70 events")),
            line(.waitCounting(capacity: 50, timeout: soon), .note("50 events")),
        ]),
        Scenario("timeout/enormous", checks: "Any Duration is accepted as a timeout: the largest ones neither trap nor fail.", fixtures: pair + [.tcpListener("l", ipv6: false)], [
            reg("a", 1, .readable), write("b"), wait(enormous, ev((1, .readable))), wait(largest, ev((1, .readable))),
            wait(.seconds(Int64.max), ev((1, .readable))), wait(.nanoseconds(Int64.min), ev((1, .readable))),
            connect(.listener("l", peer: .silent), enormous, "connected"), connect(.listener("l", peer: .silent), largest, "connected"),
        ]),
        Scenario("limit/create-exhausted", checks: "Creating a poller with no or few descriptors left fails with resourceExhausted, never ends the process, leaks nothing.", [
            line(.createPollersExhausted(upTo: 6), .note(ScenarioRun.createdOrExhausted)),
        ]),
        Scenario("connect/descriptors-exhausted", checks: "A connect whose socket() fails (EMFILE) ends at once as resourceExhausted.",
                 fixtures: [.tcpListener("l", ipv6: false)], [
            line(.exhaustDescriptors), connect(.listener("l", peer: .silent), soon, "failed:resourceExhausted"), line(.restoreDescriptors),
            connect(.listener("l", peer: .silent), soon, "connected"),
        ]),
        Scenario("misuse/device-not-pollable", checks: "A device the kernel cannot poll (/dev/null) is refused as unsupportedDescriptor everywhere.",
                 fixtures: [.device("n", path: "/dev/null")], [
            reg("n", 1, .readable, .level, err("unsupportedDescriptor")), reg("n", 1, .writable, .level, err("unsupportedDescriptor")),
        ]),
        Scenario("misuse/anonymous-file-not-pollable", checks: "An anonymous-inode file with no poll method (a Landlock ruleset) is refused as unsupportedDescriptor everywhere, as a device the kernel cannot poll is.",
                 fixtures: [.anonymousUnpollable("l")], [
            reg("l", 1, .readable, .level, err("unsupportedDescriptor")), reg("l", 1, .writable, .level, err("unsupportedDescriptor")),
        ]),
        Scenario("readiness/pidfd-process-exit", checks: "A pidfd (pidfd_open) registers on every backend and is readable once its process has exited, not before.",
                 fixtures: [.childProcess("p", release: "x")], [
            reg("p", 1, .readable), wait(now, .none), write("x"), wait(soon, ev((1, .readable))), wait(now, ev((1, .readable))),
            line(.deregister("p")), wait(now, .none),
        ]),
        Scenario("misuse/register-order", checks: "register checks in the contract's order (Contract.md, Misuse), before any backend call: a negative number before the token, the token before the interest, the interest (bits other than readable and writable too) before whether the descriptor is registered.", fixtures: pair, [
            reg("a", 1, .readable),
            line(.registerNumber(-1, token: .max, interest: []), err("invalidDescriptor")),
            line(.registerBadArguments("a", token: .max, interest: []), err("reservedToken")),
            line(.registerBadArguments("a", token: 2, interest: []), err("emptyInterest")),
            line(.registerBadArguments("a", token: 2, interest: Interest(rawValue: 5)), err("emptyInterest")),
            line(.registerBadArguments("a", token: 2, interest: .readable), err("alreadyRegistered")),
            write("b"), wait(soon, ev((1, .readable))),
        ]),
        Scenario("misuse/reregister-order", checks: "reregister checks its arguments before whether the descriptor is registered, as register does.", fixtures: pair, [
            rereg("a", .max, .readable, .level, err("reservedToken")), rereg("a", 1, [], .level, err("emptyInterest")),
            rereg("a", 1, .readable, .level, err("notRegistered")),
        ]),
    ]
}

extension Observation {
    /// Both observations' events together.
    func adding(_ other: Observation) -> Observation {
        guard case .events(var mine) = self, case .events(let theirs) = other else { return self }
        mine.merge(theirs) { $0.union($1) }
        return .events(mine)
    }
}
