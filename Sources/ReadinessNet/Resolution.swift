#if canImport(Glibc)
import Glibc
#endif

/// Why a name did not resolve.
public struct ResolutionError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of failure, for a caller that decides what to do next (retry, report, back off).
    public enum Kind: Sendable, Hashable {
        /// The name has no address of that family (EAI_NONAME, EAI_NODATA, an empty answer).
        case notFound
        /// The name server could not answer now (EAI_AGAIN): asking again later may succeed.
        case temporary
        /// Out of descriptors or memory (EAI_MEMORY; EAI_SYSTEM with EMFILE, ENFILE, ENOBUFS or
        /// ENOMEM in ``errno``): nothing wrong with the name; retry once something is released.
        case resourceExhausted
        /// Refused without a lookup: not a valid name (empty, a NUL byte, a `:`, whitespace...).
        case invalidName
        /// Anything else (EAI_FAIL, a resolver of the caller's that said nothing more).
        case other
    }

    /// The name that was looked up.
    public var host: String
    /// getaddrinfo's text (gai_strerror, with the errno's name for EAI_SYSTEM), "no address", or why the
    /// name was refused without a lookup.
    public var reason: String
    /// What kind of failure (``Kind/other`` unless the resolver said).
    public var kind: Kind
    /// The errno behind an EAI_SYSTEM failure (EMFILE when the process is out of descriptors); nil
    /// otherwise.
    public var errno: CInt?

    /// An error for `host`, with the resolver's text, of kind ``Kind/other``.
    public init(host: String, reason: String) {
        self.init(host: host, reason: reason, kind: .other)
    }

    /// An error for `host` of a given kind (a resolver of the caller's says which).
    public init(host: String, reason: String, kind: Kind, errno: CInt? = nil) {
        self.host = host
        self.reason = reason
        self.kind = kind
        self.errno = errno
    }

    /// glibc's EAI_NODATA and EAI_ADDRFAMILY (behind _GNU_SOURCE, so Glibc does not export them).
    private static let noData: CInt = -5
    private static let noAddressInFamily: CInt = -9

    /// getaddrinfo's failure `status` (with `errno` as it was, for EAI_SYSTEM), classified: libuv's
    /// `uv__getaddrinfo_translate_error` keeps the same apart.
    public init(host: String, gaiStatus status: CInt, errno code: CInt) {
        let text = String(cString: gai_strerror(status))
        switch status {
        case EAI_NONAME, Self.noData, Self.noAddressInFamily:
            self.init(host: host, reason: text, kind: .notFound)
        case EAI_AGAIN:
            self.init(host: host, reason: text, kind: .temporary)
        case EAI_MEMORY:
            self.init(host: host, reason: text, kind: .resourceExhausted)
        case EAI_SYSTEM:
            let exhausted = ErrnoTable.category(of: code) == .resourceExhausted
            self.init(host: host, reason: "\(text): \(ErrnoTable.name(code)) (\(ErrnoTable.message(code)))",
                      kind: exhausted ? .resourceExhausted : .other, errno: code)
        default:
            self.init(host: host, reason: text, kind: .other)
        }
    }
    /// A one-line text for logs.
    public var description: String { "cannot resolve \(host): \(reason)" }
}

/// Looks up one address family of a name. Called on a lookup-pool thread; may block.
public protocol HostResolver: Sendable {
    /// The addresses of `host` in one family (`.ipv6`: AAAA, `.ipv4`: A), with `port`.
    func lookup(host: String, port: UInt16, family: SocketAddress.Family) -> Result<[SocketAddress], ResolutionError>
}

/// getaddrinfo(3), one family per call (AF_INET6 for AAAA, AF_INET for A), SOCK_STREAM; `localhost`,
/// `localhost.` and `*.localhost` are answered here (RFC 6761 section 6.3).
public struct SystemResolver: HostResolver {
    /// The system resolver.
    public init() {}
    /// getaddrinfo for one family, SOCK_STREAM, duplicates removed. A name containing a NUL byte fails
    /// (C would see only the part before it). `localhost`, `localhost.` and any `*.localhost` name (ASCII
    /// case-insensitive) never reach getaddrinfo, so never a name server: `[::1]:port` for `.ipv6`,
    /// `127.0.0.1:port` for `.ipv4`.
    public func lookup(host: String, port: UInt16, family: SocketAddress.Family) -> Result<[SocketAddress], ResolutionError> {
        guard !host.utf8.contains(0) else { return .failure(ResolutionError(host: host, reason: SocketAddress.nulInName, kind: .invalidName)) }
        if SocketAddress.isLocalhostName(host) { return .success([SocketAddress.loopback(family, port: port)]) }
        var hints = addrinfo()
        hints.ai_family = family == .ipv6 ? AF_INET6 : AF_INET
        hints.ai_socktype = CInt(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &list)
        let code = Glibc.errno
        guard status == 0, let list else {
            return .failure(status == 0 ? ResolutionError(host: host, reason: "no address", kind: .notFound)
                                        : ResolutionError(host: host, gaiStatus: status, errno: code))
        }
        defer { freeaddrinfo(list) }
        var out: [SocketAddress] = []
        var seen = Set<SocketAddress>()   // duplicates dropped in linear time, however long the answer
        var node: UnsafeMutablePointer<addrinfo>? = list
        while let current = node {
            if let address = current.pointee.ai_addr,
               let parsed = SocketAddress(address, length: current.pointee.ai_addrlen), seen.insert(parsed).inserted {
                out.append(parsed)
            }
            node = current.pointee.ai_next
        }
        return out.isEmpty ? .failure(ResolutionError(host: host, reason: "no address", kind: .notFound)) : .success(out)
    }
}

