import Readiness

/// One async operation of a script: run by the script itself (``AsyncStep/run(_:)``, the script waits
/// for its outcome) or in a task of its own (``AsyncStep/start(_:_:)``). Socket names are loop-owned
/// sockets (``AsyncStep/socketPair(_:_:)``, ``AsyncStep/tcpPair(_:_:)``, a successful connect or adopt);
/// `readable`/`writable` name caller-owned descriptors (``AsyncStep/callerPair(_:_:)``); the datagram
/// operations name loop-owned datagram sockets (``AsyncStep/udpPair(_:_:)``,
/// ``AsyncStep/unixDatagramPair(_:_:)``, ``AsyncStep/connectDatagram(as:to:)``).
public enum AsyncOperation: Sendable, Hashable, CustomStringConvertible {
    /// One read of up to `upTo` bytes: "n bytes", "end of stream" or an error.
    case read(String, upTo: Int, timeout: Duration?)
    /// Reads until `bytes` bytes came (or the stream ended): "n bytes" or an error.
    case readAll(String, bytes: Int, timeout: Duration?)
    /// Peeks at up to `upTo` bytes without taking them (`AsyncSocket.peek`): "n bytes", "end of
    /// stream" or an error.
    case peek(String, upTo: Int, timeout: Duration?)
    /// Writes `bytes` bytes (every one, waiting for room as often as needed).
    case write(String, bytes: Int, timeout: Duration?)
    /// `shutdown(.write)`: the peer reads end of stream.
    case shutdownWrite(String)
    /// Closes the socket (once; a suspended task resumes with `.closed`).
    case close(String)
    /// Closes with SO_LINGER 0 through `withStreamSocket`: a TCP peer gets a reset.
    case resetClose(String)
    /// Closes the socket's descriptor behind the loop's back, inside `withStreamSocket`.
    case closeInside(String)
    /// `loop.sleep(for:)`.
    case sleep(Duration)
    /// `loop.sleep(for:)`, recorded as "slept" when it did not return before `duration` nor more than a
    /// second after it, else "early" or "late".
    case sleepTimed(Duration)
    /// `loop.interval(every:missedTicks:)`: one tick, a sleep of `lateBy` (the ticks meanwhile are
    /// missed), then `ticks - 1` more (1...64, a period up to 10 s); recorded as "ticks" and each tick's
    /// place in the schedule (its due instant's distance from the first, in periods), or "early" when a
    /// tick returned before it was due. Skipping, the late tick's place is followed by "then the next
    /// after the late one" when the tick after it is the first of the schedule after it was taken (a
    /// property, not a place: it holds whatever the machine delayed).
    case interval(every: Duration, ticks: Int, lateBy: Duration, missed: MissedTicks)
    /// `loop.readable(_:timeout:)` on a caller-owned descriptor.
    case readable(String, timeout: Duration?)
    /// `loop.writable(_:timeout:)` on a caller-owned descriptor.
    case writable(String, timeout: Duration?)
    /// Connects to one address (kept as socket `as` on success): "connected" or an error.
    case connect(as: String, to: AsyncTarget, timeout: Duration?)
    /// Connects to the first address of a list that answers (Happy Eyeballs steps, `attemptDelay` apart).
    case connectFirst(as: String, to: [AsyncTarget], attemptDelay: Duration, timeout: Duration?)
    /// `read(into:)` with an empty buffer (refused: `.invalidArgument`).
    case readEmpty(String)
    /// Accepts one connection on a loop listener (``AsyncStep/listen(_:)``), kept as socket `as`:
    /// "accepted" or an error.
    case accept(String, as: String, timeout: Duration?)
    /// Closes a loop listener (a task suspended in accept resumes with `.closed`).
    case closeListener(String)
    /// Sends one datagram of `bytes` bytes to the datagram socket named `to` (nil: the connected peer).
    case send(String, bytes: Int, to: String?, timeout: Duration?)
    /// Receives one datagram, at most `upTo` bytes of it: "n bytes", then "from s" naming its source when
    /// it is a socket of the script, then "truncated from m" when it was longer; or an error.
    case receive(String, upTo: Int, timeout: Duration?)
    /// Peeks at the next datagram, at most `upTo` bytes of it, without taking it
    /// (`AsyncDatagramSocket.peek`): described as ``receive(_:upTo:timeout:)`` is.
    case peekDatagram(String, upTo: Int, timeout: Duration?)
    /// Receives the queued datagrams into a `DatagramBatch` of `slots` slots in one call:
    /// "k datagrams: n1 n2 ... bytes".
    case receiveBatch(String, slots: Int, timeout: Duration?)
    /// Sends datagrams with a zero deadline until one times out (the peer's queue or the send buffer is
    /// full): "filled", or an error.
    case fill(String)
    /// `fill` to the datagram socket named `to` (a socket that is not connected to it).
    case fillTo(String, to: String)
    /// Receives with a zero deadline until one times out: "drained" (at least one datagram taken) or
    /// "nothing queued", or an error.
    case drain(String)
    /// `loop.signals([.user2])`, then SIGUSR2 sent to the process `count` times: "received" once the
    /// sequence gave it (deliveries may coalesce), then "ended" when iterating after `finish()` returns
    /// nil (after the deliveries not returned yet, however many the kernel made of the rest), then
    /// "action restored" when SIGUSR2's action is the one it had before.
    case signals(count: Int)
    /// `serve` on a loop listener with an echo handler; `clients` connects in turn each write `bytes`
    /// bytes, shut down and read them back; then the listener is closed: "echoed k of n", then how
    /// `serve` ended ("returned" or an error).
    case serveEcho(String, clients: Int, bytes: Int)
    /// `readable()` (`reading`) or `writable()` of a loop socket, stream or datagram: "ok" once a read
    /// (a receive) or a write (a send) would not block, or an error.
    case ready(String, reading: Bool, timeout: Duration?)
    /// `AsyncSocket.tryRead(upTo:)`: "n bytes", "end of stream", "nothing queued" or an error.
    case tryRead(String, upTo: Int)
    /// `AsyncSocket.tryWrite` of `bytes` bytes: "n bytes" (0: no room) or an error.
    case tryWrite(String, bytes: Int)
    /// `AsyncDatagramSocket.tryReceive(into:)` with a buffer of `upTo` bytes: described as
    /// ``receive(_:upTo:timeout:)`` is, "nothing queued", or an error.
    case tryReceive(String, upTo: Int)
    /// `AsyncDatagramSocket.trySend` of one `bytes`-byte datagram to the socket named `to` (nil: the
    /// connected peer): "sent", "no room" or an error.
    case trySend(String, bytes: Int, to: String?)
    /// tokio's try loop: `writable()` (a deadline of 5 s) before every `tryWrite` (`trySend` of a small
    /// datagram for a datagram socket) until one would block: "filled", or an error (`writable` must
    /// hold as long as tries succeed).
    case tryFill(String)
    /// `readable(timeout: .zero)` before every `tryRead` (`tryReceive`) until it times out (what a
    /// socketpair's peer wrote is queued already): "drained" (something taken), "nothing queued",
    /// "end of stream", or an error.
    case tryDrain(String)
    /// `loop.shutdown(gracePeriod:)`: "drained" when it returned before the grace period ended (no
    /// accepted or adopted connection was left), "grace period ended" otherwise.
    case shutdownGracefully(Duration)
    /// A sleep of `duration` on an otherwise idle loop, counting the loop's poller passes meanwhile
    /// (`statistics()`): "idle" when they were few (at most 20), else how many (a loop, or a backend
    /// whose waits return at once, spinning).
    case idlePasses(Duration)

