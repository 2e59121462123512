// swift-tools-version: 6.2
// 6.2: Readiness (a path dependency) needs the Swift 6.2 compiler (`nonisolated(nonsending)`).
// A networking library's-eye view of Readiness: a package that depends on it by path, the way a
// dependent would, and uses only the `Readiness` product. `make test` builds and runs it twice:
//
//   swift build --package-path Tests/Downstream --scratch-path .build/downstream-on                      # trait on (default)
//   READINESS_TRAITS=none swift build --package-path Tests/Downstream --scratch-path .build/downstream-off # traits: []
//
// With READINESS_TRAITS=none the dependency is declared `traits: []`, as a library that wants no
// libevent would declare it; `.ci/downstream` then checks that the binary does not link libevent.
import Foundation
import PackageDescription

// A path dependency's identity is the name of its folder, which depends on where the repository was
// cloned; compute it instead of assuming one.
let rootIdentity = URL(fileURLWithPath: Context.packageDirectory)
    .deletingLastPathComponent().deletingLastPathComponent().lastPathComponent.lowercased()

let readiness: Package.Dependency = Context.environment["READINESS_TRAITS"] == "none"
    ? .package(path: "../..", traits: [])
    : .package(path: "../..")

let package = Package(
    name: "Downstream",
    dependencies: [readiness],
    targets: [
        .executableTarget(
            name: "downstream",
            dependencies: [.product(name: "Readiness", package: rootIdentity)],
            path: "Sources/downstream"),
    ],
    swiftLanguageModes: [.v6]
)