/// A name lookup running off the loop thread: the AAAA (IPv6) and A (IPv4) queries run separately, as
/// two jobs of the process-wide lookup pool, and each answer wakes the loop's poller
/// (``/ReadinessCore/Waker``). The loop collects answers with ``takeAnswers()`` when it sees the wake-up
/// event; nothing blocks the loop.
///
/// The pool has at most ``maximumLookupThreads`` threads in the whole process, started when a job finds
/// none idle; they then stay, idle on a condition variable, for the life of the process. Jobs wait
/// their turn in one FIFO queue, so thousands of resolutions never mean thousands of threads (or of
/// resolver sockets). A lookup that hangs holds its thread until the system resolver gives up
/// (resolv.conf timeouts) and delays the jobs queued behind it.
///
/// A process that forks: the child starts with an empty pool of its own (`pthread_atfork`), so its
/// lookups run there as in the parent.
///
/// A numeric address or a `unix:` path is answered at once, without a job, and so is `localhost` (or a
/// `*.localhost` name) given to the ``SystemResolver`` (RFC 6761: it never waits behind other lookups);
/// so is a host that is not a
/// valid name (empty, with a NUL byte, a `:`, whitespace or a control character, longer than 253 bytes,
/// or ending in a number without being `A.B.C.D`): a failure saying why.
///
/// ``cancel()`` (``HappyEyeballs`` calls it when it ends) drops the answers still to come: a job of this
/// resolution still queued is dropped without calling the resolver; one already running cannot be
/// interrupted (getaddrinfo has no cancel), and its answer is discarded when it ends. Once ``cancel()``
/// returns no pool thread touches the waker: a caller may close the poller at once.
public final class Resolution: @unchecked Sendable {
    /// One family's answer.
    public struct Answer: Sendable {
        /// Which query answered (`.ipv6` for AAAA, `.ipv4` for A).
        public let family: SocketAddress.Family
        /// Its addresses, or why there are none.
        public let result: Result<[SocketAddress], ResolutionError>
    }

    /// The most lookups running at once in this process: the number of lookup-pool threads. libuv's
    /// pool has 4 threads for every kind of blocking work; these run only name lookups, and a name
    /// server that does not answer holds a thread for seconds, so there are more of them.
    public static let maximumLookupThreads = 16

    /// The name being resolved.
    public let host: String
    /// The port every address gets.
    public let port: UInt16
    private struct State {
        var answers: [Answer] = []
        var outstanding = 0
        var cancelled = false
    }
    /// Guarded by `lock` (a pthread mutex: visible to ThreadSanitizer, and held while a pool thread
    /// wakes the poller, so that ``cancel()`` returning means no thread will touch the waker again).
    private var state: State
    private let lock = PThreadMutex()

    /// Starts resolving `host` (a name, or a numeric IPv4 or IPv6 address, which is answered at once and
    /// never looked up) for `port`; `waker` is woken once per answer coming from the pool. A host that is
    /// not a valid name is answered at once with a failure, without a lookup (a NUL byte: "the name
    /// contains a NUL byte").
    public convenience init(host: String, port: UInt16, waker: Waker, resolver: any HostResolver = SystemResolver()) {
        self.init(host: host, port: port, signal: .waker(waker), resolver: resolver)
    }

    /// Starts resolving as ``init(host:port:waker:resolver:)`` does, calling `notify` (on a lookup
    /// thread, never after ``cancel()`` has returned) once per answer coming from the pool instead of
    /// waking a poller: for a loop that takes answers on a token of their own.
    package convenience init(host: String, port: UInt16, resolver: any HostResolver = SystemResolver(),
                             notify: @escaping @Sendable () -> Void) {
        self.init(host: host, port: port, signal: .notify(notify), resolver: resolver)
    }

