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



/// What the connections' tasks did, each adding its outcome as it ends; isolated to the loop (its
/// executor is the loop's), so that the call is a job on the loop thread, no other thread.
actor Tally {
    let loop: EventLoop
    var finished = 0, echoed = 0, failures = 0
    init(loop: EventLoop) { self.loop = loop }
    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
    func add(_ outcome: Int?) {
        finished += 1
        if let bytes = outcome { echoed += bytes } else { failures += 1 }
    }
    var summary: String { "connections \(finished) echoed-bytes \(echoed) failures \(failures)" }
}

/// The most bytes one read takes: as much as a fast client's data a wake-up finds (SwiftNIO's handler
/// reads four times before it writes once); an idle connection holds none of it (`readAvailable`).
let readSize = 256 * 1024

/// Echoes one connection; returns the bytes echoed, or nil when it failed.
///
/// `readAvailable` reads into the loop's own buffer and returns exactly the bytes read: the task holds
/// no buffer while it waits, so an idle connection costs its task and the loop's entry, no read
/// buffer (Docs/Async.md, "Memory per idle connection").
func echo(_ socket: AsyncSocket) async -> Int? {
    var echoed = 0
    do {
        try await socket.withStreamSocket { (stream) throws(SocketError) in try stream.setNoDelay(true) }
        while true {
            let bytes = try await socket.readAvailable(maximum: readSize)
            if bytes.isEmpty { break }   // the client shut down its side
            try await socket.write(bytes)
            echoed += bytes.count
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
        // A discarding group keeps nothing of a task that ended (a `withTaskGroup` whose results are
        // read only after the accepting ends keeps every one until then: about 5 kB per connection
        // ever served, for a server that runs without --connections); each task adds its own outcome.
        let tally = Tally(loop: loop)
        await withDiscardingTaskGroup { connections in
            var accepted = 0
            while accepted < limit {
                do {
                    let socket = try await listener.accept()   // EMFILE: backs off inside, then goes on
                    accepted += 1
                    connections.addTask(executorPreference: loop) { await tally.add(await echo(socket)) }
                } catch {
                    print("accept: \(error)")
                    break
                }
            }
        }
        return "\(await tally.summary) backend \(backend.name)"
    }.value
    await listener.close()
    await loop.shutdown()
    print(summary)
}

do {
    ignoreBrokenPipes()
    try await serve(try EchoArguments(CommandLine.arguments))
} catch {
    exitFailing("readiness-async-echo", error, usage: EchoArguments.usage)
}
