import Readiness

// The async scenario catalogue. Each line is a step and its outcome on every backend; the runner lets
// the loop run one round (a zero-timeout poller wait) after every step, so that outcomes depend on
// what happened, not on timing. Every deadline that matters ends on its own: nothing here waits for
// a deadline that something else is racing.

private let long: Duration = .seconds(5)
private let brief: Duration = .milliseconds(300)
private let largest = Duration(secondsComponent: .max, attosecondsComponent: 999_999_999_999_999_999)
/// More than any socket buffer pair holds here (a write of this size must wait for the reader).
private let large = 4 << 20

private func line(_ step: AsyncStep, _ expect: Observation = .ok) -> AsyncLine { AsyncLine(step, expect) }
private func op(_ operation: AsyncOperation, _ expect: Observation = .ok) -> AsyncLine { line(.run(operation), expect) }
private func start(_ task: String, _ operation: AsyncOperation) -> AsyncLine { line(.start(task, operation)) }
private func join(_ task: String, _ expect: Observation) -> AsyncLine { line(.await(task), expect) }
private func bytes(_ n: Int) -> Observation { .note("\(n) bytes") }
private func fails(_ error: LoopError) -> Observation { .error(error.caseName) }
private func read(_ s: String, _ timeout: Duration? = long) -> AsyncOperation { .read(s, upTo: 64, timeout: timeout) }
private func write(_ s: String, _ n: Int = 1, _ timeout: Duration? = long) -> AsyncOperation { .write(s, bytes: n, timeout: timeout) }
private let eof = Observation.note("end of stream")
private let pair = line(.socketPair("a", "b"))
private let open = Observation.note("open")
private let releasesFile = Requirement("needs a poller whose watched descriptor's close releases its file (not io_uring)") { $0.closeReleasesFile }
private let udp = line(.udpPair("u", "v"))
private let unixPair = line(.unixDatagramPair("p", "q"))
private func send(_ s: String, _ n: Int = 1, to: String? = nil, _ timeout: Duration? = long) -> AsyncOperation { .send(s, bytes: n, to: to, timeout: timeout) }
private func receive(_ s: String, _ upTo: Int = 64, _ timeout: Duration? = long) -> AsyncOperation { .receive(s, upTo: upTo, timeout: timeout) }
private func datagram(_ n: Int, from source: String) -> Observation { .note("\(n) bytes from \(source)") }
private let holdsFile = Requirement("needs a poller that holds a watched descriptor's file until it stops watching (io_uring)") { !$0.closeReleasesFile }

extension AsyncConformance {
    /// Every async scenario, by area.
    public static let scenarios: [AsyncScenario] = io + caller + cancellation + deadlines + misuse + shutdown + connects + accepts + sleeps + adoption + serving
        + datagrams

