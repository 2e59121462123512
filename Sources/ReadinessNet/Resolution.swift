#if canImport(Glibc)
import Glibc
#endif

/// Why a name did not resolve.
public struct ResolutionError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The name that was looked up.
    public var host: String
    /// getaddrinfo's text (gai_strerror), "no address", or why the name was refused without a lookup.
    public var reason: String
    /// An error for `host`, with the resolver's text.
    public init(host: String, reason: String) {
        self.host = host
        self.reason = reason
    }
    /// A one-line text for logs.
    public var description: String { "cannot resolve \(host): \(reason)" }
}

/// Looks up one address family of a name. Called on a background thread; may block.
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
        guard !host.utf8.contains(0) else { return .failure(ResolutionError(host: host, reason: SocketAddress.nulInName)) }
        if SocketAddress.isLocalhostName(host) { return .success([SocketAddress.loopback(family, port: port)]) }
        var hints = addrinfo()
        hints.ai_family = family == .ipv6 ? AF_INET6 : AF_INET
        hints.ai_socktype = CInt(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &list)
        guard status == 0, let list else {
            return .failure(ResolutionError(host: host, reason: String(cString: gai_strerror(status))))
        }
        defer { freeaddrinfo(list) }
        var out: [SocketAddress] = []
        var node: UnsafeMutablePointer<addrinfo>? = list
        while let current = node {
            if let address = current.pointee.ai_addr,
               let parsed = SocketAddress(address, length: current.pointee.ai_addrlen), !out.contains(parsed) {
                out.append(parsed)
            }
            node = current.pointee.ai_next
        }
        return out.isEmpty ? .failure(ResolutionError(host: host, reason: "no address")) : .success(out)
    }
}

/// A name lookup running off the loop thread: the AAAA (IPv6) and A (IPv4) queries run separately on
/// two background threads, and each answer wakes the loop's poller (``/ReadinessCore/Waker``). The loop collects
/// answers with ``takeAnswers()`` when it sees the wake-up event; nothing blocks the loop.
///
/// A numeric address or a `unix:` path is answered at once, without threads; so is a host that is not a
/// valid name (empty, with a NUL byte, a `:`, whitespace or a control character, longer than 253 bytes,
/// or ending in a number without being `A.B.C.D`): a failure saying why.
///
/// ``cancel()`` (``HappyEyeballs`` calls it when it ends) drops answers still to come, and from then on
/// no lookup thread touches the waker: a caller may close the poller at once. A lookup itself cannot be
/// interrupted (getaddrinfo has no cancel); its thread ends when the lookup does.
public final class Resolution: @unchecked Sendable {
    /// One family's answer.
    public struct Answer: Sendable {
        /// Which query answered (`.ipv6` for AAAA, `.ipv4` for A).
        public let family: SocketAddress.Family
        /// Its addresses, or why there are none.
        public let result: Result<[SocketAddress], ResolutionError>
    }

    /// The name being resolved.
    public let host: String
    /// The port every address gets.
    public let port: UInt16
    private struct State {
        var answers: [Answer] = []
        var outstanding = 0
        var cancelled = false
    }
    /// Guarded by `lock` (a pthread mutex: visible to ThreadSanitizer, and held while a lookup thread
    /// wakes the poller, so that ``cancel()`` returning means no thread will touch the waker again).
    private var state: State
    private let lock = PThreadMutex()

    /// Starts resolving `host` (a name, or a numeric IPv4 or IPv6 address, which is answered at once and
    /// never looked up) for `port`; `waker` is woken once per answer from a lookup thread. A host that is
    /// not a valid name is answered at once with a failure, without a lookup (a NUL byte: "the name
    /// contains a NUL byte").
    public init(host: String, port: UInt16, waker: Waker, resolver: any HostResolver = SystemResolver()) {
        self.host = host
        self.port = port
        if let numeric = try? SocketAddress(ip: host, port: port) {
            state = State(answers: [Answer(family: numeric.family, result: .success([numeric]))])
            return
        }
        if let problem = SocketAddress.nameProblem(host) {
            state = State(answers: [Answer(family: .ipv6, result: .failure(ResolutionError(host: host, reason: problem)))])
            return
        }
        state = State(outstanding: 2)
        for family in [SocketAddress.Family.ipv6, .ipv4] {
            Job.spawn(Job(resolution: self, family: family, waker: waker, resolver: resolver))
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

    /// Drops the answers still to come; no lookup thread wakes the poller after this returns.
    public func cancel() {
        lock.withLock {
            state.cancelled = true
            state.answers.removeAll()
        }
    }

    /// Called on a lookup thread: stores the answer and wakes the loop, unless cancelled.
    fileprivate func deliver(_ answer: Answer, waker: Waker) {
        lock.withLock {
            state.outstanding -= 1
            guard !state.cancelled else { return }
            state.answers.append(answer)
            // The poller may be closed by now: its waker then refuses (never writes a reused descriptor).
            try? waker.wake()
        }
    }

    /// One family's query on its own detached thread.
    private final class Job: Sendable {
        let resolution: Resolution
        let family: SocketAddress.Family
        let waker: Waker
        let resolver: any HostResolver
        init(resolution: Resolution, family: SocketAddress.Family, waker: Waker, resolver: any HostResolver) {
            self.resolution = resolution
            self.family = family
            self.waker = waker
            self.resolver = resolver
        }

        func run() {
            let result = resolver.lookup(host: resolution.host, port: resolution.port, family: family)
            resolution.deliver(Answer(family: family, result: result), waker: waker)
        }

        static func spawn(_ job: Job) {
            let context = Unmanaged.passRetained(job).toOpaque()
            var thread = pthread_t()
            let status = pthread_create(&thread, nil, { raw in
                let job = Unmanaged<Job>.fromOpaque(raw!).takeRetainedValue()
                job.run()
                return nil
            }, context)
            if status == 0 {
                pthread_detach(thread)
            } else {
                // No thread: answer on this one rather than never.
                Unmanaged<Job>.fromOpaque(context).release()
                job.run()
            }
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
}
