import Glibc
@_spi(Backend) import Readiness
@testable import ReadinessNet
import Testing

/// A value behind a pthread mutex (ThreadSanitizer understands it; Synchronization's Mutex, a bare
/// futex on Linux, it does not).
final class Locked<Value>: @unchecked Sendable {
    private let mutex = PThreadMutex()
    private var value: Value
    init(_ value: Value) { self.value = value }
    func withLock<R>(_ body: (inout Value) -> R) -> R { mutex.withLock { body(&value) } }
}

/// Records every lookup and answers at once with the loopback address of the family asked for.
final class RecordingResolver: HostResolver {
    let calls = Locked<[String]>([])
    func lookup(host: String, port: UInt16, family: SocketAddress.Family) -> Result<[SocketAddress], ResolutionError> {
        calls.withLock { $0.append(host) }
        let address = try? SocketAddress(ip: family == .ipv6 ? "::1" : "127.0.0.1", port: port)
        return address.map { .success([$0]) } ?? .failure(ResolutionError(host: host, reason: "test"))
    }
}

/// Blocks every lookup until released, counting the lookups running at once and the calls per name.
final class GatedResolver: HostResolver {
    struct Counts {
        var running = 0
        var maximum = 0
        var calls: [String: Int] = [:]
        var released = false
    }
    let counts = Locked(Counts())
    func lookup(host: String, port: UInt16, family: SocketAddress.Family) -> Result<[SocketAddress], ResolutionError> {
        counts.withLock {
            $0.running += 1
            $0.maximum = max($0.maximum, $0.running)
            $0.calls[host, default: 0] += 1
        }
        while !counts.withLock({ $0.released }) { usleep(1_000) }
        counts.withLock { $0.running -= 1 }
        return .failure(ResolutionError(host: host, reason: "answered"))
    }
    func release() { counts.withLock { $0.released = true } }
}

/// Polls `condition` every millisecond until it holds or `timeout` passes.
func eventually(_ timeout: Duration = .seconds(5), _ condition: () -> Bool) -> Bool {
    let end = ContinuousClock.now + timeout
    while !condition() {
        if ContinuousClock.now >= end { return false }
        usleep(1_000)
    }
    return true
}

/// A `HOST:PORT` string that every parser accepts, and what it means.
struct AcceptedHostPort: Sendable, CustomTestStringConvertible {
    let text: String
    let host: String
    let port: UInt16
    var testDescription: String { text.debugDescription }
}

/// A `HOST:PORT` string that every parser refuses, and a fragment of the reason given.
struct RefusedHostPort: Sendable, CustomTestStringConvertible {
    let text: String
    let reason: String
    var testDescription: String { text.debugDescription }
}

let longestName = String(repeating: "a", count: 253)

let acceptedHostPorts = [
    AcceptedHostPort(text: "127.0.0.1:80", host: "127.0.0.1", port: 80),
    AcceptedHostPort(text: "0.0.0.0:0", host: "0.0.0.0", port: 0),
    AcceptedHostPort(text: "[::1]:443", host: "::1", port: 443),
    AcceptedHostPort(text: "[::]:65535", host: "::", port: 65535),
    AcceptedHostPort(text: "[::ffff:127.0.0.1]:8080", host: "::ffff:127.0.0.1", port: 8080),
    AcceptedHostPort(text: "127.0.0.1:0080", host: "127.0.0.1", port: 80),
    AcceptedHostPort(text: "127.0.0.1:00000", host: "127.0.0.1", port: 0),
    AcceptedHostPort(text: "localhost:8080", host: "localhost", port: 8080),
    AcceptedHostPort(text: "LocalHost.:1", host: "LocalHost.", port: 1),
    AcceptedHostPort(text: "example.com:65535", host: "example.com", port: 65535),
    AcceptedHostPort(text: "my_host-1.example:22", host: "my_host-1.example", port: 22),
    AcceptedHostPort(text: "\(longestName):1", host: longestName, port: 1),
    AcceptedHostPort(text: "[fe80::1%1]:80", host: "fe80::1%1", port: 80),
    AcceptedHostPort(text: "[fe80::1%lo]:80", host: "fe80::1%lo", port: 80),
    AcceptedHostPort(text: "[::1%4294967295]:80", host: "::1%4294967295", port: 80),
    AcceptedHostPort(text: "[fe80::1%000000000001]:80", host: "fe80::1%000000000001", port: 80),
    // The root's trailing dot is not counted (Go isDomainName): refused as too long before stop 32.
    AcceptedHostPort(text: "\(longestName).:1", host: longestName + ".", port: 1),
]

