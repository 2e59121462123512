#if canImport(Glibc)
import Glibc
#endif
@_spi(Backend) import ReadinessCore
import CReadinessNet

/// Storage for many datagrams, received or sent by one system call each way (`recvmmsg`,
/// `sendmmsg`): ``capacity`` slots of ``slotSize`` bytes, with a source or destination address and a
/// length per slot, all allocated once by ``init(capacity:slotSize:)``. Receiving into it and sending
/// from it allocate nothing, so a loop that reuses one batch allocates nothing per datagram.
///
/// For receiving, `socket.receive(into: batch)` fills slots `0..<count`: each
/// slot's ``datagram(_:)`` (count, real length, source, truncation) and ``withPayload(_:_:)``.
/// For sending, `append(_:to:)` copies a payload into the next slot, and
/// ``DatagramSocket/send(_:from:)`` sends slots from an index on. **A received batch can be sent as it
/// is**: each datagram goes back to its source with no copy (an echo in place); a truncated slot sends
/// the bytes it stored, and still reports its real length and its truncation afterwards.
///
/// Used from one thread at a time, like the socket.
public final class DatagramBatch {
    /// How many datagrams it holds at most (1 to ``maximumCapacity``).
    public let capacity: Int
    /// The bytes of each slot: larger datagrams are received truncated (and reported as such); a
    /// larger payload is refused by `append(_:to:)`.
    public let slotSize: Int
    /// The datagrams it holds (received, or appended to send).
    public private(set) var count = 0

    private let payloads: UnsafeMutableRawPointer
    private let addresses: UnsafeMutablePointer<sockaddr_storage>
    private let addressLengths: UnsafeMutablePointer<socklen_t>
    private let lengths: UnsafeMutablePointer<Int>
    private let truncated: UnsafeMutablePointer<CInt>
    /// Slots received from a sender with no address (an unbound Unix socket's): no destination to
    /// send back to, unless the socket is connected (its peer is then the sender).
    private let nameless: UnsafeMutablePointer<Bool>
    private let scratch: UnsafeMutableRawPointer

    /// The most slots a batch has: the most messages one `recvmmsg`/`sendmmsg` takes (UIO_MAXIOV).
    public static let maximumCapacity = Int(rd_net_mmsg_max())

    /// A batch of `capacity` slots (1 to ``maximumCapacity``) of `slotSize` bytes each (0 to
    /// ``DatagramSocket/defaultReceiveSize``, or to 16 MiB in total); other values are refused with
    /// ``SocketError/Kind/invalidArgument``.
    public init(capacity: Int, slotSize: Int) throws(SocketError) {
        guard capacity >= 1, capacity <= Self.maximumCapacity, slotSize >= 0, slotSize <= DatagramSocket.defaultReceiveSize,
              capacity * slotSize <= Self.maximumBytes else {
            throw SocketError(.invalidArgument, operation: "DatagramBatch(capacity: \(capacity), slotSize: \(slotSize))")
        }
        self.capacity = capacity
        self.slotSize = slotSize
        payloads = .allocate(byteCount: Swift.max(capacity * slotSize, 1), alignment: 16)
        addresses = .allocate(capacity: capacity)
        addresses.initialize(repeating: sockaddr_storage(), count: capacity)
        addressLengths = .allocate(capacity: capacity)
        addressLengths.initialize(repeating: 0, count: capacity)
        lengths = .allocate(capacity: capacity)
        lengths.initialize(repeating: 0, count: capacity)
        truncated = .allocate(capacity: capacity)
        truncated.initialize(repeating: 0, count: capacity)
        nameless = .allocate(capacity: capacity)
        nameless.initialize(repeating: false, count: capacity)
        scratch = .allocate(byteCount: rd_net_mmsg_scratch_size(UInt32(capacity)), alignment: 16)
    }

    /// The most payload bytes a batch allocates (16 MiB).
    public static let maximumBytes = 16 << 20

    deinit {
        payloads.deallocate()
        addresses.deallocate()
        addressLengths.deallocate()
        lengths.deallocate()
        truncated.deallocate()
        nameless.deallocate()
        scratch.deallocate()
    }

    /// Empties the batch (its storage stays).
    public func removeAll() { count = 0 }