    static let io: [AsyncScenario] = [
        AsyncScenario("async/io/read-write", checks: "Bytes written on one end are read on the other; an empty socket times out.", [
            pair, op(write("a", 3)), op(read("b"), bytes(3)), op(read("b", .zero), fails(.timedOut)),
            op(write("b", 2)), op(read("a"), bytes(2)),
        ]),
        AsyncScenario("async/io/reader-woken", checks: "A task suspended in read is resumed by the peer's write.", [
            pair, start("t1", read("a")), op(write("b", 2)), join("t1", bytes(2)),
        ]),
        AsyncScenario("async/io/eof", checks: "The peer's close is end of stream, for every later read too.", [
            pair, start("t1", read("a")), op(.close("b")), join("t1", eof), op(read("a"), eof),
        ]),
        AsyncScenario("async/io/reset", checks: "A TCP reset ends a suspended read with socket(reset).", [
            line(.tcpPair(client: "c", server: "s")), start("t1", read("c")), op(.resetClose("s")),
            join("t1", .error("socket(reset)")),
        ]),
        AsyncScenario("async/io/half-close", checks: "A TCP half-close is end of stream on one side; the other direction still carries bytes.", [
            line(.tcpPair(client: "c", server: "s")), op(.shutdownWrite("c")), op(read("s"), eof),
            op(write("s", 5)), op(read("c"), bytes(5)),
        ]),
        AsyncScenario("async/io/writer-hung-up", checks: "A task waiting for room to write on a socketpair end that hangs up (both directions shut down, no error) is woken and fails with socket(reset), not left waiting.", [
            pair, start("t1", write("a", large, brief)), op(.shutdownWrite("a")), op(.shutdownWrite("b")),
            join("t1", .error("socket(reset)")),
        ]),
        AsyncScenario("async/io/peek", checks: "A peek waits for bytes and returns them without taking them; the read gets them again; at end of stream it returns 0.", [
            pair, start("t1", .peek("a", upTo: 64, timeout: long)), op(write("b", 5)), join("t1", bytes(5)),
            op(.peek("a", upTo: 2, timeout: long), bytes(2)), op(read("a"), bytes(5)),
            op(.peek("a", upTo: 64, timeout: .zero), fails(.timedOut)), op(.peek("a", upTo: 0, timeout: long), .error("invalidArgument")),
            op(.shutdownWrite("b")), op(.peek("a", upTo: 64, timeout: long), eof), op(read("a"), eof),
        ]),
        AsyncScenario("async/io/try-read-write", checks: "tryRead and tryWrite never wait: tryRead takes what is queued (nothing queued: it says so; the end of stream: it says that), readable and writable wait without moving a byte, and a try while another task's read waits is busy, that read still getting the bytes.", [
            pair, op(.tryRead("a", upTo: 64), .note("nothing queued")), op(.ready("a", reading: true, timeout: .zero), fails(.timedOut)),
            start("t1", .ready("a", reading: true, timeout: long)), op(write("b", 3)), join("t1", .ok),
            op(.tryRead("a", upTo: 2), bytes(2)), op(.tryRead("a", upTo: 64), bytes(1)), op(.tryRead("a", upTo: 64), .note("nothing queued")),
            start("t2", read("a")), op(.tryRead("a", upTo: 64), fails(.busy)), op(write("b", 1)), join("t2", bytes(1)),
            op(.ready("a", reading: false, timeout: .zero)), op(.tryWrite("a", bytes: 3), bytes(3)), op(read("b"), bytes(3)),
            op(.shutdownWrite("b")), op(.ready("a", reading: true, timeout: long)), op(.tryRead("a", upTo: 64), eof), op(read("a"), eof),
        ]),
        AsyncScenario("async/io/try-until-blocked", checks: "tokio's try loop: writable before every tryWrite holds as long as a try succeeds (the kernel's POLLOUT needs three quarters of a Unix send buffer free), and waits once one would block; readable before every tryRead takes every byte; the writer is writable again.", [
            pair, op(.tryFill("a"), .note("filled")), op(.ready("a", reading: false, timeout: .zero), fails(.timedOut)),
            op(.tryDrain("b"), .note("drained")), op(.ready("a", reading: false, timeout: long)),
            op(.tryWrite("a", bytes: 3), bytes(3)), op(read("b"), bytes(3)),
        ]),
        AsyncScenario("async/io/write-larger-than-buffers", checks: "A write larger than both socket buffers waits for room until every byte is read.", [
            pair, start("t1", write("a", large)), op(.readAll("b", bytes: large, timeout: long), bytes(large)),
            join("t1", .ok),
        ]),
        AsyncScenario("async/io/reader-and-writer-at-once", checks: "A reader and a writer suspended on one socket at once (tokio's split halves): the writer's end leaves the reader watched, and the reader's end the writer, in both orders.", [
            pair, start("r", read("a")), start("w", write("a", large)),
            op(.readAll("b", bytes: large, timeout: long), bytes(large)), join("w", .ok),
            op(write("b", 3)), join("r", bytes(3)),
            start("w2", write("a", large)), start("r2", read("a")),
            op(write("b", 2)), join("r2", bytes(2)),
            op(.readAll("b", bytes: large, timeout: long), bytes(large)), join("w2", .ok),
        ]),
    ]

    static let caller: [AsyncScenario] = [
        AsyncScenario("async/caller/readable-writable", checks: "readable and writable on a caller's descriptor end when it is ready and leave it open.", [
            line(.callerPair("x", "y")), op(.writable("x", timeout: long)), op(.readable("x", timeout: .zero), fails(.timedOut)),
            start("t1", .readable("x", timeout: long)), line(.callerWrite("y", bytes: 1)), join("t1", .ok),
            line(.isOpen("x"), open),
        ]),
        AsyncScenario("async/caller/two-waiters", checks: "Tasks waiting on one caller's descriptor in one direction take turns: a third ends at its own deadline in line; one byte ends the first two, one after the other, and the descriptor stays the caller's, open.", [
            line(.callerPair("x", "y")), start("t1", .readable("x", timeout: long)), start("t2", .readable("x", timeout: long)),
            op(.readable("x", timeout: brief), fails(.timedOut)), line(.callerWrite("y", bytes: 1)),
            join("t1", .ok), join("t2", .ok), line(.isOpen("x"), open),
        ]),
        AsyncScenario("async/caller/closed-during-wait", checks: "A caller's descriptor closed by its owner during a wait does not end it: it times out at its deadline.", [
            line(.callerPair("x", "y")), start("t1", .readable("x", timeout: brief)), line(.callerClose("x")),
            join("t1", fails(.timedOut)), line(.isOpen("y"), open),
        ]),
        AsyncScenario("async/caller/closed-then-peer-writes", checks: "A caller's descriptor closed during a wait is released at once: its peer's write fails (EPIPE); the wait still times out.",
                      requires: [releasesFile], [
            line(.callerPair("x", "y")), start("t1", .readable("x", timeout: brief)), line(.callerClose("x")),
            line(.callerWrite("y", bytes: 1), .note("write: EPIPE")), join("t1", fails(.timedOut)),
        ]),
        AsyncScenario("async/caller/closed-file-held", checks: "Where the poller holds a watched file (io_uring), a caller's descriptor closed during a wait is released when the wait ends: the peer writes until then, EPIPE after; the wait times out.",
                      requires: [holdsFile], [
            line(.callerPair("x", "y")), start("t1", .readable("x", timeout: brief)), line(.callerClose("x")),
            line(.callerWrite("y", bytes: 1)), join("t1", fails(.timedOut)), line(.callerWrite("y", bytes: 1), .note("write: EPIPE")),
        ]),
        AsyncScenario("async/caller/registration-dropped", checks: "A socket closed inside withStreamSocket while a task reads: the reader ends with closed, later operations too.", [
            pair, start("t1", read("a")), op(.closeInside("a")), join("t1", fails(.closed)),
            op(read("a"), fails(.closed)), op(write("b"), .error("socket(reset)")),
        ]),
    ]

