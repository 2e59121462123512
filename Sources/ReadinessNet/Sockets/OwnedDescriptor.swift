#if canImport(Glibc)
import Glibc
#endif
@_spi(Backend) import ReadinessCore

/// A descriptor a socket owns, and its registration with one poller: what ``StreamSocket`` and
/// ``DatagramSocket`` share (mio's `IoSource`). Only the socket that holds it changes it, so its
/// invariants (registered with at most one poller; deregistered before it is closed; -1 once closed or
/// released) cannot be broken from outside.
struct OwnedDescriptor {
    /// The descriptor, or -1 once closed or released.
    private(set) var fd: CInt
    /// The poller it is registered with, if any.
    private(set) var poller: (any Poller)?
    /// The token, interest and trigger of the last registration (nil when not registered).
    private(set) var registration: (token: Token, interest: Interest, trigger: Trigger)?

    init(_ fd: CInt) { self.fd = fd }

    /// What adopting a caller's descriptor checks: open, a socket of `type` (SOCK_STREAM,
    /// SOCK_DGRAM), whatever `check` adds; only then is it made non-blocking and close-on-exec.
    /// Failing leaves the descriptor the caller's, open and unchanged.
    static func checkAdoptable(_ fd: CInt, type: CInt, kind: String,
                               _ check: (CInt) throws(SocketError) -> Void = { _ in }) throws(SocketError) {
        guard fd >= 0 else { throw SocketError(.invalidArgument, operation: "adopt descriptor \(fd)") }
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0 else { throw SocketError(errno: errno, operation: "adopt descriptor \(fd): fcntl(F_GETFL)") }
        switch NetSys.option(fd, level: SOL_SOCKET, name: SO_TYPE) {
        case .success(let actual) where actual == type:
            break
        case .success:
            throw SocketError(.invalidArgument, operation: "adopt descriptor \(fd): not a \(kind) socket")
        case .failure(let error):
            guard error.errno == ENOTSOCK else { throw error }
            throw SocketError(.invalidArgument, errno: ENOTSOCK, operation: "adopt descriptor \(fd): not a socket")
        }
        try check(fd)
        if flags & O_NONBLOCK == 0, fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0 {
            throw SocketError(errno: errno, operation: "adopt descriptor \(fd): fcntl(F_SETFL, O_NONBLOCK)")
        }
        // Close-on-exec, as every descriptor this package makes (and Go's FileListener's dup): one
        // inherited across an exec (socket activation, a restart) must not pass on to every program
        // the adopter runs, which would keep a listener's port bound after the adopter exits.
        let descriptorFlags = fcntl(fd, F_GETFD)
        if descriptorFlags < 0 || (descriptorFlags & FD_CLOEXEC == 0 && fcntl(fd, F_SETFD, descriptorFlags | FD_CLOEXEC) != 0) {
            let code = errno
            if flags & O_NONBLOCK == 0 { _ = fcntl(fd, F_SETFL, flags) }
            throw SocketError(errno: code, operation: "adopt descriptor \(fd): fcntl(F_SETFD, FD_CLOEXEC)")
        }
    }

    var isClosed: Bool { fd < 0 }

    /// One poller at a time: while registered, `.alreadyRegistered`. A poller closed since holds
    /// nothing: the socket may be registered on another (CPython's selector `close`, mio's `Poll` dropped).
    mutating func register(on poller: any Poller, token: Token, interest: Interest, trigger: Trigger) throws(PollerError) {
        if let current = self.poller {
            guard current.isClosed else { throw .alreadyRegistered(fd) }
            self.poller = nil
            registration = nil
        }
        try poller.register(fd, token: token, interest: interest, trigger: trigger)
        self.poller = poller
        registration = (token, interest, trigger)
    }

    mutating func reregister(token: Token, interest: Interest, trigger: Trigger) throws(PollerError) {
        guard let poller else { throw .notRegistered(fd) }
        try poller.reregister(fd, token: token, interest: interest, trigger: trigger)
        registration = (token, interest, trigger)
    }

    /// Stops watching the descriptor (it stays open); nothing when it is not registered, as for a
    /// listener: an owned socket's deregister is idempotent, as its close is (inside an escape hatch
    /// the registration is the loop's, there or not by the driver's state: a deregister that failed
    /// on one backend and not on another would make the same body differ). The poller's own
    /// `deregister(fd)` is the one that says `notRegistered`.
    ///
    /// A deregister the poller failed but may do on a retry (out of descriptors or memory, another
    /// system error: the contract's rule 10 leaves the poller unchanged) keeps the registration, so
    /// that a retry does it and ``close()`` finishes it; any other failure (a poller closed or used in
    /// a forked child, which holds nothing for this socket any more) forgets it.
    mutating func deregister() throws(PollerError) {
        guard let poller else { return }
        do throws(PollerError) { try poller.deregister(fd) } catch {
            if !error.leavesRegistrationInPlace {
                self.poller = nil
                registration = nil
            }
            throw error
        }
        self.poller = nil
        registration = nil
    }

    /// Deregisters (the contract's order: before the close), then closes. Returns false when it was
    /// closed or released already.
    @discardableResult
    mutating func close() -> Bool {
        guard fd >= 0 else { return false }
        try? deregister()
        Sys.close(fd)
        if let poller {
            // The deregister failed and the poller kept the registration: once more now that the
            // descriptor is closed (it succeeds for a registered descriptor closed meanwhile, unless
            // io_uring cannot submit its cancel again), so that the number can be registered again.
            // Forgotten whatever it says: the socket is gone.
            try? poller.deregister(fd)
            self.poller = nil
            registration = nil
        }
        fd = -1
        return true
    }

    /// Gives the descriptor up, deregistered: the caller owns it from now on.
    mutating func release() -> CInt {
        try? deregister()
        // A deregister the poller failed and kept is not this socket's to finish any more: the
        // caller owns the descriptor (and may deregister it on the poller itself).
        poller = nil
        registration = nil
        defer { fd = -1 }
        return fd
    }
}

extension PollerError {
    /// A failed `deregister` after which the poller still holds the registration and a retry may
    /// succeed: out of descriptors or memory, or another system error (the contract's rule 10: a failed
    /// call leaves the poller as it was).
    package var leavesRegistrationInPlace: Bool {
        switch self {
        case .resourceExhausted, .system: true
        default: false
        }
    }
}