let refusedHostPorts = [
    RefusedHostPort(text: "", reason: "HOST:PORT"),
    RefusedHostPort(text: ":80", reason: "empty"),
    RefusedHostPort(text: "[]:80", reason: "empty"),
    RefusedHostPort(text: "[127.0.0.1]:80", reason: "IPv6"),
    RefusedHostPort(text: "[localhost]:80", reason: "IPv6"),
    // A zone names an interface this machine has, or is an index (Go, Rust, CPython, libuv).
    RefusedHostPort(text: "[fe80::1%nosuch0]:80", reason: "no network interface"),
    RefusedHostPort(text: "[fe80::1%]:80", reason: "empty"),
    RefusedHostPort(text: "[fe80::1%4294967296]:80", reason: "over"),
    RefusedHostPort(text: "[fe80::1%a/b]:80", reason: "neither"),
    RefusedHostPort(text: "[127.0.0.1%1]:80", reason: "IPv4"),
    RefusedHostPort(text: "fe80::1%1:80", reason: "brackets"),
    // The kernel would cut a name at ':' ("lo:80" is lo): the port meant would be lost (review).
    RefusedHostPort(text: "[fe80::1%lo:80]:443", reason: "neither"),
    // A zone on IPv4 is refused unbracketed too, never looked up (review: it reached getaddrinfo).
    RefusedHostPort(text: "127.0.0.1%1:80", reason: "IPv4"),
    RefusedHostPort(text: "name%1:80", reason: "zone"),
    RefusedHostPort(text: "[::1", reason: "]"),
    RefusedHostPort(text: "[::1]", reason: "port"),
    RefusedHostPort(text: "[::1]80", reason: "port"),
    RefusedHostPort(text: "[::1]:", reason: "port"),
    RefusedHostPort(text: "[[::1]]:80", reason: "IPv6"),
    // Go TestSplitHostPort (review): a bracket outside the IPv6 form ("unexpected '['").
    RefusedHostPort(text: "foo]bar:80", reason: "brackets"),
    RefusedHostPort(text: "a[b]:80", reason: "brackets"),
    RefusedHostPort(text: "::1:80", reason: "brackets"),
    RefusedHostPort(text: "::1", reason: "brackets"),
    RefusedHostPort(text: "127.0.0.1", reason: "HOST:PORT"),
    RefusedHostPort(text: "127.0.0.1:", reason: "port"),
    RefusedHostPort(text: "127.0.0.1:+80", reason: "port"),
    RefusedHostPort(text: "[::1]:+0080", reason: "port"),
    RefusedHostPort(text: "127.0.0.1:-1", reason: "port"),
    RefusedHostPort(text: "127.0.0.1:65536", reason: "port"),
    RefusedHostPort(text: "127.0.0.1:000080", reason: "port"),
    RefusedHostPort(text: "127.0.0.1: 80", reason: "port"),
    RefusedHostPort(text: "127.0.0.1:80 ", reason: "port"),
    RefusedHostPort(text: "127.0.0.1:８０", reason: "port"),
    RefusedHostPort(text: "127.0.0.1:0x50", reason: "port"),
    RefusedHostPort(text: " 127.0.0.1:80", reason: "whitespace"),
    RefusedHostPort(text: "a b:80", reason: "whitespace"),
    RefusedHostPort(text: "host\t:80", reason: "whitespace"),
    RefusedHostPort(text: "host\u{7F}:80", reason: "control"),
    RefusedHostPort(text: "127.0.0.1\0.example.com:80", reason: "NUL"),
    RefusedHostPort(text: "localhost\0.evil.example:80", reason: "NUL"),
    RefusedHostPort(text: "127.0.0.1:80\0", reason: "NUL"),
    RefusedHostPort(text: "\(longestName)a:1", reason: "253"),
    RefusedHostPort(text: "\(longestName)a.:1", reason: "253"),
    RefusedHostPort(text: ".:80", reason: "empty label"),
    RefusedHostPort(text: ".example.com:80", reason: "empty label"),
    RefusedHostPort(text: "a..b:80", reason: "empty label"),
    RefusedHostPort(text: "example.com..:80", reason: "empty label"),
    RefusedHostPort(text: "127.1:80", reason: "numeric"),
    RefusedHostPort(text: "0x7f000001:80", reason: "numeric"),
    RefusedHostPort(text: "1.2.3.4.5:80", reason: "numeric"),
    RefusedHostPort(text: "2130706433:80", reason: "numeric"),
]

