#if canImport(Glibc)
import Glibc
#endif
import Readiness
import Synchronization

/// What an operation ended with, and the socket it made (a connect).
typealias AsyncResult = (observation: Observation, socket: AsyncSocket?)

/// The names of tasks in the order they finished.
final class FinishLog: Sendable {
    private let names = Locked<[String]>([])
    private let all = Locked<Set<String>>([])
    func append(_ name: String) {
        names.withLock { $0.append(name) }
        all.withLock { _ = $0.insert(name) }
    }
    func take() -> [String] { names.withLock { names in defer { names.removeAll() }; return names } }
    /// Whether the task named `name` has finished (and forgets it, when it has).
    func finished(_ name: String) -> Bool { all.withLock { $0.remove(name) != nil } }
}

/// Runs an async script on one loop and records normalized outcomes. Used by the script's own task
/// only (which prefers the loop); tasks it starts get Sendable values, never this object.
final class AsyncRun {
    let loop: EventLoop
    private var sockets: [String: AsyncSocket] = [:]
    /// The caller's descriptors, with the file each was made with (device, inode).
    private var callers: [String: (fd: CInt, device: UInt64, inode: UInt64)] = [:]
    /// Numbers of the caller's descriptors it closed: later steps still name them.
    private var closedCallers: [String: CInt] = [:]
    private var listeners: [String: (fd: CInt, address: SocketAddress)] = [:]
    private var loopListeners: [String: AsyncListener] = [:]
    private var datagrams: [String: AsyncDatagramSocket] = [:]
    /// Each datagram socket's bound address, by name (kept after it is closed: sends still name it).
    private var datagramAddresses: [String: SocketAddress] = [:]
    /// The paths Unix datagram sockets were bound on: gone once the loop has shut down.
    private var unixPaths: [String] = []
    private var fillers: [CInt] = []
    private var tasks: [String: (task: Task<AsyncResult, Never>, operation: AsyncOperation)] = [:]
    private let finished = FinishLog()
    private(set) var isShutDown = false

    /// Bytes of the buffer a read step reads into.
    static let readBuffer = 65_536
    /// How long an await step waits for a task before it records that the task never ended (a backend
    /// that loses an event would otherwise hang the suite).
    static let watchdog: Duration = .seconds(15)

    /// Loopback, port chosen by the kernel.
    static let loopback = (try? SocketAddress(ip: "127.0.0.1", port: 0)) ?? SocketAddress()
    /// Bytes of each slot of a batch receive's `DatagramBatch`.
    static let batchSlot = 2048
    /// Bytes of each datagram a fill step sends.
    static let fillDatagram = 1024
    /// The most datagrams a fill or drain step sends or takes (a socket that never fills is reported).
    static let fillLimit = 1 << 16
    /// Numbers the Unix datagram paths of this process.
    private static let pathCounter = Atomic<Int>(0)

    init(loop: EventLoop) {
        // EPIPE, not a fatal SIGPIPE, while the run lasts; the program's own action is back at deinit.
        BorrowedAction.brokenPipe.acquire()
        self.loop = loop
    }

    deinit { BorrowedAction.brokenPipe.release() }

    /// Lets the loop run one round with a zero-timeout poller wait: ready waiters and due timers are
    /// resumed, and tasks run to their next suspension, before the next step. This is what makes the
    /// outcomes independent of timing.
    func settle() async {
        if !isShutDown { try? await loop.sleep(for: .zero) }
    }

    func run(_ step: AsyncStep) async -> Observation {
        do {
            return try await perform(step)
        } catch {
            return .note("set-up failed: \(error)")
        }
    }

