import Glibc
@_spi(Backend) @testable import Readiness
import Testing

/// The start API: one call, one error type, and selection that probes each backend once.
@Suite("Start")
struct StartTests {
    private func probes() -> Int { Backend.probeCache.withLock { $0.probes } }

    @Test("makeDefaultPoller returns a ready poller of the default backend")
    func ready() throws {
        let poller = try Backend.makeDefaultPoller(environment: [:])
        defer { try? poller.close() }
        #expect(poller.capabilities.name == Backend.all.first { $0.probe() == nil }?.name)
        var fds: [CInt] = [-1, -1]
        #expect(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0, &fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        try poller.register(fds[0], token: 1, interest: .writable)
        let events = EventBuffer(capacity: 4)
        #expect(try poller.wait(into: events, timeout: .seconds(1)) == 1)
    }

    @Test("every selection failure is a SelectionError, whichever entry selects")
    func oneErrorType() throws {
        // An unknown name: the same case from makeDefaultPoller, default and named.
        let environment = [Backend.environmentVariable: "kqueue"]
        do {
            _ = try Backend.makeDefaultPoller(environment: environment)
            Issue.record("kqueue should be unknown")
        } catch {
            // `error` is statically a SelectionError, as from Backend.default and EventLoop.init.
            guard case .unknownName(let name, let valid) = error else {
                Issue.record("unexpected \(error)")
                return
            }
            #expect(name == "kqueue")
            #expect(valid == Backend.all.map(\.name))
            #expect(error.description.contains("valid names"))
        }
        #expect(throws: SelectionError.self) { try Backend.default(environment: environment) }
        #expect(throws: SelectionError.self) { try Backend.named("kqueue") }
        // A poller's own error stays a PollerError, wrapped only where a backend was being selected.
        let creation = SelectionError.creationFailed("epoll", .closed)
        guard case .creationFailed("epoll", .closed) = creation else { throw TestFailure("creationFailed lost its error") }
        let poller = try Backend.makeDefaultPoller(environment: [:])
        defer { try? poller.close() }
        #expect(throws: PollerError.invalidDescriptor(-1)) { try poller.register(-1, token: 1, interest: .readable) }
    }

    @Test("selection probes each backend once per process, then answers from the cache")
    func cached() throws {
        _ = Backend.selection(environment: [:])          // every backend probed (or already cached)
        let before = probes()
        for _ in 0..<20 {
            _ = try Backend.default(environment: [:])
            _ = Backend.selection(environment: [:])
            _ = Backend.available
            for backend in Backend.all { _ = backend.probe() }
        }
        #expect(probes() == before)
        // The report still gives every backend's reason.
        let report = Backend.selection(environment: [:])
        #expect(report.entries.count == Backend.all.count)
        #expect(report.chosen != nil)
    }

    @Test("default() probes only up to the backend it returns")
    func lazyDefault() throws {
        let saved = Backend.probeCache.withLock { cache in
            let saved = cache.verdicts
            cache.verdicts = [:]
            return saved
        }
        defer { Backend.probeCache.withLock { $0.verdicts.merge(saved) { current, _ in current } } }
        let before = probes()
        let chosen = try Backend.default(environment: [:])
        let index = try #require(Backend.all.firstIndex(of: chosen))
        #expect(probes() - before == index + 1)
        _ = try Backend.default(environment: [Backend.environmentVariable: "poll"])
        #expect(probes() - before == max(index + 1, 2))
    }

    /// CPython test_above_fd_setsize: a process holding over a thousand descriptors for a moment.
    /// select's poller is refused then (its waker would sit above FD_SETSIZE), and that verdict was
    /// cached for the life of the process: select and libevent:select stayed unavailable to
    /// selection after the descriptors were closed, while `makePoller()` worked (review, stop 35).
    @Test("a select poller refused for a wake-up descriptor above FD_SETSIZE is not a lasting verdict")
    func wakerAboveSetSizeNotCached() throws {
        let saved = Backend.probeCache.withLock { cache in
            let saved = cache.verdicts
            cache.verdicts = [:]
            return saved
        }
        defer { Backend.probeCache.withLock { $0.verdicts.merge(saved) { current, _ in current } } }
        var fillers: [CInt] = []
        while let last = fillers.last ?? Optional(0), last < 1_030 {
            let fd = dup(0)
            guard fd >= 0 else { break }
            fillers.append(fd)
        }
        do {
            let poller = try Backend.select.makePoller()
            try? poller.close()
            Issue.record("a select poller with its waker above FD_SETSIZE")
        } catch {
            guard case .descriptorTooLarge(_, limit: 1_024) = error else { Issue.record("\(error)"); return }
        }
        #expect(Backend.select.probe() != nil)
        fillers.forEach { close($0) }
        #expect(Backend.select.probe() == nil, "the refusal while the process held 1,031 descriptors was kept")
    }

    #if !Libevent
    @Test("without the Libevent trait, libevent is listed and says why it is unavailable")
    func libeventOff() {
        #expect(!Backend.libeventBuiltIn)
        let report = Backend.selection(environment: [:])
        for entry in report.entries where entry.backend.name.hasPrefix("libevent") {
            #expect(entry.verdict == .skipped("unavailable: backend \(entry.backend.name) is unavailable: not built in (trait Libevent off)"))
        }
        #expect(throws: PollerError.unavailable(backend: "libevent", reason: "not built in (trait Libevent off)")) {
            try Backend.libevent.makePoller()
        }
    }
    #endif

    /// Names the concrete type `withConcreteType` ran with.
    private struct TypeName: PollerBody {
        func run<P: Poller>(_ poller: P) -> String { "\(P.self)" }
    }

    @Test("every backend's poller is a SpecializedPoller, so `any Poller` runs specialised code",
          arguments: backends)
    func specialisedConformance(backend: Backend) throws {
        let poller = try backend.makePoller()
        defer { try? poller.close() }
        // The conformance of `ContractPoller<Seam>` is generic (its witnesses call the seam through a
        // witness table); a SpecializedPoller's is compiled in the backend's module for its seam.
        #expect(poller is any SpecializedPoller, "\(type(of: poller))")
        #expect(!(poller is ContractPoller<PollSeam>) && !(poller is ContractPoller<EpollSeam>))
        let expected = switch backend.kind {
        case .epoll: "EpollPoller"
        case .poll: "PollPoller"
        case .select: "SelectPoller"
        case .ioUring: "IOUringPoller"
        case .libevent: "LibeventPoller"
        }
        #expect(Backend.withConcreteType(of: poller, TypeName()) == expected)
    }

    @Test("withConcreteType runs a third-party poller through the existential")
    func concreteTypeOfThirdParty() throws {
        let poller = CountingPoller(wrapping: try PollSeam.makePoller())
        defer { try? poller.close() }
        #expect(Backend.withConcreteType(of: poller, TypeName()) == "CountingPoller")
    }
}
