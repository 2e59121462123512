import Readiness

// The README's examples and the code samples of Docs/*.md, compiled with the tests so that they stay
// true to the API (not run, but for `secondSignal`, which SignalTests runs with SIGUSR2: the server waits for SIGINT or SIGTERM on port 8080, the others connect to
// port 8080 or to example.com; Tests/ReadinessTests/ServeTests.swift, SignalTests.swift,
// ConnectSocketTests.swift and HappyEyeballsTests.swift run the same calls). Each sample is copied as
// the document shows it; what the document leaves out (`running`, `buffer`, a handler) is declared
// around it. Docs/Conformance.md's samples are ThirdPartyBackendExample.swift.
enum ReadmeSnippets {
    static func server() async throws {
        let group = try EventLoopGroup()                    // one loop per core; READINESS_BACKEND=poll overrides
        let listeners = try await group.listen(on: try SocketAddress("127.0.0.1:8080"))  // a port in use fails here, at once
        let server = Task {
            try await group.serve(listeners) { socket in    // each connection's task, on its loop
                // readAvailable reads into the loop's buffer and returns exactly the bytes read: an idle connection holds no buffer.
                while let bytes = try? await socket.readAvailable(timeout: .seconds(30)), !bytes.isEmpty {
                    try? await socket.write(bytes)          // every byte, no copy
                }
            }                                               // the socket is closed when the handler returns
        }
        let signalLoop = try EventLoop()                    // signals on a loop of their own: it outlives the group's drain
        let signals = try signalLoop.signals([.interrupt, .terminate])                   // no Dispatch, no handler code
        Task { if case .failure = await server.result { signals.finish() } }   // serving that fails ends the wait too
        for await signal in signals {
            print("\(signal): draining")
            await group.shutdown(gracePeriod: .seconds(10)) // stop accepting, let connections finish, then stop
            break
        }
        await signalLoop.shutdown()
        try await server.value                              // a failure that ended serving ends the program with it
    }

    static func client() async throws {
        let loop = try EventLoop()
        let client = try await loop.connect(host: "localhost", port: 8080, timeout: .seconds(2))   // Happy Eyeballs, SO_ERROR
        try await client.write(Bytes("hello".utf8))
        var reply = Bytes()                                  // owned; reused, it allocates nothing per read
        let n = try await client.read(into: &reply, timeout: .seconds(2))   // 0: the peer closed
        _ = n
        await client.close()
        await loop.shutdown()   // every pending operation fails with .shutdown, every socket is closed once
    }

    // MARK: README.md, "For library authors: the poller"

    static func poller(socketFD: CInt, running: () -> Bool) throws {
        let poller = try Backend.makeDefaultPoller()         // READINESS_BACKEND=poll (or libevent:select, ...) overrides
        defer { try? poller.close() }

        try poller.register(socketFD, token: 1, interest: .readable)
        let events = EventBuffer(capacity: 256)              // allocated once; waits never allocate
        while running() {
            try poller.wait(into: events, timeout: .milliseconds(500))
            for event in events {
                if event.isWakeup { continue }               // poller.waker.wake() from another thread
                if event.ready.contains(.readable) { /* read until EAGAIN */ }
                if event.ready.contains(.readClosed) { /* peer shut down its side */ }
            }
        }
    }

    static func connector(poller: any Poller) throws {
        let socket = try Connector.connect(to: try SocketAddress.resolve("localhost:8080"),
                                           on: poller, timeout: .seconds(2))
        // socket.fd is connected, non-blocking, close-on-exec, and yours.
        _ = socket
    }

    static func listenerLoop(poller: any Poller, events: EventBuffer, running: () -> Bool) throws {
        var buffer = [UInt8](repeating: 0, count: 16 * 1024) // fixed room: read(into:) fills it from the start
        let listener = try Listener(bind: try SocketAddress("127.0.0.1:8080"))   // SO_REUSEADDR; options.reusePort
        try listener.register(on: poller, token: 0)
        let timers = Timers()                               // deadlines: the nearest one is the wait timeout
        var clients: [UInt64: StreamSocket] = [:], next: UInt64 = 1
        while running() {
            try poller.wait(into: events, timeout: timers.timeout())
            for event in events where !event.isWakeup {
                if event.token == 0 {
                    switch try listener.accept() {          // ECONNABORTED and EINTR are handled inside
                    case .accepted(let stream, _):          // non-blocking, close-on-exec, owned
                        try stream.setNoDelay(true)
                        try stream.register(on: poller, token: Token(next), interest: .readable)  // close() deregisters first
                        clients[next] = stream
                        next += 1
                    case .wouldBlock: break
                    case .backingOff(let until): timers.schedule(at: until, token: 99)  // EMFILE: paused until resume()
                    }
                } else if let stream = clients[event.token.rawValue] {
                    switch try stream.read(into: &buffer) { // EINTR retried inside
                    case .transferred(let n): _ = try stream.write(buffer, to: n)       // MSG_NOSIGNAL: never SIGPIPE; a short
                                                    // write drops the rest here: a server keeps it and waits for .writable
                    case .endOfStream: stream.close(); clients[event.token.rawValue] = nil
                    case .wouldBlock: break
                    }
                }
            }
            while let token = timers.popDue() { if token == 99 { try listener.resume() } }
        }
    }

