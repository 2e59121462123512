// swift-tools-version: 6.2
// 6.2: Readiness (a path dependency) needs the Swift 6.2 compiler (`nonisolated(nonsending)`).
// Benchmarks of Readiness against raw syscall loops, libevent driven from C, and SwiftNIO.
//
// A separate package so that nothing here (SwiftNIO, the malloc counter, the C loops) is ever
// resolved by a user of Readiness. Build and run from the repository root:
//
//   swift build -c release --package-path Tests/Benchmarks --scratch-path Tests/Benchmarks/.build
//   Tests/Benchmarks/.build/release/readiness-bench [--quick | --tiny] [--out DIR]
import Foundation
import PackageDescription

// A path dependency's identity is the name of its folder, which depends on where the repository was
// cloned; compute it instead of assuming "main".
let rootIdentity = URL(fileURLWithPath: Context.packageDirectory)
    .deletingLastPathComponent().deletingLastPathComponent().lastPathComponent.lowercased()

let package = Package(
    name: "ReadinessBenchmarks",
    products: [
        .executable(name: "readiness-bench", targets: ["readiness-bench"]),
        .executable(name: "readiness-net-bench", targets: ["readiness-net-bench"]),
        .executable(name: "readiness-async-bench", targets: ["readiness-async-bench"]),
        .executable(name: "readiness-flyingfox-bench", targets: ["readiness-flyingfox-bench"]),
        .executable(name: "readiness-http-bench", targets: ["readiness-http-bench"]),
        .executable(name: "nio-http-server", targets: ["nio-http-server"]),
        .executable(name: "readiness-udp-bench", targets: ["readiness-udp-bench"]),
        .executable(name: "readiness-idle-bench", targets: ["readiness-idle-bench"]),
    ],
    dependencies: [
        .package(path: "../.."),
        .package(url: "https://github.com/apple/swift-nio", from: "2.81.0"),
        .package(url: "https://github.com/ordo-one/malloc-interposer", from: "1.6.0"),
        // FlyingSocks (FlyingFox's socket layer): the async contender of the connect and echo figures.
        .package(url: "https://github.com/swhitty/FlyingFox", from: "0.27.0"),
        // ReadinessSocketPool (Integrations/FlyingSocks): FlyingFox's HTTPServer on Readiness under wrk.
        .package(path: "../../Integrations/FlyingSocks"),
    ],
    targets: [
        // libevent for the C contender (pkg-config: libevent). Its header includes no libevent header.
        .systemLibrary(name: "CBenchLibeventSystem", path: "Sources/CBenchLibeventSystem",
                       pkgConfig: "libevent", providers: [.apt(["libevent-dev"])]),
        // The contenders written in C: raw epoll/poll/select loops and libevent's own loop.
        .target(name: "CReadinessBench", dependencies: ["CBenchLibeventSystem"],
                path: "Sources/CReadinessBench",
                cSettings: [.unsafeFlags(["-O2"])]),
        .executableTarget(
            name: "readiness-bench",
            dependencies: [
                "CReadinessBench",
                .product(name: "Readiness", package: rootIdentity),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "MallocInterposerSwift", package: "malloc-interposer"),
            ],
            path: "Sources/readiness-bench",
            // LLVM's function merging would fold the per-backend copies of a loop specialised through
            // Backend.withConcreteType back into one body that calls the seam through a pointer: the
            // "…, specialised" rows must be what they say.
            swiftSettings: [.unsafeFlags(["-Xfrontend", "-disable-llvm-merge-functions-pass"])]),
        // What the socket and async benchmarks share: counting allocations with malloc-interposer.
        .target(name: "BenchSupport",
                dependencies: [.product(name: "MallocInterposerSwift", package: "malloc-interposer")],
                path: "Sources/BenchSupport"),
        // The contenders' echo servers (SwiftNIO handler-based and NIOAsyncChannel, FlyingSocks) and the
        // loopback address of the FlyingSocks contenders; without the malloc counter, whose header on
        // every allocation would change the memory they are measured for (readiness-idle-bench).
        .target(name: "EchoServers",
                dependencies: [.product(name: "NIOCore", package: "swift-nio"),
                               .product(name: "NIOPosix", package: "swift-nio"),
                               .product(name: "FlyingSocks", package: "FlyingFox")],
                path: "Sources/EchoServers"),
        // The socket layer's figures (Docs/Sockets.md): the examples against nginx beside ab -k, the echo
        // example beside the same server on SwiftNIO, accept while out of descriptors, allocations.
        .executableTarget(
            name: "readiness-net-bench",
            dependencies: [
                "BenchSupport",
                "EchoServers",
                .product(name: "Readiness", package: rootIdentity),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "MallocInterposerSwift", package: "malloc-interposer"),
                .product(name: "FlyingSocks", package: "FlyingFox"),
            ],
            path: "Sources/readiness-net-bench"),
        // Memory per idle connection (Docs/Async.md, "Memory per idle connection"): 4,000 connections
        // each with a task suspended in a read, the server's RSS before and after, Readiness's async echo
        // example beside SwiftNIO (handler-based and NIOAsyncChannel) and FlyingSocks, each server a
        // child process of this one (no malloc counter linked: see EchoServers).
        // glibc's mallinfo2 for readiness-idle-bench's breakdown (malloc.h is not in Swift's Glibc module).
        .target(name: "CHeapInfo", path: "Sources/CHeapInfo"),
        .executableTarget(
            name: "readiness-idle-bench",
            dependencies: [
                "CHeapInfo",
                "EchoServers",
                .product(name: "Readiness", package: rootIdentity),
            ],
            path: "Sources/readiness-idle-bench"),
        // The async layer's figures (Docs/Async.md): connect churn sync vs async vs SwiftNIO, ping-pong
        // round trips and allocations per awaited operation, CPU per connect beside a like-for-like C loop,
        // what a deadline costs.
        .executableTarget(
            name: "readiness-async-bench",
            dependencies: [
                "BenchSupport",
                "CReadinessBench",
                "EchoServers",
                .product(name: "Readiness", package: rootIdentity),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "MallocInterposerSwift", package: "malloc-interposer"),
                .product(name: "FlyingSocks", package: "FlyingFox"),
            ],
            path: "Sources/readiness-async-bench"),
        // FlyingFox's HTTPServer on its own epoll pool beside the same server on ReadinessSocketPool, every
        // backend, under wrk (Docs/Integrations.md, "Measured").
        .executableTarget(
            name: "readiness-flyingfox-bench",
            dependencies: [
                .product(name: "Readiness", package: rootIdentity),
                .product(name: "ReadinessFlyingSocks", package: "FlyingSocks"),
                .product(name: "FlyingFox", package: "FlyingFox"),
                .product(name: "FlyingSocks", package: "FlyingFox"),
            ],
            path: "Sources/readiness-flyingfox-bench"),
        // Examples/readiness-http-server beside nginx and SwiftNIO's NIOHTTP1 server under wrk (issue 22's
        // figures): a driver that starts the three and reads their CPU and memory from /proc.
        .executableTarget(name: "readiness-http-bench", path: "Sources/readiness-http-bench"),
        .executableTarget(
            name: "nio-http-server",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Sources/nio-http-server"),
        // UDP echo (issue 23, Docs/Sockets.md "Datagrams"): Readiness's AsyncDatagramSocket single and
        // batched beside SwiftNIO's DatagramBootstrap and C recvmmsg/sendmmsg and recvfrom/sendto loops,
        // every server a child process driven by one C load client; system calls per datagram.
        .executableTarget(
            name: "readiness-udp-bench",
            dependencies: [
                "CReadinessBench",
                .product(name: "Readiness", package: rootIdentity),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Sources/readiness-udp-bench"),
    ],
    swiftLanguageModes: [.v6]
)
