// swift-tools-version: 6.1
// Readiness in swift-service-lifecycle's `ServiceGroup` (the convention of Hummingbird and Vapor
// servers): an `EventLoopGroup` as a `Service` that drains on graceful shutdown, and a server as one.
// A package of its own so that Readiness itself resolves nothing: only this package depends on
// swift-service-lifecycle (and, through it, swift-log and swift-async-algorithms).
//
//   swift test --package-path Integrations/ServiceLifecycle     # its tests, on every backend
import PackageDescription

let package = Package(
    name: "ReadinessServiceLifecycle",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "ReadinessServiceLifecycle", targets: ["ReadinessServiceLifecycle"]),
    ],
    dependencies: [
        .package(name: "Readiness", path: "../.."),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.0"),
    ],
    targets: [
        .target(
            name: "ReadinessServiceLifecycle",
            dependencies: [
                .product(name: "Readiness", package: "Readiness"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        .testTarget(
            name: "ReadinessServiceLifecycleTests",
            dependencies: [
                "ReadinessServiceLifecycle",
                .product(name: "Readiness", package: "Readiness"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]),
    ],
    swiftLanguageModes: [.v6]
)