@Suite("Addresses and names")
struct AddressTests {
    @Test("an accepted HOST:PORT means the same host and port to every parser", arguments: acceptedHostPorts)
    func acceptedEverywhere(_ entry: AcceptedHostPort) throws {
        let split = try SocketAddress.splitHostPort(entry.text)
        #expect(split.host == entry.host && split.port == entry.port)
        let waker = try Waker()
        defer { waker.close() }
        let resolver = RecordingResolver()
        let resolution = try Resolution(entry.text, waker: waker, resolver: resolver)
        defer { resolution.cancel() }
        #expect(resolution.host == entry.host && resolution.port == entry.port)
        if let numeric = try? SocketAddress(ip: entry.host, port: entry.port) {
            #expect(try SocketAddress(entry.text) == numeric)
            #expect(try SocketAddress.resolve(entry.text) == [numeric])
            // A connect's resolution also tries `::` as 0.0.0.0 (Go's issue 18806; PeerScenarioTests17).
            let expected: [Result<[SocketAddress], ResolutionError>] = [.success([numeric])]
                + (numeric.unspecifiedIPv4.map { [.success([$0])] } ?? [])
            #expect(resolution.takeAnswers().map(\.result) == expected)
            #expect(resolver.calls.withLock { $0 }.isEmpty)   // a numeric host never reaches a lookup
        } else {
            #expect(throws: SocketAddress.ParseError.self) { try SocketAddress(entry.text) }
        }
    }

    @Test("a refused HOST:PORT is refused by every parser, with a reason, before any lookup", arguments: refusedHostPorts)
    func refusedEverywhere(_ entry: RefusedHostPort) throws {
        let waker = try Waker()
        defer { waker.close() }
        let resolver = RecordingResolver()
        let errors: [SocketAddress.ParseError?] = [
            #expect(throws: SocketAddress.ParseError.self) { try SocketAddress(entry.text) },
            #expect(throws: SocketAddress.ParseError.self) { try SocketAddress.splitHostPort(entry.text) },
            #expect(throws: SocketAddress.ParseError.self) { try SocketAddress.resolve(entry.text) },
            #expect(throws: SocketAddress.ParseError.self) { try Resolution(entry.text, waker: waker, resolver: resolver) },
        ]
        for error in errors.compactMap({ $0 }) {
            #expect(error.reason.contains(entry.reason), "\(error)")
        }
        usleep(1_000)
        #expect(resolver.calls.withLock { $0 }.isEmpty)
    }

    @Test("a NUL byte is refused in an IP address, a Unix path and a name, never truncated")
    func nulBytes() throws {
        #expect(throws: SocketAddress.ParseError.self) { try SocketAddress(ip: "127.0.0.1\0.example.com", port: 80) }
        #expect(throws: SocketAddress.ParseError.self) { try SocketAddress(unixPath: "/tmp/x\0.allowed.sock") }
        #expect(throws: SocketAddress.ParseError.self) { try SocketAddress("unix:/tmp/x\0.allowed.sock") }
        #expect(throws: SocketAddress.ParseError.self) { try SocketAddress("unix:\0name") }
        #expect(throws: SocketAddress.ParseError.self) { try SocketAddress.resolve("unix:\0name") }
        #expect(throws: SocketAddress.ParseError.self) { try SocketAddress.resolve("localhost\0.evil.example:80") }
        let nulName = "localhost\0.evil.example"
        // The system resolver refuses it rather than resolving "localhost".
        for family in [SocketAddress.Family.ipv6, .ipv4] {
            let answer = SystemResolver().lookup(host: nulName, port: 80, family: family)
            #expect(throws: ResolutionError.self) { try answer.get() }
        }
        // A Resolution answers at once with a failure, and never asks its resolver.
        let waker = try Waker()
        defer { waker.close() }
        let resolver = RecordingResolver()
        let resolution = Resolution(host: nulName, port: 80, waker: waker, resolver: resolver)
        defer { resolution.cancel() }
        let answers = resolution.takeAnswers().map(\.result)
        #expect(answers == [.failure(ResolutionError(host: nulName, reason: "the name contains a NUL byte", kind: .invalidName))])
        #expect(resolution.isComplete)
        usleep(1_000)
        #expect(resolver.calls.withLock { $0 }.isEmpty)
    }

    @Test("Unix paths: 1 to 107 bytes; unix:@x is the path @x; unixPath reads the address itself")
    func unixPaths() throws {
        let longest = "/" + String(repeating: "p", count: 106)
        #expect(try SocketAddress(unixPath: longest).unixPath == longest)
        #expect(throws: SocketAddress.ParseError.self) { try SocketAddress(unixPath: longest + "p") }
        #expect(throws: SocketAddress.ParseError.self) { try SocketAddress(unixPath: "") }
        let at = try SocketAddress("unix:@x")
        #expect(at.unixPath == "@x" && at.description == "unix:@x")
        #expect(at == (try SocketAddress(unixPath: "@x")))
        #expect(try SocketAddress("127.0.0.1:80").unixPath == nil)
    }