    /// How the pool tells the loop that an answer is in.
    fileprivate enum Signal: Sendable {
        /// Wakes the poller: the answer is taken on the wake-up event.
        case waker(Waker)
        /// Calls the loop's hook.
        case notify(@Sendable () -> Void)

        func send() {
            switch self {
            // The poller may be closed by now: its waker then refuses (never writes a reused descriptor).
            case .waker(let waker): try? waker.wake()
            case .notify(let notify): notify()
            }
        }
    }

    private init(host: String, port: UInt16, signal: Signal, resolver: any HostResolver) {
        self.host = host
        self.port = port
        // An IPv6 literal in brackets ("[::1]", as in a URL's host) is the literal.
        let literal = host.hasPrefix("[") && host.hasSuffix("]") && host.utf8.count > 2 ? String(host.dropFirst().dropLast()) : host
        if let numeric = try? SocketAddress(ip: literal, port: port), literal == host || numeric.family == .ipv6 {
            var answers = [Answer(family: numeric.family, result: .success([numeric]))]
            // `::` is also tried as 0.0.0.0 (see `unspecifiedIPv4`): Happy Eyeballs moves on to it when
            // the IPv6 attempt fails.
            if let fallback = numeric.unspecifiedIPv4 { answers.append(Answer(family: .ipv4, result: .success([fallback]))) }
            state = State(answers: answers)
            return
        }
        if let problem = SocketAddress.nameProblem(host) {
            state = State(answers: [Answer(family: .ipv6, result: .failure(ResolutionError(host: host, reason: problem, kind: .invalidName)))])
            return
        }
        if resolver is SystemResolver, SocketAddress.isLocalhostName(host) {
            // What SystemResolver would answer, without a place in the pool's queue.
            state = State(answers: [SocketAddress.Family.ipv6, .ipv4].map {
                Answer(family: $0, result: .success([SocketAddress.loopback($0, port: port)]))
            })
            return
        }
        state = State(outstanding: 2)
        for family in [SocketAddress.Family.ipv6, .ipv4] {
            LookupPool.shared.submit(Job(resolution: self, family: family, signal: signal, resolver: resolver))
        }
    }

    /// Answers for `HOST:PORT`, `[IPv6]:PORT` or `unix:PATH`, parsed as ``SocketAddress/splitHostPort(_:)``
    /// and ``SocketAddress/init(_:)`` parse them.
    public convenience init(_ text: String, waker: Waker, resolver: any HostResolver = SystemResolver()) throws(SocketAddress.ParseError) {
        if SocketAddress.unixPathText(text) != nil {
            let address = try SocketAddress(text)
            self.init(immediate: address, host: text)
            return
        }
        let (host, port) = try SocketAddress.splitHostPort(text)
        self.init(host: host, port: port, waker: waker, resolver: resolver)
    }

    private init(immediate address: SocketAddress, host: String) {
        self.host = host
        port = 0
        state = State(answers: [Answer(family: address.family, result: .success([address]))])
    }

    /// The answers that arrived since the last call (each is returned once).
    public func takeAnswers() -> [Answer] {
        lock.withLock {
            let out = state.answers
            state.answers.removeAll()
            return out
        }
    }

    /// Whether every query has answered (or the resolution was cancelled) and every answer has been
    /// taken: nothing more will come.
    public var isComplete: Bool {
        lock.withLock { (state.outstanding == 0 || state.cancelled) && state.answers.isEmpty }
    }

    /// Drops the answers still to come: queued lookups of this resolution never run, a running one's
    /// answer is discarded, and no pool thread wakes the poller after this returns.
    public func cancel() {
        lock.withLock {
            state.cancelled = true
            state.answers.removeAll()
        }
    }

    /// Called on a pool thread before the lookup: false (the job is over) once cancelled.
    fileprivate func beginLookup() -> Bool {
        lock.withLock {
            guard state.cancelled else { return true }
            state.outstanding -= 1
            return false
        }
    }

    /// Called on a pool thread: stores the answer and wakes the loop, unless cancelled.
    fileprivate func deliver(_ answer: Answer, signal: Signal) {
        lock.withLock {
            state.outstanding -= 1
            guard !state.cancelled else { return }
            state.answers.append(answer)
            signal.send()
        }
    }

    /// One family's query, queued in the lookup pool.
    fileprivate struct Job: Sendable {
        let resolution: Resolution
        let family: SocketAddress.Family
        let signal: Signal
        let resolver: any HostResolver

        func run() {
            guard resolution.beginLookup() else { return }
            let result = resolver.lookup(host: resolution.host, port: resolution.port, family: family)
            resolution.deliver(Answer(family: family, result: result), signal: signal)
        }

        /// No thread could take the job (pthread_create failed with `status`, none running): it fails
        /// at once, never run on the submitting thread, which may be a loop's (a lookup there would
        /// hold every connection of that loop for the resolver's timeouts).
        func fail(_ status: CInt) {
            guard resolution.beginLookup() else { return }
            let error = ResolutionError(host: resolution.host, reason: "no lookup thread could be started: \(ErrnoTable.name(status))",
                                        kind: .resourceExhausted, errno: status)
            resolution.deliver(Answer(family: family, result: .failure(error)), signal: signal)
        }
    }
}

