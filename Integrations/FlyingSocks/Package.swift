// swift-tools-version: 6.2
// 6.2: Readiness (a path dependency) needs the Swift 6.2 compiler (`nonisolated(nonsending)`).
// FlyingSocks (and so FlyingFox) on Readiness: an `AsyncSocketPool` over Readiness's `EventLoop`
// (`ReadinessSocketPool`) and an `EventQueue` over any `Poller` (`ReadinessEventQueue`, for FlyingSocks'
// own `SocketPool`), with the backend chosen at run time (READINESS_BACKEND). A package of its own so
// that Readiness itself resolves nothing: only this package depends on FlyingFox.
//
//   swift test --package-path Integrations/FlyingSocks        # this package's tests, on every backend
//   make flyingfox                                             # FlyingFox's and FlyingSocks' own suites on Readiness
//
// The adapter's sources are also compiled inside FlyingSocks by .ci/flyingfox (with the condition
// READINESS_INSIDE_FLYINGSOCKS, which skips `import FlyingSocks`): keep them in one file each and
// free of anything this package alone declares.
import PackageDescription

let package = Package(
    name: "ReadinessFlyingSocks",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "ReadinessFlyingSocks", targets: ["ReadinessFlyingSocks"]),
    ],
    dependencies: [
        .package(name: "Readiness", path: "../.."),
        .package(url: "https://github.com/swhitty/FlyingFox.git", .upToNextMinor(from: "0.27.1")),
    ],
    targets: [
        .target(
            name: "ReadinessFlyingSocks",
            dependencies: [
                .product(name: "Readiness", package: "Readiness"),
                .product(name: "FlyingSocks", package: "FlyingFox"),
            ]),
        .testTarget(
            name: "ReadinessFlyingSocksTests",
            dependencies: [
                "ReadinessFlyingSocks",
                .product(name: "Readiness", package: "Readiness"),
                .product(name: "FlyingSocks", package: "FlyingFox"),
                .product(name: "FlyingFox", package: "FlyingFox"),
            ]),
    ],
    swiftLanguageModes: [.v6]
)
