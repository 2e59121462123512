import Glibc
import Readiness
import Testing

@Suite("Datagram batches")
struct DatagramBatchTests {
    @Test("sendmmsg and recvmmsg through caller storage: order, sources, truncation per slot", arguments: backends)
    func batched(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let server = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        let serverAddress = try #require(server.localAddress)
        let client = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        try server.register(on: poller, token: 1, interest: .readable)
        let total = 100
        let out = try DatagramBatch(capacity: total, slotSize: 64)
        for i in 0..<total { try out.append([UInt8](repeating: UInt8(i), count: i % 64), to: serverAddress) }
        #expect(try client.send(out) == .transferred(total))
        // One longer than the receiving slots: truncated, and said so.
        #expect(try client.send([UInt8](repeating: 0xEE, count: 40), destination: serverAddress) == .transferred(40))
        let batch = try DatagramBatch(capacity: 32, slotSize: 32)
        var received = 0
        while received < total + 1 {
            guard case .transferred(let n) = try server.receive(into: batch) else {
                _ = try waitFor(.readable, token: 1, on: poller)
                continue
            }
            #expect(n == batch.count && n <= 32)
            for slot in 0..<n {
                let datagram = try batch.datagram(slot)
                let index = received + slot
                #expect(datagram.source == client.localAddress)
                if index < total {
                    #expect(datagram.length == index % 64)
                    #expect(datagram.isTruncated == (index % 64 > 32))
                    #expect(try batch.payload(slot) == [UInt8](repeating: UInt8(index), count: Swift.min(index % 64, 32)))
                } else {
                    #expect(datagram.isTruncated && datagram.length == 40 && datagram.count == 32)
                }
            }
            received += n
        }
        #expect(received == total + 1)
        #expect(try server.receive(into: batch) == .wouldBlock && batch.count == 0)
    }

    @Test("a received batch sent back as it is: each datagram to its source, a truncated one with the bytes stored (never past its slot)",
          arguments: backends)
    func echoInPlace(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let server = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        let client = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        try server.register(on: poller, token: 1, interest: .readable)
        try client.register(on: poller, token: 2, interest: .readable)
        let serverAddress = try #require(server.localAddress)
        // The last slot's datagram is 60,000 bytes into 16-byte slots: sent back whole, it would read
        // 60 KB past the batch's storage.
        let sizes = [3, 16, 60_000]
        for (i, size) in sizes.enumerated() {
            #expect(try client.send([UInt8](repeating: UInt8(i + 1), count: size), destination: serverAddress) == .transferred(size))
        }
        let batch = try DatagramBatch(capacity: sizes.count, slotSize: 16)
        // Loopback UDP is usually queued before the send returns, but may be handed over later (by
        // ksoftirqd under load): give the three a moment, so that one receive takes them all.
        usleep(50_000)
        var got = 0
        while got == 0 {
            if case .transferred(let n) = try server.receive(into: batch) { got = n } else { _ = try waitFor(.readable, token: 1, on: poller) }
        }
        try #require(got == sizes.count)
        #expect(try batch.datagram(2).length == 60_000 && batch.datagram(2).isTruncated)
        #expect(try server.send(batch) == .transferred(sizes.count))
        // The slot is left as received (its truncation and real length); what was sent is what it
        // stored (16 bytes, below).
        #expect(try batch.datagram(2).length == 60_000 && batch.datagram(2).isTruncated && batch.datagram(2).count == 16)
        var buffer = [UInt8](repeating: 0, count: 65_536)
        for (i, size) in sizes.enumerated() {
            var echo: ReceivedDatagram?
            while echo == nil {
                echo = try client.receive(into: &buffer).datagram
                if echo == nil { _ = try waitFor(.readable, token: 2, on: poller) }
            }
            #expect(echo?.count == Swift.min(size, 16) && echo?.source == serverAddress)
            #expect(buffer[..<Swift.min(size, 16)].allSatisfy { $0 == UInt8(i + 1) })
        }
    }

