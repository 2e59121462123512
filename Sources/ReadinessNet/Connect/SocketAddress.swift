#if canImport(Glibc)
import Glibc
#endif

/// An IPv4, IPv6 or Unix-domain socket address, stored inline (no allocation).
public struct SocketAddress: Hashable, Sendable, CustomStringConvertible {
    /// The address family.
    public enum Family: String, Sendable, Codable {
        /// AF_INET.
        case ipv4
        /// AF_INET6.
        case ipv6
        /// AF_UNIX.
        case unix
    }

    private var storage = sockaddr_storage()
    /// The length of the stored `sockaddr`.
    public private(set) var length: socklen_t = 0

    /// Errors of parsing or resolving an address.
    public struct ParseError: Error, Hashable, Sendable, CustomStringConvertible {
        /// The text that was parsed.
        public let text: String
        /// Why it is invalid.
        public let reason: String
        /// The text and the reason.
        public var description: String { "invalid address \"\(text)\": \(reason)" }
    }

    /// IPv4, IPv6 or Unix-domain.
    public var family: Family {
        switch CInt(storage.ss_family) {
        case AF_INET6: .ipv6
        case AF_UNIX: .unix
        default: .ipv4
        }
    }

    /// The socket(2) domain for this address.
    public var domain: CInt { CInt(storage.ss_family) }

    /// Copies a kernel-provided address.
    public init?(_ address: UnsafePointer<sockaddr>, length: socklen_t) {
        guard length > 0, Int(length) <= MemoryLayout<sockaddr_storage>.size else { return nil }
        withUnsafeMutableBytes(of: &storage) { dst in
            dst.copyMemory(from: UnsafeRawBufferPointer(start: address, count: Int(length)))
        }
        self.length = length
    }

