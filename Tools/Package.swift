// swift-tools-version: 6.1
// The `readiness` command-line tool (backends, connect, conformance): a separate package so that its
// dependency, swift-argument-parser, is never resolved by a package that depends on Readiness.
// From the repository root:
//
//   swift build --package-path Tools --scratch-path .build/tools      (or: make run)
//   .build/tools/debug/readiness backends
import Foundation
import PackageDescription

// A path dependency's identity is the name of its folder, which depends on where the repository was
// cloned; compute it instead of assuming one.
let rootIdentity = URL(fileURLWithPath: Context.packageDirectory)
    .deletingLastPathComponent().lastPathComponent.lowercased()

let package = Package(
    name: "ReadinessTools",
    products: [
        .executable(name: "readiness", targets: ["readiness"]),
    ],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .executableTarget(
            name: "readiness",
            dependencies: [
                .product(name: "Readiness", package: rootIdentity),
                .product(name: "ReadinessConformance", package: rootIdentity),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/readiness",
            swiftSettings: [.enableUpcomingFeature("ExistentialAny")]),
        // Runs the built tool (make test: the "command-line tool" stage).
        .testTarget(
            name: "ReadinessToolTests",
            dependencies: ["readiness", .product(name: "Readiness", package: rootIdentity)],
            path: "Tests/ReadinessToolTests"),
    ],
    swiftLanguageModes: [.v6]
)