    // MARK: Docs/Connect.md, "Using it"

    static func connectAttempt(poller: any Poller, use: (CInt) -> Void) throws {
        let attempt = ConnectAttempt(to: try SocketAddress("127.0.0.1:8080"), poller: poller, token: 7,
                                     timeout: .seconds(2))
        var progress = attempt.start()
        // When the poller reports token 7:          progress = attempt.handle(event.ready)
        // When attempt.deadline (monotonic ns) passes: progress = attempt.checkDeadline()
        switch progress {
        case .inProgress: break
        case .connected(let socket): use(socket.fd)          // yours now
        case .failed(let error): print(error.cause, error.errnoName ?? "")
        }
        progress = attempt.checkDeadline()
        _ = progress
    }

    static func connectOneCall() throws {
        let poller = try Backend.makeDefaultPoller()
        let socket = try Connector.connect(to: try SocketAddress.resolve("localhost:8080"), on: poller,
                                           timeout: .seconds(2))
        _ = socket
    }

    // MARK: Docs/Sockets.md, "Timers" and "Happy Eyeballs"

    static func timerRule(poller: any Poller, events: EventBuffer, timers: Timers) throws {
        try poller.wait(into: events, timeout: timers.timeout())   // 1. the nearest deadline as the timeout
        for event in events { _ = event }                           // 2. events first
        let now = Deadline.now
        while let token = timers.popDue(now: now) { _ = token }     // 3. fire everything due at `now`
    }

    static func happyEyeballs(poller: any Poller, event: Event, token: Token, now: Deadline) {
        let timers = Timers()
        let resolution = Resolution(host: "example.com", port: 443, waker: poller.waker)
        let connect = HappyEyeballs(resolution: resolution, poller: poller, timers: timers, tokenBase: 1000)
        var progress = connect.start()
        progress = connect.handle(event)
        progress = connect.handleTimer(token, now: now)
        switch progress {
        case .inProgress: break
        case .connected(let socket): let stream = StreamSocket(socket); stream.close()   // yours
        case .failed(let error): print(error.cause, error.attempts)      // every attempt's error
        case .unresolved(let error): print(error)                        // no address
        }
    }

    // MARK: Docs/Async.md

    static func asyncServer() async throws {
        let group = try EventLoopGroup()                 // one loop per core, READINESS_BACKEND honoured
        try await group.serve(on: try SocketAddress("0.0.0.0:8080")) { socket in
            while let bytes = try? await socket.read(upTo: 65536, timeout: .seconds(30)), !bytes.isEmpty {
                try? await socket.write(bytes)
            }
        }
    }

    static func bytesLines(socket: AsyncSocket, handle: (Span<UInt8>) -> Void) async throws {
        var buffer = Bytes()                                          // no storage until the first read
        while true {
            if let end = buffer.firstIndex(of: UInt8(ascii: "\n")) {   // a whole line is buffered
                handle(buffer.span.extracting(first: end))           // a Span<UInt8>: no copy
                buffer.removeFirst(end + 1)                           // consumed; emptied, it is all room again
                continue
            }
            let n = try await socket.read(into: &buffer, maximum: 16 * 1024, timeout: .seconds(30))   // appends
            if n == 0 { break }                                       // the peer shut down its side
        }
        try await socket.write(Bytes("bye\n".utf8))                   // every byte, no copy (or a [UInt8])
    }

    /// Run by `secondSignalSnippet` with SIGUSR2 for `[.interrupt, .terminate]`.
    static func secondSignal(group: EventLoopGroup, watching watched: [Signal] = [.interrupt, .terminate]) async throws {
        let signalLoop = try EventLoop()   // not the group's: it must outlive their drain
        let signals = try signalLoop.signals(watched)
        var stopping: Task<Void, Never>?
        for await _ in signals {
            if let stopping { stopping.cancel(); break }          // the second signal: stop now
            stopping = Task {
                await group.shutdown(gracePeriod: .seconds(10))
                signals.finish()                                  // drained: the loop above ends without a second signal
            }
        }
        await stopping?.value
        await signalLoop.shutdown()
    }

    // MARK: The doc comment of `EventLoop` (Sources/ReadinessAsync/EventLoop.swift)

    static func eventLoopDocComment(address: SocketAddress, request: [UInt8]) async throws {
        let loop = try EventLoop()                          // the default backend; EventLoop(backend: .epoll) names one
        Task(executorPreference: loop) {
            let socket = try await loop.connect(to: address, timeout: .seconds(2))
            try await socket.write(request)                  // Bytes or [UInt8]
            var response = Bytes()
            let n = try await socket.read(into: &response)    // appends; 0 at the end of the stream
            await socket.close()
            _ = n
        }
        await loop.shutdown()
    }
}
