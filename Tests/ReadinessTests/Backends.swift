import Dispatch
import Synchronization
import Glibc
@_spi(Backend) import Readiness

/// Every backend usable here: the tests are parameterised over this. READINESS_TEST_BACKENDS (names,
/// comma-separated) narrows it: `make test` runs every backend in its main stage, and a share of them
/// under the sanitizers (.ci/test: AddressSanitizer on the five without libevent's forced methods,
/// ThreadSanitizer, built without the Libevent trait, on epoll, poll and io_uring). A name that is not available here is left
/// out and said on standard error; a list with none available means every backend.
let backends: [Backend] = {
    guard let list = getenv("READINESS_TEST_BACKENDS").map({ String(cString: $0) }), !list.isEmpty else { return Backend.available }
    let names = list.split(separator: ",").map { String($0) }
    let chosen = Backend.available.filter { names.contains($0.name) }
    let missing = names.filter { name in !chosen.contains { $0.name == name } }
    if !missing.isEmpty {
        let message = "READINESS_TEST_BACKENDS: not available here: \(missing.joined(separator: ", "))\n"
        _ = message.withCString { write(STDERR_FILENO, $0, strlen($0)) }
    }
    return chosen.isEmpty ? Backend.available : chosen
}()

/// libdispatch opens a timerfd per clock (wall, uptime, monotonic) the first time a timer on that clock
/// is armed, and keeps it: a test's baseline count taken before a Swift Testing time limit, a
/// `Task.sleep` or a `ContinuousClock` sleep first ran in the process blamed that descriptor on the code
/// under test (`concurrentShutdowns` counted one more after than before when the runner's time-limit
/// task was scheduled late, on a loaded machine). Every clock is armed once, before the first count.
let timersWarmed: Void = {
    let done = DispatchSemaphore(value: 0)
    DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(1)) { done.signal() }
    DispatchQueue.global().asyncAfter(wallDeadline: .now() + .milliseconds(1)) { done.signal() }
    Task.detached {
        try? await Task.sleep(for: .milliseconds(1))                     // ContinuousClock
        try? await SuspendingClock().sleep(for: .milliseconds(1))
        try? await Task.sleep(nanoseconds: 1_000_000)
        done.signal()
    }
    // Never a hang: at most two seconds each (a cooperative pool all busy delays the task).
    for _ in 0..<3 { _ = done.wait(timeout: .now() + .seconds(2)) }
}()

/// Descriptors open in this process (the test runner is run with --no-parallel, so counts are stable).
func openDescriptorCount() -> Int {
    _ = timersWarmed
    guard let dir = opendir("/proc/self/fd") else { return -1 }
    defer { closedir(dir) }
    var count = 0
    while readdir(dir) != nil { count += 1 }
    return count
}

/// Runs `body` with the descriptor table full: a soft RLIMIT_NOFILE just above the count open now,
/// every number below it taken, `spare` of them left free; the limit and the numbers are given back after.
func withDescriptorsExhausted<T>(spare: Int = 0, _ body: () throws -> T) rethrows -> T {
    var limit = rlimit()
    getrlimit(CInt(RLIMIT_NOFILE.rawValue), &limit)
    var restore = limit
    limit.rlim_cur = rlim_t(openDescriptorCount() + 8)
    setrlimit(CInt(RLIMIT_NOFILE.rawValue), &limit)
    var fillers: [CInt] = []
    while true {
        let fd = dup(0)
        if fd < 0 { break }
        fillers.append(fd)
    }
    for _ in 0..<min(spare, fillers.count) { close(fillers.removeLast()) }
    defer {
        fillers.forEach { close($0) }
        setrlimit(CInt(RLIMIT_NOFILE.rawValue), &restore)
    }
    return try body()
}

/// Drives `listener` into its back-off: a client connects, then `accept` finds no descriptor free.
/// Returns the client's descriptor (the caller closes it).
func driveIntoBackOff(_ listener: Listener) throws -> CInt {
    let client = socket(AF_INET, CInt(SOCK_STREAM.rawValue), 0)
    _ = listener.address.withSockaddr { Glibc.connect(client, $0, $1) }
    let result = try withDescriptorsExhausted { try listener.accept() }
    guard case .backingOff = result else {
        close(client)
        throw TestFailure("expected a back-off, got \(result)")
    }
    return client
}

/// `count` socketpairs, each first end registered readable on `poller` (tokens 0, 1, ...) with a
/// byte waiting: `count` ready registrations. The caller closes both ends of each.
func readyRegistrations(_ count: Int, on poller: any Poller) throws -> [(CInt, CInt)] {
    var pairs: [(CInt, CInt)] = []
    do {
        for i in 0..<count {
            let pair = try socketPair()
            pairs.append(pair)
            try poller.register(pair.0, token: Token(rawValue: UInt64(i)), interest: .readable)
            _ = write(pair.1, "x", 1)
        }
    } catch {
        for (a, b) in pairs { close(a); close(b) }
        throw error
    }
    return pairs
}

