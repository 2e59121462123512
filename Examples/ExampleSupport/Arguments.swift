// What the examples share (their command lines, and the HTTP client's response parser), written, like
// them, only against `import Readiness`.
import Readiness

/// The command line of readiness-http-load and readiness-async-http-load.
public struct HTTPLoadArguments: Sendable {
    public var host = "127.0.0.1"
    public var port: UInt16 = 80
    public var path = "/"
    /// The Host header: the URL's authority as written (`127.0.0.1:8080`, `[::1]:8080`), RFC 9110 7.2.
    public var hostHeader = "127.0.0.1"
    public var connections = 50
    public var requests = 20_000
    public var backend: Backend?
    public var timeout: Duration = .seconds(60)

    /// The most `--connections` (each a socket and a task).
    public static let maximumConnections = 100_000

    /// The command line after the program's name, for a mistake's message and `--help`.
    public static let usage = "--url http://HOST:PORT/PATH [--connections 50] [--requests 20000] [--timeout SECONDS] [--backend NAME]"
    static let flags: Set<String> = ["--url", "--connections", "--requests", "--timeout", "--backend"]

    public init(_ args: [String]) throws(UsageError) {
        var rest = args.dropFirst().makeIterator()
        while let flag = rest.next() {
            let value = try UsageError.value(of: flag, known: Self.flags, from: &rest)
            switch flag {
            case "--url": try parseURL(value)
            case "--connections": connections = try UsageError.number(value, flag)
            case "--requests": requests = try UsageError.number(value, flag)
            case "--timeout": timeout = .seconds(try UsageError.number(value, flag) as Int)
            case "--backend":
                do { backend = try Backend.named(value) } catch { throw UsageError("\(error)") }
            default: throw UsageError("unknown option \(flag)")
            }
        }
        guard connections > 0, requests > 0 else { throw UsageError("--connections and --requests must be positive") }
        // Each connection is a socket and a task: more than a process may open is a mistake.
        guard connections <= Self.maximumConnections else { throw UsageError("--connections must be 1 to \(Self.maximumConnections)") }
        guard timeout > .zero else { throw UsageError("--timeout must be positive") }
    }

    public mutating func parseURL(_ url: String) throws(UsageError) {
        guard url.hasPrefix("http://") else { throw UsageError("only http:// URLs") }
        let rest = url.dropFirst("http://".count)
        let authority = rest.prefix { $0 != "/" }
        path = rest.count > authority.count ? String(rest.dropFirst(authority.count)) : "/"
        hostHeader = String(authority)
        do {
            // No port: "name", "1.2.3.4" or "[::1]" (whose last ':' is inside the brackets).
            let hasPort = authority.split(separator: "]", omittingEmptySubsequences: false).last?.contains(":") ?? false
            (host, port) = try SocketAddress.splitHostPort(hasPort ? String(authority) : "\(authority):80")
        } catch {
            throw UsageError("\(error)")
        }
    }
}


/// The command line of readiness-echo and readiness-async-echo.
public struct EchoArguments: Sendable {
    public var host = "127.0.0.1"
    public var port: UInt16 = 7000
    public var backend: Backend?
    public var connections: Int?

    /// The command line after the program's name, for a mistake's message and `--help`.
    public static let usage = "--port P [--host 127.0.0.1] [--backend NAME] [--connections N]"
    static let flags: Set<String> = ["--host", "--port", "--backend", "--connections"]

    public init(_ args: [String]) throws(UsageError) {
        var rest = args.dropFirst().makeIterator()
        while let flag = rest.next() {
            let value = try UsageError.value(of: flag, known: Self.flags, from: &rest)
            switch flag {
            case "--host": host = value
            case "--port": port = try UsageError.port(value, flag)
            case "--backend":
                do { backend = try Backend.named(value) } catch { throw UsageError("\(error)") }
            case "--connections": connections = try UsageError.number(value, flag)
            default: throw UsageError("unknown option \(flag)")
            }
        }
        if let connections, connections < 1 { throw UsageError("--connections must be positive") }
    }
}

/// The command line of readiness-http-server.
public struct HTTPServerArguments: Sendable {
    public var host = "127.0.0.1"
    public var port: UInt16 = 8080
    public var backend: Backend?
    public var loops: Int?
    public var grace: Int64 = 10
    /// Seconds a request has, from its first byte, to arrive whole (head and body): a client that
    /// sends a byte now and then (slowloris) is answered 408 and closed.
    public var requestTimeout: Int64 = 10

    /// The command line after the program's name, for a mistake's message and `--help`.
    public static let usage = "--port P [--host 127.0.0.1] [--backend NAME] [--loops N] [--grace SECONDS] [--request-timeout SECONDS]"
    static let flags: Set<String> = ["--host", "--port", "--backend", "--loops", "--grace", "--request-timeout"]

    public init(_ args: [String]) throws(UsageError) {
        var rest = args.dropFirst().makeIterator()
        while let flag = rest.next() {
            let value = try UsageError.value(of: flag, known: Self.flags, from: &rest)
            switch flag {
            case "--host": host = value
            case "--port": port = try UsageError.port(value, flag)
            case "--backend":
                do { backend = try Backend.named(value) } catch { throw UsageError("\(error)") }
            case "--loops": loops = try UsageError.number(value, flag)
            case "--grace": grace = try UsageError.number(value, flag)
            case "--request-timeout": requestTimeout = try UsageError.number(value, flag)
            default: throw UsageError("unknown option \(flag)")
            }
        }
        if let loops, !(1...EventLoopGroup.maximumLoops).contains(loops) { throw UsageError("--loops: 1 to \(EventLoopGroup.maximumLoops)") }
        guard grace >= 0 else { throw UsageError("--grace: not negative") }
        guard requestTimeout > 0 else { throw UsageError("--request-timeout: at least 1") }
    }
}