    static let cancellation: [AsyncScenario] = [
        AsyncScenario("async/cancel/before-wait", checks: "A task cancelled before it waits ends with cancelled; one that need not wait still gets its data.", [
            pair, line(.startCancelled("t1", read("a"))), join("t1", fails(.cancelled)),
            line(.startCancelled("t2", .sleep(.seconds(3600)))), join("t2", fails(.cancelled)),
            op(write("b", 1)), line(.startCancelled("t3", read("a"))), join("t3", bytes(1)),
        ]),
        AsyncScenario("async/cancel/during-wait", checks: "Cancelling a suspended read, sleep, readable or connect ends it with cancelled, leaves the socket usable and the caller's descriptor open.", [
            pair, start("t1", read("a")), line(.cancel("t1")), join("t1", fails(.cancelled)),
            op(write("b", 1)), op(read("a"), bytes(1)),
            start("t2", .sleep(.seconds(3600))), line(.cancel("t2")), join("t2", fails(.cancelled)),
            line(.callerPair("x", "y")), start("t3", .readable("x", timeout: nil)), line(.cancel("t3")), join("t3", fails(.cancelled)),
            op(.readable("x", timeout: .zero), fails(.timedOut)), line(.isOpen("x"), open),
            line(.fullListener("l")), start("t4", .connect(as: "c", to: .fullListener("l"), timeout: nil)), line(.cancel("t4")),
            join("t4", fails(.cancelled)),
        ]),
    ]

    static let deadlines: [AsyncScenario] = [
        AsyncScenario("async/deadline/zero-negative-huge", checks: "A zero or negative deadline times out at once; the largest Duration waits like no deadline.", [
            pair, op(read("a", .zero), fails(.timedOut)), op(read("a", .seconds(-1)), fails(.timedOut)),
            op(read("a", Duration(secondsComponent: .min, attosecondsComponent: 0)), fails(.timedOut)),
            start("t1", read("a", largest)), op(write("b", 1)), join("t1", bytes(1)),
            op(.sleep(.zero)), op(.sleep(.seconds(-1))),
            start("t2", .sleep(largest)), line(.cancel("t2")), join("t2", fails(.cancelled)),
        ]),
    ]

    static let misuse: [AsyncScenario] = [
        AsyncScenario("async/misuse/close-while-suspended", checks: "A socket closed by another task: the suspended reader ends with closed, every later operation too; closing twice does nothing.", [
            pair, start("t1", read("a")), op(.close("a")), join("t1", fails(.closed)),
            op(read("a"), fails(.closed)), op(write("a"), fails(.closed)), op(.close("a")), op(read("b"), eof),
        ]),
        AsyncScenario("async/misuse/two-waiters", checks: "Tasks reading (or writing) on one socket at once take turns in the order they began: each waits, none fails; one waiting for its turn ends at its own deadline or cancellation, and the one holding the side is unaffected.", [
            pair, start("t1", read("a")), start("t2", read("a")), start("t3", read("a")), op(read("a", brief), fails(.timedOut)),
            line(.cancel("t2")), join("t2", fails(.cancelled)),
            op(write("b", 1)), join("t1", bytes(1)), op(write("b", 2)), join("t3", bytes(2)),
            start("t4", write("a", large)), op(write("a", 1, brief), fails(.timedOut)), line(.cancel("t4")), join("t4", fails(.cancelled)),
        ]),
        AsyncScenario("async/misuse/empty-read", checks: "A read into an empty buffer is refused with invalidArgument, not reported as end of stream.", [
            pair, op(.readEmpty("a"), fails(.invalidArgument(""))), op(write("b", 1)), op(read("a"), bytes(1)),
        ]),
    ]