    private func perform(_ step: AsyncStep) async throws -> Observation {
        switch step {
        case .socketPair(let a, let b):
            let (x, y) = try Net.socketPair()
            return await adoptBoth((a, x), (b, y))
        case .tcpPair(let client, let server):
            return await tcpPair(client, server)
        case .callerPair(let a, let b):
            let (x, y) = try Net.socketPair()
            keep(a, x)
            keep(b, y)
            return .ok
        case .callerPipe(let r, let w):
            let (x, y) = try Net.pipe()
            keep(r, x)
            keep(w, y)
            return .ok
        case .listen(let name):
            let address = try SocketAddress("127.0.0.1:0")
            do throws(LoopError) {
                loopListeners[name] = try await loop.listen(on: address)
                return .ok
            } catch {
                return .error(error.caseName)
            }
        case .listenUnix(let name):
            let path = "/tmp/readiness-conformance-\(getpid())-\(Self.pathCounter.add(1, ordering: .relaxed).newValue)-\(name)"
            unlink(path)
            unixPaths.append(path)
            let address: SocketAddress
            do { address = try SocketAddress(unixPath: path) } catch { return .note("no address for \(path)") }
            do throws(LoopError) {
                loopListeners[name] = try await loop.listen(on: address)
                return .ok
            } catch {
                return .error(error.caseName)
            }
        case .listener(let name):
            let fd = try Net.listener(try SocketAddress("127.0.0.1:0"), backlog: 16)
            listeners[name] = (fd, try Net.localAddress(fd))
            return .ok
        case .fullListener(let name):
            try fullListener(name)
            return .ok
        case .run(let operation):
            let result = await resolve(operation)()
            if let socket = result.socket, let made = operation.madeSocket { sockets[made] = socket }
            if operation.closes { placeSentinel() }
            return result.observation
        case .start(let name, let operation), .startCancelled(let name, let operation):
            guard tasks[name] == nil else { return .note("task \(name) is already running") }
            let body = resolve(operation)
            let log = finished
            let task = Task(executorPreference: loop) { () async -> AsyncResult in
                let result = await body()
                log.append(name)
                return result
            }
            if case .startCancelled = step { task.cancel() }
            tasks[name] = (task, operation)
            return .ok
        case .cancel(let name):
            guard let task = tasks[name]?.task else { return .note("no task \(name)") }
            task.cancel()
            return .ok
        case .await(let name):
            guard let (task, operation) = tasks.removeValue(forKey: name) else { return .note("no task \(name)") }
            let deadline = ContinuousClock.now + Self.watchdog
            while !finished.finished(name) {
                if ContinuousClock.now > deadline {
                    task.cancel()
                    tasks["\(name) (abandoned)"] = (task, operation)
                    return .note("still waiting after \(Self.watchdog)")
                }
                if isShutDown { usleep(1000) } else { try? await loop.sleep(for: .milliseconds(1)) }
            }
            let result = await task.value
            if let socket = result.socket, let made = operation.madeSocket { sockets[made] = socket }
            return result.observation
        case .finished:
            let names = finished.take()
            return .note(names.isEmpty ? "none" : names.joined(separator: " "))
        case .shutdownLoop:
            await loop.shutdown()
            isShutDown = true
            placeSentinel()
            return .ok
        case .adopt(let caller, let name):
            guard let kept = callers[caller] else { return .note("no descriptor \(caller)") }
            do throws(LoopError) {
                sockets[name] = try await loop.adopt(descriptor: kept.fd)
                callers.removeValue(forKey: caller)
                return .ok
            } catch {
                return .error(error.caseName)
            }
        case .adoptNumber(let number):
            do throws(LoopError) {
                _ = try await loop.adopt(descriptor: number)
                return .note("adopted \(number)")
            } catch {
                return .error(error.caseName)
            }
        case .isOpen(let caller):
            guard let kept = callers[caller] else { return .note(closedCallers[caller] == nil ? "no descriptor \(caller)" : "closed by its owner") }
            return .note(Self.sameFile(kept) ? "open" : "closed")
        case .callerWrite(let caller, let bytes):
            guard (0...Step.maximumBytes).contains(bytes) else { return .note("invalid step: a byte count outside 0...\(Step.maximumBytes) (\(bytes))") }
            guard let kept = callers[caller] else { return .note("no descriptor \(caller)") }
            let data = [UInt8](repeating: 0x61, count: bytes)
            let n = data.withUnsafeBytes { Glibc.write(kept.fd, $0.baseAddress, $0.count) }
            return n == bytes ? .ok : .note("write: \(n < 0 ? ErrnoTable.name(errno) : "\(n) bytes")")
        case .callerClose(let caller):
            guard let kept = callers.removeValue(forKey: caller) else { return .note("no descriptor \(caller)") }
            close(kept.fd)
            closedCallers[caller] = kept.fd
            return .ok
        case .udpPair(let a, let b):
            do throws(LoopError) {
                for name in [a, b] { keepDatagram(name, try await loop.bindDatagram(to: Self.loopback)) }
                return .ok
            } catch {
                return .error(error.caseName)
            }
        case .unixDatagramPair(let a, let b):
            return try await unixDatagramPair(a, b)
        case .unixDatagramUnconnected(let senders, let receiver):
            let path = "/tmp/readiness-conformance-\(getpid())-\(Self.pathCounter.add(1, ordering: .relaxed).newValue)-\(receiver)"
            unlink(path)
            unixPaths.append(path)
            let address: SocketAddress
            do { address = try SocketAddress(unixPath: path) } catch { return .note("no address for \(path)") }
            do throws(LoopError) {
                keepDatagram(receiver, try await loop.bindDatagram(to: address))
                for sender in senders {
                    let nameless: DatagramSocket
                    do { nameless = try DatagramSocket(family: .unix) } catch { return .error("socket(\(error.kind))") }
                    let fd = nameless.release()
                    do throws(LoopError) { keepDatagram(sender, try await loop.adoptDatagram(descriptor: fd)) } catch {
                        close(fd)
                        throw error
                    }
                }
                return .ok
            } catch {
                return .error(error.caseName)
            }
        case .connectDatagram(let name, let target):
            // A closed UDP port stays bound (by a socket of ours) until the connect has taken its own
            // port, so the kernel cannot give the connecting socket that very port.
            var holder: DatagramSocket?
            if case .closedUDPPort = target { holder = try? DatagramSocket(bind: Self.loopback) }
            defer { holder?.close() }
            guard let peer = holder?.localAddress ?? address(target) else { return .note("no address for \(target)") }
            do throws(LoopError) {
                keepDatagram(name, try await loop.connectDatagram(to: peer))
                return .ok
            } catch {
                return .error(error.caseName)
            }
        }
    }