    /// The operation in words.
    public var description: String {
        func within(_ timeout: Duration?) -> String { timeout.map { " within \($0)" } ?? "" }
        switch self {
        case .read(let s, let n, let t): return "read up to \(n) from \(s)\(within(t))"
        case .readAll(let s, let n, let t): return "read \(n) bytes from \(s)\(within(t))"
        case .write(let s, let n, let t): return "write \(n) bytes to \(s)\(within(t))"
        case .shutdownWrite(let s): return "shutdown(.write) \(s)"
        case .close(let s): return "close \(s)"
        case .resetClose(let s): return "close \(s) with SO_LINGER 0"
        case .closeInside(let s): return "close \(s)'s descriptor inside withStreamSocket"
        case .sleep(let d): return "sleep \(d)"
        case .sleepTimed(let d): return "sleep \(d) (timed)"
        case .interval(let period, let ticks, let late, let missed): return "\(ticks) ticks of an interval of \(period) (\(missed)), \(late) late after the first"
        case .readable(let c, let t): return "readable(\(c))\(within(t))"
        case .writable(let c, let t): return "writable(\(c))\(within(t))"
        case .connect(let s, let target, let t): return "connect \(s) to \(target)\(within(t))"
        case .connectFirst(let s, let targets, let delay, let t):
            return "connect \(s) to the first of \(targets.map(\.description).joined(separator: ", ")) (\(delay) apart)\(within(t))"
        case .readEmpty(let s): return "read \(s) into an empty buffer"
        case .accept(let l, let s, let t): return "accept \(s) on \(l)\(within(t))"
        case .closeListener(let l): return "close listener \(l)"
        case .send(let s, let n, let to, let t): return "send a \(n)-byte datagram from \(s)\(to.map { " to \($0)" } ?? "")\(within(t))"
        case .receive(let s, let n, let t): return "receive a datagram of up to \(n) bytes on \(s)\(within(t))"
        case .peek(let s, let n, let t): return "peek at up to \(n) bytes of \(s)\(within(t))"
        case .peekDatagram(let s, let n, let t): return "peek at a datagram of up to \(n) bytes on \(s)\(within(t))"
        case .receiveBatch(let s, let n, let t): return "receive a batch of up to \(n) datagrams on \(s)\(within(t))"
        case .fill(let s): return "send from \(s) until the peer's queue is full"
        case .fillTo(let s, let to): return "send from \(s) to \(to) until its queue is full"
        case .drain(let s): return "receive on \(s) until nothing is queued"
        case .signals(let n): return "watch SIGUSR2 and send it \(n) times"
        case .serveEcho(let l, let n, let b): return "serve \(l) with an echo handler for \(n) clients of \(b) bytes, then close it"
        case .ready(let s, let reading, let t): return "\(reading ? "readable" : "writable")(\(s))\(within(t))"
        case .tryFill(let s): return "writable then try to write (send) on \(s) until it would block"
        case .tryDrain(let s): return "readable then try to read (receive) on \(s) until nothing is queued"
        case .tryRead(let s, let n): return "try to read up to \(n) from \(s)"
        case .tryWrite(let s, let n): return "try to write \(n) bytes to \(s)"
        case .tryReceive(let s, let n): return "try to receive a datagram of up to \(n) bytes on \(s)"
        case .trySend(let s, let n, let to): return "try to send a \(n)-byte datagram from \(s)\(to.map { " to \($0)" } ?? "")"
        case .shutdownGracefully(let grace): return "shut the loop down with a grace period of \(grace)"
        case .idlePasses(let d): return "sleep \(d) on an idle loop, counting its poller passes"
        }
    }
}