    static let shutdown: [AsyncScenario] = [
        AsyncScenario("async/shutdown/pending", checks: "Shutdown ends every pending read, write, sleep, readable and connect (one address or several) with shutdown; later operations fail with shutdown and leave the caller's descriptors open.", [
            pair, line(.socketPair("c", "d")), line(.callerPair("x", "y")),
            start("t1", read("a")), start("t2", write("c", large)), start("t3", .sleep(.seconds(3600))),
            start("t4", .readable("x", timeout: nil)), start("t5", read("b")),
            line(.fullListener("l")), start("t6", .connect(as: "e", to: .fullListener("l"), timeout: nil)),
            start("t7", .connectFirst(as: "f", to: [.fullListener("l"), .fullListener("l")], attemptDelay: .milliseconds(10), timeout: nil)),
            line(.shutdownLoop),
            join("t1", fails(.shutdown)), join("t2", fails(.shutdown)), join("t3", fails(.shutdown)),
            join("t4", fails(.shutdown)), join("t5", fails(.shutdown)), join("t6", fails(.shutdown)), join("t7", fails(.shutdown)),
            op(read("a"), fails(.shutdown)), op(.sleep(.zero), fails(.shutdown)),
            op(.readable("x", timeout: .zero), fails(.shutdown)),
            line(.adopt("y", as: "c"), fails(.shutdown)), line(.isOpen("y"), open), line(.isOpen("x"), open),
        ]),
    ]

    static let connects: [AsyncScenario] = [
        AsyncScenario("async/connect/success", checks: "A loopback connect completes and the socket writes.", [
            line(.listener("l")), op(.connect(as: "c", to: .listener("l"), timeout: long), .connect("connected")),
            op(write("c", 3)), op(.close("c")),
        ]),
        AsyncScenario("async/connect/refused", checks: "A port with no listener fails as connect(refused).", [
            op(.connect(as: "c", to: .closedPort, timeout: long), .error("connect(refused)")),
        ]),
        AsyncScenario("async/connect/timed-out", checks: "A listener whose accept queue is full never answers: the connect times out at its deadline.", [
            line(.fullListener("l")), op(.connect(as: "c", to: .fullListener("l"), timeout: brief), fails(.timedOut)),
        ]),
        AsyncScenario("async/connect/fallback", checks: "Happy Eyeballs: the first address refuses, the second answers.", [
            line(.listener("l")),
            op(.connectFirst(as: "c", to: [.closedPort, .listener("l")], attemptDelay: .milliseconds(50), timeout: long), .connect("connected")),
            op(write("c", 1)),
        ]),
    ]

