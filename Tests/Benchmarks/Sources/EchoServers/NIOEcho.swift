import NIOCore
import NIOPosix

/// The same echo server on SwiftNIO: one event loop thread (like readiness-echo), TCP_NODELAY,
/// every read written back, flushed once per read burst.
final class EchoHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(data, promise: nil)
    }
    func channelReadComplete(context: ChannelHandlerContext) { context.flush() }
    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
}

public func runNIOEcho(port: Int) throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let channel = try ServerBootstrap(group: group)
        .serverChannelOption(ChannelOptions.backlog, value: 4096)
        .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
        .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
        .childChannelInitializer { channel in channel.pipeline.addHandler(EchoHandler()) }
        .bind(host: "127.0.0.1", port: port).wait()
    try channel.closeFuture.wait()
}

/// The same echo server as an async SwiftNIO user writes it: `ServerBootstrap.bind` wrapping every
/// channel in `NIOAsyncChannel<ByteBuffer, ByteBuffer>`, one task per connection writing back every
/// buffer it reads. One event-loop thread (SwiftNIO 2 has no task executor: the connection tasks run
/// on Swift's global concurrent executor, which is what an async SwiftNIO server does).
public func runNIOAsyncEcho(port: Int) async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let server = try await ServerBootstrap(group: group)
        .serverChannelOption(ChannelOptions.backlog, value: 4096)
        .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
        .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
        .bind(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture {
                try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
            }
        }
    try await withThrowingDiscardingTaskGroup { connections in
        try await server.executeThenClose { inbound in
            for try await connection in inbound {
                connections.addTask {
                    try? await connection.executeThenClose { input, output in
                        for try await buffer in input { try await output.write(buffer) }
                    }
                }
            }
        }
    }
}