/// Runs `body` with the soft RLIMIT_NOFILE lowered to `soft` (put back after).
func withSoftDescriptorLimit<T>(_ soft: Int, _ body: () throws -> T) rethrows -> T {
    var limit = rlimit()
    getrlimit(CInt(RLIMIT_NOFILE.rawValue), &limit)
    var restore = limit
    limit.rlim_cur = rlim_t(soft)
    setrlimit(CInt(RLIMIT_NOFILE.rawValue), &limit)
    defer { setrlimit(CInt(RLIMIT_NOFILE.rawValue), &restore) }
    return try body()
}

/// Runs `body` on a new thread; returns a join function.
func spawn(_ body: @escaping @Sendable () -> Void) -> () -> Void {
    final class Box: @unchecked Sendable { let body: () -> Void; init(_ b: @escaping () -> Void) { body = b } }
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    var thread = pthread_t()
    pthread_create(&thread, nil, { raw in
        let box = Unmanaged<AnyObject>.fromOpaque(raw!).takeRetainedValue() as! Box
        box.body()
        return nil
    }, box)
    return { pthread_join(thread, nil) }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A loopback TCP listener on an ephemeral port.
func tcpListener(backlog: CInt = 128) throws -> (fd: CInt, address: SocketAddress) {
    let address = try SocketAddress("127.0.0.1:0")
    let fd = socket(AF_INET, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw TestFailure("socket: \(errno)") }
    var one: CInt = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<CInt>.size))
    guard address.withSockaddr({ bind(fd, $0, $1) }) == 0, listen(fd, backlog) == 0 else {
        close(fd)
        throw TestFailure("bind/listen: \(errno)")
    }
    return (fd, try SocketAddress.local(of: fd))
}

/// A loopback port nobody listens on.
func closedPort() throws -> SocketAddress {
    let (fd, address) = try tcpListener()
    close(fd)
    return address
}

/// Accepts and closes everything pending on a non-blocking listener.
func acceptAll(_ listener: CInt) -> Int {
    var count = 0
    while true {
        let fd = Sys.accept(listener)
        if fd < 0 { return count }
        close(fd)
        count += 1
    }
}

/// A loopback listener whose accept queue is full, so that connects to it hang: the listener, its
/// address, and the filler connections (close them all).
func fullTCPListener() throws -> (fd: CInt, address: SocketAddress, fillers: [CInt]) {
    let (full, address) = try tcpListener(backlog: 0)
    guard let fillers = fillAcceptQueue(full, address) else {
        close(full)
        throw TestFailure("the accept queue of \(address) never filled")
    }
    return (full, address, fillers)
}

/// Whether listening TCP socket `fd`'s accept queue is full, as the kernel sees it (TCP_INFO: for a
/// listener `tcpi_unacked` is the queue's length and `tcpi_sacked` its backlog; a SYN is dropped once
/// the length is past the backlog).
func acceptQueueFull(_ fd: CInt) -> Bool {
    var info = tcp_info()
    var length = socklen_t(MemoryLayout<tcp_info>.size)
    guard getsockopt(fd, CInt(IPPROTO_TCP), TCP_INFO, &info, &length) == 0 else { return false }
    return info.tcpi_unacked > info.tcpi_sacked
}

/// Connects to loopback listener `listener` (bound to `address`) until its accept queue is full, so
/// that a further connect hangs: the fillers (connected, or waiting in SYN-SENT), to close; nil (none
/// left open) when it did not fill within 5 s. Full: the kernel says so (TCP_INFO), or a filler is
/// still in its handshake after a second (its SYN dropped: a kernel before 6.14 with syncookies off
/// drops every SYN to a listener of backlog 0, whose queue then never fills). Not "a filler that took
/// 100 ms" (before): on a loaded host a handshake may take that long, and its connect then went through.
func fillAcceptQueue(_ listener: CInt, _ address: SocketAddress) -> [CInt]? {
    var fillers: [CInt] = []
    let deadline = ContinuousClock.now + .seconds(5)
    while !acceptQueueFull(listener), fillers.count < 64, ContinuousClock.now < deadline {
        let fd = socket(address.domain, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { break }
        fillers.append(fd)
        _ = address.withSockaddr { Glibc.connect(fd, $0, $1) }
        var entry = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        let patience = ContinuousClock.now + .seconds(1)
        while !acceptQueueFull(listener), poll(&entry, 1, 10) == 0 {
            if ContinuousClock.now >= patience { return fillers }   // its SYN dropped: the queue takes no more
        }
    }
    guard acceptQueueFull(listener) else {
        fillers.forEach { close($0) }
        return nil
    }
    return fillers
}

/// The load tests' sizes are divided by READINESS_TEST_SCALE (default 1): `make test` runs them at full
/// size in its main stage and smaller under the sanitizers, whose point is races and memory, not load.
let loadDivisor: Int = getenv("READINESS_TEST_SCALE").flatMap { Int(String(cString: $0)) }.map { max(1, $0) } ?? 1

/// A flag a test sets for a plain thread or another task to see.
final class StopFlag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .releasing) }
    var isSet: Bool { value.load(ordering: .acquiring) }
}

