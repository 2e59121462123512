import Glibc
import Readiness
import Synchronization
import Testing

/// Every backend usable here: the tests are parameterised over this.
let backends: [Backend] = Backend.available

struct Pair: ~Copyable {
    let a: CInt
    let b: CInt
    deinit {
        close(a)
        close(b)
    }
}

func socketPair() throws -> (CInt, CInt) {
    var fds: [CInt] = [-1, -1]
    guard socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
        throw TestFailure("socketpair: \(errno)")
    }
    return (fds[0], fds[1])
}

func pipePair() throws -> (read: CInt, write: CInt) {
    var fds: [CInt] = [-1, -1]
    guard pipe2(&fds, O_NONBLOCK | O_CLOEXEC) == 0 else { throw TestFailure("pipe2: \(errno)") }
    return (fds[0], fds[1])
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

@discardableResult
func writeByte(_ fd: CInt) -> Int { var b: UInt8 = 1; return write(fd, &b, 1) }

@discardableResult
func drain(_ fd: CInt) -> Int {
    var buffer = [UInt8](repeating: 0, count: 4096)
    var total = 0
    while true {
        let n = read(fd, &buffer, buffer.count)
        if n <= 0 { return total }
        total += n
    }
}

/// Events of one wait, as a dictionary token -> readiness.
func waitOnce(_ poller: any Poller, timeout: Duration? = .milliseconds(200), capacity: Int = 64) throws -> [Token: Ready] {
    let buffer = EventBuffer(capacity: capacity)
    try poller.wait(into: buffer, timeout: timeout)
    var out: [Token: Ready] = [:]
    for event in buffer { out[event.token, default: []].formUnion(event.ready) }
    return out
}

func openDescriptorCount() -> Int {
    guard let dir = opendir("/proc/self/fd") else { return -1 }
    defer { closedir(dir) }
    var count = 0
    while readdir(dir) != nil { count += 1 }
    return count
}

func elapsed(_ body: () throws -> Void) rethrows -> Duration {
    let clock = ContinuousClock()
    let start = clock.now
    try body()
    return clock.now - start
}

/// A loopback TCP listener on an ephemeral port.
func tcpListener(backlog: CInt = 16, ipv6: Bool = false) throws -> (fd: CInt, port: UInt16) {
    let fd = socket(ipv6 ? AF_INET6 : AF_INET, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw TestFailure("socket: \(errno)") }
    var one: CInt = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<CInt>.size))
    let address = try SocketAddress(ipv6 ? "[::1]:0" : "127.0.0.1:0")
    guard address.withSockaddr({ bind(fd, $0, $1) }) == 0, listen(fd, backlog) == 0 else {
        close(fd)
        throw TestFailure("bind/listen: \(errno)")
    }
    let local = try SocketAddress.local(of: fd)
    return (fd, local.port ?? 0)
}

/// Runs `body` on a new pthread; returns the thread for signalling and joining.
final class TestThread: @unchecked Sendable {
    private var thread = pthread_t()
    private let body: () -> Void
    init(_ body: @escaping () -> Void) {
        self.body = body
        let box = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&thread, nil, { raw in
            let me = Unmanaged<TestThread>.fromOpaque(raw!).takeRetainedValue()
            me.body()
            return nil
        }, box)
    }
    func signal(_ signal: CInt) { pthread_kill(thread, signal) }
    func join() { pthread_join(thread, nil) }
}

let signalsSeen = Atomic<Int>(0)

/// Installs a SIGUSR1 handler without SA_RESTART, so a blocked wait sees EINTR.
func installInterruptingHandler() {
    var action = sigaction()
    action.__sigaction_handler.sa_handler = { _ in signalsSeen.add(1, ordering: .relaxed) }
    sigemptyset(&action.sa_mask)
    action.sa_flags = 0
    sigaction(SIGUSR1, &action, nil)
}
