#if canImport(Glibc)
import Glibc
#endif
import ReadinessCore
import ReadinessNet

/// A caller-owned descriptor (`EventLoop.readable(_:)`/`writable(_:)`), watched only while a task
/// waits on it; never closed by the loop.
final class ForeignResource: LoopResource {
    let key: ResourceKey
    @exclusivity(unchecked) var record = LoopRecord()   // loop thread only, never overlapping (LoopResource)
    let fd: CInt

    init(key: ResourceKey, fd: CInt) {
        self.key = key
        self.fd = fd
    }

    var watchedDescriptor: CInt? { fd }

    func release(loop: LoopState) {
        try? loop.updateInterest(self, [])
        loop.foreign.removeValue(forKey: fd)
    }
}

extension LoopState {
    nonisolated(nonsending) func waitForeign(_ fd: CInt, _ direction: Direction, deadline: Int64?) async throws(LoopError) {
        if isShutDown { throw .shutdown }
        guard fd >= 0 else { throw .poller(.invalidDescriptor(fd)) }
        try checkForeign(fd, direction == .read ? "readable" : "writable")
        let resource: ForeignResource
        if let key = foreign[fd], let existing = slab[key] as? ForeignResource {
            resource = existing
        } else {
            resource = try slab.insert { ForeignResource(key: $0, fd: fd) }
            foreign[fd] = resource.key
        }
        let outcome = await wait(resource, direction, deadline: deadline, interest: true)
        // Watched only while waited on: the caller may close the descriptor as soon as this returns.
        if slab.contains(resource) {
            var still: Interest = []
            if resource.record.read.isWaiting { still.insert(.readable) }
            if resource.record.write.isWaiting { still.insert(.writable) }
            try? updateInterest(resource, resource.record.registered.intersection(still))
            if still.isEmpty { close(resource, reason: .closed) }
        }
        if case .failed(let error) = outcome { throw error }
    }
}
