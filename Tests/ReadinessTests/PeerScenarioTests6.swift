import Glibc
import Readiness
import Testing

/// Scenarios from the peers' test suites (CPython test_selectors, libevent regress, mio, Go), stop 33.
@Suite("Peer scenarios 6", .serialized)
struct PeerScenarioTests6 {
    /// CPython `select()` after `close()`: a closed poller reports nothing. Before: the wait threw
    /// `.closed` and left the previous wait's events in the buffer (a loop that caught the error and
    /// went through the buffer handled them twice), on every backend.
    @Test("a wait on a closed poller empties the buffer as it fails", arguments: backends)
    func closedWaitEmptiesBuffer(backend: Backend) throws {
        let poller = try backend.makePoller()
        let (a, b) = try socketPair()
        defer { close(a); close(b) }
        try poller.register(a, token: 1, interest: .readable)
        _ = write(b, "x", 1)
        let events = EventBuffer(capacity: 8)
        #expect(try poller.wait(into: events, timeout: .seconds(1)) == 1)
        try poller.close()
        #expect(throws: PollerError.closed) { try poller.wait(into: events, timeout: .zero) }
        #expect(events.count == 0)
    }

    /// libevent regress (fd reuse) with a procfs file: reregister checks the file its number names now
    /// (Docs/Contract.md rule 9). Before: epoll's MOD failed with ENOENT and its ADD fallback took the
    /// procfs file (it has a poll method), which then read as ready on every wait; every other
    /// backend refused it.
    @Test("reregister of a number now naming a procfs file is refused, as register refuses it", arguments: backends)
    func reregisterProcfsFile(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let (a, b) = try socketPair()
        defer { close(b) }
        try poller.register(a, token: 1, interest: .readable)
        close(a)
        let file = open("/proc/self/mounts", O_RDONLY | O_CLOEXEC)
        try #require(file >= 0)
        defer { close(file) }
        guard file == a else { return }   // another thread took the number: nothing to check
        #expect(throws: PollerError.unsupportedDescriptor(file)) {
            try poller.reregister(file, token: 2, interest: .readable)
        }
        // (What the old registration reports now differs by backend: a number closed while
        // registered and reused is the caller's error, Docs/Contract.md.)
        try poller.deregister(file)
    }

    /// An O_PATH descriptor is a location, not an open file: epoll_ctl refuses it with EBADF, poll
    /// calls it POLLNVAL, select always ready. Before: epoll and libevent refused it, poll and
    /// io_uring took it and it went silently dead, select and libevent's select and poll methods
    /// reported it ready on every wait (a busy loop).
    @Test("an O_PATH descriptor is refused with badDescriptor on every backend", arguments: backends)
    func pathOnlyDescriptor(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        let path = tempPath("opath")
        try #require(mkfifo(path, 0o600) == 0)
        defer { unlink(path) }
        let pathOnly: CInt = 0o10000000   // O_PATH, which Swift's Glibc does not export
        let fd = open(path, pathOnly | O_CLOEXEC)
        try #require(fd >= 0)
        defer { close(fd) }
        #expect(throws: PollerError.badDescriptor(fd)) { try poller.register(fd, token: 1, interest: .readable) }
        let events = EventBuffer(capacity: 8)
        #expect(try poller.wait(into: events, timeout: .zero) == 0)
    }

    /// mio and epoll: a wait whose buffer holds fewer events than are ready reports the rest next
    /// time. Before: poll's and select's rotor moved one place per wait, so with 100 registrations
    /// ready at 0, 1 and 99 and room for one event, 99 came back about 97 waits in a row while 0 and
    /// 1 waited (1, 1 and 4 reports in 6 waits).
    @Test("a few ready among many, with room for one event: each is reported in turn", arguments: backends)
    func sparseReadyFairness(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        var pairs: [(CInt, CInt)] = []
        defer { for (a, b) in pairs { close(a); close(b) } }
        for token in 0..<100 {
            let pair = try socketPair()
            pairs.append(pair)
            try poller.register(pair.0, token: Token(UInt64(token)), interest: .readable)
        }
        for index in [0, 1, 99] { _ = write(pairs[index].1, "x", 1) }
        let events = EventBuffer(capacity: 1)
        var seen: [UInt64: Int] = [:]
        for _ in 0..<6 {
            _ = try poller.wait(into: events, timeout: .seconds(1))
            for event in events { seen[event.token.rawValue, default: 0] += 1 }
        }
        #expect(seen[0] == 2 && seen[1] == 2 && seen[99] == 2, "\(seen)")
    }
}