    /// A numeric IPv4 or IPv6 address and a port.
    public init(ip: String, port: UInt16) throws(ParseError) {
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, ip, &v4) == 1 {
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            sin.sin_addr = v4
            self.init(raw: sin)
        } else if inet_pton(AF_INET6, ip, &v6) == 1 {
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            sin6.sin6_addr = v6
            self.init(raw: sin6)
        } else {
            throw ParseError(text: ip, reason: "not a numeric IPv4 or IPv6 address")
        }
    }

    /// A Unix-domain path (at most 107 bytes).
    public init(unixPath path: String) throws(ParseError) {
        var sun = sockaddr_un()
        sun.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: sun.sun_path)
        guard !bytes.isEmpty, bytes.count < capacity else {
            throw ParseError(text: path, reason: "a Unix-domain path must have 1 to \(capacity - 1) bytes")
        }
        withUnsafeMutableBytes(of: &sun.sun_path) { dst in
            dst.copyBytes(from: bytes)
        }
        self.init(raw: sun, length: socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + 1))
    }

    /// Parses `A.B.C.D:PORT`, `[IPv6]:PORT` or `unix:PATH` (numeric only; see ``resolve(_:)``).
    public init(_ text: String) throws(ParseError) {
        if text.hasPrefix("unix:") {
            try self.init(unixPath: String(text.dropFirst(5)))
            return
        }
        let (host, port) = try Self.split(text)
        try self.init(ip: host, port: port)
    }

    /// Resolves `HOST:PORT` (names through getaddrinfo), `[IPv6]:PORT` or `unix:PATH`; returns every
    /// address, in the resolver's order.
    public static func resolve(_ text: String) throws(ParseError) -> [SocketAddress] {
        if text.hasPrefix("unix:") { return [try SocketAddress(text)] }
        let (host, port) = try split(text)
        if let numeric = try? SocketAddress(ip: host, port: port) { return [numeric] }
        var hints = addrinfo()
        hints.ai_socktype = CInt(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &list)
        guard status == 0, let list else {
            throw ParseError(text: text, reason: String(cString: gai_strerror(status)))
        }
        defer { freeaddrinfo(list) }
        var out: [SocketAddress] = []
        var node: UnsafeMutablePointer<addrinfo>? = list
        while let current = node {
            if let address = current.pointee.ai_addr, let parsed = SocketAddress(address, length: current.pointee.ai_addrlen),
               !out.contains(parsed) {
                out.append(parsed)
            }
            node = current.pointee.ai_next
        }
        guard !out.isEmpty else { throw ParseError(text: text, reason: "no address") }
        return out
    }

    private static func split(_ text: String) throws(ParseError) -> (String, UInt16) {
        var host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                throw ParseError(text: text, reason: "expected [IPv6]:PORT")
            }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw ParseError(text: text, reason: "expected HOST:PORT") }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") { throw ParseError(text: text, reason: "put an IPv6 address in brackets: [::1]:PORT") }
        }
        guard let port = UInt16(portText) else { throw ParseError(text: text, reason: "the port must be 0 to 65535") }
        if host.isEmpty { host = "127.0.0.1" }
        return (String(host), port)
    }

    private init<T>(raw: T, length: socklen_t? = nil) {
        withUnsafeMutableBytes(of: &storage) { dst in
            withUnsafeBytes(of: raw) { src in dst.copyMemory(from: src) }
        }
        self.length = length ?? socklen_t(MemoryLayout<T>.size)
    }

    /// The address of a socket's local end (getsockname).
    public static func local(of fd: CInt) throws(ParseError) -> SocketAddress {
        try name(of: fd, peer: false)
    }

    /// The address of a socket's peer (getpeername).
    public static func peer(of fd: CInt) throws(ParseError) -> SocketAddress {
        try name(of: fd, peer: true)
    }

    private static func name(of fd: CInt, peer: Bool) throws(ParseError) -> SocketAddress {
        var out = SocketAddress()
        let status = out.withMutableSockaddr { address, length in
            peer ? getpeername(fd, address, length) : getsockname(fd, address, length)
        }
        guard status == 0 else { throw ParseError(text: "fd \(fd)", reason: Errno.name(errno)) }
        return out
    }

    /// An empty address (family unspecified), for the kernel to fill.
    public init() {}

    /// Calls `body` with a pointer to the address and its length.
    public func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws -> R) rethrows -> R {
        try withUnsafeBytes(of: storage) { raw in
            try body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), length)
        }
    }

    /// For getsockname/getpeername/accept: `body` fills the address and its length.
    public mutating func withMutableSockaddr<R>(_ body: (UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) throws -> R) rethrows -> R {
        var size = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = try withUnsafeMutableBytes(of: &storage) { raw in
            try body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), &size)
        }
        length = size
        return result
    }

    /// The port of an IP address.
    public var port: UInt16? {
        withUnsafeBytes(of: storage) { raw in
            switch CInt(storage.ss_family) {
            case AF_INET: UInt16(bigEndian: raw.load(as: sockaddr_in.self).sin_port)
            case AF_INET6: UInt16(bigEndian: raw.load(as: sockaddr_in6.self).sin6_port)
            default: nil
            }
        }
    }

    /// "1.2.3.4:80", "[::1]:80" or "unix:/path".
    public var description: String {
        withUnsafeBytes(of: storage) { raw -> String in
            var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
            switch CInt(storage.ss_family) {
            case AF_INET:
                var sin = raw.load(as: sockaddr_in.self)
                inet_ntop(AF_INET, &sin.sin_addr, &text, socklen_t(text.count))
                return "\(Self.string(text)):\(UInt16(bigEndian: sin.sin_port))"
            case AF_INET6:
                var sin6 = raw.load(as: sockaddr_in6.self)
                inet_ntop(AF_INET6, &sin6.sin6_addr, &text, socklen_t(text.count))
                return "[\(Self.string(text))]:\(UInt16(bigEndian: sin6.sin6_port))"
            case AF_UNIX:
                let pathBytes = raw[MemoryLayout<sa_family_t>.size..<Int(max(length, socklen_t(MemoryLayout<sa_family_t>.size)))]
                return "unix:" + String(decoding: pathBytes.prefix { $0 != 0 }, as: UTF8.self)
            default:
                return "unspecified"
            }
        }
    }

    private static func string(_ text: [CChar]) -> String {
        String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Equal when the stored bytes are equal.
    public static func == (a: SocketAddress, b: SocketAddress) -> Bool {
        guard a.length == b.length else { return false }
        return withUnsafeBytes(of: a.storage) { x in
            withUnsafeBytes(of: b.storage) { y in memcmp(x.baseAddress!, y.baseAddress!, Int(a.length)) == 0 }
        }
    }

    /// Hashes the stored bytes.
    public func hash(into hasher: inout Hasher) {
        withUnsafeBytes(of: storage) { raw in hasher.combine(bytes: UnsafeRawBufferPointer(rebasing: raw[0..<Int(length)])) }
    }
}