    /// Shuts the loop down (if a step did not), waits for every task, and checks and closes the caller's
    /// descriptors. Returns what went wrong, if anything.
    func finish() async -> [String] {
        var problems: [String] = []
        if !isShutDown {
            await loop.shutdown()
            isShutDown = true
        }
        for (_, running) in tasks { _ = await running.task.value }
        tasks.removeAll()
        for (name, kept) in callers.sorted(by: { $0.key < $1.key }) {
            // Closed only if the number still names the caller's file: another's is not ours to close.
            if Self.sameFile(kept) {
                close(kept.fd)
            } else {
                problems.append("the caller's descriptor \(name) (\(kept.fd)) was closed or replaced behind its owner")
            }
        }
        callers.removeAll()
        for (fd, _) in listeners.values { close(fd) }
        listeners.removeAll()
        for fd in fillers { close(fd) }
        fillers.removeAll()
        for path in unixPaths where access(path, F_OK) == 0 {
            problems.append("the Unix datagram path \(path) was left behind after the loop's shutdown")
            unlink(path)
        }
        unixPaths.removeAll()
        return problems
    }

    /// Opens /dev/null on the lowest free number (most likely the one a close just freed) and keeps
    /// it as a caller's descriptor: a loop that closed that number again (a socket closed twice) would
    /// close the sentinel, which ``finish()`` reports.
    private func placeSentinel() {
        let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
        if fd >= 0 { keep("sentinel \(fd)", fd) }
    }

    // MARK: Set-up

    private func keep(_ name: String, _ fd: CInt) {
        var info = stat()
        fstat(fd, &info)
        callers[name] = (fd, UInt64(info.st_dev), UInt64(info.st_ino))
    }

    private static func sameFile(_ kept: (fd: CInt, device: UInt64, inode: UInt64)) -> Bool {
        var info = stat()
        return fstat(kept.fd, &info) == 0 && UInt64(info.st_dev) == kept.device && UInt64(info.st_ino) == kept.inode
    }

    private func adoptBoth(_ first: (String, CInt), _ second: (String, CInt)) async -> Observation {
        let pair = [first, second]
        for (index, (name, fd)) in pair.enumerated() {
            do throws(LoopError) {
                sockets[name] = try await loop.adopt(descriptor: fd)
            } catch {
                // A refused adoption leaves the descriptor the caller's: close it and the one not tried.
                for (_, left) in pair[index...] { close(left) }
                return .error(error.caseName)
            }
        }
        return .ok
    }

    private func tcpPair(_ client: String, _ server: String) async -> Observation {
        do throws(LoopError) {
            let listener = try await loop.listen(on: Self.loopback)
            let timeout: Duration = .seconds(5)
            let accepting = Task(executorPreference: loop) { () async -> Result<AsyncSocket, LoopError> in
                do throws(LoopError) { return .success(try await listener.accept(timeout: timeout)) } catch { return .failure(error) }
            }
            let connected: AsyncSocket
            do throws(LoopError) { connected = try await loop.connect(to: listener.address, timeout: timeout) } catch {
                _ = await accepting.value
                await listener.close()
                throw error
            }
            sockets[client] = connected
            sockets[server] = try await accepting.value.get()
            await listener.close()
            return .ok
        } catch {
            return .error(error.caseName)
        }
    }

    private func keepDatagram(_ name: String, _ socket: AsyncDatagramSocket) {
        datagrams[name] = socket
        datagramAddresses[name] = socket.localAddress
    }

