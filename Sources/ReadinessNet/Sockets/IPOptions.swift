#if canImport(Glibc)
import Glibc
#endif
import CReadinessNet

/// The IP options stream sockets, listeners and datagram sockets share (the TTL or hop limit):
/// one check of the caller's value and one system call, whatever the socket type.
enum IPOptions {
    /// The socket's address family (SO_DOMAIN).
    static func family(of fd: CInt) throws(SocketError) -> SocketAddress.Family {
        switch try NetSys.option(fd, level: SOL_SOCKET, name: SO_DOMAIN).get() {
        case AF_INET: .ipv4
        case AF_INET6: .ipv6
        default: .unix
        }
    }

    static func domain(_ family: SocketAddress.Family) -> CInt {
        switch family {
        case .ipv4: AF_INET
        case .ipv6: AF_INET6
        case .unix: AF_UNIX
        }
    }

    /// Sets the unicast TTL (IP_TTL) or hop limit (IPV6_UNICAST_HOPS): 1 to 255, and -1 on IPv6 for
    /// the route's default; or the multicast one: 0 to 255. Anything else, or a Unix-domain socket,
    /// is ``SocketError/Kind/invalidArgument`` before the system call.
    static func setHops(_ fd: CInt, _ family: SocketAddress.Family, _ hops: Int, multicast: Bool) throws(SocketError) {
        let lowest = multicast ? 0 : (family == .ipv6 ? -1 : 1)
        // Unicast 0 is refused on both families (the kernel takes 0 on IPv6: a hop limit no
        // packet could leave with).
        guard family != .unix, hops >= lowest, hops <= DatagramSocket.maximumHops, multicast || hops != 0 else {
            throw SocketError(.invalidArgument, operation: "\(multicast ? "multicast " : "")hop limit \(hops) on \(family.rawValue)")
        }
        if rd_net_set_hops(fd, domain(family), multicast ? 1 : 0, CInt(hops)) != 0 {
            throw SocketError(errno: errno, operation: multicast ? "setsockopt(multicast hops)" : "setsockopt(hops)")
        }
    }

    /// The TTL or hop limit in effect (IPv6's -1 reads back as the route's default, 64 here).
    static func hops(_ fd: CInt, _ family: SocketAddress.Family, multicast: Bool) throws(SocketError) -> Int {
        guard family != .unix else {
            throw SocketError(.invalidArgument, operation: "\(multicast ? "multicast " : "")hop limit on a Unix-domain socket")
        }
        var value: CInt = 0
        if rd_net_get_hops(fd, domain(family), multicast ? 1 : 0, &value) != 0 {
            throw SocketError(errno: errno, operation: multicast ? "getsockopt(multicast hops)" : "getsockopt(hops)")
        }
        return Int(value)
    }
}
