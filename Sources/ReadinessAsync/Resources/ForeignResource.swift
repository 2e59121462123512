#if canImport(Glibc)
import Glibc
#endif
import ReadinessCore
import ReadinessNet

/// A caller-owned descriptor (`EventLoop.readable(_:)`/`writable(_:)`), watched only while a task
/// waits on it; never closed by the loop.
final class ForeignResource: LoopResourceBase, LoopResource {
    let fd: CInt
    /// The file the number named when the first wait began (st_dev, st_ino; nil when fstat failed): a
    /// number closed and reused by another file is then told apart from a second wait on the same
    /// file. Not where two open files share an inode (eventfd, timerfd, signalfd, epoll and inotify
    /// files share one; a device or a FIFO opened twice; a pipe's two ends): those look the same.
    private let identity: (device: UInt64, inode: UInt64)?
    /// Whether that identity names one file alone: a socket, a pipe or FIFO, a device. Anonymous-inode
    /// files (eventfd, timerfd, signalfd, epoll) share one inode: a number reused by another of them
    /// looks the same, so the deadline's last look (``readyNow(_:)``) is not trusted for them.
    let identityIsUnique: Bool

    init(key: ResourceKey, fd: CInt) {
        self.fd = fd
        var st = stat()
        if fstat(fd, &st) == 0 {
            identity = (UInt64(truncatingIfNeeded: st.st_dev), UInt64(truncatingIfNeeded: st.st_ino))
            let kind = st.st_mode & S_IFMT
            identityIsUnique = kind == S_IFSOCK || kind == S_IFIFO || kind == S_IFCHR
        } else {
            identity = nil
            identityIsUnique = false
        }
        super.init(key: key)
    }

    /// Whether the number still names the file this resource's waits began on (one fstat). Only a
    /// sure "no" counts: the number closed (EBADF), or another inode; an fstat that fails otherwise,
    /// or none at the first wait, is taken as the same (a second wait joins).
    var namesSameFile: Bool {
        var st = stat()
        guard fstat(fd, &st) == 0 else { return errno != EBADF }
        guard let identity else { return true }
        return identity == (UInt64(truncatingIfNeeded: st.st_dev), UInt64(truncatingIfNeeded: st.st_ino))
    }

    var watchedDescriptor: CInt? { fd }

    /// The deadline's last look: whether the descriptor is ready for `direction` now (one `poll(2)`
    /// that does not wait), the number still naming the file the waits began on. A wait whose event
    /// did not fit in the pass's buffer (more descriptors ready than the loop takes in one wait, the
    /// caller's registered last) timed out before, though its descriptor was ready: a zero timeout,
    /// which asks "ready now?", answered no (Go's net timeout tests: a deadline never hides data).
    /// Only for files whose identity is their own (a socket, a pipe, a device): an eventfd closed
    /// during the wait and its number reused by another eventfd must still time out.
    func readyNow(_ direction: Direction) -> Bool {
        guard identityIsUnique, namesSameFile else { return false }
        let wanted = Int16(direction == .read ? POLLIN : POLLOUT)
        var entry = pollfd(fd: fd, events: wanted, revents: 0)
        guard poll(&entry, 1, 0) == 1, entry.revents & Int16(POLLNVAL) == 0 else { return false }
        return entry.revents & (wanted | Int16(POLLERR) | Int16(POLLHUP)) != 0
    }

    /// Readiness resumes the waiter, and the descriptor is let go at once (`settleForeign`). Unless the
    /// number names another file now (one fstat, for a socket, pipe or device): the caller closed it
    /// during the wait and the number was taken outside the loop (another loop, another pool, a plain
    /// socket), and a backend that watches numbers (poll, select, libevent's poll and select methods,
    /// io_uring's re-check) reported the new file's readiness under the stale token: the wait ended
    /// ready, and FlyingFox's stopped server accepted on someone else's socket (test
    /// `staleForeignWaitNotReadyOnOtherFile`). It ends `.closed` now, as a wait on a closed
    /// descriptor does; epoll, which watches the file, reports nothing for it.
    func ready(_ ready: Ready, token: Token, loop: LoopState) {
        if identityIsUnique, !namesSameFile {
            loop.close(self, reason: .closed)
            return
        }
        loop.deliver(self, ready)
        loop.settleForeign(self)
    }

    func release(loop: LoopState) {
        loop.dropRegistration(self, fd: fd)
        loop.foreign.removeValue(forKey: fd)
    }
}