    /// Two Unix datagram sockets on paths of their own: `b` bound, `a` bound and connected to `b`, then
    /// `b` connected to `a` (through `withDatagramSocket`).
    private func unixDatagramPair(_ a: String, _ b: String) async throws -> Observation {
        let base = "/tmp/readiness-conformance-\(getpid())-\(Self.pathCounter.add(1, ordering: .relaxed).newValue)"
        let (pathA, pathB) = (base + "-" + a, base + "-" + b)
        let (addressA, addressB) = (try SocketAddress(unixPath: pathA), try SocketAddress(unixPath: pathB))
        unlink(pathA)
        unlink(pathB)
        unixPaths += [pathA, pathB]
        do throws(LoopError) {
            let second = try await loop.bindDatagram(to: addressB)
            keepDatagram(b, second)
            keepDatagram(a, try await loop.connectDatagram(to: addressB, from: addressA))
            try await second.withDatagramSocket { (socket) throws(SocketError) in try socket.connect(to: addressA) }
            return .ok
        } catch {
            return .error(error.caseName)
        }
    }

    /// A datagram's outcome in words, its source named when it is a socket of the script.
    private static func describe(_ datagram: ReceivedDatagram, held: Int, names: [String: SocketAddress]) -> Observation {
        var text = "\(datagram.count) bytes"
        if let source = datagram.source {
            text += " from " + (names.first { $0.value == source }?.key ?? "\(source)")
        }
        if datagram.isTruncated { text += ", truncated from \(datagram.length)" }
        if held != datagram.count { text += " (the buffer holds \(held))" }
        return .note(text)
    }

    private func fullListener(_ name: String) throws {
        listeners[name] = try Net.fullListener { fillers.append($0) }
    }

    // MARK: Operations

    private func address(_ target: AsyncTarget) -> SocketAddress? {
        switch target {
        case .listener(let name), .fullListener(let name): listeners[name]?.address
        case .closedPort: (try? Net.freePort()).flatMap { try? SocketAddress("127.0.0.1:\($0)") }
        case .closedUDPPort: try? DatagramSocket(bind: Self.loopback).localAddress   // closed on return
        case .loopListener(let name): loopListeners[name]?.address
        }
    }

