#if canImport(Glibc)
import Glibc
#endif

/// Connects with a timeout, running its own wait loop on a poller dedicated to the call (events of
/// other registrations on it would be consumed). For many connects in flight inside your own event loop,
/// use ``ConnectAttempt`` directly.
public enum Connector {
    /// Connects to one address.
    public static func connect(to address: SocketAddress, on poller: any Poller, timeout: Duration?,
                               localAddress: SocketAddress? = nil,
                               syscalls: any ConnectSyscalls = SystemConnectSyscalls()) throws(ConnectError) -> ConnectedSocket {
        let attempt = ConnectAttempt(to: address, poller: poller, token: 0, timeout: timeout,
                                     localAddress: localAddress, syscalls: syscalls)
        return try run([attempt], on: poller, attemptDelay: .zero)
    }

    /// Connects to the first address that accepts, in the Happy Eyeballs way (RFC 8305): families
    /// alternate, a new attempt starts every `attemptDelay` (or as soon as the previous one fails)
    /// while earlier ones continue; the first success wins and the others are cancelled and closed.
    /// When every attempt fails, the error lists them all.
    public static func connect(to addresses: [SocketAddress], on poller: any Poller, timeout: Duration?,
                               attemptDelay: Duration = .milliseconds(250),
                               syscalls: any ConnectSyscalls = SystemConnectSyscalls(),
                               trace: Bool = false) throws(ConnectError) -> ConnectedSocket {
        let attempts = makeAttempts(to: addresses, on: poller, timeout: timeout, syscalls: syscalls, trace: trace)
        guard !attempts.isEmpty else { throw ConnectError(.other, errno: EINVAL) }
        return try run(attempts, on: poller, attemptDelay: attemptDelay)
    }

    /// The attempts ``connect(to:on:timeout:attemptDelay:syscalls:trace:)`` runs, in RFC 8305 order,
    /// with tokens 0, 1, ...: for a caller that wants them afterwards (their traces), via ``run``.
    public static func makeAttempts(to addresses: [SocketAddress], on poller: any Poller, timeout: Duration?,
                                    syscalls: any ConnectSyscalls = SystemConnectSyscalls(),
                                    trace: Bool = false) -> [ConnectAttempt] {
        interleaveFamilies(addresses).enumerated().map { index, address in
            ConnectAttempt(to: address, poller: poller, token: Token(UInt64(index)), timeout: timeout,
                           syscalls: syscalls, trace: trace)
        }
    }

    /// RFC 8305 §4: start with the first address's family, then alternate families.
    public static func interleaveFamilies(_ addresses: [SocketAddress]) -> [SocketAddress] {
        guard let first = addresses.first else { return [] }
        var same = addresses.filter { $0.family == first.family }
        var other = addresses.filter { $0.family != first.family }
        var out: [SocketAddress] = []
        while !same.isEmpty || !other.isEmpty {
            if !same.isEmpty { out.append(same.removeFirst()) }
            if !other.isEmpty { out.append(other.removeFirst()) }
        }
        return out
    }

    public static func run(_ attempts: [ConnectAttempt], on poller: any Poller, attemptDelay: Duration) throws(ConnectError) -> ConnectedSocket {
        let events = EventBuffer(capacity: max(4, attempts.count + 1))
        let delay = attemptDelay.clampedNanoseconds
        var started = 0
        var nextStart = MonotonicClock.nowNanoseconds
        var errors: [ConnectError?] = Array(repeating: nil, count: attempts.count)

        func cancelAll(except winner: Int?) {
            for (index, attempt) in attempts.enumerated() where index != winner { attempt.cancel() }
        }
        func record(_ index: Int, _ progress: ConnectProgress) -> ConnectedSocket? {
            switch progress {
            case .connected(let socket):
                cancelAll(except: index)
                return socket
            case .failed(let error):
                errors[index] = error
                nextStart = MonotonicClock.nowNanoseconds  // a failure starts the next attempt at once
            case .inProgress:
                break
            }
            return nil
        }
        func failure() -> ConnectError {
            let all = errors.compactMap { $0 }
            if all.count == 1 { return all[0] }
            let timedOut = all.contains { $0.cause == .timedOut }
            var error = all.last ?? ConnectError(.other)
            if timedOut { error = ConnectError(.timedOut, address: error.address) }
            error.attempts = all
            return error
        }

        while true {
            let now = MonotonicClock.nowNanoseconds
            while started < attempts.count, now >= nextStart {
                let index = started
                started += 1
                nextStart = now + delay
                if let socket = record(index, attempts[index].start()) { return socket }
            }
            for (index, attempt) in attempts.enumerated() where index < started && !attempt.isFinished {
                if let socket = record(index, attempt.checkDeadline(now: now)) { return socket }
            }
            let live = attempts.prefix(started).contains { !$0.isFinished }
            if !live && started == attempts.count { throw failure() }

            // Sleep until an event, the next attempt's start, or the nearest deadline.
            var wake: Int64? = started < attempts.count ? nextStart : nil
            for attempt in attempts.prefix(started) where !attempt.isFinished {
                if let deadline = attempt.deadline { wake = min(wake ?? deadline, deadline) }
            }
            let timeout = wake.map { Duration.nanoseconds(max(0, $0 - MonotonicClock.nowNanoseconds)) }
            do {
                try poller.wait(into: events, timeout: timeout)
            } catch {
                cancelAll(except: nil)
                throw ConnectError(.poller, pollerError: error)
            }
            for event in events where !event.isWakeup {
                let index = Int(event.token.rawValue)
                guard index < started, !attempts[index].isFinished else { continue }
                if let socket = record(index, attempts[index].handle(event.ready)) { return socket }
            }
        }
    }
}
