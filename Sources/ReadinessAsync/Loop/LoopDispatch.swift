import ReadinessCore
import ReadinessNet

/// Dispatch: readiness events and due timers go to the resource their token names, by slab index; a
/// stale token (its resource closed, the slot perhaps reused) finds nothing and is ignored.
extension LoopState {
    func dispatchEvents() {
        retryDeregisters()
        for event in events where !event.isWakeup {
            // The waker's event only woke the loop: submissions (and resolution answers) are taken
            // from the loop's queue.
            guard let resource = slab[event.token] else { continue }
            resource.ready(event.ready, token: event.token, loop: self)
        }
    }

    /// Level-triggered bookkeeping of a resource's waits: readiness resumes the direction's waiter; with
    /// nobody waiting the interest is kept once (the resumed task has probably not done its I/O yet),
    /// then dropped.
    func deliver(_ resource: any LoopResource, _ ready: Ready) {
        let registered = resource.record.registered
        var keep = registered
        if registered.contains(.readable), !ready.isDisjoint(with: [.readable, .readClosed, .hangup, .error]) {
            resource.record.readDrained = false
            if resource.record.read.waitsForReadiness {
                resolve(resource, .read, .ready)
            } else if resource.record.read.lingering {
                resource.record.read.lingering = false
            } else {
                keep.remove(.readable)
            }
        }
        if registered.contains(.writable), !ready.isDisjoint(with: [.writable, .hangup, .error]) {
            if resource.record.write.waitsForReadiness {
                resolve(resource, .write, .ready)
            } else if resource.record.write.lingering {
                resource.record.write.lingering = false
            } else {
                keep.remove(.writable)
            }
        }
        if keep != resource.record.registered { try? updateInterest(resource, keep) }
    }

    func fireTimers(now: Int64) {
        timersCheckedAt = now
        while let token = timers.popDue(now: now) {
            guard let resource = slab[token] else { continue }
            let purpose = TimerPurpose(of: token)
            switch purpose {
            case .readDeadline:
                deadlineFired(resource, .read, token: token, now: now)
            case .writeDeadline:
                deadlineFired(resource, .write, token: token, now: now)
            case .readTurnDeadline:
                turnDeadlineFired(resource, .read, now: now)
            case .writeTurnDeadline:
                turnDeadlineFired(resource, .write, now: now)
            default:
                resource.timerFired(purpose, token: token, now: now, loop: self)
            }
        }
    }

    /// A name resolution's answer came in (from a lookup thread, through the loop's queue) for the
    /// connect holding `token`.
    func resolutionAnswered(_ token: Token) {
        guard let resource = slab[token] else { return }
        resource.ready(.readable, token: token, loop: self)
    }
}
