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
        /// Why it is invalid, or why its name could not be resolved.
        public let reason: String
        /// For ``SocketAddress/resolve(_:)``: the text was fine but its name's lookup failed, and how
        /// (``ResolutionError/kind``: not found, a name server that could not answer now, out of
        /// descriptors, with the errno); nil when the text itself was refused.
        public let resolution: ResolutionError?

        /// An error for `text`: refused for `reason`, or (with `resolution`) a failed lookup.
        public init(text: String, reason: String, resolution: ResolutionError? = nil) {
            self.text = text
            self.reason = reason
            self.resolution = resolution
        }

        /// The text and the reason.
        public var description: String {
            resolution == nil ? "invalid address \"\(text)\": \(reason)" : "cannot resolve \"\(text)\": \(reason)"
        }
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

    /// The name the kernel reports for a Unix-domain socket that has none (unbound, a socketpair's
    /// end): the family alone, no path. Not an address anybody can send to or connect to.
    /// (mio's `is_unnamed`; what the synchronous ``Listener/accept()`` reports for a client that did
    /// not bind; ``StreamSocket/peerAddress`` and ``DatagramSocket/localAddress`` answer nil instead.)
    public var isNamelessUnix: Bool { domain == AF_UNIX && Int(length) <= MemoryLayout<sa_family_t>.size }

    /// Copies a kernel-provided address: nil for a length that holds no such address, or a family
    /// other than IPv4, IPv6 and Unix (AF_UNSPEC, AF_VSOCK...: this type names no other, and read as
    /// IPv4 they were wrong answers). The length kept is the address's own (SwiftNIO's rule: bytes
    /// past a Unix path's NUL, or past a `sockaddr_in` given with a larger length, are not part of
    /// it, so two copies of one address are equal and hash alike however long the caller said).
    public init?(_ address: UnsafePointer<sockaddr>, length: socklen_t) {
        guard Int(length) >= MemoryLayout<sa_family_t>.size, Int(length) <= MemoryLayout<sockaddr_storage>.size else { return nil }
        // At most the family's own size is read (a Unix length the kernel reported past the caller's
        // `sockaddr_un`, unix(7) BUGS, is not read past it).
        let size: Int
        switch CInt(address.pointee.sa_family) {
        case AF_INET:
            guard Int(length) >= MemoryLayout<sockaddr_in>.size else { return nil }
            size = MemoryLayout<sockaddr_in>.size
        case AF_INET6:
            guard Int(length) >= MemoryLayout<sockaddr_in6>.size - MemoryLayout<UInt32>.size else { return nil }
            size = MemoryLayout<sockaddr_in6>.size
        case AF_UNIX: size = MemoryLayout<sockaddr_un>.size
        default: return nil
        }
        let copied = Swift.min(Int(length), size)
        withUnsafeMutableBytes(of: &storage) { dst in
            dst.copyMemory(from: UnsafeRawBufferPointer(start: address, count: copied))
        }
        self.length = Self.kernelLength(socklen_t(copied), family: CInt(storage.ss_family), storage: storage)
    }

    /// A length the kernel reported, as the kernel takes it back: a Unix-domain peer bound to a path of
    /// all 108 bytes (no NUL) is reported with a length past `sizeof(sockaddr_un)` (unix(7), BUGS),
    /// which sendto and connect refuse with EINVAL; cut to `sockaddr_un`, it names the same socket.
    /// Any length past `sockaddr_storage` (a caller's `withMutableSockaddr` body) is cut to it. An IP
    /// address is its structure's size, and a Unix path ends at its NUL (the bytes after it name nothing).
    private static func kernelLength(_ length: socklen_t, family: CInt, storage: sockaddr_storage) -> socklen_t {
        let stored = min(length, socklen_t(MemoryLayout<sockaddr_storage>.size))
        switch family {
        case AF_INET: return min(stored, socklen_t(MemoryLayout<sockaddr_in>.size))
        case AF_INET6: return min(stored, socklen_t(MemoryLayout<sockaddr_in6>.size))
        case AF_UNIX:
            let unix = min(stored, socklen_t(MemoryLayout<sockaddr_un>.size))
            let pathStart = MemoryLayout<sa_family_t>.size
            guard Int(unix) > pathStart else { return unix }
            return withUnsafeBytes(of: storage) { raw in
                // An abstract name (a NUL first) is all its bytes; a path ends at its NUL, kept.
                guard raw[pathStart] != 0 else { return unix }
                let path = raw[pathStart..<Int(unix)]
                // A path given without its NUL (C's SUN_LEN, CPython's length) names the same file as
                // the kernel's report, which counts the NUL: counted here too when the byte after it
                // is the NUL (always, in a fresh copy: the storage starts zeroed).
                guard let nul = path.firstIndex(of: 0) else {
                    let end = Int(unix)
                    return end < MemoryLayout<sockaddr_un>.size && raw[end] == 0 ? unix + 1 : unix
                }
                return socklen_t(nul + 1)
            }
        default: return stored
        }
    }

    /// A numeric IPv4 (`A.B.C.D`) or IPv6 address (no brackets) and a port. An IPv6 address may carry
    /// a zone (RFC 4007): `fe80::1%2` (an interface index) or `fe80::1%eth0` (an interface name,
    /// looked up with `if_nametoindex`, which asks the kernel, never a name server); the index becomes
    /// the address's `sin6_scope_id` (an all-digit zone is always an index: see `zoned`).
    public init(ip: String, port: UInt16) throws(ParseError) {
        guard !ip.utf8.contains(0) else { throw ParseError(text: ip, reason: "the address contains a NUL byte") }
        if let percent = ip.utf8.firstIndex(of: UInt8(ascii: "%")) {
            let (address, scope) = try Self.zoned(ip, at: percent)
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            sin6.sin6_addr = address
            sin6.sin6_scope_id = scope
            self.init(raw: sin6)
            return
        }
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

    /// The IPv6 address and interface index of `text`, whose zone starts at `percent`: the part before
    /// it must be an IPv6 address (an IPv4 address has no zone), the zone an index in ASCII digits
    /// (leading zeros allowed, at most 4,294,967,295) or the name of an interface this machine has
    /// (1 to 15 bytes).
    static func zoned(_ text: String, at percent: String.UTF8View.Index) throws(ParseError) -> (in6_addr, UInt32) {
        let refuse = { (reason: String) in ParseError(text: text, reason: reason) }
        var address = in6_addr()
        let before = String(decoding: text.utf8[..<percent], as: UTF8.self)
        guard inet_pton(AF_INET6, before, &address) == 1 else {
            var v4 = in_addr()
            if inet_pton(AF_INET, before, &v4) == 1 { throw refuse("a zone (%) belongs to an IPv6 address, not an IPv4 one") }
            throw refuse("not a numeric IPv6 address before the zone (%)")
        }
        let zone = text.utf8[text.utf8.index(after: percent)...]
        guard !zone.isEmpty else { throw refuse("the zone after % is empty (write an interface index or name, as in fe80::1%1)") }
        if zone.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) {
            // An index (leading zeros allowed, as glibc takes them); digits first, so that the printed
            // form parses back (glibc and Go look an all-digit zone up as a name first).
            let significant = zone.drop { $0 == UInt8(ascii: "0") }
            var index: UInt64 = 0
            for digit in significant.prefix(11) { index = index * 10 + UInt64(digit - UInt8(ascii: "0")) }
            guard significant.count <= 10, index <= UInt64(UInt32.max) else { throw refuse("the zone's interface index is over 4294967295") }
            return (address, UInt32(index))
        }
        let name = String(decoding: zone, as: UTF8.self)
        // Linux's names have no '/', ':' (the kernel would cut the name there: "lo:80" is lo),
        // '%' or whitespace.
        guard zone.count < Self.interfaceNameCapacity, !zone.contains(where: { Self.refusedInInterfaceName.contains($0) }),
              !name.unicodeScalars.contains(where: { $0.properties.isWhitespace || $0.properties.generalCategory == .control }) else {
            throw refuse("the zone is neither an interface index nor an interface name (1 to \(Self.interfaceNameCapacity - 1) bytes, no '/', ':', '%' or whitespace)")
        }
        let index = if_nametoindex(name)
        guard index != 0 else {
            let code = Glibc.errno
            if code == ENODEV || code == ENXIO || code == 0 { throw refuse("no network interface is named \(name)") }
            throw refuse("the interface \(name) could not be looked up: \(ErrnoTable.name(code)) (\(ErrnoTable.message(code)))")
        }
        return (address, index)
    }

    /// IFNAMSIZ: an interface's name has at most 15 bytes.
    private static let interfaceNameCapacity = 16
    /// Bytes no Linux interface name has.
    private static let refusedInInterfaceName: [UInt8] = [UInt8(ascii: "/"), UInt8(ascii: ":"), UInt8(ascii: "%")]

    /// A Unix-domain path in the filesystem: 1 to 107 bytes, no NUL byte (a path starting with NUL
    /// would be a Linux abstract name: use ``init(abstractUnixName:)`` for that).
    public init(unixPath path: String) throws(ParseError) {
        let bytes = Array(path.utf8)
        guard !bytes.contains(0) else {
            throw ParseError(text: path, reason: "the path contains a NUL byte (for an abstract name use init(abstractUnixName:))")
        }
        guard !bytes.isEmpty, bytes.count < Self.sunPathCapacity else {
            throw ParseError(text: path, reason: "a Unix-domain path must have 1 to \(Self.sunPathCapacity - 1) bytes")
        }
        self.init(sunPath: bytes, length: bytes.count + 1)   // with its terminating NUL
    }

    /// A Linux abstract Unix-domain name (no file; it goes away with the last socket bound to it):
    /// 1 to 107 bytes, no NUL byte. Shown as `unix:@name`; its ``unixPath`` is nil.
    public init(abstractUnixName name: String) throws(ParseError) {
        let bytes = Array(name.utf8)
        guard !bytes.contains(0) else { throw ParseError(text: name, reason: Self.nulInName) }
        guard !bytes.isEmpty, bytes.count < Self.sunPathCapacity else {
            throw ParseError(text: name, reason: "an abstract name must have 1 to \(Self.sunPathCapacity - 1) bytes")
        }
        self.init(sunPath: [0] + bytes, length: bytes.count + 1)   // a leading NUL, no terminating one
    }

    /// The capacity of `sun_path` (108 bytes on Linux).
    private static let sunPathCapacity = MemoryLayout.size(ofValue: sockaddr_un().sun_path)

    private init(sunPath bytes: [UInt8], length: Int) {
        var sun = sockaddr_un()
        sun.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &sun.sun_path) { dst in dst.copyBytes(from: bytes) }
        self.init(raw: sun, length: socklen_t(MemoryLayout<sa_family_t>.size + length))
    }

    /// The bytes of `sun_path` within ``length`` (nil unless this is a Unix-domain address).
    var sunPathBytes: [UInt8]? {
        guard CInt(storage.ss_family) == AF_UNIX else { return nil }
        let start = MemoryLayout<sa_family_t>.size
        let end = min(Int(length), MemoryLayout<sockaddr_un>.size)
        return end > start ? withUnsafeBytes(of: storage) { Array($0[start..<end]) } : []
    }

    /// The filesystem path of a Unix-domain address as the kernel takes it: its bytes up to the first
    /// NUL, with a NUL after them (for lstat and unlink), whether or not they are UTF-8; nil for any
    /// other address, an abstract name and a nameless socket.
    var filesystemPath: [CChar]? {
        guard let bytes = sunPathBytes, let first = bytes.first, first != 0 else { return nil }
        return bytes.prefix { $0 != 0 }.map { CChar(bitPattern: $0) } + [0]
    }

    /// The name of a Linux abstract Unix-domain address (without the leading NUL), nil otherwise.
    public var abstractUnixName: String? {
        guard let bytes = sunPathBytes, bytes.first == 0 else { return nil }
        return String(decoding: bytes.dropFirst(), as: UTF8.self)
    }

    /// Parses `A.B.C.D:PORT`, `[IPv6]:PORT` or `unix:PATH` (numeric only; see ``resolve(_:)``). The
    /// grammar is ``splitHostPort(_:)``'s; `unix:@x` is the filesystem path `@x`, never an abstract name.
    public init(_ text: String) throws(ParseError) {
        if let path = Self.unixPathText(text) {
            // The error names the text parsed, as for host:port texts.
            do { try self.init(unixPath: path) } catch { throw ParseError(text: text, reason: error.reason) }
            return
        }
        let (host, port) = try Self.parseHostPort(text)
        do {
            try self.init(ip: host, port: port)
        } catch {
            throw ParseError(text: text, reason: "the host is not a numeric IPv4 or IPv6 address (resolve names with SocketAddress.resolve or Resolution)")
        }
    }

    /// Resolves `HOST:PORT` (names through getaddrinfo), `[IPv6]:PORT` or `unix:PATH`; returns every
    /// address, in the resolver's order. A numeric host is never looked up; `localhost`, `localhost.` and
    /// `*.localhost` (any case) are `[::1]:PORT` then `127.0.0.1:PORT`, never asked of the system
    /// resolver (RFC 6761 section 6.3). Blocks while getaddrinfo runs: inside a loop, use ``Resolution``.
    public static func resolve(_ text: String) throws(ParseError) -> [SocketAddress] {
        if unixPathText(text) != nil { return [try SocketAddress(text)] }
        let (host, port) = try parseHostPort(text)
        if let numeric = try? SocketAddress(ip: host, port: port) { return [numeric] }
        if isLocalhostName(host) { return [loopback(.ipv6, port: port), loopback(.ipv4, port: port)] }
        var hints = addrinfo()
        hints.ai_socktype = CInt(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &list)
        let code = Glibc.errno
        guard status == 0, let list else { throw lookupFailure(text, host: host, status: status, errno: code) }
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
        guard !out.isEmpty else { throw lookupFailure(text, host: host, status: 0, errno: 0) }
        return out
    }

    /// `resolve`'s failed lookup: a ``ParseError`` whose ``ParseError/resolution`` says what kind of
    /// failure (a name not found, a name server that could not answer now, out of descriptors with
    /// its errno), as ``Resolution`` and ``Connector`` say it. Status 0: an answer with no address.
    package static func lookupFailure(_ text: String, host: String, status: CInt, errno code: CInt) -> ParseError {
        let failure = status == 0 ? ResolutionError(host: host, reason: "no address", kind: .notFound)
                                  : ResolutionError(host: host, gaiStatus: status, errno: code)
        return ParseError(text: text, reason: failure.reason, resolution: failure)
    }

    /// An address of `::/96` other than `::` and `::1` (the deprecated IPv4-compatible range), as RFC
    /// 5952 writes it: `::a:b`, where glibc's inet_ntop writes `::0.10.0.11` (Go and Python print the
    /// groups). Nil for every other address (inet_ntop's text is RFC 5952's).
    static func compatibleFormFixed(_ address: in6_addr) -> String? {
        let bytes = withUnsafeBytes(of: address) { Array($0) }
        guard bytes[0..<12].allSatisfy({ $0 == 0 }) else { return nil }
        let high = UInt16(bytes[12]) << 8 | UInt16(bytes[13]), low = UInt16(bytes[14]) << 8 | UInt16(bytes[15])
        if high == 0 && low <= 1 { return nil }   // "::" and "::1"
        let hex = { (group: UInt16) in String(group, radix: 16) }
        return high == 0 ? "::\(hex(low))" : "::\(hex(high)):\(hex(low))"
    }

    /// Splits `HOST:PORT` or `[IPv6]:PORT` without resolving anything. The grammar (Docs/Connect.md,
    /// "Addresses and names"): brackets hold exactly an IPv6 address, with or without a zone (`%1`, `%eth0`); an unbracketed host is
    /// 1 to 253 bytes with no `:`, NUL, whitespace or control character, and a dotted-decimal IPv4
    /// address if it ends in a number; the port is 1 to 5 ASCII digits, 0 to 65535.
    /// `unix:PATH` is refused (it names a Unix-domain address, as ``init(_:)``, ``resolve(_:)`` and
    /// `Resolution` read it: `unix:80` is the path `80`, never the host `unix`).
    public static func splitHostPort(_ text: String) throws(ParseError) -> (host: String, port: UInt16) {
        if unixPathText(text) != nil {
            throw ParseError(text: text, reason: "a Unix-domain address (unix:PATH) has no host and port")
        }
        return try parseHostPort(text)
    }

    /// The one `HOST:PORT` parser: ``init(_:)``, ``resolve(_:)``, ``splitHostPort(_:)`` and
    /// `Resolution.init(_:waker:resolver:)` all go through it.
    private static func parseHostPort(_ text: String) throws(ParseError) -> (host: String, port: UInt16) {
        let refuse = { (reason: String) in ParseError(text: text, reason: reason) }
        guard !text.utf8.contains(0) else { throw refuse("the text contains a NUL byte") }
        let host: Substring
        let portText: Substring
        // Byte-wise throughout (the grammar is ASCII): a ':' followed by a combining mark is one
        // Character, which a Character search would miss.
        let bytes = text.utf8
        if bytes.first == UInt8(ascii: "[") {
            guard let close = bytes.firstIndex(of: UInt8(ascii: "]")) else { throw refuse("expected [IPv6]:PORT, with a closing ]") }
            host = text[bytes.index(after: bytes.startIndex)..<close]
            if let problem = ipv6LiteralProblem(host) { throw refuse(problem) }
            let afterClose = bytes.index(after: close)
            guard afterClose < bytes.endIndex, bytes[afterClose] == UInt8(ascii: ":") else {
                throw refuse("expected a port after the brackets: [IPv6]:PORT")
            }
            portText = text[bytes.index(after: afterClose)...]
        } else {
            guard let colon = bytes.firstIndex(of: UInt8(ascii: ":")) else { throw refuse("expected HOST:PORT") }
            host = text[..<colon]
            portText = text[bytes.index(after: colon)...]
            if portText.utf8.contains(UInt8(ascii: ":")) {
                if text.utf8.contains(UInt8(ascii: "%")) { throw refuse("put an IPv6 address and its zone in brackets, as in [fe80::1%1]:80") }
                throw refuse("put an IPv6 address in brackets, as in [::1]:80")
            }
            if let problem = nameProblem(host) { throw refuse(problem) }
        }
        guard let port = parsePort(portText) else { throw refuse("the port must be 1 to \(maximumPortDigits) ASCII digits, 0 to 65535") }
        return (String(host), port)
    }

    /// The longest host name, in bytes (RFC 1035: 253 characters in text form).
    static let maximumNameLength = 253
    /// The longest port text: five digits (leading zeros allowed).
    private static let maximumPortDigits = 5
    /// The prefix of a Unix-domain path in the text forms.
    private static let unixScheme = "unix:"
    /// The loopback IPv4 address, 127.0.0.1, in host byte order.
    private static let ipv4Loopback: UInt32 = 0x7F00_0001
    /// The reason given for a name with a NUL byte (C would see only the part before it).
    static let nulInName = "the name contains a NUL byte"

    /// The path of a `unix:PATH` text, nil for any other text (byte-wise: no grapheme merging).
    static func unixPathText(_ text: String) -> String? {
        guard text.utf8.starts(with: unixScheme.utf8) else { return nil }
        return String(decoding: text.utf8.dropFirst(unixScheme.utf8.count), as: UTF8.self)
    }

    /// Why the inside of brackets is not an IPv6 address, nil when it is one.
    private static func ipv6LiteralProblem(_ host: Substring) -> String? {
        if host.isEmpty { return "the brackets are empty: write an IPv6 address in them, as in [::1]:80" }
        let literal = String(host)
        if let percent = literal.utf8.firstIndex(of: UInt8(ascii: "%")) {
            do { _ = try zoned(literal, at: percent) } catch { return error.reason }
            return nil
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, String(host), &v6) == 1 else {
            return "brackets hold only an IPv6 address, as in [::1]:80; write an IPv4 address or a name without them"
        }
        return nil
    }

    /// Why `name` (an unbracketed host: a name or a dotted-decimal IPv4 address) is refused, nil when
    /// it is acceptable. Shared with ``Resolution``, whose `host` is checked the same way.
    static func nameProblem(_ name: some StringProtocol) -> String? {
        if name.utf8.contains(0) { return nulInName }
        if name.isEmpty { return "the host is empty (write 127.0.0.1, [::1] or localhost)" }
        // A '%' is a zone's (no name has one): its reason, whether the address before it is IPv4
        // ("127.0.0.1%1"), not an address, or a zone that names no interface; never a lookup.
        // (Only a name with a '%' is copied: the check runs for every host a caller passes.)
        if name.utf8.contains(UInt8(ascii: "%")) {
            var text = String(name)
            if text.hasPrefix("["), text.hasSuffix("]"), text.utf8.count > 2 { text = String(text.dropFirst().dropLast()) }
            if let percent = text.utf8.firstIndex(of: UInt8(ascii: "%")) {
                do { _ = try zoned(text, at: percent) } catch { return error.reason }
            }
        }
        if name.utf8.contains(UInt8(ascii: ":")) {
            return "a name contains no ':' (put an IPv6 address in brackets, as in [::1]:80)"
        }
        // Brackets hold an IPv6 address and nothing else (Go's SplitHostPort: "unexpected '['").
        if name.utf8.contains(UInt8(ascii: "[")) || name.utf8.contains(UInt8(ascii: "]")) {
            return "brackets hold only an IPv6 address, as in [::1]"
        }
        if name.unicodeScalars.contains(where: \.properties.isWhitespace) { return "the name contains whitespace" }
        if name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            return "the name contains a control character"
        }
        // No empty label: ".", ".example", "a..b" and "a.." name nothing (one trailing dot is the root).
        let labels = name.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        if labels.dropLast(name.hasSuffix(".") ? 1 : 0).contains(where: \.isEmpty) { return "a name has an empty label (two dots, or a dot first)" }
        // 253 bytes, not counting one trailing dot (the root: `example.com.` names `example.com`).
        let counted = name.hasSuffix(".") ? name.utf8.count - 1 : name.utf8.count
        if counted > maximumNameLength { return "a name has at most \(maximumNameLength) bytes (a trailing dot aside)" }
        if endsInNumber(name) {
            var v4 = in_addr()
            if inet_pton(AF_INET, String(name), &v4) != 1 {
                return "not a numeric IPv4 address A.B.C.D (each 0 to 255), and a name cannot end in a number"
            }
        }
        return nil
    }

    /// Whether the last label (after one trailing dot) is a number, decimal or `0x` hexadecimal: the
    /// forms inet_aton (and so getaddrinfo) would take as an IPv4 address, such as `127.1`.
    private static func endsInNumber(_ name: some StringProtocol) -> Bool {
        var labels = name.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        if labels.count > 1, labels.last?.isEmpty == true { labels.removeLast() }
        guard let last = labels.last, !last.isEmpty else { return false }
        if last.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) { return true }
        let hexPrefix = [UInt8(ascii: "0"), UInt8(ascii: "x")]
        let lowered = last.map { $0 | 0x20 }
        return lowered.starts(with: hexPrefix) && lowered.dropFirst(2).allSatisfy {
            (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0)
        }
    }

    /// 1 to 5 ASCII digits, 0 to 65535 (no sign, no space).
    private static func parsePort(_ text: Substring) -> UInt16? {
        guard (1...maximumPortDigits).contains(text.utf8.count),
              text.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) else { return nil }
        return UInt16(text)
    }

    /// Whether `name` is `localhost`, `localhost.` or ends in `.localhost` (ASCII case-insensitive):
    /// the names RFC 6761 section 6.3 keeps on this machine.
    static func isLocalhostName(_ name: some StringProtocol) -> Bool {
        let dot = UInt8(ascii: ".")
        var bytes = name.utf8.map { (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0) ? $0 | 0x20 : $0 }
        if bytes.last == dot { bytes.removeLast() }
        let localhost = Array("localhost".utf8)
        guard bytes.count >= localhost.count, bytes.suffix(localhost.count).elementsEqual(localhost) else { return false }
        return bytes.count == localhost.count || bytes[bytes.count - localhost.count - 1] == dot
    }

    /// For an IPv4 address, the same address and port IPv4-mapped (`[::ffff:A.B.C.D]:port`), which a
    /// dual-stack IPv6 socket sends to and connects to; nil for any other family.
    package var ipv4Mapped: SocketAddress? {
        guard family == .ipv4 else { return nil }
        let sin = withUnsafeBytes(of: storage) { $0.load(as: sockaddr_in.self) }
        var sin6 = sockaddr_in6()
        sin6.sin6_family = sa_family_t(AF_INET6)
        sin6.sin6_port = sin.sin_port
        withUnsafeMutableBytes(of: &sin6.sin6_addr) { bytes in
            bytes[10] = 0xFF
            bytes[11] = 0xFF
            withUnsafeBytes(of: sin.sin_addr) { bytes[12..<16].copyBytes(from: $0) }
        }
        return SocketAddress(raw: sin6)
    }

    /// An IPv6 address's zone as an interface index (`sin6_scope_id`, `%eth1` or `%2` in the text); 0
    /// for none, and for every other family.
    package var zoneIndex: UInt32 {
        guard family == .ipv6 else { return 0 }
        return withUnsafeBytes(of: storage) { $0.load(as: sockaddr_in6.self) }.sin6_scope_id
    }

    /// For the IPv6 unspecified address with no zone (`[::]:PORT`, a wildcard listener's own
    /// address): `0.0.0.0:PORT`, which a connect's lookup of it answers too (Go's rule, its issue
    /// 18806: the kernel dials `::` as `::1`, and where IPv6 does not work the IPv4 wildcard still
    /// reaches a dual-stack or IPv4 listener); nil for any other address. Not `resolve`'s: an address
    /// to bind stays one.
    package var unspecifiedIPv4: SocketAddress? {
        guard family == .ipv6 else { return nil }
        let sin6 = withUnsafeBytes(of: storage) { $0.load(as: sockaddr_in6.self) }
        guard sin6.sin6_scope_id == 0, withUnsafeBytes(of: sin6.sin6_addr, { $0.allSatisfy { $0 == 0 } }) else { return nil }
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = sin6.sin6_port
        return SocketAddress(raw: sin)
    }

    /// `[::1]:port` (`.ipv6`) or `127.0.0.1:port` (otherwise), built without parsing.
    static func loopback(_ family: Family, port: UInt16) -> SocketAddress {
        if family == .ipv6 {
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin6.sin6_addr) { $0[$0.count - 1] = 1 }
            return SocketAddress(raw: sin6)
        }
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        sin.sin_addr.s_addr = ipv4Loopback.bigEndian
        return SocketAddress(raw: sin)
    }

    private init<T>(raw: T, length: socklen_t? = nil) {
        withUnsafeMutableBytes(of: &storage) { dst in
            withUnsafeBytes(of: raw) { src in dst.copyMemory(from: src) }
        }
        self.length = length ?? socklen_t(MemoryLayout<T>.size)
    }

    /// The address of a socket's local end (getsockname).
    public static func local(of fd: CInt) throws(SocketError) -> SocketAddress {
        try name(of: fd, peer: false)
    }

    /// The address of a socket's peer (getpeername).
    public static func peer(of fd: CInt) throws(SocketError) -> SocketAddress {
        try name(of: fd, peer: true)
    }

    /// The peer of a connection just accepted without asking `accept(2)` for the address (io_uring's
    /// multishot accept), as `accept(2)` would have reported it.
    ///
    /// `getpeername` fails with ENOTCONN once the peer has reset the connection, and a connection reset
    /// while it waited in the listen queue is still handed out by `accept(2)`, with its address. The
    /// kernel keeps that address: `SO_PEERNAME` asks for it the way `accept(2)` does, given exactly the
    /// length of the family's address (a longer one is EINVAL, a shorter one truncated). TCP only: an
    /// accepted Unix-domain socket keeps its peer for getpeername.
    package static func acceptedPeer(of fd: CInt) throws(SocketError) -> SocketAddress {
        do { return try peer(of: fd) } catch let error where error.errno == ENOTCONN {
            let size: Int
            switch try name(of: fd, peer: false).domain {
            case AF_INET: size = MemoryLayout<sockaddr_in>.size
            case AF_INET6: size = MemoryLayout<sockaddr_in6>.size
            default: throw error
            }
            var out = SocketAddress()
            let status = out.withMutableSockaddr { address, length in
                length.pointee = socklen_t(size)
                return getsockopt(fd, SOL_SOCKET, SO_PEERNAME, UnsafeMutableRawPointer(address), length)
            }
            guard status == 0 else { throw error }
            return out
        }
    }

    private static func name(of fd: CInt, peer: Bool) throws(SocketError) -> SocketAddress {
        var out = SocketAddress()
        let status = out.withMutableSockaddr { address, length in
            peer ? getpeername(fd, address, length) : getsockname(fd, address, length)
        }
        guard status == 0 else { throw SocketError(errno: errno, operation: peer ? "getpeername" : "getsockname") }
        // A family this type does not name (AF_NETLINK, AF_VSOCK, ...) is refused, as
        // `init?(_:length:)` refuses it: read as IPv4 it was a wrong answer, and a destination no
        // check caught (outside reader, Go's TestUnixConnLocalAndRemoteNames).
        switch out.domain {
        case AF_INET, AF_INET6, AF_UNIX, AF_UNSPEC: return out
        default:
            throw SocketError(.invalidArgument, operation: "\(peer ? "getpeername" : "getsockname"): address family \(out.domain) is not IPv4, IPv6 or Unix")
        }
    }

    /// An empty address (family unspecified), for the kernel to fill.
    public init() {}

    /// An empty address (``init()``, length 0): never a destination, though its ``family`` reads as
    /// IPv4. Entries that take a destination refuse it (``SocketError/Kind/invalidArgument``).
    var isEmpty: Bool { length == 0 }

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
        length = Self.kernelLength(size, family: CInt(storage.ss_family), storage: storage)
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

    /// "1.2.3.4:80", "[::1]:80", "[fe80::1%2]:80" for a scoped IPv6 address (its interface index,
    /// which ``init(_:)`` reads back), "unix:/path", or "unix:@name" for an abstract name (a display
    /// form: ``init(_:)`` reads "unix:@name" back as the path "@name").
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
                let shown = Self.compatibleFormFixed(sin6.sin6_addr) ?? Self.string(text)
                // A scoped address (link-local) shows its interface index, as Go and Rust show the zone:
                // two such addresses on different interfaces are not equal and must not print alike.
                let scope = sin6.sin6_scope_id == 0 ? "" : "%\(sin6.sin6_scope_id)"
                return "[\(shown)\(scope)]:\(UInt16(bigEndian: sin6.sin6_port))"
            case AF_UNIX:
                if let name = abstractUnixName { return "unix:@" + name }
                return "unix:" + String(decoding: (sunPathBytes ?? []).prefix { $0 != 0 }, as: UTF8.self)
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