    @Test("abstract Unix names only through init(abstractUnixName:); shown as unix:@name; no path to unlink")
    func abstractNames() throws {
        let name = "readiness-test-\(getpid())"
        let address = try SocketAddress(abstractUnixName: name)
        #expect(address.family == .unix && address.description == "unix:@\(name)")
        #expect(address.unixPath == nil && address.abstractUnixName == name)
        #expect(address.length == socklen_t(MemoryLayout<sa_family_t>.size + 1 + name.utf8.count))
        #expect(try SocketAddress(unixPath: "/tmp/x").abstractUnixName == nil)
        #expect(try SocketAddress(abstractUnixName: String(repeating: "n", count: 107)).abstractUnixName?.count == 107)
        #expect(throws: SocketAddress.ParseError.self) { try SocketAddress(abstractUnixName: String(repeating: "n", count: 108)) }
        #expect(throws: SocketAddress.ParseError.self) { try SocketAddress(abstractUnixName: "") }
        #expect(throws: SocketAddress.ParseError.self) { try SocketAddress(abstractUnixName: "a\0b") }
        // A real listener on it: the kernel's name reads back the same; closing unlinks nothing.
        let listener = try Listener(bind: address)
        #expect(listener.address == address && listener.address.description == "unix:@\(name)")
        let poller = try Backend.poll.makePoller()
        defer { try? poller.close() }
        let socket = try Connector.connect(to: address, on: poller, timeout: .seconds(2))
        close(socket.fd)
        listener.close()
    }

    @Test("RFC 6761: localhost, localhost. and *.localhost are loopback, answered without the system resolver")
    func localhost() throws {
        for host in ["localhost", "LocalHost.", "a.b.localhost", "x.LOCALHOST."] {
            let v6 = SystemResolver().lookup(host: host, port: 8080, family: .ipv6)
            let v4 = SystemResolver().lookup(host: host, port: 8080, family: .ipv4)
            #expect(try v6.get() == [try SocketAddress("[::1]:8080")], "\(host)")
            #expect(try v4.get() == [try SocketAddress("127.0.0.1:8080")], "\(host)")
            #expect(try SocketAddress.resolve("\(host):8080") == [try SocketAddress("[::1]:8080"), try SocketAddress("127.0.0.1:8080")])
        }
        for host in ["localhost", "LOCALHOST.", "a.localhost", "b.a.Localhost."] { #expect(SocketAddress.isLocalhostName(host), "\(host)") }
        for host in ["localhost.example", "notlocalhost", "localhostx", "localhost..", "example.com", ""] {
            #expect(!SocketAddress.isLocalhostName(host), "\(host)")
        }
    }

    @Test("name lookups share a bounded pool: never more at once than the bound; queued lookups of a cancelled resolution never run")
    func boundedPool() throws {
        let bound = Resolution.maximumLookupThreads
        let waker = try Waker()
        defer { waker.close() }
        let resolver = GatedResolver()
        defer { resolver.release() }
        let resolutions = (0..<50).map { Resolution(host: "host\($0).test", port: 80, waker: waker, resolver: resolver) }
        #expect(eventually { resolver.counts.withLock { $0.running } >= bound })
        usleep(50_000)   // room for more to start, if anything were unbounded
        #expect(resolver.counts.withLock { $0.maximum } <= bound)
        // Cancel the first two (running now, FIFO) and the last 38 (still queued).
        let cancelled = [0, 1] + Array(12..<50)
        let live = 2..<12
        for index in cancelled { resolutions[index].cancel() }
        resolver.release()
        var answers = [Int: Int]()
        #expect(eventually {
            for index in live { answers[index, default: 0] += resolutions[index].takeAnswers().count }
            return live.allSatisfy { answers[$0] == 2 && resolutions[$0].isComplete }
        })
        // Every job queued before this one has been taken by a worker once it answers (FIFO).
        let sentinel = Resolution(host: "sentinel.test", port: 80, waker: waker, resolver: resolver)
        var sentinelAnswers = 0
        #expect(eventually {
            sentinelAnswers += sentinel.takeAnswers().count
            return sentinelAnswers == 2
        })
        let counts = resolver.counts.withLock { $0 }
        #expect(counts.maximum <= bound)
        for index in 12..<50 { #expect(counts.calls["host\(index).test"] == nil, "host\(index).test was looked up after cancel") }
        for index in live { #expect(counts.calls["host\(index).test"] == 2) }
        for index in cancelled {
            #expect(resolutions[index].takeAnswers().isEmpty)
            #expect(resolutions[index].isComplete)
        }
    }
}
