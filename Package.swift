// swift-tools-version: 6.2
// 6.2: the async layer uses `nonisolated(nonsending)` (SE-0461, first in the Swift 6.2 compiler), so an
// older toolchain cannot build it; this line makes SwiftPM say so at once instead of failing in the
// compiler. (The manifest itself needs 6.1, for package traits.) Built and tested with 6.3.1.
// Readiness: wait on sockets with epoll, poll, select, libevent or io_uring, chosen at run time.
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "Readiness",
    products: [
        // What a networking library depends on: the contract, every backend, run-time selection, connect.
        .library(name: "Readiness", targets: ["Readiness"]),
        // The cross-backend conformance suite, for authors of new backends (who import the kit with
        // `@_spi(Backend) import Readiness`: Docs/Contract.md, "Writing a backend").
        .library(name: "ReadinessConformance", targets: ["ReadinessConformance"]),
        // The command-line tool: backends, connect, the conformance matrix (`make run`).
        .executable(name: "readiness", targets: ["readiness"]),
    ],
    traits: [
        // On by default so that the five backends are there out of the box. A dependent that does not
        // want libevent (no libevent-dev, nothing linked) turns it off:
        //   .package(url: ..., from: ..., traits: [])
        // The libevent backends then probe as "not built in (trait Libevent off)".
        .default(enabledTraits: ["Libevent"]),
        .trait(name: "Libevent", description: "The libevent backend (links the system's libevent 2.1; needs libevent-dev to build)."),
    ],
    // No package dependencies: what a dependent resolves is this package alone. The command-line tool
    // parses its command line itself (Sources/readiness/Arguments.swift) rather than depending on
    // swift-argument-parser; the benchmarks (Tests/Benchmarks, with SwiftNIO) are a package of their
    // own; swift-docc-plugin is declared only for `make docs` (the end of this file).
    dependencies: [],
    targets: [
        // Core: the Poller contract, events, errors, the waker, and (behind `@_spi(Backend)`) the backend
        // author's kit: BackendSeam, ContractPoller, SpecializedPoller, the registration table, Sys.
        .target(name: "CReadinessCore", path: "Sources/CReadinessCore"),
        .target(name: "ReadinessCore", dependencies: ["CReadinessCore"], path: "Sources/ReadinessCore",
                swiftSettings: strict),
        // Sockets, listeners, timers and connect (the connect state machine, Happy Eyeballs, resolution):
        // the layer above the contract.
        .target(name: "CReadinessNet", path: "Sources/CReadinessNet"),
        // Lifetimes: `Bytes` returns `Span`/`RawSpan`/`MutableRawSpan` views (`@_lifetime` getters).
        .target(name: "ReadinessNet", dependencies: ["ReadinessCore", "CReadinessNet"], path: "Sources/ReadinessNet",
                swiftSettings: strict + [.enableExperimentalFeature("Lifetimes")]),

        // The event loop and async API: a loop thread per poller that is a SerialExecutor and TaskExecutor,
        // with async connect, accept, read, write and sleep. Above the socket layer, below the umbrella.
        .target(name: "ReadinessAsync", dependencies: ["ReadinessNet", "ReadinessCore"], path: "Sources/ReadinessAsync",
                swiftSettings: strict),

        // Backends: one folder each, depending only on the core (and their own C shim).
        .target(name: "CEpoll", path: "Backends/Epoll/CEpoll"),
        .target(name: "ReadinessEpoll", dependencies: ["ReadinessCore", "CEpoll"],
                path: "Backends/Epoll/ReadinessEpoll", swiftSettings: strict),
        .target(name: "ReadinessPoll", dependencies: ["ReadinessCore"],
                path: "Backends/Poll/ReadinessPoll", swiftSettings: strict),
        .target(name: "CSelect", path: "Backends/Select/CSelect"),
        .target(name: "ReadinessSelect", dependencies: ["ReadinessCore", "CSelect"],
                path: "Backends/Select/ReadinessSelect", swiftSettings: strict),
        // libevent's headers are included by shim.c only (event2/event-config.h defines _GNU_SOURCE,
        // which changes glibc's fd_set and clashes with Swift's Glibc module), from the system include
        // path (Debian: libevent-dev). There is no pkg-config system-library target: SwiftPM queries
        // pkg-config for every such target of every package in the graph, trait or not, and a dependent
        // with the trait off would be told to install libevent-dev. Without the Libevent trait the
        // backend's sources compile to nothing (#if Libevent / READINESS_LIBEVENT) and -levent is not
        // passed, so even this package's own `swift build --disable-default-traits` needs no libevent.
        .target(name: "CLibevent", path: "Backends/Libevent/CLibevent",
                cSettings: [.define("READINESS_LIBEVENT", .when(traits: ["Libevent"]))],
                linkerSettings: [.linkedLibrary("event", .when(traits: ["Libevent"]))]),
        .target(name: "ReadinessLibevent", dependencies: ["ReadinessCore", "CLibevent"],
                path: "Backends/Libevent/ReadinessLibevent", swiftSettings: strict),

        .target(name: "CIOUring", path: "Backends/IOUring/CIOUring"),
        .target(name: "ReadinessIOUring", dependencies: ["ReadinessCore", "CIOUring"],
                path: "Backends/IOUring/ReadinessIOUring", swiftSettings: strict),

        // The umbrella a user imports: re-exports the core and selects a backend at run time.
        .target(name: "Readiness",
                dependencies: ["ReadinessCore", "ReadinessNet", "ReadinessAsync", "ReadinessEpoll", "ReadinessPoll", "ReadinessSelect",
                               "ReadinessIOUring",
                               .target(name: "ReadinessLibevent", condition: .when(traits: ["Libevent"]))],
                path: "Sources/Readiness", swiftSettings: strict),
        // The conformance suite's own C shim: fixtures that need _GNU_SOURCE (an isolated network
        // namespace), kept out of the core.
        .target(name: "CReadinessConformance", path: "Sources/CReadinessConformance"),
        .target(name: "ReadinessConformance", dependencies: ["Readiness", "CReadinessConformance"],
                path: "Sources/ReadinessConformance", swiftSettings: strict),
        // The command-line tool: the top layer, on the library and the conformance suite only.
        .executableTarget(name: "readiness", dependencies: ["Readiness", "ReadinessConformance"],
                          path: "Sources/readiness", swiftSettings: strict),

        // Examples written only against `import Readiness` (and what they share); the tests run them on every backend.
        // What the examples share (their command lines, the HTTP response parser), on `Readiness` only.
        .target(name: "ExampleSupport", dependencies: ["Readiness"], path: "Examples/ExampleSupport",
                swiftSettings: strict),
        .executableTarget(name: "readiness-echo", dependencies: ["Readiness", "ExampleSupport"], path: "Examples/readiness-echo",
                          swiftSettings: strict),
        .executableTarget(name: "readiness-async-echo", dependencies: ["Readiness", "ExampleSupport"], path: "Examples/readiness-async-echo",
                          swiftSettings: strict),
        .executableTarget(name: "readiness-async-http-load", dependencies: ["Readiness", "ExampleSupport"],
                          path: "Examples/readiness-async-http-load", swiftSettings: strict),
        .executableTarget(name: "readiness-http-load", dependencies: ["Readiness", "ExampleSupport"],
                          path: "Examples/readiness-http-load", swiftSettings: strict),
        .executableTarget(name: "readiness-http-server", dependencies: ["Readiness", "ExampleSupport"],
                          path: "Examples/readiness-http-server", swiftSettings: strict),
        .executableTarget(name: "readiness-udp-echo", dependencies: ["Readiness", "ExampleSupport"],
                          path: "Examples/readiness-udp-echo", swiftSettings: strict),
        .testTarget(name: "ReadinessTests", dependencies: ["Readiness", "ReadinessConformance", "ExampleSupport"],
                    path: "Tests/ReadinessTests", swiftSettings: strict),
        // The tool's command-line parser (in process) and the built tool run as a user runs it.
        .testTarget(name: "ReadinessToolTests", dependencies: ["readiness", "Readiness"],
                    path: "Tests/ReadinessToolTests", swiftSettings: strict),
    ],
    swiftLanguageModes: [.v6]
)

// DocC (`make docs`): swift-docc-plugin is declared only when READINESS_DOCS=1, so that neither a
// dependent nor a plain build of this package resolves it (SwiftPM resolves every declared dependency
// of every package in the graph, used or not).
if Context.environment["READINESS_DOCS"] == "1" {
    package.dependencies.append(.package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"))
}