    static let accepts: [AsyncScenario] = [
        AsyncScenario("async/accept/busy-and-closed", checks: "Tasks accepting on one listener at once take turns: each connection goes to one of them, in the order they began; the accepted socket carries bytes; closing the listener ends every suspended accept with closed.", [
            line(.listen("l")), start("t1", .accept("l", as: "s", timeout: long)), start("t2", .accept("l", as: "s2", timeout: long)),
            op(.connect(as: "c", to: .loopListener("l"), timeout: long), .connect("connected")), join("t1", .note("accepted")),
            op(.connect(as: "c2", to: .loopListener("l"), timeout: long), .connect("connected")), join("t2", .note("accepted")),
            op(write("c", 3)), op(read("s"), bytes(3)),
            start("t3", .accept("l", as: "s3", timeout: long)), start("t4", .accept("l", as: "s4", timeout: long)), op(.closeListener("l")),
            join("t3", fails(.closed)), join("t4", fails(.closed)),
            op(.accept("l", as: "s5", timeout: .zero), fails(.closed)),
        ]),
        AsyncScenario("async/accept/timed-out", checks: "An accept with nobody connecting times out at its deadline; the listener still accepts after.", [
            line(.listen("l")), op(.accept("l", as: "s", timeout: .milliseconds(20)), fails(.timedOut)),
            op(.connect(as: "c", to: .loopListener("l"), timeout: long), .connect("connected")),
            op(.accept("l", as: "s", timeout: long), .note("accepted")),
        ]),
        AsyncScenario("async/accept/closed-with-queued", checks: "Closing a listener with connections nobody accepted resets them, as the kernel resets its queue: whether they wait in the kernel's queue or were accepted ahead (io_uring's multishot accept, armed by an accept that timed out), each client's read fails with socket(reset), not end of stream.", [
            line(.listen("l")),
            op(.connect(as: "c1", to: .loopListener("l"), timeout: long), .connect("connected")),
            op(.accept("l", as: "none", timeout: .zero), .note("accepted")),
            op(.accept("l", as: "none", timeout: .zero), fails(.timedOut)),
            op(.connect(as: "c2", to: .loopListener("l"), timeout: long), .connect("connected")),
            op(.connect(as: "c3", to: .loopListener("l"), timeout: long), .connect("connected")),
            op(.closeListener("l")),
            op(read("c2"), .error("socket(reset)")), op(read("c3"), .error("socket(reset)")),
            op(read("c1", .zero), fails(.timedOut)),
        ]),
        AsyncScenario("async/accept/closed-with-queued-unix", checks: "The same on a Unix-domain listener, where a reset on close (SO_LINGER 0) does nothing: connections nobody accepted stay in the kernel's queue, which resets them when the listener closes; each client's read fails with socket(reset), not end of stream.", [
            line(.listenUnix("l")),
            op(.connect(as: "c1", to: .loopListener("l"), timeout: long), .connect("connected")),
            op(.accept("l", as: "none", timeout: .zero), .note("accepted")),
            op(.accept("l", as: "none", timeout: .zero), fails(.timedOut)),
            op(.connect(as: "c2", to: .loopListener("l"), timeout: long), .connect("connected")),
            op(.connect(as: "c3", to: .loopListener("l"), timeout: long), .connect("connected")),
            op(.closeListener("l")),
            op(read("c2"), .error("socket(reset)")), op(read("c3"), .error("socket(reset)")),
            op(read("c1", .zero), fails(.timedOut)),
        ]),
        AsyncScenario("async/accept/reset-while-queued", checks: "A connection its client resets before it is accepted is still handed out, as accept(2) does, with or without an accept already waiting (io_uring's multishot accept armed); its read fails with socket(reset), and the listener accepts the next one.", [
            line(.listen("l")),
            op(.connect(as: "c1", to: .loopListener("l"), timeout: long), .connect("connected")), op(.resetClose("c1")),
            op(.accept("l", as: "s1", timeout: long), .note("accepted")), op(read("s1"), .error("socket(reset)")),
            op(.accept("l", as: "none", timeout: .zero), fails(.timedOut)),
            op(.connect(as: "c2", to: .loopListener("l"), timeout: long), .connect("connected")), op(.resetClose("c2")),
            op(.accept("l", as: "s2", timeout: long), .note("accepted")), op(read("s2"), .error("socket(reset)")),
            op(.connect(as: "c3", to: .loopListener("l"), timeout: long), .connect("connected")),
            op(.accept("l", as: "s3", timeout: long), .note("accepted")), op(write("c3", 2)), op(read("s3"), bytes(2)),
        ]),
    ]

    static let sleeps: [AsyncScenario] = [
        AsyncScenario("async/sleep/order", checks: "Sleeps due at (nearly) one deadline end in the order they began.", [
            start("t1", .sleep(.milliseconds(20))), start("t2", .sleep(.milliseconds(20))), start("t3", .sleep(.milliseconds(20))),
            start("t4", .sleep(.milliseconds(20))), start("t5", .sleep(.milliseconds(20))),
            op(.sleep(.milliseconds(60))), line(.finished, .note("t1 t2 t3 t4 t5")),
        ]),
        AsyncScenario("async/sleep/sizes", checks: "Sleeps of every size, from a nanosecond to 20 ms, never end early; a negative one ends at once.", [
            op(.sleepTimed(.zero), .note("slept")), op(.sleepTimed(.nanoseconds(1)), .note("slept")),
            op(.sleepTimed(.microseconds(1)), .note("slept")), op(.sleepTimed(.microseconds(500)), .note("slept")),
            op(.sleepTimed(.milliseconds(1)), .note("slept")), op(.sleepTimed(.milliseconds(20)), .note("slept")),
            op(.sleep(.nanoseconds(-1))),
        ]),
        AsyncScenario("async/sleep/interval", checks: "An interval ticks on its schedule, the first tick at once, none early; ticks missed while its task was busy come at once (burst) or are dropped (skip), the schedule unmoved (tokio's interval and MissedTickBehavior, libuv's repeating timer).", [
            op(.interval(every: .milliseconds(100), ticks: 5, lateBy: .milliseconds(250), missed: .burst), .note("ticks 0 1 2 3 4")),
            op(.interval(every: .milliseconds(100), ticks: 4, lateBy: .milliseconds(250), missed: .skip), .note("ticks 0 1 then the next after the late one")),
        ]),
        AsyncScenario("async/sleep/idle-loop", checks: "A loop whose only work is a 200 ms sleep waits for it in the poller: a few passes, not a spin (a backend whose wait returns at once, or a timer computing a zero timeout, spins the loop thread).", [
            op(.idlePasses(.milliseconds(200)), .note("idle")),
        ]),
        AsyncScenario("async/sleep/added-while-waiting", checks: "A short sleep begun while the loop waits for a long one ends on time (the wait's timeout follows the earliest timer), not when the long one does.", [
            start("t1", .sleep(.seconds(5))), op(.sleepTimed(.milliseconds(20)), .note("slept")),
            start("t2", .sleep(.seconds(4))), op(.sleepTimed(.milliseconds(50)), .note("slept")),
        ]),
    ]

