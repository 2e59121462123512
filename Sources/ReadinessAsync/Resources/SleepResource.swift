import ReadinessCore
import ReadinessNet

/// A sleep on the loop's timers (`EventLoop.sleep(for:)`): a read wait with a deadline and nothing to
/// watch.
final class SleepResource: LoopResourceBase, LoopResource {
    func release(loop: LoopState) {}
}

extension LoopState {
    nonisolated(nonsending) func sleep(until deadline: Int64) async throws(LoopError) {
        if isShutDown { throw shutdownReason }
        let sleep = try slab.insert { SleepResource(key: $0) }
        let outcome = await wait(sleep, .read, deadline: deadline, interest: false)
        close(sleep, reason: .closed)
        switch outcome {
        case .ready, .failed(.timedOut): return
        case .failed(let error): throw error
        }
    }
}