    @Test("caller values checked: capacity, slot size, slot index, payload size, start")
    func validation() throws {
        for (capacity, slot) in [(0, 10), (-1, 10), (DatagramBatch.maximumCapacity + 1, 10), (1, -1), (1, Int.max),
                                 (Int.max, Int.max), (1024, 65_507)] {
            #expect(throws: SocketError.self) { try DatagramBatch(capacity: capacity, slotSize: slot) }
        }
        let batch = try DatagramBatch(capacity: 2, slotSize: 4)
        #expect(throws: SocketError.self) { try batch.datagram(0) }
        #expect(throws: SocketError.self) { try batch.datagram(-1) }
        #expect(throws: SocketError.self) { try batch.append([1, 2, 3, 4, 5]) }
        try batch.append([])
        try batch.append([1, 2, 3, 4])
        #expect(throws: SocketError.self) { try batch.append([1]) }   // full
        #expect(try batch.payload(1) == [1, 2, 3, 4] && batch.datagram(0).count == 0)
        let socket = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        #expect(throws: SocketError.self) { try socket.send(batch, from: 3) }
        #expect(throws: SocketError.self) { try socket.send(batch, from: -1) }
        #expect(try socket.send(batch, from: 2) == .transferred(0))
        #expect(throws: SocketError.self) { try socket.setSegmentSize(0) }
        #expect(throws: SocketError.self) { try socket.setSegmentSize(DatagramSocket.maximumUDPPayload + 1) }
    }

    @Test("UDP GSO splits one send into segments where the kernel has it (skipped with the reason otherwise)")
    func segmentation() throws {
        let offload = DatagramOffload.probe()
        guard offload.segmentation.isAvailable else { try Test.cancel("UDP_SEGMENT unavailable: \(offload.segmentation)") }
        let server = try DatagramSocket(bind: try SocketAddress("127.0.0.1:0"))
        let client = try DatagramSocket(connectedTo: try #require(server.localAddress))
        try client.setSegmentSize(100)
        #expect(try client.send([UInt8](repeating: 9, count: 250)) == .transferred(250))
        awaitReadable(server.fd)
        let batch = try DatagramBatch(capacity: 8, slotSize: 200)
        #expect(try server.receive(into: batch) == .transferred(3))
        #expect(try (0..<3).map { try batch.datagram($0).length } == [100, 100, 50])
        try client.setSegmentSize(nil)
    }

    @Test("async batches: echo of many datagrams, one reused batch each way", arguments: backends)
    func asyncBatches(backend: Backend) async throws {
        try await withLoop(backend) { loop in
            try await Task(executorPreference: loop) {
                let server = try await loop.bindDatagram(to: try SocketAddress("127.0.0.1:0"))
                let client = try await loop.connectDatagram(to: try #require(server.localAddress))
                let total = 64
                let echo = Task(executorPreference: loop) { () async throws -> Int in
                    let batch = try DatagramBatch(capacity: 16, slotSize: 128)
                    let replies = try DatagramBatch(capacity: 16, slotSize: 128)
                    var served = 0
                    while served < total {
                        let n = try await server.receive(into: batch, timeout: .seconds(5))
                        replies.removeAll()
                        for slot in 0..<n {
                            let source = try batch.datagram(slot).source
                            try batch.withPayload(slot) { try replies.append($0, to: source) }
                        }
                        try await server.send(replies, timeout: .seconds(5))
                        served += n
                    }
                    return served
                }
                let out = try DatagramBatch(capacity: total, slotSize: 8)
                for i in 0..<total { try out.append([UInt8(i)]) }
                try await client.send(out, timeout: .seconds(5))
                let back = try DatagramBatch(capacity: 32, slotSize: 8)
                var seen: [UInt8] = []
                while seen.count < total {
                    let n = try await client.receive(into: back, timeout: .seconds(5))
                    for slot in 0..<n { seen += try back.payload(slot) }
                }
                #expect(seen == (0..<total).map { UInt8($0) })
                #expect(try await echo.value == total)
                await client.close()
                await server.close()
            }.value
        }
    }
}
