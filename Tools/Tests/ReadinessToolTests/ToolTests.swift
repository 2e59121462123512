import Glibc
import Readiness
import Testing

/// The `readiness` tool, run as a user runs it (it is built next to this test bundle).
@Suite("Command-line tool")
struct ToolTests {
    @Test("the command-line tool connects and reports in JSON")
    func command() throws {
        let (listener, address) = try tcpListener()
        defer { close(listener) }
        let output = try runTool(["connect", address.description, "--backend", "poll", "--json"])
        #expect(output.contains("\"connected\":true"))
        #expect(output.contains("\"backend\":\"poll\""))
        let refused = try runTool(["connect", try closedPort().description, "--json"], expectSuccess: false)
        #expect(refused.contains("\"cause\":\"refused\""))
        #expect(refused.contains("\"errno\":\"ECONNREFUSED\""))
    }

    @Test("backends lists every backend with the reason for each")
    func backends() throws {
        let output = try runTool(["backends"])
        for backend in Backend.all { #expect(output.contains(backend.name)) }
        #expect(output.contains("chosen"))
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A loopback TCP listener on an ephemeral port.
func tcpListener() throws -> (fd: CInt, address: SocketAddress) {
    let fd = socket(AF_INET, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw TestFailure("socket: \(errno)") }
    let address = try SocketAddress("127.0.0.1:0")
    guard address.withSockaddr({ bind(fd, $0, $1) }) == 0, listen(fd, 16) == 0 else {
        close(fd)
        throw TestFailure("bind/listen: \(errno)")
    }
    return (fd, try SocketAddress.local(of: fd))
}

/// A loopback port nobody listens on.
func closedPort() throws -> SocketAddress {
    let (fd, address) = try tcpListener()
    close(fd)
    return address
}
/// Runs the `readiness` tool built next to the test bundle and returns its standard output.
func runTool(_ arguments: [String], expectSuccess: Bool = true) throws -> String {
    var path = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &path, path.count - 1)
    guard n > 0 else { throw TestFailure("readlink /proc/self/exe") }
    let exe = String(decoding: path[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    let directory = exe.split(separator: "/").dropLast().joined(separator: "/")
    let tool = "/" + directory + "/readiness"
    guard access(tool, X_OK) == 0 else { throw TestFailure("no readiness tool at \(tool)") }
    let command = ([tool] + arguments).map { "'\($0)'" }.joined(separator: " ")
    guard let pipe = popen(command, "r") else { throw TestFailure("popen") }
    var output = ""
    var buffer = [CChar](repeating: 0, count: 4096)
    while fgets(&buffer, Int32(buffer.count), pipe) != nil {
        output += String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
    let status = pclose(pipe)
    if expectSuccess && status != 0 { throw TestFailure("\(command) exited with \(status): \(output)") }
    return output
}
