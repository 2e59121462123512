// readiness-async-echo: readiness-echo in async form, on the public API only (no Glibc), on any backend.
//
//   readiness-async-echo --port 7000 [--host 127.0.0.1] [--backend epoll] [--connections N]
//
// One event loop (its thread owns the poller); an accepting task and one task per connection, all
// preferring the loop, so every read and write runs on the loop thread. It sends back every byte it
// receives until the client shuts down its side; with --connections N it exits after N connections
// have ended, printing the same summary line as readiness-echo.
import ExampleSupport
import Readiness



/// Echoes one connection; returns the bytes echoed, or nil when it failed.
func echo(_ socket: AsyncSocket) async -> Int? {
    var buffer = Bytes()   // no memory until the first bytes arrive; then reused (no allocation per read)
    var echoed = 0
    do {
        try await socket.withStreamSocket { (stream) throws(SocketError) in try stream.setNoDelay(true) }
        while true {
            let n = try await socket.read(into: &buffer, maximum: 64 * 1024)
            if n == 0 { break }   // the client shut down its side
            try await socket.write(buffer)
            buffer.removeAll(keepingCapacity: true)
            echoed += n
        }
    } catch {
        print("connection: \(error)")
        await socket.close()
        return nil
    }
    await socket.close()
    return echoed
}

func serve(_ arguments: EchoArguments) async throws {
    let backend = try arguments.backend ?? Backend.default()
    // Every connection's code is nonisolated and runs in tasks preferring the loop: with the default
    // jobs (.automatic) their jobs run on the loop as a task executor and never hop (Docs/Async.md,
    // "Executor semantics").
    let loop = try EventLoop(backend: backend)
    let listener = try await loop.listen(on: try SocketAddress(ip: arguments.host, port: arguments.port))
    let limit = arguments.connections ?? .max
    let summary = await Task(executorPreference: loop) { () async -> String in
        var finished = 0, echoed = 0, failures = 0
        await withTaskGroup(of: Int?.self) { connections in
            var accepted = 0
            while accepted < limit {
                do {
                    let socket = try await listener.accept()   // EMFILE: backs off inside, then goes on
                    accepted += 1
                    connections.addTask(executorPreference: loop) { await echo(socket) }
                } catch {
                    print("accept: \(error)")
                    break
                }
            }
            for await result in connections {
                finished += 1
                if let bytes = result { echoed += bytes } else { failures += 1 }
            }
        }
        return "connections \(finished) echoed-bytes \(echoed) failures \(failures) backend \(backend.name)"
    }.value
    await listener.close()
    await loop.shutdown()
    print(summary)
}

do {
    try await serve(try EchoArguments(CommandLine.arguments))
} catch {
    fatalError("readiness-async-echo: \(error)")
}
