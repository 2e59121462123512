// The socket layer (streams, listeners, timers, connect) is part of what `import Readiness` gives.
@_exported import ReadinessNet
// The event loop and async API (Docs/Async.md).
@_exported import ReadinessAsync