extension LoopState {
    /// A caller's descriptor is watched only while a task waits on it: when its last waiter is
    /// resolved (ready, deadline, cancellation), the loop deregisters it and forgets the number at
    /// once, not when the waiter's task runs again. Until then the caller, told to cancel the wait
    /// before closing, could close the descriptor and reuse its number while the loop still held it:
    /// an adoption refused as "being waited on", a connect's socket refused as registered, a wait on
    /// the new file trusting a registration of the closed one (libuv test-poll-close).
    /// The resource of the waits on caller's descriptor `fd`, nil when there is none. One whose file
    /// the number no longer names (the caller closed it during the wait and the number was reused:
    /// FlyingSocks' next socket, a signal pipe, a descriptor handed to `adopt`) is stale: its waiters
    /// end `.closed`, as a wait on a closed descriptor does, and its registration goes, so the new file
    /// is waited on or adopted as if the number were fresh (before, the new file's wait joined the
    /// stale one and got `.busy`, and an adoption was refused as "being waited on").
    func liveForeign(_ fd: CInt) -> ForeignResource? {
        guard let key = foreign[fd], let existing = slab[key] as? ForeignResource, existing.fd == fd else { return nil }
        if existing.namesSameFile { return existing }
        close(existing, reason: .closed)
        return nil
    }

    /// Lets the descriptor go once nobody waits on it: no task waiting for readiness in either
    /// direction, and none waiting for its turn (a waiter in line keeps it watched and its number
    /// held until its own wait ends).
    func settleForeign(_ resource: ForeignResource) {
        guard slab.contains(resource), !resource.record.read.isWaiting, !resource.record.write.isWaiting else { return }
        if !turnLines.isEmpty, hasLine(resource) { return }
        close(resource, reason: .closed)
    }

    /// A wait on a caller's descriptor. Two tasks waiting on one socket, pipe or device in one
    /// direction take turns, as the socket's own operations do (tokio's `AsyncFd` lets any number
    /// wait, Go's `RawConn.Read` serialises them): the second waits until the first's wait ends, then
    /// waits for readiness itself, which a level-triggered registration reports at once while it holds
    /// (tokio's `multiple_waiters`: one byte wakes ten readers; turns, not a wake-up of all: if the
    /// first's caller reads the byte before the second's turn, the second waits for more). On an
    /// anonymous-inode file (eventfd, timerfd, signalfd, epoll), and with `exclusive` (the signal
    /// sequence's pipe), a second waiter fails with `.busy` instead.
    nonisolated(nonsending) func waitForeign(_ fd: CInt, _ direction: Direction, deadline: Int64?,
                                             exclusive: Bool = false) async throws(LoopError) {
        if isShutDown { throw shutdownReason }
        guard fd >= 0 else { throw .poller(.invalidDescriptor(fd)) }
        try checkForeign(fd, direction == .read ? "readable" : "writable")
        retryDeregisters(only: fd)   // a registration of this number the poller refused to let go
        let resource: ForeignResource
        if let existing = liveForeign(fd) {
            resource = existing
        } else {
            resource = try slab.insert { ForeignResource(key: $0, fd: fd) }
            foreign[fd] = resource.key
        }
        if resource.record[direction].inUse {
            // Turns only where a number closed and reused by another file is told apart (a socket, a
            // pipe, a device): an eventfd, timerfd or signalfd taken by a reused number would join
            // a stale wait's line, which epoll and io_uring never end and poll and select do (the
            // same misuse, different outcomes; review): a second waiter there is `.busy`, as before.
            if exclusive || !resource.identityIsUnique { throw .busy }
            try await waitForTurn(resource.key.raw, direction, deadline: deadline)
            // The turn came: the number may have been closed and taken by another file meanwhile.
            if !resource.namesSameFile {
                release(resource.key.raw, direction)
                close(resource, reason: .closed)
                throw .closed
            }
        } else {
            resource.record[direction].inUse = true
        }
        let outcome = await wait(resource, direction, deadline: deadline, interest: true)
        // The next waiter in line takes the turn (the direction stays claimed for it).
        release(resource.key.raw, direction)
        // Watched only while waited on: the caller may close the descriptor as soon as this returns.
        if slab.contains(resource) {
            var still: Interest = []
            if resource.record.read.isWaiting { still.insert(.readable) }
            if resource.record.write.isWaiting { still.insert(.writable) }
            try? updateInterest(resource, resource.record.registered.intersection(still))
            if still.isEmpty, !resource.record.read.inUse, !resource.record.write.inUse { close(resource, reason: .closed) }
        }
        if case .failed(let error) = outcome { throw error }
    }

    /// Whether a task waits for its turn on `resource`, in either direction.
    func hasLine(_ resource: any LoopResource) -> Bool {
        turnLines[TurnLine.Key(id: resource.key.raw, direction: .read)] != nil
            || turnLines[TurnLine.Key(id: resource.key.raw, direction: .write)] != nil
    }
}
