import ReadinessCore
import ReadinessNet

/// A datagram socket the loop owns (``AsyncDatagramSocket``): one receiver waits on its read
/// direction, one sender on its write direction.
final class DatagramResource: LoopResource {
    let key: ResourceKey
    @exclusivity(unchecked) var record = LoopRecord()   // loop thread only, never overlapping (LoopResource)
    let socket: DatagramSocket

    init(key: ResourceKey, socket: DatagramSocket) {
        self.key = key
        self.socket = socket
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
        socket.close()           // deregisters first; unlinks a bound Unix path
        record.registered = []
        loop.descriptorFreed()
    }
}
