#if canImport(Glibc)
import Glibc
#endif

/// Why ``Connector/connect(toHost:on:options:timeout:resolver:)`` failed.
public enum HostConnectError: Error, Sendable, CustomStringConvertible {
    /// `HOST:PORT` could not be parsed.
    case invalid(SocketAddress.ParseError)
    /// The name resolved to no address.
    case unresolved(ResolutionError)
    /// Every address failed (the error lists each attempt).
    case connect(ConnectError)
    /// The options cannot be used (``HappyEyeballs/Options/invalidReason``); nothing was started.
    case invalidOptions(String)

    /// A one-line text for logs.
    public var description: String {
        switch self {
        case .invalid(let error): "\(error)"
        case .unresolved(let error): "\(error)"
        case .connect(let error): "\(error)"
        case .invalidOptions(let reason): reason
        }
    }
}

extension Connector {
    /// The most events one wait of ``connect(toHost:on:options:)`` takes (more attempts than this are
    /// served over several waits).
    static let eventCapacity = 64

    /// Resolves `HOST:PORT` off this thread (AAAA and A separately, RFC 8305 section 3) and connects in
    /// the Happy Eyeballs way, on a poller dedicated to the call. Inside your own loop, use
    /// ``Resolution`` and ``HappyEyeballs`` directly.
    ///
    /// `timeout` bounds the whole call, the name lookup included (the options' `attemptTimeout` bounds
    /// each attempt only, from its start): when it passes, every attempt is closed, the lookup left to
    /// end on its own, and the call fails with ``ConnectError/Cause/timedOut``. Any `Duration` is
    /// valid (saturating); nil waits as long as the lookup and the attempts take.
    public static func connect(toHost text: String, on poller: any Poller,
                               options: HappyEyeballs.Options = HappyEyeballs.Options(), timeout: Duration? = nil,
                               resolver: any HostResolver = SystemResolver()) throws(HostConnectError) -> ConnectedSocket {
        if let reason = options.invalidReason { throw .invalidOptions(reason) }
        let deadline = timeout.map { Deadline.after($0).nanoseconds }
        let resolution: Resolution
        do {
            resolution = try Resolution(text, waker: poller.waker, resolver: resolver)
        } catch {
            throw .invalid(error)
        }
        let timers = Timers()
        let connect = HappyEyeballs(resolution: resolution, poller: poller, timers: timers, tokenBase: 0, options: options)
        let progress: HappyEyeballs.Progress
        do {
            progress = try drive(connect, on: poller, timers: timers, capacity: min(options.maximumAttempts, Self.eventCapacity) + 1,
                                 deadline: deadline)
        } catch {
            throw .connect(error)
        }
        switch progress {
        case .connected(let socket): return socket
        case .unresolved(let error): throw .unresolved(error)
        case .failed(let error): throw .connect(error)
        case .inProgress: throw .connect(ConnectError(.other))
        }
    }
}
