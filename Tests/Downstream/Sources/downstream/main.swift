// What a networking library does with Readiness: start a poller with one call, connect with the state
// machine, and run an echo round trip through the poller, on every backend this build has.
#if canImport(Glibc)
import Glibc
#endif
import Readiness

struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A non-blocking loopback listener on an ephemeral port.
func listen() throws -> (fd: CInt, address: SocketAddress) {
    let fd = socket(AF_INET, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw Failure("socket: errno \(errno)") }
    let address = try SocketAddress(ip: "127.0.0.1", port: 0)
    guard address.withSockaddr({ bind(fd, $0, $1) }) == 0, Glibc.listen(fd, 16) == 0 else {
        close(fd)
        throw Failure("bind/listen: errno \(errno)")
    }
    return (fd, try SocketAddress.local(of: fd))
}

/// Waits until `token` is ready for `wanted`, or fails after two seconds.
func waitFor(_ wanted: Ready, token: Token, on poller: any Poller, events: EventBuffer) throws {
    let deadline = Deadline.after(.seconds(2))
    while !deadline.hasPassed() {
        try poller.wait(into: events, timeout: .milliseconds(100))
        if events.contains(where: { $0.token == token && !$0.ready.intersection(wanted).isEmpty }) { return }
    }
    throw Failure("token \(token) not ready for \(wanted) within 2 s")
}

/// A connect and an echo round trip on one backend's poller.
func roundTrip(on poller: any Poller) throws {
    let events = EventBuffer(capacity: 16)
    let (listener, address) = try listen()
    defer { close(listener) }
    try poller.register(listener, token: 1, interest: .readable)
    let client = try Connector.connect(to: address, on: poller, timeout: .seconds(2))
    defer { close(client.fd) }
    try waitFor(.readable, token: 1, on: poller, events: events)
    let server = accept(listener, nil, nil)   // a connection is queued: waitFor saw the listener readable
    guard server >= 0 else { throw Failure("accept: errno \(errno)") }
    defer { close(server) }
    try poller.deregister(listener)

    // client -> server, then the server echoes it back.
    let message = Array("hello from downstream".utf8)
    try poller.register(server, token: 2, interest: .readable)
    guard write(client.fd, message, message.count) == message.count else { throw Failure("write: errno \(errno)") }
    try waitFor(.readable, token: 2, on: poller, events: events)
    var buffer = [UInt8](repeating: 0, count: 256)
    let got = read(server, &buffer, buffer.count)
    guard got == message.count else { throw Failure("server read \(got) bytes") }
    guard write(server, buffer, got) == got else { throw Failure("echo write: errno \(errno)") }
    try poller.register(client.fd, token: 3, interest: .readable)
    try waitFor(.readable, token: 3, on: poller, events: events)
    let back = read(client.fd, &buffer, buffer.count)
    guard back == message.count, Array(buffer[0..<back]) == message else { throw Failure("echo mismatch") }
    try poller.deregister(server)
    try poller.deregister(client.fd)
}

var failed = 0
// The start a library writes: one call; a selection failure is a SelectionError.
do {
    let poller = try Backend.makeDefaultPoller()
    try roundTrip(on: poller)
    try poller.close()
    print("ok   default (\(poller.capabilities.name)): connect + echo")
} catch {
    print("FAIL default: \(error)")
    failed += 1
}
print("libevent built in: \(Backend.libeventBuiltIn)")
for backend in Backend.all {
    if let reason = backend.probe() {
        print("skip \(backend.name): \(reason)")
        // libevent is the only backend allowed to be missing, and only without the trait.
        if Backend.libeventBuiltIn || !backend.name.hasPrefix("libevent") || !reason.contains("trait Libevent off") {
            failed += 1
        }
        continue
    }
    do {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        try roundTrip(on: poller)
        print("ok   \(backend.name): connect + echo")
    } catch {
        print("FAIL \(backend.name): \(error)")
        failed += 1
    }
}
print(failed == 0 ? "downstream: all backends passed" : "downstream: \(failed) failed")
exit(failed == 0 ? 0 : 1)
