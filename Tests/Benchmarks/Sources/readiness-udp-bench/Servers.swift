// The echo servers of readiness-udp-bench, each run as a child process (`readiness-udp-bench --serve
// NAME`) on one thread or one loop, bound to 127.0.0.1 on a port the kernel chooses, which it prints
// as "port N" once it can receive. They echo until killed.
import CReadinessBench
import Foundation
import NIOCore
import NIOPosix
import Readiness

/// The servers, in the order of the report.
enum Contender: String, CaseIterable {
    /// AsyncDatagramSocket, one datagram per receive and per send.
    case readinessSingle = "readiness-single"
    /// AsyncDatagramSocket with DatagramBatch: one recvmmsg and one sendmmsg per batch (the loop of
    /// Examples/readiness-udp-echo).
    case readinessBatched = "readiness-batched"
    /// SwiftNIO's DatagramBootstrap, vectored reads on, flushed once per read burst.
    case nio
    /// C: epoll, recvmmsg and sendmmsg (RB_UDP_BATCH), echoed in place.
    case cBatched = "c-batched"
    /// C: epoll, recvfrom and sendto.
    case cSingle = "c-single"

    var label: String {
        switch self {
        case .readinessSingle: "Readiness async, single"
        case .readinessBatched: "Readiness async, batched"
        case .nio: "SwiftNIO DatagramBootstrap, vectored"
        case .cBatched: "C epoll + recvmmsg/sendmmsg"
        case .cSingle: "C epoll + recvfrom/sendto"
        }
    }
}

/// The slots of the Readiness batched server's batches: Examples/readiness-udp-echo's `batchCapacity`,
/// and the C loop's RB_UDP_BATCH.
let readinessBatchCapacity = Int(RB_UDP_BATCH)
/// The bytes of each slot: the C loop's and SwiftNIO's per-message share (the example's slots are
/// 65,507 bytes, any UDP datagram whole; here every batched server gets the same memory per datagram).
let readinessSlotSize = Int(RB_UDP_SLOT)
/// SwiftNIO's vectored read: as many datagrams per recvmmsg as the others' batch.
let nioVectorReadCount = Int(RB_UDP_BATCH)
/// SwiftNIO splits its receive buffer evenly among the messages of a vectored read, so the buffer is
/// the message count times a slot as large as the C loop's (its default, 2,048 bytes in all, would cut
/// every 1,200-byte datagram of a vectored read to 32 bytes).
let nioReceiveBufferBytes = nioVectorReadCount * Int(RB_UDP_SLOT)

func announce(port: Int) {
    FileHandle.standardOutput.write(Data("port \(port)\n".utf8))
}

func serve(_ contender: Contender, backend: Backend) async throws {
    switch contender {
    case .readinessSingle: try await serveReadiness(backend: backend, batched: false)
    case .readinessBatched: try await serveReadiness(backend: backend, batched: true)
    case .nio: try serveNIO()
    case .cBatched, .cSingle:
        var port: CInt = 0
        let fd = rb_udp_bound(&port)
        guard fd >= 0 else { fatalError("rb_udp_bound: errno \(errno)") }
        announce(port: Int(port))
        _ = contender == .cBatched ? rb_udp_echo_batched(fd) : rb_udp_echo_single(fd)
        fatalError("the C echo loop failed: errno \(errno)")
    }
}

func serveReadiness(backend: Backend, batched: Bool) async throws {
    let loop = try EventLoop(backend: backend)
    let socket = try await loop.bindDatagram(to: try SocketAddress(ip: "127.0.0.1", port: 0))
    announce(port: Int(socket.localAddress?.port ?? 0))
    try await Task(executorPreference: loop) { () async throws -> Void in
        if batched {
            // Examples/readiness-udp-echo's loop (its slots smaller: readinessSlotSize): the received
            // batch sent back as it is, each datagram to its source, no copy (as the C loop echoes).
            let batch = try DatagramBatch(capacity: readinessBatchCapacity, slotSize: readinessSlotSize)
            while true {
                _ = try await socket.receive(into: batch)
                try await socket.send(batch)
            }
        } else {
            var buffer = Bytes(capacity: DatagramSocket.maximumUDPPayload)
            while true {
                let datagram = try await socket.receive(into: &buffer)
                try await socket.send(buffer, to: datagram.source)
                buffer.removeAll(keepingCapacity: true)
            }
        }
    }.value
}

/// Writes every datagram back to its source; flushes once per read burst (one sendmmsg for all).
final class DatagramEchoHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        context.write(wrapOutboundOut(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: envelope.data)), promise: nil)
    }
    func channelReadComplete(context: ChannelHandlerContext) { context.flush() }
    func errorCaught(context: ChannelHandlerContext, error: any Error) {}
}

func serveNIO() throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let channel = try DatagramBootstrap(group: group)
        .channelOption(ChannelOptions.datagramVectorReadMessageCount, value: nioVectorReadCount)
        .channelOption(ChannelOptions.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: nioReceiveBufferBytes))
        .channelInitializer { channel in channel.pipeline.addHandler(DatagramEchoHandler()) }
        .bind(host: "127.0.0.1", port: 0).wait()
    announce(port: channel.localAddress?.port ?? 0)
    try channel.closeFuture.wait()
}