/// A command-line mistake, printed with the usage line.
public struct UsageError: Error, Sendable, CustomStringConvertible {
    public let description: String
    /// `--help` or `-h`: the usage, on standard output, and status 0 (`exitFailing`).
    public let isHelp: Bool
    public init(_ description: String) {
        self.description = description
        isHelp = false
    }
    private init(help: Void) {
        description = "help"
        isHelp = true
    }
    /// What `--help` and `-h` throw.
    public static let help = UsageError(help: ())

    /// The value of `flag`, one of `known` (each takes one): `--help` or `-h` is ``help``, a flag not
    /// known is refused as such before any value is read (it said "--bogus needs a value" before).
    public static func value(of flag: String, known: Set<String>, from rest: inout some IteratorProtocol<String>) throws(UsageError) -> String {
        if flag == "--help" || flag == "-h" { throw .help }
        guard known.contains(flag) else { throw UsageError("unknown option \(flag)") }
        guard let value = rest.next() else { throw UsageError("\(flag) needs a value") }
        return value
    }

    /// A port: 0 to 65,535 (said so when out of range, a negative one included, not "not a number"),
    /// 1 to 5 ASCII digits as the library's `host:port` grammar reads a port (`UInt16("+80")` is 80,
    /// and `000080` is more digits than a port has).
    public static func port(_ text: String, _ flag: String) throws(UsageError) -> UInt16 {
        let unsigned = text.utf8.first == UInt8(ascii: "-") ? text.utf8.dropFirst() : text.utf8[...]
        let digits = !unsigned.isEmpty && unsigned.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
        if digits, unsigned.count == text.utf8.count, unsigned.count <= 5, let value = UInt16(text) { return value }
        if digits { throw UsageError("\(flag) must be 0 to 65535: \(text)") }
        throw UsageError("\(flag): not a number: \(text)")
    }
    public static func number<T: FixedWidthInteger>(_ text: String, _ flag: String) throws(UsageError) -> T {
        guard let value = T(text) else { throw UsageError("\(flag): not a number: \(text)") }
        return value
    }
}


/// The command line of readiness-udp-echo (server, or `--client` load mode).
public struct UDPEchoArguments: Sendable {
    /// The most `--datagrams` a client sends (it keeps a flag per datagram).
    public static let maximumDatagrams = 1 << 26
    public var host = "127.0.0.1"
    public var port: UInt16 = 7000
    public var backend: Backend?
    /// Load mode: send datagrams to the server and check every echo.
    public var client = false
    /// Load mode: how many datagrams; server: exit after echoing this many (or after `idle` seconds
    /// without one, once the first came).
    public var datagrams: Int?
    /// Load mode: the bytes of each datagram (8 to 65,507).
    public var size = 64
    /// Load mode: the most datagrams in flight (sent, not yet echoed).
    public var window = 32
    /// Seconds without a datagram after which the server exits (nil: never), and the client stops
    /// waiting for echoes.
    public var idle: Int?

    /// The command line after the program's name, for a mistake's message and `--help`.
    public static let usage = "[--client] --port P [--host 127.0.0.1] [--backend NAME] [--datagrams N] [--size BYTES] [--window N] [--idle SECONDS]"
    static let flags: Set<String> = ["--host", "--port", "--backend", "--datagrams", "--size", "--window", "--idle"]

    public init(_ args: [String]) throws(UsageError) {
        var rest = args.dropFirst().makeIterator()
        while let flag = rest.next() {
            if flag == "--client" { client = true; continue }
            let value = try UsageError.value(of: flag, known: Self.flags, from: &rest)
            switch flag {
            case "--host": host = value
            case "--port": port = try UsageError.port(value, flag)
            case "--backend":
                do { backend = try Backend.named(value) } catch { throw UsageError("\(error)") }
            case "--datagrams": datagrams = try UsageError.number(value, flag)
            case "--size": size = try UsageError.number(value, flag)
            case "--window": window = try UsageError.number(value, flag)
            case "--idle": idle = try UsageError.number(value, flag)
            default: throw UsageError("unknown option \(flag)")
            }
        }
        guard size >= 8, size <= DatagramSocket.maximumUDPPayload else { throw UsageError("--size must be 8 to 65507") }
        guard window >= 1, window <= DatagramBatch.maximumCapacity else { throw UsageError("--window must be 1 to 1024") }
        // The client's batches hold a window of datagrams: at most DatagramBatch.maximumBytes (16 MiB)
        // (the server's batches use neither).
        guard !client || window * size <= DatagramBatch.maximumBytes else {
            throw UsageError("--window × --size must be at most \(DatagramBatch.maximumBytes) bytes (\(window) × \(size))")
        }
        if let datagrams, !(1...Self.maximumDatagrams).contains(datagrams) {
            throw UsageError("--datagrams must be 1 to \(Self.maximumDatagrams)")
        }
        if let idle, idle < 1 { throw UsageError("--idle must be positive") }
    }
}