    /// The operation with its names resolved, as a closure a task can run.
    private func resolve(_ operation: AsyncOperation) -> @Sendable () async -> AsyncResult {
        let loop = self.loop
        func missing(_ what: String) -> @Sendable () async -> AsyncResult { { (.note("no \(what)"), nil) } }
        func invalid(_ what: String) -> @Sendable () async -> AsyncResult { { (.note("invalid step: \(what)"), nil) } }
        func caller(_ name: String) -> CInt? { callers[name]?.fd ?? closedCallers[name] }
        switch operation {
        case .read(let name, let maximum, let timeout):
            guard let socket = sockets[name] else { return missing("socket \(name)") }
            return { await Self.observe { () throws(LoopError) -> Observation in
                let bytes = try await socket.read(upTo: maximum, timeout: timeout)
                return .note(bytes.isEmpty ? "end of stream" : "\(bytes.count) bytes")
            } }
        case .peek(let name, let maximum, let timeout):
            guard (0...AsyncSocket.maximumReadChunk).contains(maximum) else { return invalid("a peek size outside 0...\(AsyncSocket.maximumReadChunk) (\(maximum))") }
            guard let socket = sockets[name] else { return missing("socket \(name)") }
            return { await Self.observe { () throws(LoopError) -> Observation in
                var buffer = [UInt8](repeating: 0, count: maximum)
                let n = try await socket.peek(into: &buffer, timeout: timeout)
                return .note(n == 0 ? "end of stream" : "\(n) bytes")
            } }
        case .readAll(let name, let total, let timeout):
            guard let socket = sockets[name] else { return missing("socket \(name)") }
            return { await Self.observe { () throws(LoopError) -> Observation in
                var count = 0
                while count < total {
                    let bytes = try await socket.read(upTo: Swift.min(Self.readBuffer, total - count), timeout: timeout)
                    if bytes.isEmpty { break }
                    count += bytes.count
                }
                return .note("\(count) bytes")
            } }
        case .write(let name, let bytes, let timeout):
            guard (0...Step.maximumBytes).contains(bytes) else { return invalid("a byte count outside 0...\(Step.maximumBytes) (\(bytes))") }
            guard let socket = sockets[name] else { return missing("socket \(name)") }
            return { await Self.observe { () throws(LoopError) -> Observation in
                try await socket.write([UInt8](repeating: 0x62, count: bytes), timeout: timeout)
                return .ok
            } }
        case .shutdownWrite(let name):
            guard let socket = sockets[name] else { return missing("socket \(name)") }
            return { await Self.observe { () throws(LoopError) -> Observation in
                try await socket.shutdown(.write)
                return .ok
            } }
        case .close(let name):
            if let datagram = datagrams[name] { return { await datagram.close(); return (.ok, nil) } }
            guard let socket = sockets[name] else { return missing("socket \(name)") }
            return { await socket.close(); return (.ok, nil) }
        case .resetClose(let name):
            guard let socket = sockets[name] else { return missing("socket \(name)") }
            return { await Self.observe { () throws(LoopError) -> Observation in
                try await socket.withStreamSocket { (stream) throws(SocketError) in Net.lingerZero(stream.fd) }
                await socket.close()
                return .ok
            } }
        case .closeInside(let name):
            guard let socket = sockets[name] else { return missing("socket \(name)") }
            return { await Self.observe { () throws(LoopError) -> Observation in
                try await socket.withStreamSocket { (stream) throws(SocketError) in stream.close() }
                return .ok
            } }
        case .sleep(let duration):
            return { await Self.observe { () throws(LoopError) -> Observation in
                try await loop.sleep(for: duration)
                return .ok
            } }
        case .sleepTimed(let duration):
            return { await Self.observe { () throws(LoopError) -> Observation in
                let start = ContinuousClock.now
                try await loop.sleep(for: duration)
                let slept = ContinuousClock.now - start
                if slept < duration { return .note("early") }
                // A sleep that waited for an earlier computed timeout (a timer added during an
                // iteration, not seen by its wait) ends far too late: a second of slack for a loaded machine.
                return .note(slept > Swift.max(duration, .zero) + .seconds(1) ? "late: \(slept) for \(duration)" : "slept")
            } }
        case .interval(let period, let ticks, let late, let missed):
            guard (1...64).contains(ticks), period >= .nanoseconds(1), period <= .seconds(10), late >= .zero, late <= .seconds(10) else {
                return invalid("ticks outside 1...64, or a period or lateness outside 1 ns...10 s")
            }
            return { await Self.observe { () throws(LoopError) -> Observation in
                var interval = try loop.interval(every: period, missedTicks: missed)
                let first = interval.nextTick
                // In whole nanoseconds, as the interval counts (a Duration's division is a Double's).
                let step = interval.period.clampedNanoseconds
                func offset(_ instant: Deadline) -> Int64 { (instant - first).clampedNanoseconds }
                func place(_ instant: Deadline) -> Int64 { offset(instant) / step }
                var places: [String] = []
                for index in 0..<ticks {
                    if index == 1 { try await loop.sleep(for: late) }
                    let before = Deadline.now
                    let due = try await interval.tick()
                    let after = Deadline.now
                    if after < due { return .note("early") }
                    // The tick after a late one, skipping: the first instant of the schedule after the
                    // late tick was taken (between `before` and `after`), whatever the machine's delays.
                    if missed == .skip, index == 1 {
                        let next = interval.nextTick
                        let onSchedule = offset(next) % step == 0
                        guard onSchedule, next > before, (next - after).clampedNanoseconds <= step else { return .note("skipped to \(next - first) after \(before - first)") }
                        places.append("\(place(due)) then the next after the late one")
                        continue
                    }
                    if missed == .skip, index > 1 { continue }
                    places.append("\(place(due))")
                }
                return .note("ticks " + places.joined(separator: " "))
            } }
        case .signals(let count):
            guard (1...64).contains(count) else { return invalid("a signal count outside 1...64 (\(count))") }
            return { await Self.observe { () throws(LoopError) -> Observation in
                var before = sigaction()
                sigaction(SIGUSR2, nil, &before)
                let signals = try loop.signals([.user2])
                AsyncRun.raiseDelivered(SIGUSR2, count: count)
                var notes: [String] = []
                for await signal in signals {
                    notes.append(signal == .user2 ? "received" : "received \(signal)")
                    break
                }
                signals.finish()
                // Deliveries that came before finish() and were not returned yet are returned, then
                // nil (how many: as the kernel coalesced them).
                for await signal in signals where signal != .user2 { notes.append("then \(signal)") }
                notes.append("ended")
                var after = sigaction()
                sigaction(SIGUSR2, nil, &after)
                let same = unsafeBitCast(before.__sigaction_handler.sa_handler, to: Int.self) == unsafeBitCast(after.__sigaction_handler.sa_handler, to: Int.self)
                notes.append(same ? "action restored" : "action not restored")
                return .note(notes.joined(separator: ", "))
            } }
        case .serveEcho(let name, let clients, let bytes):
            guard let listener = loopListeners[name] else { return missing("loop listener \(name)") }
            guard (0...256).contains(clients), (1...Step.maximumBytes).contains(bytes) else { return invalid("clients outside 0...256 or bytes outside 1...\(Step.maximumBytes)") }
            return { await Self.observe { () throws(LoopError) -> Observation in
                let serving = Task(executorPreference: loop) { () async -> String in
                    do throws(LoopError) {
                        try await listener.serve { socket in
                            while let chunk = try? await socket.readAvailable(maximum: AsyncRun.readBuffer), !chunk.isEmpty {
                                do throws(LoopError) { try await socket.write(chunk) } catch { return }
                            }
                        }
                        return "returned"
                    } catch {
                        return error.caseName
                    }
                }
                var echoed = 0
                let payload = (0..<bytes).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
                for _ in 0..<clients {
                    let client = try await loop.connect(to: listener.address, timeout: .seconds(5))
                    var back: [UInt8] = []
                    do throws(LoopError) {
                        try await client.write(payload, timeout: .seconds(5))
                        try await client.shutdown(.write)
                        while back.count <= bytes {
                            let chunk = try await client.read(upTo: AsyncRun.readBuffer, timeout: .seconds(5))
                            if chunk.isEmpty { break }
                            back += chunk
                        }
                    } catch {
                        await client.close()
                        throw error
                    }
                    await client.close()
                    if back == payload { echoed += 1 }
                }
                await listener.close()
                return .note("echoed \(echoed) of \(clients), serve \(await serving.value)")
            } }
        case .idlePasses(let duration):
            return { await Self.observe { () throws(LoopError) -> Observation in
                let before = try await loop.statistics().iterations
                try await loop.sleep(for: duration)
                let passes = try await loop.statistics().iterations - before
                return .note(passes <= 20 ? "idle" : "\(passes) poller passes in \(duration)")
            } }
        case .shutdownGracefully(let grace):
            return {
                let start = ContinuousClock.now
                await loop.shutdown(gracePeriod: grace)
                return (.note(ContinuousClock.now - start < grace ? "drained" : "grace period ended"), nil)
            }
        case .readable(let name, let timeout), .writable(let name, let timeout):
            guard let fd = caller(name) else { return missing("descriptor \(name)") }
            let reading = if case .readable = operation { true } else { false }
            return { await Self.observe { () throws(LoopError) -> Observation in
                if reading { try await loop.readable(fd, timeout: timeout) } else { try await loop.writable(fd, timeout: timeout) }
                return .ok
            } }
        case .connect(_, let target, let timeout):
            guard let address = address(target) else { return missing("address for \(target)") }
            return {
                do throws(LoopError) {
                    return (.connect("connected"), try await loop.connect(to: address, timeout: timeout))
                } catch {
                    return (.error(error.caseName), nil)
                }
            }
        case .connectFirst(_, let targets, let delay, let timeout):
            let addresses = targets.compactMap(address)
            let options = { var options = HappyEyeballs.Options(); options.attemptDelay = delay; return options }()
            return {
                do throws(LoopError) {
                    return (.connect("connected"), try await loop.connect(to: addresses, timeout: timeout, options: options))
                } catch {
                    return (.error(error.caseName), nil)
                }
            }
        case .accept(let name, _, let timeout):
            guard let listener = loopListeners[name] else { return missing("listener \(name)") }
            return {
                do throws(LoopError) {
                    return (.note("accepted"), try await listener.accept(timeout: timeout))
                } catch {
                    return (.error(error.caseName), nil)
                }
            }
        case .closeListener(let name):
            guard let listener = loopListeners[name] else { return missing("listener \(name)") }
            return { await listener.close(); return (.ok, nil) }
        case .send(let name, let bytes, let destination, _), .trySend(let name, let bytes, let destination):
            guard (0...Step.maximumBytes).contains(bytes) else { return invalid("a byte count outside 0...\(Step.maximumBytes) (\(bytes))") }
            guard let socket = datagrams[name] else { return missing("datagram socket \(name)") }
            var address: SocketAddress?
            if let destination {
                guard let found = datagramAddresses[destination] else { return missing("address of \(destination)") }
                address = found
            }
            let datagram = [UInt8](repeating: 0x63, count: bytes)
            guard case .send(_, _, _, let timeout) = operation else {
                return { [address] in await Self.observe { () throws(LoopError) -> Observation in
                    .note(try await socket.trySend(datagram, to: address) ? "sent" : "no room")
                } }
            }
            return { [address] in await Self.observe { () throws(LoopError) -> Observation in
                try await socket.send(datagram, to: address, timeout: timeout)
                return .ok
            } }
        case .receive(let name, let maximum, let timeout):
            guard let socket = datagrams[name] else { return missing("datagram socket \(name)") }
            let names = datagramAddresses
            return { await Self.observe { () throws(LoopError) -> Observation in
                var buffer = Bytes()
                let datagram = try await socket.receive(into: &buffer, maximum: maximum, timeout: timeout)
                return Self.describe(datagram, held: buffer.count, names: names)
            } }
        case .peekDatagram(let name, let maximum, let timeout):
            guard (0...AsyncSocket.maximumReadChunk).contains(maximum) else { return invalid("a peek size outside 0...\(AsyncSocket.maximumReadChunk) (\(maximum))") }
            guard let socket = datagrams[name] else { return missing("datagram socket \(name)") }
            let names = datagramAddresses
            return { await Self.observe { () throws(LoopError) -> Observation in
                var buffer = [UInt8](repeating: 0, count: maximum)
                let datagram = try await socket.peek(into: &buffer, timeout: timeout)
                return Self.describe(datagram, held: datagram.count, names: names)
            } }
        case .ready(let name, let reading, let timeout):
            if let socket = datagrams[name] {
                return { await Self.observe { () throws(LoopError) -> Observation in
                    if reading { try await socket.readable(timeout: timeout) } else { try await socket.writable(timeout: timeout) }
                    return .ok
                } }
            }
            guard let socket = sockets[name] else { return missing("socket \(name)") }
            return { await Self.observe { () throws(LoopError) -> Observation in
                if reading { try await socket.readable(timeout: timeout) } else { try await socket.writable(timeout: timeout) }
                return .ok
            } }
        case .tryRead(let name, let maximum):
            guard let socket = sockets[name] else { return missing("socket \(name)") }
            return { await Self.observe { () throws(LoopError) -> Observation in
                guard let bytes = try await socket.tryRead(upTo: maximum) else { return .note("nothing queued") }
                return .note(bytes.isEmpty ? "end of stream" : "\(bytes.count) bytes")
            } }
        case .tryWrite(let name, let bytes):
            guard (0...Step.maximumBytes).contains(bytes) else { return invalid("a byte count outside 0...\(Step.maximumBytes) (\(bytes))") }
            guard let socket = sockets[name] else { return missing("socket \(name)") }
            return { await Self.observe { () throws(LoopError) -> Observation in
                .note("\(try await socket.tryWrite([UInt8](repeating: 0x62, count: bytes))) bytes")
            } }
        case .tryReceive(let name, let maximum):
            guard (0...AsyncSocket.maximumReadChunk).contains(maximum) else { return invalid("a receive size outside 0...\(AsyncSocket.maximumReadChunk) (\(maximum))") }
            guard let socket = datagrams[name] else { return missing("datagram socket \(name)") }
            let names = datagramAddresses
            return { await Self.observe { () throws(LoopError) -> Observation in
                var buffer = [UInt8](repeating: 0, count: maximum)
                guard let datagram = try await socket.tryReceive(into: &buffer) else { return .note("nothing queued") }
                return Self.describe(datagram, held: datagram.count, names: names)
            } }
        case .receiveBatch(let name, let slots, let timeout):
            guard let socket = datagrams[name] else { return missing("datagram socket \(name)") }
            return { await Self.observe { () throws(LoopError) -> Observation in
                let batch: DatagramBatch
                do throws(SocketError) { batch = try DatagramBatch(capacity: slots, slotSize: Self.batchSlot) } catch {
                    return .note("batch: \(error)")
                }
                let n = try await socket.receive(into: batch, timeout: timeout)
                var sizes: [String] = []
                for index in 0..<n {
                    do throws(SocketError) { sizes.append("\(try batch.datagram(index).count)") } catch { sizes.append("?") }
                }
                let counted = batch.count == n ? "" : " (the batch counts \(batch.count))"
                return .note("\(n) datagrams: \(sizes.joined(separator: " ")) bytes\(counted)")
            } }
        case .fill(let name):
            guard let socket = datagrams[name] else { return missing("datagram socket \(name)") }
            return { await Self.fill(socket, to: nil) }
        case .fillTo(let name, let destination):
            guard let socket = datagrams[name] else { return missing("datagram socket \(name)") }
            guard let address = datagramAddresses[destination] else { return missing("address of \(destination)") }
            return { await Self.fill(socket, to: address) }
        case .drain(let name):
            guard let socket = datagrams[name] else { return missing("datagram socket \(name)") }
            return { await Self.observe { () throws(LoopError) -> Observation in
                var buffer = Bytes()
                for taken in 0..<Self.fillLimit {
                    do throws(LoopError) {
                        buffer.removeAll(keepingCapacity: true)
                        _ = try await socket.receive(into: &buffer, timeout: .zero)
                    } catch {
                        if error == .timedOut { return .note(taken > 0 ? "drained" : "nothing queued") }
                        throw error
                    }
                }
                return .note("still datagrams after \(Self.fillLimit)")
            } }
        case .tryFill(let name):
            if let socket = datagrams[name] {
                return { await Self.observe { () throws(LoopError) -> Observation in
                    let datagram = [UInt8](repeating: 0x63, count: 8)
                    for _ in 0..<Self.fillLimit {
                        try await socket.writable(timeout: .seconds(5))
                        if try await !socket.trySend(datagram) { return .note("filled") }
                    }
                    return .note("never full after \(Self.fillLimit) datagrams")
                } }
            }
            guard let socket = sockets[name] else { return missing("socket \(name)") }
            return { await Self.observe { () throws(LoopError) -> Observation in
                let chunk = [UInt8](repeating: 0x62, count: 1024)
                for _ in 0..<Self.fillLimit {
                    try await socket.writable(timeout: .seconds(5))
                    if try await socket.tryWrite(chunk) == 0 { return .note("filled") }
                }
                return .note("never full after \(Self.fillLimit) writes")
            } }
        case .tryDrain(let name):
            let datagram = datagrams[name]
            let socket = sockets[name]
            if datagram == nil, socket == nil { return missing("socket \(name)") }
            return { await Self.observe { () throws(LoopError) -> Observation in
                var buffer = [UInt8](repeating: 0, count: 64)
                var taken = 0
                for _ in 0..<Self.fillLimit {
                    do throws(LoopError) {
                        if let datagram { try await datagram.readable(timeout: .zero) } else { try await socket!.readable(timeout: .zero) }
                    } catch {
                        if error == .timedOut { return .note(taken > 0 ? "drained" : "nothing queued") }
                        throw error
                    }
                    if let datagram {
                        if try await datagram.tryReceive(into: &buffer) != nil { taken += 1 }
                    } else if let bytes = try await socket!.tryRead(upTo: 65536) {
                        if bytes.isEmpty { return .note("end of stream") }
                        taken += bytes.count
                    }
                }
                return .note("still queued after \(Self.fillLimit) tries")
            } }
        case .readEmpty(let name):
            guard let socket = sockets[name] else { return missing("socket \(name)") }
            return { await Self.observe { () throws(LoopError) -> Observation in
                _ = try await socket.read(into: UnsafeMutableRawBufferPointer(start: nil, count: 0))
                return .ok
            } }
        }
    }