    /// What sits around the loop: serving, signals, graceful shutdown.
    static let serving: [AsyncScenario] = [
        AsyncScenario("async/serve/echo", checks: "serve runs a handler per connection (20 clients in turn, 100,000 bytes each echoed whole); closing the listener ends serve, which returns once its connections' tasks have ended.", [
            line(.listen("l")), op(.serveEcho("l", clients: 20, bytes: 100_000), .note("echoed 20 of 20, serve returned")),
        ]),
        AsyncScenario("async/signals/delivered", checks: "A signal sent to the process reaches the loop's signal sequence (deliveries may coalesce); finish() ends the iteration, and the signal's action is the one it had before (libuv test-signal, tokio signal tests).", [
            op(.signals(count: 3), .note("received, ended, action restored")),
        ]),
        AsyncScenario("async/shutdown/graceful", checks: "A graceful shutdown closes the listeners at once (a waiting accept ends with closed), lets connections go on (a pending read gets the bytes written during the drain), returns as soon as no connection it accepted is left, and then fails what is left with shutdown.", [
            line(.tcpPair(client: "c", server: "s")), line(.listen("l")),
            start("t1", .accept("l", as: "x", timeout: long)), start("t2", read("s")),
            start("g", .shutdownGracefully(.seconds(10))), join("t1", fails(.closed)),
            op(write("c", 3)), join("t2", bytes(3)), op(.close("s")), op(.close("c")),
            join("g", .note("drained")), op(.sleep(.zero), fails(.shutdown)),
        ]),
        AsyncScenario("async/shutdown/graceful-outbound", checks: "A graceful shutdown does not wait for a connection the loop made itself (an idle client of an upstream, its read waiting): it returns at once, and the read fails with shutdown (Go's Server.Shutdown waits for the server's own connections; before, such a connection held the drain for the whole grace period).", [
            line(.listener("u")), op(.connect(as: "c", to: .listener("u"), timeout: long), .connect("connected")),
            start("t1", read("c")), start("g", .shutdownGracefully(.seconds(3))), join("g", .note("drained")),
            join("t1", fails(.shutdown)),
        ]),
        AsyncScenario("async/shutdown/graceful-cut", checks: "A graceful shutdown whose connections do not end within the grace period returns at its end, and the operations still pending fail with shutdown.", [
            line(.tcpPair(client: "c", server: "s")), start("t1", read("s")),
            start("g", .shutdownGracefully(.milliseconds(100))), join("g", .note("grace period ended")),
            join("t1", fails(.shutdown)), op(read("c"), fails(.shutdown)),
        ]),
    ]

    static let adoption: [AsyncScenario] = [
        AsyncScenario("async/adopt/good-and-bad", checks: "adopt takes a stream socket; -1, a number not open and a pipe are refused (socket(invalidArgument), socket(closed)) and stay the caller's, open; so is a descriptor a task waits on with readable (invalidArgument).", [
            line(.callerPair("x", "y")), line(.adopt("x", as: "a")), line(.adopt("y", as: "b")),
            op(write("a", 2)), op(read("b"), bytes(2)),
            line(.adoptNumber(-1), .error("socket(invalidArgument)")), line(.adoptNumber(999_999), .error("socket(closed)")),
            line(.callerPipe(read: "r", write: "w")), line(.adopt("r", as: "p"), .error("socket(invalidArgument)")),
            line(.isOpen("r"), open), line(.isOpen("w"), open),
            line(.callerPair("u", "v")), start("t1", .readable("u", timeout: nil)), line(.adopt("u", as: "q"), fails(.invalidArgument(""))),
            line(.cancel("t1")), join("t1", fails(.cancelled)), line(.isOpen("u"), open), line(.adopt("u", as: "q")),
        ]),
    ]