    /// Slot `index` (below ``count``): its stored byte count, real length, source (received) or
    /// destination (appended), and truncation. An index outside `0..<count` is refused.
    public func datagram(_ index: Int) throws(SocketError) -> ReceivedDatagram {
        try check(index)
        let length = lengths[index]
        return ReceivedDatagram(count: Swift.min(length, slotSize), length: length, source: address(index),
                                isTruncated: truncated[index] != 0)
    }

    /// Calls `body` with slot `index`'s stored bytes (below ``count``; refused otherwise). The pointer
    /// is valid only inside `body`.
    public func withPayload<R>(_ index: Int, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        try check(index)
        return try body(UnsafeRawBufferPointer(start: payloads + index * slotSize, count: Swift.min(lengths[index], slotSize)))
    }

    /// A copy of slot `index`'s stored bytes (a convenience: ``withPayload(_:_:)`` copies nothing).
    public func payload(_ index: Int) throws(SocketError) -> [UInt8] {
        try check(index)
        return Array(UnsafeRawBufferPointer(start: payloads + index * slotSize, count: Swift.min(lengths[index], slotSize)))
    }

    /// Copies `bytes` into the next slot, to be sent to `destination` (nil: the connected peer). A
    /// full batch, or a payload larger than ``slotSize``, is refused (``SocketError/Kind/invalidArgument``).
    public func append(_ bytes: UnsafeRawBufferPointer, to destination: SocketAddress? = nil) throws(SocketError) {
        guard count < capacity, bytes.count <= slotSize else {
            throw SocketError(.invalidArgument, operation: "append \(bytes.count) bytes to a batch of \(count)/\(capacity) slots of \(slotSize)")
        }
        if let destination, let problem = DatagramSocket.noDestination(destination) {
            throw SocketError(.invalidArgument, operation: "append to a batch: \(problem)")
        }
        if let base = bytes.baseAddress, !bytes.isEmpty { (payloads + count * slotSize).copyMemory(from: base, byteCount: bytes.count) }
        lengths[count] = bytes.count
        truncated[count] = 0
        nameless[count] = false
        if let destination {
            destination.withSockaddr { pointer, length in
                UnsafeMutableRawPointer(addresses + count).copyMemory(from: pointer, byteCount: Int(length))
                addressLengths[count] = length
            }
        } else {
            addressLengths[count] = 0
        }
        count += 1
    }

    /// Copies `bytes` into the next slot (the raw-buffer form).
    public func append(_ bytes: [UInt8], to destination: SocketAddress? = nil) throws(SocketError) {
        let outcome = bytes.withUnsafeBytes { raw in Result { () throws(SocketError) in try append(raw, to: destination) } }
        try outcome.get()
    }

    private func check(_ index: Int) throws(SocketError) {
        guard index >= 0, index < count else {
            throw SocketError(.invalidArgument, operation: "slot \(index) of a batch of \(count)")
        }
    }

    private func address(_ index: Int) -> SocketAddress? {
        let length = addressLengths[index]
        guard length > 0 else { return nil }
        return UnsafeRawPointer(addresses + index).withMemoryRebound(to: sockaddr.self, capacity: 1) {
            SocketAddress($0, length: length)
        }
    }

    /// recvmmsg into every slot: the number received (nil: would block).
    func receive(_ fd: CInt) throws(SocketError) -> Int? {
        for i in 0..<capacity { addressLengths[i] = socklen_t(MemoryLayout<sockaddr_storage>.size) }
        let n = Sys.retryingEINTR {
            rd_net_recvmmsg(fd, payloads, slotSize, UInt32(capacity), addresses, addressLengths, lengths, truncated, scratch)
        }
        if n < 0 {
            count = 0
            let code = errno
            if code == EAGAIN || code == EWOULDBLOCK { return nil }
            throw SocketError(errno: code, operation: "recvmmsg")
        }
        count = Int(n)
        // A Unix-domain source bound to a path of all 108 bytes comes with a length past sockaddr_un,
        // which sendmmsg would refuse (an echo in place): cut as SocketAddress cuts it.
        let unixLength = socklen_t(MemoryLayout<sockaddr_un>.size)
        for i in 0..<count {
            nameless[i] = addressLengths[i] == 0
            if addressLengths[i] > unixLength && CInt(addresses[i].ss_family) == AF_UNIX { addressLengths[i] = unixLength }
        }
        return Int(n)
    }

    /// Whether any slot names a destination (a batch for a connected socket's peer names none).
    package var namesDestination: Bool { (0..<count).contains { addressLengths[$0] > 0 } }