    /// Sends from `socket` (to its peer, or to `destination`) without waiting until a send would block:
    /// "filled", or a note that the queue never filled.
    private static func fill(_ socket: AsyncDatagramSocket, to destination: SocketAddress?) async -> AsyncResult {
        await observe { () throws(LoopError) -> Observation in
            let datagram = [UInt8](repeating: 0x64, count: fillDatagram)
            for _ in 0..<fillLimit {
                do throws(LoopError) {
                    if let destination {
                        try await socket.send(datagram, to: destination, timeout: .zero)
                    } else {
                        try await socket.send(datagram, timeout: .zero)
                    }
                } catch {
                    if error == .timedOut { return .note("filled") }
                    throw error
                }
            }
            return .note("never full after \(fillLimit) datagrams")
        }
    }

    /// Raises `signal` `count` times on a thread of its own that does not block it, so that each is
    /// delivered (its handler has run) before this returns: none is left pending to meet the action
    /// put back after the scenario (a `kill` to the process from the loop thread, which blocks the
    /// signals it watches, could be delivered later, and SIGUSR2's default action ends the process).
    static func raiseDelivered(_ signal: CInt, count: Int) {
        final class Job { let signal: CInt, count: Int; init(_ s: CInt, _ n: Int) { signal = s; count = n } }
        var thread = pthread_t()
        let job = Unmanaged.passRetained(Job(signal, count)).toOpaque()
        let made = pthread_create(&thread, nil, { raw in
            let job = Unmanaged<Job>.fromOpaque(raw!).takeRetainedValue()
            var set = sigset_t()
            sigemptyset(&set)
            sigaddset(&set, job.signal)
            pthread_sigmask(SIG_UNBLOCK, &set, nil)
            for _ in 0..<job.count { raise(job.signal) }
            return nil
        }, job)
        if made == 0 { pthread_join(thread, nil) } else { Unmanaged<Job>.fromOpaque(job).release() }
    }

    private static func observe(_ body: () async throws(LoopError) -> Observation) async -> AsyncResult {
        do throws(LoopError) {
            return (try await body(), nil)
        } catch {
            return (.error(error.caseName), nil)
        }
    }
}

extension AsyncOperation {
    /// Whether the operation closes a socket or listener of the loop.
    var closes: Bool {
        switch self {
        case .close, .resetClose, .closeInside, .closeListener: true
        default: false
        }
    }

    /// The socket name a successful connect keeps.
    var madeSocket: String? {
        switch self {
        case .connect(let name, _, _), .connectFirst(let name, _, _, _), .accept(_, let name, _): name
        default: nil
        }
    }
}
