// readiness-udp-echo: a UDP echo server, and its load client, on the public API only (no Glibc).
//
//   readiness-udp-echo --port 7000 [--host 127.0.0.1] [--backend epoll] [--datagrams N] [--idle S]
//   readiness-udp-echo --client --port 7000 [--host ...] [--datagrams N] [--size B] [--window W] [--idle S]
//
// The server receives with batches (one recvmmsg for every datagram queued, into storage allocated
// once) and sends the batch back as it is (each datagram to its source, no copy) with one sendmmsg;
// it exits after N datagrams, or after S seconds without one, printing a summary line. The client keeps up to W datagrams in flight, each
// carrying its sequence number and a pattern, checks every echo, and counts the datagrams that never
// came back (UDP may drop them: that is counted, never hidden).
import ExampleSupport
import Readiness

/// The byte at `offset` of datagram `sequence` (after its 8-byte sequence number).
func patternByte(_ sequence: Int, _ offset: Int) -> UInt8 { UInt8(truncatingIfNeeded: sequence &* 31 &+ offset) }

/// The slots of each batch.
let batchCapacity = 64

/// The datagrams received into `batch`, or nil when none came within `timeout`.
func receiveUnlessIdle(_ socket: AsyncDatagramSocket, into batch: DatagramBatch, timeout: Duration?) async throws(LoopError) -> Int? {
    do {
        return try await socket.receive(into: batch, timeout: timeout)
    } catch .timedOut {
        return nil
    }
}

func serve(_ arguments: UDPEchoArguments, backend: Backend) async throws {
    let loop = try EventLoop(backend: backend)
    let socket = try await loop.bindDatagram(to: try SocketAddress(ip: arguments.host, port: arguments.port))
    let summary = try await Task(executorPreference: loop) { () async throws -> String in
        let batch = try DatagramBatch(capacity: batchCapacity, slotSize: DatagramSocket.defaultReceiveSize)
        var datagrams = 0, bytes = 0, truncated = 0, unanswered = 0
        let limit = arguments.datagrams ?? .max
        while datagrams < limit {
            let timeout: Duration? = datagrams > 0 ? arguments.idle.map { .seconds($0) } : nil
            guard let n = try await receiveUnlessIdle(socket, into: batch, timeout: timeout) else { break }
            for slot in 0..<n {
                let datagram = try batch.datagram(slot)
                if datagram.isTruncated { truncated += 1 }
                bytes += datagram.count
            }
            // The received batch sent back as it is: each datagram to its source, no copy. A datagram
            // that cannot be answered (a spoofed source port 0: EINVAL; a source gone) fails the
            // batch's send from that slot on: the rest of the batch goes unanswered, counted, and the
            // server goes on, as a UDP server does (one datagram is not the server's end).
            do {
                try await socket.send(batch, timeout: .seconds(5))
            } catch {
                if case .shutdown = error as? LoopError { throw error }
                unanswered += 1
            }
            datagrams += n
        }
        return "datagrams \(datagrams) echoed-bytes \(bytes) truncated \(truncated) unanswered-batches \(unanswered) backend \(backend.name)"
    }.value
    await socket.close()
    await loop.shutdown()
    print(summary)
}

func load(_ arguments: UDPEchoArguments, backend: Backend) async throws {
    let loop = try EventLoop(backend: backend)
    let server = try SocketAddress(ip: arguments.host, port: arguments.port)
    let socket = try await loop.connectDatagram(to: server)
    let total = arguments.datagrams ?? 10_000
    let size = arguments.size
    let idle: Duration = .seconds(arguments.idle ?? 1)
    let summary = try await Task(executorPreference: loop) { () async throws -> String in
        let out = try DatagramBatch(capacity: arguments.window, slotSize: size)
        let back = try DatagramBatch(capacity: arguments.window, slotSize: size)
        var payload = [UInt8](repeating: 0, count: size)
        var sent = 0, received = 0, corrupt = 0
        var seen = [Bool](repeating: false, count: total)
        let start = ContinuousClock.now
        while received < total {
            // Fill the window.
            out.removeAll()
            while sent < total, sent - received < arguments.window, out.count < out.capacity {
                for i in 0..<8 { payload[i] = UInt8(truncatingIfNeeded: sent >> (8 * i)) }
                for i in 8..<size { payload[i] = patternByte(sent, i) }
                try out.append(payload)
                sent += 1
            }
            if out.count > 0 { try await socket.send(out, timeout: .seconds(5)) }
            guard let n = try await receiveUnlessIdle(socket, into: back, timeout: idle) else {
                if sent == total { break }   // the rest were dropped
                received = sent              // a window lost: count it and go on
                continue
            }
            for slot in 0..<n {
                try back.withPayload(slot) { bytes in
                    var sequence = 0
                    for i in 0..<8 where i < bytes.count { sequence |= Int(bytes[i]) << (8 * i) }
                    let intact = bytes.count == size && sequence >= 0 && sequence < total && !seen[sequence]
                        && (8..<size).allSatisfy { bytes[$0] == patternByte(sequence, $0) }
                    if intact { seen[sequence] = true } else { corrupt += 1 }
                }
            }
            received += n
        }
        let echoed = seen.count { $0 }
        let elapsed = (ContinuousClock.now - start).components
        let seconds = Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18
        let rate = seconds > 0 ? Int(Double(echoed) / seconds) : 0
        return "sent \(sent) echoed \(echoed) lost \(sent - echoed) corrupt \(corrupt) size \(size) datagrams/s \(rate) backend \(backend.name)"
    }.value
    await socket.close()
    await loop.shutdown()
    print(summary)
}

do {
    ignoreBrokenPipes()
    let arguments = try UDPEchoArguments(CommandLine.arguments)
    let backend = try arguments.backend ?? Backend.default()
    if arguments.client {
        try await load(arguments, backend: backend)
    } else {
        try await serve(arguments, backend: backend)
    }
} catch {
    exitFailing("readiness-udp-echo", error, usage: UDPEchoArguments.usage)
}