    /// sendmmsg of slots `start..<count` from a socket of `family`: the number sent (nil: would block).
    func send(_ fd: CInt, from start: Int, family: SocketAddress.Family) throws(SocketError) -> Int? {
        guard start >= 0, start <= count else {
            throw SocketError(.invalidArgument, operation: "send from slot \(start) of a batch of \(count)")
        }
        if start == count {
            // Nothing to send, but a closed socket is closed (as an empty single send says).
            if fd < 0 { throw SocketError(errno: EBADF, operation: "sendmmsg") }
            return 0
        }
        let domain: CInt = switch family {
        case .ipv4: AF_INET
        case .ipv6: AF_INET6
        case .unix: AF_UNIX
        }
        // A closed socket is closed, whatever the slots say (as the empty send above says it).
        if fd < 0 { throw SocketError(errno: EBADF, operation: "sendmmsg") }
        var end = count
        var connected: Bool?
        for i in start..<count {
            // A received batch sent back (an echo in place, no copy): each slot goes to its source with
            // the bytes stored in it. A truncated slot's length is the datagram's real length, larger
            // than the slot: the bytes stored are what is sent (never bytes past the slot; the C shim
            // cuts it, so the slot still tells its truncation and real length afterwards).
            // A slot no datagram can be sent to is refused as a single send refuses its destination:
            // the slots before it are sent, and the send that starts at it fails, before sendmmsg.
            // That is a destination of another family (an IPv4 one of an IPv6 socket is sent,
            // IPv4-mapped by the kernel), an IP one with port 0 (a crafted source; the kernel's
            // EINVAL otherwise), and a source with no address (an unbound Unix client's) on a socket
            // that is not connected (the kernel's ENOTCONN otherwise, as if the socket were at fault;
            // getpeername asked once, only for such a slot) or is connected to a named peer (sendmmsg
            // would send a stranger's datagram to that peer).
            let problem: String
            if addressLengths[i] == 0 {
                guard nameless[i] else { continue }
                // Only ENOTCONN refuses the slot; another getpeername failure is sendmmsg's to report.
                // A nameless source is the peer only when the peer is nameless (a socketpair's end): a
                // socket connected to a named peer receives nothing from a nameless one (the kernel's
                // EPERM for its sends), so such a slot was queued before the connect and is a stranger's.
                if connected == nil {
                    do { connected = try SocketAddress.peer(of: fd).isNamelessUnix } catch { connected = error.errno != ENOTCONN }
                }
                if connected == true { continue }
                problem = "its source has no address (an unbound Unix socket): no destination"
            } else {
                let slotFamily = CInt(addresses[i].ss_family)
                if slotFamily == domain || (domain == AF_INET6 && slotFamily == AF_INET) {
                    // sin_port and sin6_port: the same offset, and 0 in any byte order.
                    let port = UnsafeRawPointer(addresses + i).load(fromByteOffset: MemoryLayout<sa_family_t>.size, as: UInt16.self)
                    if slotFamily == AF_UNIX || port != 0 { continue }
                    problem = "\(address(i).map { "\($0)" } ?? "an address with port 0"): port 0 names no peer"
                } else {
                    problem = "\(address(i).map { "\($0)" } ?? "family \(slotFamily)"): not a \(family.rawValue) address"
                }
            }
            if i == start { throw SocketError(.invalidArgument, operation: "send slot \(i) to \(problem)") }
            end = i
            break
        }
        let remaining = UInt32(end - start)
        let n = Sys.retryingEINTR {
            rd_net_sendmmsg(fd, payloads + start * slotSize, slotSize, lengths + start, addresses + start,
                            addressLengths + start, remaining, scratch)
        }
        if n < 0 {
            let code = errno
            if code == EAGAIN || code == EWOULDBLOCK {
                try DatagramSocket.checkAutobind(fd, family, "sendmmsg")
                return nil
            }
            throw SocketError(errno: code, operation: "sendmmsg")
        }
        return Int(n)
    }
}

extension DatagramSocket {
    /// Receives as many queued datagrams as `batch` has slots with one `recvmmsg`:
    /// ``IOResult/transferred(_:)`` with the number of datagrams (the batch's ``DatagramBatch/count``;
    /// each slot tells its truncation), or ``IOResult/wouldBlock`` (the batch is then empty).
    public func receive(into batch: DatagramBatch) throws(SocketError) -> IOResult {
        guard let n = try batch.receive(fd) else { return .wouldBlock }
        return .transferred(n)
    }

