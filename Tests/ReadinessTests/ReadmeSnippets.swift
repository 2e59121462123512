import Readiness

// The README's application examples, compiled with the tests so that they stay true to the API (not
// run: the server waits for SIGINT or SIGTERM on port 8080; Tests/ReadinessTests/ServeTests.swift and
// SignalTests.swift run the same calls).
enum ReadmeSnippets {
    static func server() async throws {
        let group = try EventLoopGroup()                    // one loop per core; READINESS_BACKEND=poll overrides
        let server = Task {
            try await group.serve(on: try SocketAddress("127.0.0.1:8080")) { socket in   // each connection's task, on its loop
                // readAvailable reads into the loop's buffer and returns exactly the bytes read: an idle connection holds no buffer.
                while let bytes = try? await socket.readAvailable(timeout: .seconds(30)), !bytes.isEmpty {
                    try? await socket.write(bytes)          // every byte, no copy
                }
            }                                               // the socket is closed when the handler returns
        }
        for await signal in try group.loops[0].signals([.interrupt, .terminate]) {      // no Dispatch, no handler code
            print("\(signal): draining")
            await group.shutdown(gracePeriod: .seconds(10)) // stop accepting, let connections finish, then stop
            break
        }
        _ = await server.result
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
}
