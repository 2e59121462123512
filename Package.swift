// swift-tools-version: 6.1
// Readiness: wait on sockets with epoll, poll, select or libevent, chosen at run time.
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "Readiness",
    products: [
        // What a networking library depends on: the contract, every backend, run-time selection, connect.
        .library(name: "Readiness", targets: ["Readiness"]),
        // The cross-backend conformance suite, for authors of new backends.
        .library(name: "ReadinessConformance", targets: ["ReadinessConformance"]),
        .executable(name: "readiness", targets: ["readiness"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // Core: the Poller contract, events, errors, registration table, waker, connect state machine.
        .target(name: "CReadinessCore", path: "Sources/CReadinessCore"),
        .target(name: "ReadinessCore", dependencies: ["CReadinessCore"], path: "Sources/ReadinessCore",
                swiftSettings: strict),
        // Sockets, listeners, timers and connect (Happy Eyeballs, resolution): the layer above the contract.
        .target(name: "CReadinessNet", path: "Sources/CReadinessNet"),
        .target(name: "ReadinessNet", dependencies: ["ReadinessCore", "CReadinessNet"], path: "Sources/ReadinessNet",
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
        .systemLibrary(name: "CLibeventSystem", path: "Backends/Libevent/CLibeventSystem",
                       pkgConfig: "libevent", providers: [.apt(["libevent-dev"])]),
        .target(name: "CLibevent", dependencies: ["CLibeventSystem"], path: "Backends/Libevent/CLibevent"),
        .target(name: "ReadinessLibevent", dependencies: ["ReadinessCore", "CLibevent"],
                path: "Backends/Libevent/ReadinessLibevent", swiftSettings: strict),

        // The umbrella a user imports: re-exports the core and selects a backend at run time.
        .target(name: "Readiness",
                dependencies: ["ReadinessCore", "ReadinessNet", "ReadinessEpoll", "ReadinessPoll", "ReadinessSelect",
                               "ReadinessLibevent"],
                path: "Sources/Readiness", swiftSettings: strict),
        .target(name: "ReadinessConformance", dependencies: ["Readiness"],
                path: "Sources/ReadinessConformance", swiftSettings: strict),
        .executableTarget(name: "readiness",
                          dependencies: ["Readiness", "ReadinessConformance",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          path: "Sources/readiness", swiftSettings: strict),
        // Examples written only against `import Readiness`; the tests run them on every backend.
        .executableTarget(name: "readiness-echo", dependencies: ["Readiness"], path: "Examples/readiness-echo",
                          swiftSettings: strict),
        .executableTarget(name: "readiness-http-load", dependencies: ["Readiness"],
                          path: "Examples/readiness-http-load", swiftSettings: strict),
        .testTarget(name: "ReadinessTests", dependencies: ["Readiness", "ReadinessConformance"],
                    path: "Tests/ReadinessTests", swiftSettings: strict),
    ],
    swiftLanguageModes: [.v6]
)