/// A scripted HTTP/1.1 peer's plumbing: the next connection of listener `fd` (nil after 10 s of none).
func acceptWithin10Seconds(_ fd: CInt) -> CInt? {
    var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    guard poll(&entry, 1, 10_000) == 1 else { return nil }
    let connection = accept(fd, nil, nil)
    return connection >= 0 ? connection : nil
}

/// Reads requests (each ends at an empty line) from `connection` and calls `answer` for each, with
/// its number from 1; stops when `answer` returns false, at end of stream, or after 10 s of silence.
func answerRequests(on connection: CInt, _ answer: (Int) -> Bool) {
    var pending: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    var count = 0
    while true {
        var reader = pollfd(fd: connection, events: Int16(POLLIN), revents: 0)
        guard poll(&reader, 1, 10_000) == 1 else { return }
        let n = recv(connection, &chunk, chunk.count, 0)
        if n <= 0 { return }
        pending += chunk[0..<n]
        while let end = pending.firstRange(of: Array("\r\n\r\n".utf8)) {
            pending.removeSubrange(0..<end.upperBound)
            count += 1
            if !answer(count) { return }
        }
    }
}

/// Sends all of `bytes` on `connection` (a blocking socket), no SIGPIPE.
func sendAll(_ bytes: [UInt8], on connection: CInt) {
    _ = bytes.withUnsafeBytes { send(connection, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit, for tests that hold thousands of descriptors
/// (a soft limit of 1,024 is common on developer machines).
func raiseDescriptorLimit() {
    var limit = rlimit()
    getrlimit(CInt(RLIMIT_NOFILE.rawValue), &limit)
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max
        setrlimit(CInt(RLIMIT_NOFILE.rawValue), &limit)
    }
}

/// Waits (at most 5 s) until `fd` is readable, instead of a fixed sleep before reading bytes just sent
/// over loopback: a loaded machine may defer their delivery to ksoftirqd.
func awaitReadable(_ fd: CInt) {
    var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    while poll(&entry, 1, 5_000) < 0 && errno == EINTR {}
}

/// A caller's socket pair whose first end a task of `loop` waits on with `readable` (8 s): both ends
/// and the waiter (nil, or the wait's error). The wait has begun when this returns.
func waitingOnForeign(_ loop: EventLoop) async throws -> (CInt, CInt, Task<LoopError?, Never>) {
    let (x, y) = try socketPair()
    let waiter = Task(executorPreference: loop) { () async -> LoopError? in
        do throws(LoopError) { try await loop.readable(x, timeout: .seconds(8)) } catch { return error }
        return nil
    }
    try await loop.sleep(for: .milliseconds(50))
    return (x, y, waiter)
}

/// An async socket's descriptor, for the test's own `awaitReadable` (a poll(2) of its own: the loop's
/// poller and its hints are not touched). Taken before the scenario begins: the escape hatch clears
/// the short-read hint, which some scenarios set on purpose.
func descriptor(of socket: AsyncSocket) async throws -> CInt {
    try await socket.withStreamSocket { (stream) throws(SocketError) in stream.fd }
}

/// A test poller around another: every call goes to `forwarded` unless the type says otherwise (the
/// wrappers that fail one kind of call on demand override that call alone).
protocol ForwardingPoller: Poller {
    var forwarded: any Poller { get }
}

extension ForwardingPoller {
    var capabilities: Capabilities { forwarded.capabilities }
    var waker: Waker { forwarded.waker }
    func register(_ fd: CInt, token: Token, interest: Interest, trigger: Trigger) throws(PollerError) {
        try forwarded.register(fd, token: token, interest: interest, trigger: trigger)
    }
    func reregister(_ fd: CInt, token: Token, interest: Interest, trigger: Trigger) throws(PollerError) {
        try forwarded.reregister(fd, token: token, interest: interest, trigger: trigger)
    }
    func deregister(_ fd: CInt) throws(PollerError) { try forwarded.deregister(fd) }
    func wait(into events: EventBuffer, timeout: Duration?) throws(PollerError) -> Int {
        try forwarded.wait(into: events, timeout: timeout)
    }
    func close() throws(PollerError) { try forwarded.close() }
}
