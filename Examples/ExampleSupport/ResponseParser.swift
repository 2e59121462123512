// The HTTP/1.1 response parser of the load examples.

import Readiness

/// Incremental parsing of one response at a time, in a buffer reused for the connection's life.
public struct ResponseParser {
    public enum Outcome: Equatable { case needMore, complete(status: Int, close: Bool), malformed }

    /// What was read and not parsed yet: reads append to it (at most ``room`` bytes), parsing consumes
    /// from its front. Its storage is allocated once and reused.
    public var buffer = Bytes(capacity: ResponseParser.capacity)
    /// The most bytes buffered at once: a head that does not fit is malformed.
    public static let capacity = 64 * 1024
    /// How many bytes the next read may take.
    public var room: Int { Self.capacity - buffer.count }
    private var bodyLeft: Int?       // nil while reading the head
    private var status = 0
    private var close = false

    /// An empty parser with its buffer.
    public init() {}

    /// Forgets what was buffered and any response begun (its head read, its body not all there), for
    /// a new connection: a response cut off by a close or a reset must not be continued by the next
    /// connection's bytes. Keeps the buffer's storage.
    public mutating func reset() {
        buffer.removeAll(keepingCapacity: true)
        bodyLeft = nil
        status = 0
        close = false
    }

    public static let crlfcrlf: [UInt8] = Array("\r\n\r\n".utf8)
    public static let contentLength: [UInt8] = Array("content-length:".utf8)
    public static let connection: [UInt8] = Array("connection:".utf8)
    public static let closeToken: [UInt8] = Array("close".utf8)
    public static let keepAliveToken: [UInt8] = Array("keep-alive".utf8)

    /// Consumes what is buffered; returns a complete response (leaving the bytes after it buffered).
    public mutating func next() -> Outcome {
        while bodyLeft == nil {
            guard let end = find(Self.crlfcrlf, in: 0..<buffer.count) else {
                return buffer.count == Self.capacity ? .malformed : .needMore
            }
            // An interim response (1xx but 101: 100 Continue, 103 Early Hints) has no body and precedes
            // the final one: skipped (RFC 9110 section 15.2: a client must parse and skip them).
            if let interim = interimStatus(0..<end), interim != 101 {
                consume(end + Self.crlfcrlf.count)
                continue
            }
            guard let head = parseHead(0..<end) else { return .malformed }
            (status, bodyLeft, close) = head
            consume(end + Self.crlfcrlf.count)
        }
        let take = min(bodyLeft!, buffer.count)
        consume(take)
        bodyLeft! -= take
        if bodyLeft! > 0 { return .needMore }
        bodyLeft = nil
        return .complete(status: status, close: close)
    }

    /// The status of a head whose status is 1xx, else nil.
    private func interimStatus(_ range: Range<Int>) -> Int? {
        let statusStart = "HTTP/1.1 ".utf8.count
        guard range.count >= statusStart + 3, buffer[statusStart] == UInt8(ascii: "1") else { return nil }
        var status = 0
        for index in statusStart..<(statusStart + 3) {
            let digit = Int(buffer[index]) - Int(UInt8(ascii: "0"))
            guard (0...9).contains(digit) else { return nil }
            status = status * 10 + digit
        }
        return status
    }

    /// The status code, Content-Length and whether the server will close, from the head's bytes: an
    /// HTTP/1.0 response closes unless it says keep-alive (RFC 9112 section 9.3).
    private func parseHead(_ range: Range<Int>) -> (Int, Int, Bool)? {
        let statusStart = "HTTP/1.1 ".utf8.count
        guard range.count >= statusStart + 3 else { return nil }
        var status = 0
        for index in statusStart..<(statusStart + 3) {
            let digit = Int(buffer[index]) - Int(UInt8(ascii: "0"))
            guard (0...9).contains(digit) else { return nil }
            status = status * 10 + digit
        }
        var length: Int?
        let http10 = range.count >= 8 && (0..<8).allSatisfy { buffer[$0] == Array("HTTP/1.0".utf8)[$0] }
        var close = http10
        var lineStart = range.lowerBound
        while lineStart < range.upperBound {
            let lineEnd = find(Self.crlfcrlf[0..<2], in: lineStart..<range.upperBound) ?? range.upperBound
            if hasPrefix(Self.contentLength, at: lineStart, end: lineEnd) {
                // Digits only (optional whitespace around them); a value that overflows, or anything
                // else, makes the response malformed (nil), as a missing length does.
                var value = 0
                var digits = 0
                for index in (lineStart + Self.contentLength.count)..<lineEnd {
                    let byte = buffer[index]
                    if byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") {
                        let (times, o1) = value.multipliedReportingOverflow(by: 10)
                        let (sum, o2) = times.addingReportingOverflow(Int(byte - UInt8(ascii: "0")))
                        guard !o1, !o2 else { return nil }
                        value = sum
                        digits += 1
                    } else if byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") {
                        guard digits == 0 || index + 1 == lineEnd || buffer[index + 1] == UInt8(ascii: " ") || buffer[index + 1] == UInt8(ascii: "\t") else { return nil }
                    } else {
                        return nil
                    }
                }
                guard digits > 0 else { return nil }
                length = value
            } else if hasPrefix(Self.connection, at: lineStart, end: lineEnd) {
                if find(Self.closeToken[...], in: lineStart..<lineEnd, caseInsensitive: true) != nil {
                    close = true
                } else if http10, find(Self.keepAliveToken[...], in: lineStart..<lineEnd, caseInsensitive: true) != nil {
                    close = false
                }
            }
            lineStart = lineEnd + 2
        }
        guard let length else { return nil }   // chunked or close-delimited: not supported here
        return (status, length, close)
    }

    private func hasPrefix(_ prefix: [UInt8], at start: Int, end: Int) -> Bool {
        guard end - start >= prefix.count else { return false }
        for (offset, byte) in prefix.enumerated() where lowercased(buffer[start + offset]) != byte { return false }
        return true
    }

    private func lowercased(_ byte: UInt8) -> UInt8 {
        byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte + 32 : byte
    }

    private func find(_ needle: some Collection<UInt8>, in range: Range<Int>, caseInsensitive: Bool = false) -> Int? {
        let count = needle.count
        guard range.count >= count else { return nil }
        var index = range.lowerBound
        while index + count <= range.upperBound {
            var match = true
            var offset = 0
            for byte in needle {
                let have = caseInsensitive ? lowercased(buffer[index + offset]) : buffer[index + offset]
                if have != byte { match = false; break }
                offset += 1
            }
            if match { return index }
            index += 1
        }
        return nil
    }

    /// Drops `count` bytes from the front (nothing moves; an emptied buffer is room again).
    private mutating func consume(_ count: Int) {
        buffer.removeFirst(count)
    }
}