    /// Sends the batch's datagrams from slot `start` on with one `sendmmsg`: ``IOResult/transferred(_:)``
    /// with the number of **datagrams** sent (fewer than asked when the send buffer filled: send the
    /// rest from `start + n` once writable), or ``IOResult/wouldBlock``. A `start` outside
    /// `0...count` is refused. A slot whose destination is of another family is refused with
    /// ``SocketError/Kind/invalidArgument``, as a single `send(_:to:)` refuses it: the slots before it are sent
    /// (the count says how many) and the send that starts at it fails, before `sendmmsg`. So is a slot
    /// received from port 0, or from a sender with no address (an unbound Unix socket's) when this
    /// socket is not connected. An IPv4 destination of an IPv6 socket is not refused: the kernel sends
    /// it IPv4-mapped.
    public func send(_ batch: DatagramBatch, from start: Int = 0) throws(SocketError) -> IOResult {
        guard let n = try batch.send(fd, from: start, family: family) else { return .wouldBlock }
        return .transferred(n)
    }
}

/// The UDP offloads the running kernel has: segmentation (GSO, `UDP_SEGMENT`, Linux 4.18) and receive
/// coalescing (GRO, `UDP_GRO`, Linux 5.0). ``probe()`` asks the kernel on a scratch UDP socket.
public struct DatagramOffload: Hashable, Sendable {
    /// Whether the kernel has an offload, and why not.
    public enum Availability: Hashable, Sendable {
        /// The kernel accepts the option.
        case available
        /// It refused it: the reason (errno name and message).
        case unavailable(String)

        /// Whether it is ``available``.
        public var isAvailable: Bool { self == .available }
    }

    /// `UDP_SEGMENT`: ``DatagramSocket/setSegmentSize(_:)``.
    public var segmentation: Availability
    /// `UDP_GRO`. Probed only: turning it on makes the kernel hand over several datagrams as one
    /// buffer, told apart only by a control message this layer does not read yet, so
    /// ``DatagramSocket`` does not expose it (a receive would merge datagrams silently).
    public var receiveCoalescing: Availability

    /// Asks the kernel (two setsockopt calls on a scratch UDP socket, closed before it returns).
    public static func probe() -> DatagramOffload {
        let fd = rd_net_datagram_socket(AF_INET)
        guard fd >= 0 else {
            let reason = "socket: \(ErrnoTable.name(errno))"
            return DatagramOffload(segmentation: .unavailable(reason), receiveCoalescing: .unavailable(reason))
        }
        defer { Sys.close(fd) }
        func availability(_ status: CInt) -> Availability {
            status == 0 ? .available : .unavailable("\(ErrnoTable.name(errno)): \(ErrnoTable.message(errno))")
        }
        let segmentation = availability(rd_net_set_udp_segment(fd, CInt(DatagramSocket.probeSegmentSize)))
        let coalescing = availability(rd_net_set_udp_gro(fd, 1))
        return DatagramOffload(segmentation: segmentation, receiveCoalescing: coalescing)
    }
}

extension DatagramSocket {
    /// A segment size the offload probe sets (a typical QUIC datagram).
    static let probeSegmentSize = 1_200

    /// UDP GSO (`UDP_SEGMENT`): each later send of a buffer larger than `size` bytes is split by the
    /// kernel into datagrams of `size` bytes (the last one shorter), one system call for them all;
    /// nil turns it off. `size` must be 1 to ``maximumUDPPayload`` (``SocketError/Kind/invalidArgument``
    /// otherwise, and for a Unix socket); a kernel without it fails with the errno it gives
    /// (``DatagramOffload/probe()`` tells beforehand). The kernel sends at most 64 segments at once
    /// (UDP_MAX_SEGMENTS; 128 on newer kernels): a larger single send fails with
    /// ``SocketError/Kind/messageTooLarge`` and sends nothing (in a batch, the kernel's EINVAL).
    public func setSegmentSize(_ size: Int?) throws(SocketError) {
        if let size, size < 1 || size > Self.maximumUDPPayload {
            throw SocketError(.invalidArgument, operation: "UDP_SEGMENT \(size)")
        }
        guard family != .unix else { throw SocketError(.invalidArgument, operation: "UDP_SEGMENT on a Unix socket") }
        if rd_net_set_udp_segment(fd, CInt(size ?? 0)) != 0 { throw SocketError(errno: errno, operation: "setsockopt(UDP_SEGMENT)") }
        segmentSize = size
    }
}