/// The process-wide lookup pool: one FIFO queue of jobs and at most ``Resolution/maximumLookupThreads``
/// detached threads, each started when a job finds no idle one, then kept (idle on a condition
/// variable) for the life of the process. A pthread mutex and condition variable: ThreadSanitizer sees them.
private final class LookupPool: @unchecked Sendable {
    static let shared = LookupPool()
    /// The queue is compacted once this many taken slots sit at its front (and they are half of it).
    private static let compactionThreshold = 64

    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let jobQueued = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    /// Guarded by `mutex`: the jobs (slots before `head` are taken), the threads, the idle ones.
    private var queue: [Resolution.Job?] = []
    private var head = 0
    private var threads = 0
    private var idle = 0

    private init() {
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
        jobQueued.initialize(to: pthread_cond_t())
        pthread_cond_init(jobQueued, nil)
        // fork(2) copies this state but none of the threads: the child would count threads it does not
        // have (and never start one), or find the mutex held by a thread that is not there. The mutex
        // is held across the fork, and the child starts from an empty pool with the queue it had.
        pthread_atfork({ LookupPool.shared.lockForFork() }, { LookupPool.shared.unlockAfterFork() },
                       { LookupPool.shared.resetInChild() })
    }

    private func lockForFork() { pthread_mutex_lock(mutex) }
    private func unlockAfterFork() { pthread_mutex_unlock(mutex) }
    private func resetInChild() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(jobQueued, nil)
        threads = 0
        idle = 0
        // Jobs still queued are left to the parent's threads; the child does not run them twice.
        queue.removeAll()
        head = 0
    }

    /// Queues `job`, and starts a thread if no idle one is left for it and the limit allows. If no
    /// thread can be started and there is none at all, the job fails at once (`.resourceExhausted`,
    /// the errno kept) rather than wait for ever or run on this thread, which may be a loop's.
    func submit(_ job: Resolution.Job) {
        pthread_mutex_lock(mutex)
        queue.append(job)
        var refused: CInt = 0
        if queue.count - head > idle, threads < Resolution.maximumLookupThreads {
            let status = startThread()
            if status == 0 {
                threads += 1
            } else if threads == 0 {
                queue.removeLast()
                refused = status
            }
        }
        pthread_cond_signal(jobQueued)
        pthread_mutex_unlock(mutex)
        if refused != 0 { job.fail(refused) }
    }

    /// pthread_create's status: 0 when the thread started.
    private func startThread() -> CInt {
        var thread = pthread_t()
        // Made with every signal blocked (as libuv's pool threads are): it inherits the mask of the
        // thread that starts it, a loop thread that may have unblocked a watched signal for a while,
        // and a signal a program blocks on purpose would then reach it, under its default action once
        // the watch ended. The caller's mask is put back at once.
        var all = sigset_t(), saved = sigset_t()
        sigfillset(&all)
        pthread_sigmask(SIG_SETMASK, &all, &saved)
        defer { pthread_sigmask(SIG_SETMASK, &saved, nil) }
        let status = pthread_create(&thread, nil, { _ in
            LookupPool.shared.work()
            return nil
        }, nil)
        guard status == 0 else { return status }
        pthread_detach(thread)
        return 0
    }

    /// A pool thread: takes the jobs in order, for ever.
    private func work() {
        pthread_mutex_lock(mutex)
        while true {
            while head == queue.count {
                idle += 1
                pthread_cond_wait(jobQueued, mutex)
                idle -= 1
            }
            let job = queue[head]
            queue[head] = nil
            head += 1
            if head == queue.count {
                queue.removeAll(keepingCapacity: true)
                head = 0
            } else if head >= Self.compactionThreshold, head * 2 >= queue.count {
                queue.removeFirst(head)
                head = 0
            }
            pthread_mutex_unlock(mutex)
            job?.run()
            pthread_mutex_lock(mutex)
        }
    }
}

/// A pthread mutex (ThreadSanitizer understands it), allocated once.
final class PThreadMutex: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }
    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }
    func withLock<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }
    /// For a `pthread_atfork` prepare handler: held across the fork.
    func lockForFork() { pthread_mutex_lock(mutex) }
    /// For the parent's `pthread_atfork` handler.
    func unlockAfterFork() { pthread_mutex_unlock(mutex) }
    /// For the child's `pthread_atfork` handler: a fresh mutex (the one copied is held, by a thread
    /// the child does not have).
    func resetInChild() { pthread_mutex_init(mutex, nil) }
}
