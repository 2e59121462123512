// The echo server on FlyingSocks (FlyingFox's socket layer), as its users write one: an AsyncSocket
// listener on a SocketPool (epoll), one task per connection reading and writing back. In a file of its
// own: its names (AsyncSocket, Socket, SocketAddress) would clash with Readiness's.
import FlyingSocks
import Foundation
import Glibc

public func runFlyingSocksEcho(port: UInt16) async throws {
    let pool: some AsyncSocketPool = .make()
    try await pool.prepare()
    let poolTask = Task { try await pool.run() }
    defer { poolTask.cancel() }
    let socket = try Socket(domain: AF_INET, type: .stream)
    try socket.setValue(true, for: .localAddressReuse)
    try socket.bind(to: Loopback4(port: port))
    try socket.listen(maxPendingConnection: 4096)
    let listener = try AsyncSocket(socket: socket, pool: pool)
    try await withThrowingDiscardingTaskGroup { connections in
        for try await client in listener.sockets {
            try? client.socket.setValue(true, for: BoolSocketOption(level: Int32(IPPROTO_TCP), name: TCP_NODELAY))
            connections.addTask {
                defer { try? client.close() }
                while true {
                    // read(atMost:) reads at most 4 KiB a call (FlyingSocks's own cap).
                    guard let bytes = try? await client.read(atMost: 65536), !bytes.isEmpty else { return }
                    try await client.write(Data(bytes))
                }
            }
        }
    }
}