/// Where an async connect goes.
public enum AsyncTarget: Sendable, Hashable, CustomStringConvertible {
    /// A listener made by ``AsyncStep/listener(_:)``.
    case listener(String)
    /// A listener made by ``AsyncStep/fullListener(_:)``: its accept queue is full, connects hang.
    case fullListener(String)
    /// A loopback port nobody listens on.
    case closedPort
    /// A listener the loop owns (``AsyncStep/listen(_:)``).
    case loopListener(String)
    /// A loopback UDP port no socket is bound to.
    case closedUDPPort

    /// The target in words.
    public var description: String {
        switch self {
        case .listener(let name): "listener \(name)"
        case .fullListener(let name): "full listener \(name)"
        case .closedPort: "a closed port"
        case .loopListener(let name): "loop listener \(name)"
        case .closedUDPPort: "a closed UDP port"
        }
    }
}

/// One step of an async scenario's script.
public enum AsyncStep: Sendable, Hashable, CustomStringConvertible {
    /// A socketpair whose two ends the loop adopts (sockets `a` and `b`).
    case socketPair(String, String)
    /// A loopback TCP connection made on the loop (listen, connect, accept; the listener closed after).
    case tcpPair(client: String, server: String)
    /// A socketpair the caller keeps (descriptors for `readable`, `writable` and `adopt`).
    case callerPair(String, String)
    /// A pipe the caller keeps.
    case callerPipe(read: String, write: String)
    /// A loopback TCP listener the loop owns (`loop.listen(on:)`).
    case listen(String)
    /// A Unix-domain stream listener the loop owns, on a fresh path (removed after the scenario).
    case listenUnix(String)
    /// A caller's loopback TCP listener that never accepts.
    case listener(String)
    /// A caller's loopback TCP listener whose accept queue is full.
    case fullListener(String)
    /// Runs an operation and records its outcome.
    case run(AsyncOperation)
    /// Starts an operation in a new task (preferring the loop) named `task`; it runs until it suspends.
    case start(String, AsyncOperation)
    /// Starts an operation in a task that is cancelled before it first runs.
    case startCancelled(String, AsyncOperation)
    /// Cancels a task.
    case cancel(String)
    /// Waits for a task and records its operation's outcome.
    case await(String)
    /// Records the tasks finished since the last such step, in the order they finished.
    case finished
    /// `loop.shutdown()`.
    case shutdownLoop
    /// `loop.adopt(descriptor:)` of a caller's descriptor, kept as socket `as` on success (the caller's
    /// on failure).
    case adopt(String, as: String)
    /// `loop.adopt(descriptor:)` of a raw number.
    case adoptNumber(CInt)
    /// Whether a caller's descriptor is still open, the same file as when it was made: "open" or "closed".
    case isOpen(String)
    /// The caller writes `bytes` bytes to its descriptor.
    case callerWrite(String, bytes: Int)
    /// The caller closes its descriptor.
    case callerClose(String)
    /// Two UDP sockets the loop binds on 127.0.0.1 (ports chosen by the kernel), not connected: a send
    /// names its destination.
    case udpPair(String, String)
    /// Two Unix datagram sockets the loop binds on paths of their own, each connected to the other (a
    /// datagram socketpair's shape, with names): sends need no destination, and a sender waits while
    /// its peer's queue is full.
    case unixDatagramPair(String, String)
    /// A Unix datagram socket the loop binds on a path of its own (`receiver`), and nameless ones that
    /// are not connected (`senders`, adopted): their sends name their destination, and poll reports
    /// them writable though the receiver's queue is full (the kernel checks that queue only for a
    /// connected sender, and wakes only a sender whose own datagrams the receiver takes).
    case unixDatagramUnconnected(senders: [String], receiver: String)
    /// A UDP socket the loop connects to a target (`loop.connectDatagram(to:)`), kept as `as`.
    case connectDatagram(as: String, to: AsyncTarget)

