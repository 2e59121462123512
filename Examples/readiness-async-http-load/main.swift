// readiness-async-http-load: readiness-http-load in async form, on the public API only (no Glibc).
//
//   readiness-async-http-load --url http://127.0.0.1:8080/index.html [--connections 50] [--requests 20000]
//                             [--backend epoll] [--timeout 60]   (each read and write, and the whole run)
//
// Like `ab -k`: N keep-alive connections, each one a task preferring one EventLoop, sending the next
// GET as soon as the previous response is complete, until the total is reached; the counts live in an
// actor isolated to the same loop. Connecting is EventLoop.connect(host:port:) (resolution off the
// loop, Happy Eyeballs steps, SO_ERROR); a connection the server closes is connected again. Prints the
// same summary line as readiness-http-load.
import ExampleSupport
import Readiness


/// The counts, isolated to the loop (its executor is the loop's): a call from a client task runs on the
/// loop thread, as a job in and a job back (no poller call, no other thread).
actor Tally {
    let loop: EventLoop
    let requests: Int
    /// The run's overall deadline (`--timeout`, as the sync client's): a server that closes or resets
    /// every connection unanswered would otherwise have the requests given back and sent again for ever.
    let deadline: ContinuousClock.Instant
    var issued = 0, ok = 0, failed = 0, reconnects = 0
    private(set) var timedOut = false
    /// Whether any connection was ever made: without one, a failed connect ends the run (a server
    /// that is not there, a misspelled name), as readiness-http-load and ab do, instead of a connect
    /// (and a lookup) per request and a summary of failures with status 0.
    private(set) var connectedOnce = false

    init(loop: EventLoop, requests: Int, deadline: ContinuousClock.Instant) {
        self.loop = loop
        self.requests = requests
        self.deadline = deadline
    }

    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }

    /// Takes the next request to send; false when all are taken.
    func take() -> Bool {
        guard issued < requests else { return false }
        guard ContinuousClock.now < deadline else {
            timedOut = true
            return false
        }
        issued += 1
        return true
    }
    /// A request sent but not answered (the server closed): it will be sent again.
    func giveBack() { issued -= 1 }
    func record(status: Int) { if status == 200 { ok += 1 } else { failed += 1 } }
    func recordMalformed() { failed += 1 }
    /// A request that failed for good (timed out, or its connection could not be made): counted, not retried.
    func recordFailure() { failed += 1 }
    func reconnected() { reconnects += 1 }
    func connected() { connectedOnce = true }
    var summary: (ok: Int, failed: Int, reconnects: Int) { (ok, failed, reconnects) }
}

/// One keep-alive connection's task.
func runClient(index: Int, loop: EventLoop, tally: Tally, arguments: HTTPLoadArguments, request: [UInt8]) async throws(LoopError) {
    var parser = ResponseParser()
    var socket: AsyncSocket?
    var connections = 0
    while await tally.take() {
        do {
            if socket == nil {
                let connected = try await loop.connect(host: arguments.host, port: arguments.port, timeout: .seconds(5))
                try await connected.withStreamSocket { (stream) throws(SocketError) in try stream.setNoDelay(true) }
                socket = connected
                parser.reset()
                connections += 1
                if connections > 1 { await tally.reconnected() } else { await tally.connected() }
            }
            guard let current = socket else { continue }
            try await current.write(request, timeout: arguments.timeout)
            response: while true {
                switch parser.next() {
                case .complete(let status, let close):
                    await tally.record(status: status)
                    if close {
                        await current.close()
                        socket = nil
                    }
                    break response
                case .malformed:
                    await tally.recordMalformed()
                    await current.close()
                    socket = nil
                    break response
                case .needMore:
                    // Appended to the parser's buffer: no copy, no allocation.
                    let n = try await current.read(into: &parser.buffer, maximum: parser.room, timeout: arguments.timeout)
                    if n == 0 {
                        // The server closed with the request unanswered (a keep-alive limit): again.
                        await tally.giveBack()
                        await current.close()
                        socket = nil
                        break response
                    }
                }
            }
        } catch {
            switch error {
            case .socket(let socketError):
                // The connection broke: the request is sent again on a new one.
                print("client \(index): \(socketError)")
                await tally.giveBack()
            case .timedOut, .connect, .resolution:
                // The connect failed (refused, no such name, or its own timeout: a server that drops
                // the SYNs) and none was ever made.
                if socket == nil, !(await tally.connectedOnce) {
                    // No connection was ever made: nothing is there to load (readiness-http-load's rule).
                    await tally.giveBack()
                    throw error
                }
                // No answer in time, or no connection once the server answered before: a failed
                // request, counted (never an abort of the run).
                print("client \(index): \(error)")
                await tally.recordFailure()
            default:
                throw error
            }
            await socket?.close()
            socket = nil
        }
    }
    await socket?.close()
}

func load(_ arguments: HTTPLoadArguments) async throws {
    let backend = try arguments.backend ?? Backend.default()
    let loop = try EventLoop(backend: backend)
    let tally = Tally(loop: loop, requests: arguments.requests, deadline: .now + arguments.timeout)
    let request = Array("GET \(arguments.path) HTTP/1.1\r\nHost: \(arguments.hostHeader)\r\nUser-Agent: readiness-async-http-load\r\n\r\n".utf8)
    let started = ContinuousClock.now
    try await withThrowingTaskGroup(of: Void.self) { group in
        for index in 0..<arguments.connections {
            group.addTask(executorPreference: loop) {
                try await runClient(index: index, loop: loop, tally: tally, arguments: arguments, request: request)
            }
        }
        try await group.waitForAll()
    }
    let elapsed = ContinuousClock.now - started
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    let (ok, failed, reconnects) = await tally.summary
    let completed = ok + failed
    if await tally.timedOut {
        await loop.shutdown()
        throw RunFailure("timed out after \(completed) responses")
    }
    let rate = Int((Double(completed) / seconds).rounded())
    await loop.shutdown()
    print("requests \(completed) ok \(ok) failed \(failed) reconnects \(reconnects) "
          + "seconds \(Double(Int(seconds * 1000)) / 1000) requests-per-second \(rate) "
          + "connections \(arguments.connections) backend \(backend.name)")
}

do {
    ignoreBrokenPipes()
    try await load(try HTTPLoadArguments(CommandLine.arguments))
} catch {
    exitFailing("readiness-async-http-load", error, usage: HTTPLoadArguments.usage)
}
