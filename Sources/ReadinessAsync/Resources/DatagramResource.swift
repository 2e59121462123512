import ReadinessCore
import ReadinessNet

/// A datagram socket the loop owns (``AsyncDatagramSocket``): one receiver waits on its read
/// direction, one sender on its write direction.
final class DatagramResource: LoopResourceBase, LoopResource {
    let socket: DatagramSocket
    /// Where the send in progress goes (set by `LoopState.datagram` for each send): what decides whether
    /// a Unix send's readiness can be believed (`ReadinessDriver.readinessLies`).
    @exclusivity(unchecked) var sendTarget = SendTarget.peer

    init(key: ResourceKey, socket: DatagramSocket) {
        self.socket = socket
        super.init(key: key)
    }

    /// Registered through the socket (`DatagramSocket.register`), so that `close` deregisters first.
    func applyInterest(_ wanted: Interest, old: Interest, token: Token, poller: any Poller) throws(PollerError) -> Bool {
        if old.isEmpty {
            try socket.register(on: poller, token: token, interest: wanted)
        } else if wanted.isEmpty {
            try socket.deregister()
        } else {
            try socket.reregister(token: token, interest: wanted)
        }
        return true
    }

    func release(loop: LoopState) {
        let freed = !socket.isClosed   // released by the escape hatch's body: nothing was freed
        // Deregisters first (a refusal kept and asked again, as for streams); unlinks a bound Unix path.
        if socket.isClosed || record.registered.isEmpty {
            socket.close()
        } else {
            let socket = self.socket
            loop.dropRegistration(self, fd: socket.fd) { socket.close() }
        }
        record.registered = []
        if freed { loop.descriptorFreed() }
    }
}

/// Where a datagram send goes, as far as readiness is concerned.
enum SendTarget {
    /// The connected peer (no destination named).
    case peer
    /// One named destination.
    case address(SocketAddress)
    /// A batch whose slots name destinations.
    case slots
}