    /// The step in words.
    public var description: String {
        switch self {
        case .socketPair(let a, let b): "socketpair \(a)/\(b), both adopted"
        case .tcpPair(let c, let s): "TCP connection \(c) -> \(s) on the loop"
        case .callerPair(let a, let b): "caller's socketpair \(a)/\(b)"
        case .callerPipe(let r, let w): "caller's pipe \(r)/\(w)"
        case .listen(let name): "listen \(name) on the loop"
        case .listenUnix(let name): "listen \(name) on the loop, on a Unix path"
        case .listener(let name): "caller's listener \(name)"
        case .fullListener(let name): "caller's listener \(name) with a full accept queue"
        case .run(let operation): "\(operation)"
        case .start(let task, let operation): "\(task): start \(operation)"
        case .startCancelled(let task, let operation): "\(task): start, cancelled at once, \(operation)"
        case .cancel(let task): "cancel \(task)"
        case .await(let task): "await \(task)"
        case .finished: "tasks finished so far, in order"
        case .shutdownLoop: "shut the loop down"
        case .adopt(let c, let s): "adopt \(c) as \(s)"
        case .adoptNumber(let n): "adopt descriptor \(n)"
        case .isOpen(let c): "is \(c) open"
        case .callerWrite(let c, let n): "caller writes \(n) bytes to \(c)"
        case .callerClose(let c): "caller closes \(c)"
        case .udpPair(let a, let b): "UDP sockets \(a) and \(b) bound on the loop"
        case .unixDatagramPair(let a, let b): "Unix datagram sockets \(a) and \(b) bound and connected to each other on the loop"
        case .unixDatagramUnconnected(let s, let r): "Unix datagram socket \(r) bound on the loop, \(s.joined(separator: " and ")) nameless and not connected"
        case .connectDatagram(let s, let target): "connect UDP socket \(s) to \(target)"
        }
    }
}

/// A step and the outcome every backend must give.
public struct AsyncLine: Sendable, Hashable {
    /// The step.
    public let step: AsyncStep
    /// What it must observe (``Observation/anyOf(_:)`` for several allowed outcomes).
    public let expect: Observation
    /// A step and its outcome.
    public init(_ step: AsyncStep, _ expect: Observation = .ok) {
        self.step = step
        self.expect = expect
    }
}

/// One async scenario: a script of operations on an ``EventLoop``, an outcome per step, and at the end
/// descriptor accounting (nothing leaked after the loop's shutdown, every caller's descriptor intact).
public struct AsyncScenario: Sendable, Identifiable, CustomStringConvertible {
    /// "async/area/name".
    public let id: String
    /// What the scenario checks, in one sentence.
    public let checks: String
    /// The script.
    public let script: [AsyncLine]
    /// Capabilities it needs (a backend without one skips it, with the reason).
    public let requirements: [Requirement]

    /// A scenario.
    public init(_ id: String, checks: String, requires: [Requirement] = [], _ script: [AsyncLine]) {
        self.id = id
        self.checks = checks
        self.script = script
        requirements = requires
    }

    /// The id.
    public var description: String { id }
}

extension LoopError {
    /// The case name, without descriptor numbers or texts: what async conformance compares
    /// ("timedOut", "socket(reset)", "connect(refused)", "poller(badDescriptor)").
    public var caseName: String {
        switch self {
        case .cancelled: "cancelled"
        case .timedOut: "timedOut"
        case .closed: "closed"
        case .busy: "busy"
        case .shutdown: "shutdown"
        case .socket(let error): "socket(\(error.kind.rawValue))"
        case .connect(let error): "connect(\(error.cause.rawValue))"
        case .resolution: "resolution"
        case .poller(let error): "poller(\(error.caseName))"
        case .invalidArgument: "invalidArgument"
        case .resourceExhausted: "resourceExhausted"
        }
    }
}
