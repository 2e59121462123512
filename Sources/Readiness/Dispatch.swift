@_spi(Backend) import ReadinessCore
@_spi(Backend) import ReadinessEpoll
@_spi(Backend) import ReadinessPoll
@_spi(Backend) import ReadinessSelect
@_spi(Backend) import ReadinessIOUring
#if Libevent
@_spi(Backend) import ReadinessLibevent
#endif
/// Code generic over the concrete type of a poller, run by ``Backend/withConcreteType(of:_:)``.
///
/// Closures cannot be generic, so the code is a type with a generic method.
@_spi(Backend)
public protocol PollerBody {
    /// What ``run(_:)`` returns.
    associatedtype Output
    /// What ``run(_:)`` throws (`Never` for nothing).
    associatedtype Failure: Error
    /// Runs with the poller as its own type.
    func run<P: Poller>(_ poller: P) throws(Failure) -> Output
}

@_spi(Backend)
extension Backend {
    /// Opens `poller` once and calls `body` with it as its concrete type: for the package's backends
    /// the caller's generic code is then specialised for each one (the caller's module compiles a copy
    /// per backend, since this function is inlined there); any other poller (a third-party backend)
    /// runs the generic code through the existential.
    ///
    /// Not needed for speed in most code: every backend's poller is a ``/ReadinessCore/SpecializedPoller``, so a call
    /// through `any Poller` already runs code specialised for its backend, one indirect call away.
    /// This makes that call a direct one, which the compiler may inline. LLVM's function merging can
    /// fold the per-backend copies back into one body that calls through a pointer; a build that
    /// wants them kept passes `-Xfrontend -disable-llvm-merge-functions-pass`, as Tests/Benchmarks
    /// does (Docs/Benchmarks.md measures both paths).
    @inlinable
    public static func withConcreteType<Body: PollerBody>(of poller: any Poller, _ body: Body) throws(Body.Failure) -> Body.Output {
        if let concrete = poller as? EpollPoller { return try body.run(concrete) }
        if let concrete = poller as? PollPoller { return try body.run(concrete) }
        if let concrete = poller as? SelectPoller { return try body.run(concrete) }
        #if Libevent
        if let concrete = poller as? LibeventPoller { return try body.run(concrete) }
        #endif
        if let concrete = poller as? IOUringPoller { return try body.run(concrete) }
        return try body.run(poller)
    }
}