    static let datagrams: [AsyncScenario] = [
        AsyncScenario("async/datagram/udp-ping-pong", checks: "Datagrams between two UDP sockets bound on 127.0.0.1 arrive whole, one per receive, in order, with their source; a task suspended in receive is woken by a send.", [
            udp, op(send("u", 3, to: "v")), op(receive("v"), datagram(3, from: "u")),
            op(send("v", 2, to: "u")), op(receive("u"), datagram(2, from: "v")),
            op(send("u", 1, to: "v")), op(send("u", 2, to: "v")),
            op(receive("v"), datagram(1, from: "u")), op(receive("v"), datagram(2, from: "u")),
            start("t1", receive("u")), op(send("v", 5, to: "u")), join("t1", datagram(5, from: "v")),
        ]),
        AsyncScenario("async/datagram/unix-ping-pong", checks: "The same over a connected pair of Unix datagram sockets: sends need no destination, the source is the peer's path.", [
            unixPair, op(send("p", 3)), op(receive("q"), datagram(3, from: "p")),
            op(send("q", 2)), op(receive("p"), datagram(2, from: "q")),
            start("t1", receive("p")), op(send("q", 5)), join("t1", datagram(5, from: "q")),
        ]),
        AsyncScenario("async/datagram/peek", checks: "A datagram peek waits for a datagram and describes it as a receive does (its source, its truncation), without taking it: the receive gets it whole.", [
            udp, start("t1", .peekDatagram("v", upTo: 2, timeout: long)), op(send("u", 6, to: "v")),
            join("t1", .note("2 bytes from u, truncated from 6")), op(.peekDatagram("v", upTo: 64, timeout: long), datagram(6, from: "u")),
            op(receive("v"), datagram(6, from: "u")), op(.peekDatagram("v", upTo: 64, timeout: .zero), fails(.timedOut)),
        ]),
        AsyncScenario("async/datagram/timed-out", checks: "A receive with nothing queued times out at its deadline (zero or not); the socket still receives after.", [
            udp, op(receive("v", 64, .zero), fails(.timedOut)), op(receive("v", 64, .milliseconds(20)), fails(.timedOut)),
            op(send("u", 4, to: "v")), op(receive("v"), datagram(4, from: "u")),
        ]),
        AsyncScenario("async/datagram/two-waiters", checks: "Two receivers, or two senders while the peer's queue is full, take turns in the order they began; a third waiting for its turn ends at its deadline: the receivers get the next datagrams in order, the senders send in order once the peer's queue is drained.", [
            udp, start("t1", receive("v")), start("t2", receive("v")), op(receive("v", 64, brief), fails(.timedOut)),
            op(send("u", 1, to: "v")), join("t1", datagram(1, from: "u")), op(send("u", 2, to: "v")), join("t2", datagram(2, from: "u")),
            unixPair, op(.fill("p"), .note("filled")), start("t3", send("p", 7)), start("t4", send("p", 3)), op(send("p", 1, brief), fails(.timedOut)),
            op(.drain("q"), .note("drained")), join("t3", .ok), join("t4", .ok),
            op(receive("q"), datagram(7, from: "p")), op(receive("q"), datagram(3, from: "p")),
        ]),
        AsyncScenario("async/datagram/unconnected-full-receiver", checks: "Nameless, unconnected Unix datagram senders f and s; f fills the receiver's queue (10 datagrams with Linux's default net.unix.max_dgram_qlen), and poll reports s writable all along: s's send times out at its deadline (it waited for ever when readiness woke it every iteration for nothing), and a send of s waiting when the receiver drains the queue goes out though nothing wakes s (the kernel wakes f, whose datagrams were taken) and arrives.", [
            line(.unixDatagramUnconnected(senders: ["f", "s"], receiver: "r")), op(.fillTo("f", to: "r"), .note("filled")),
            op(send("s", 1, to: "r", brief), fails(.timedOut)),
            start("t1", send("s", 7, to: "r")), op(.drain("r"), .note("drained")), join("t1", .ok),
            op(receive("r"), .note("7 bytes")),
        ]),
        AsyncScenario("async/datagram/cancel", checks: "Cancelling a suspended receive or send ends it with cancelled and leaves the socket usable; a cancelled task with a datagram queued still gets it.", [
            udp, start("t1", receive("v")), line(.cancel("t1")), join("t1", fails(.cancelled)),
            op(send("u", 1, to: "v")), op(receive("v"), datagram(1, from: "u")),
            op(send("u", 2, to: "v")), line(.startCancelled("t2", receive("v"))), join("t2", datagram(2, from: "u")),
            line(.startCancelled("t3", receive("v"))), join("t3", fails(.cancelled)),
            unixPair, op(.fill("p"), .note("filled")), start("t4", send("p")), line(.cancel("t4")), join("t4", fails(.cancelled)),
            op(.drain("q"), .note("drained")), op(send("p", 3)), op(receive("q"), datagram(3, from: "p")),
        ]),
        AsyncScenario("async/datagram/close-while-waiting", checks: "A datagram socket closed by another task: a suspended receiver or sender ends with closed, every later operation too; closing twice does nothing.", [
            udp, start("t1", receive("v")), op(.close("v")), join("t1", fails(.closed)),
            op(receive("v"), fails(.closed)), op(send("v", 1, to: "u"), fails(.closed)), op(.close("v")),
            op(send("u", 1, to: "v")),
            unixPair, op(.fill("p"), .note("filled")), start("t2", send("p")), op(.close("p")), join("t2", fails(.closed)),
            op(send("p"), fails(.closed)),
        ]),
        AsyncScenario("async/datagram/shutdown", checks: "Shutdown ends a pending receive and send with shutdown; later operations and new datagram sockets fail with shutdown; the Unix paths are removed.", [
            udp, unixPair, start("t1", receive("v")), op(.fill("p"), .note("filled")), start("t2", send("p")),
            line(.shutdownLoop), join("t1", fails(.shutdown)), join("t2", fails(.shutdown)),
            op(receive("u", 64, .zero), fails(.shutdown)), op(send("u", 1, to: "v"), fails(.shutdown)),
            op(.close("q")), line(.connectDatagram(as: "c", to: .closedUDPPort), fails(.shutdown)),
        ]),
        AsyncScenario("async/datagram/truncated", checks: "A datagram longer than the receive's maximum is truncated and says so with its real length; its rest is dropped, not read as the next datagram; a maximum below 1 is invalidArgument.", [
            udp, op(send("u", 100, to: "v")), op(receive("v", 10), .note("10 bytes from u, truncated from 100")),
            op(send("u", 5, to: "v")), op(receive("v", 64), datagram(5, from: "u")),
            op(receive("v", 0), fails(.invalidArgument(""))),
            unixPair, op(send("p", 100)), op(receive("q", 10), .note("10 bytes from p, truncated from 100")),
        ]),
        AsyncScenario("async/datagram/refused", checks: "A UDP socket connected to a port nobody is bound to: its send succeeds, the refusal comes on a later call as socket(refused), once; the socket stays usable.", [
            line(.connectDatagram(as: "c", to: .closedUDPPort)), op(send("c")), op(receive("c"), .error("socket(refused)")),
            op(receive("c", 64, .zero), fails(.timedOut)),
        ]),
        // On the Unix pair: a Unix datagram is queued before its send returns, so the count a batch
        // finds is the kernel's rule, not timing (loopback UDP may be handed over by ksoftirqd later).
        AsyncScenario("async/datagram/batch", checks: "A batched receive takes every queued datagram, up to its slots, in one call, each with its length; the rest stay queued.", [
            unixPair, op(send("p", 1)), op(send("p", 2)), op(send("p", 3)),
            op(.receiveBatch("q", slots: 8, timeout: long), .note("3 datagrams: 1 2 3 bytes")),
            op(receive("q", 64, .zero), fails(.timedOut)),
            op(send("p", 4)), op(send("p", 5)), op(send("p", 6)),
            op(.receiveBatch("q", slots: 2, timeout: long), .note("2 datagrams: 4 5 bytes")), op(receive("q"), datagram(6, from: "p")),
            start("t1", .receiveBatch("q", slots: 8, timeout: long)), op(send("p", 7)), join("t1", .note("1 datagrams: 7 bytes")),
        ]),
        AsyncScenario("async/datagram/empty", checks: "An empty datagram is received as 0 bytes (not an end of stream), alone in a batch too, and the next datagram follows.", [
            udp, op(send("u", 0, to: "v")), op(receive("v"), datagram(0, from: "u")),
            op(send("u", 0, to: "v")), op(.receiveBatch("v", slots: 4, timeout: long), .note("1 datagrams: 0 bytes")),
            op(send("u", 1, to: "v")), op(receive("v"), datagram(1, from: "u")),
            unixPair, op(send("p", 0)), op(receive("q"), datagram(0, from: "p")),
        ]),
        AsyncScenario("async/datagram/try-until-full", checks: "tokio's try loop on a Unix datagram pair: writable before every trySend holds until the peer's queue is full, readable before every tryReceive drains it, and the next trySend is sent.", [
            unixPair, op(.tryFill("p"), .note("filled")), op(.tryDrain("q"), .note("drained")),
            op(.trySend("p", bytes: 2, to: nil), .note("sent")), op(receive("q"), datagram(2, from: "p")),
        ]),
        AsyncScenario("async/datagram/try-and-ready", checks: "tryReceive and trySend never wait (nothing queued, no room in a full peer's queue: they say so); a datagram socket's readable waits for a datagram without taking it; a tryReceive while another task's receive waits is busy, that receive still getting the datagram.", [
            udp, op(.tryReceive("v", upTo: 64), .note("nothing queued")), op(.ready("v", reading: true, timeout: .zero), fails(.timedOut)),
            start("t1", .ready("v", reading: true, timeout: long)), op(.trySend("u", bytes: 3, to: "v"), .note("sent")), join("t1", .ok),
            op(.tryReceive("v", upTo: 64), datagram(3, from: "u")), op(.tryReceive("v", upTo: 64), .note("nothing queued")),
            op(.ready("u", reading: false, timeout: .zero)),
            start("t2", receive("v")), op(.tryReceive("v", upTo: 64), fails(.busy)), op(.trySend("u", bytes: 1, to: "v"), .note("sent")),
            join("t2", datagram(1, from: "u")),
            unixPair, op(.fill("p"), .note("filled")), op(.trySend("p", bytes: 1, to: nil), .note("no room")),
            op(.drain("q"), .note("drained")), op(.trySend("p", bytes: 2, to: nil), .note("sent")), op(receive("q"), datagram(2, from: "p")),
        ]),
    ]
}
