#if canImport(Glibc)
import Glibc
#endif

/// An owned, growable run of bytes: the buffer that sockets read into and write from without raw
/// pointers (``StreamSocket/read(into:maximum:)``, `AsyncSocket.read(into:maximum:timeout:)` and the
/// `write` forms that take `Bytes`).
///
/// - **A value with copy-on-write storage**, like `Array`: a copy shares the storage until one of them
///   changes. An operation that reads into a buffer holds it `inout` (the caller cannot touch it
///   meanwhile); the bytes live in storage the buffer owns, so nothing a caller frees is ever written.
/// - **Readable bytes and room after them.** The readable bytes are ``span``/``bytes`` (and
///   ``mutableSpan``/``mutableBytes``); a read appends after them, into uninitialised capacity (no
///   zero-filling, no copy). ``removeFirst(_:)`` consumes from the front without moving anything;
///   when a buffer is emptied its whole capacity is free again, and when room is needed at the end the
///   unconsumed bytes are moved to the front before it grows. A buffer reused for a connection's reads
///   and writes therefore allocates only while it grows: **0 allocations per read and write in steady
///   state**.
/// - **No storage until it is needed.** `Bytes()` holds no memory (``capacity`` 0). The async
///   layer's read into a buffer without room allocates only once the socket has something to read,
///   so an idle connection's read holds no memory; the synchronous `read(into:maximum:)` makes its
///   room before its system call (a read that would block leaves the room made).
/// - Its own calls never trap on a caller's number: a negative count is taken as 0, a count past the
///   end as the end, and a capacity that cannot be allocated is reported (``reserveCapacity(_:)``
///   returns false). What it inherits as a collection traps as on every collection: the subscript
///   outside `0..<count`, and `prefix`, `suffix`, `dropFirst`, `dropLast` given a negative count.
///
/// Named `Bytes` so that it does not clash with SwiftNIO's `ByteBuffer` in a file that imports both.
///
/// ```swift
/// var buffer = Bytes()                                  // no memory yet
/// while try await socket.read(into: &buffer) > 0 {      // appends; 0 at the end of the stream
///     try await socket.write(buffer)                    // every byte, no copy
///     buffer.removeAll(keepingCapacity: true)           // reused: no allocation on the next read
/// }
/// ```
public struct Bytes: Sendable {
    /// The storage (nil: none allocated).
    @usableFromInline var storage: Storage?
    /// The first readable byte's offset in the storage.
    @usableFromInline var start: Int
    /// The offset just past the last readable byte.
    @usableFromInline var end: Int

    /// The largest capacity a buffer asks for (64 GiB): a larger one is reported as an allocation
    /// that failed (``reserveCapacity(_:)`` returns false) without asking malloc, whose answer to an
    /// absurd size is not always a null pointer (sanitizers, some allocators abort).
    public static let maximumCapacity = 1 << 36

    /// Memory allocated with malloc (so that an allocation that fails is reported, not a trap), freed
    /// once. Its bytes are changed only through a `Bytes` that holds the only reference
    /// (`isKnownUniquelyReferenced`): a shared storage is copied first. A write in progress holds a
    /// reference of its own (the value it was given), as a completion-based read would, so a buffer
    /// still shared with one is copied before it is changed.
    @usableFromInline
    final class Storage: @unchecked Sendable {
        @usableFromInline let base: UnsafeMutableRawPointer
        @usableFromInline let capacity: Int

        init?(capacity: Int) {
            guard capacity > 0, capacity <= Bytes.maximumCapacity, let base = malloc(capacity) else { return nil }
            self.base = base
            self.capacity = capacity
        }

        /// Takes over `capacity` bytes at `base`, which malloc (or realloc) gave: freed with the storage.
        init(adopting base: UnsafeMutableRawPointer, capacity: Int) {
            self.base = base
            self.capacity = capacity
        }

        deinit { free(base) }
    }

    /// An empty buffer with no storage.
    @inlinable public init() {
        storage = nil
        start = 0
        end = 0
    }

    /// A buffer that takes over malloc'd memory: `capacity` bytes at `base`, of which the first `count`
    /// are readable (a read's bytes handed over without a copy). `base` is freed with the storage.
    package init(adopting base: UnsafeMutableRawPointer, capacity: Int, count: Int) {
        storage = Storage(adopting: base, capacity: capacity)
        start = 0
        end = Swift.max(0, Swift.min(count, capacity))
    }

    /// An empty buffer with room for `capacity` bytes (none for a capacity of 0 or less, or one that
    /// cannot be allocated).
    public init(capacity: Int) {
        self.init()
        _ = reserveCapacity(capacity)
    }

    /// A buffer holding a copy of `bytes`.
    public init(_ bytes: some Sequence<UInt8>) {
        self.init()
        append(contentsOf: bytes)
    }

    /// A buffer holding a copy of `span`'s bytes.
    public init(copying span: RawSpan) {
        self.init()
        append(contentsOf: span)
    }

    // MARK: Sizes

    /// How many bytes are readable.
    @inlinable public var count: Int { end - start }

    /// Whether no byte is readable.
    @inlinable public var isEmpty: Bool { end == start }

    /// How many bytes the storage holds (0: no storage). Bytes up to this many can be held without
    /// allocating (when the buffer does not share its storage).
    @inlinable public var capacity: Int { storage?.capacity ?? 0 }

    // MARK: Views

    /// The readable bytes.
    public var span: Span<UInt8> {
        @_lifetime(borrow self)
        borrowing get {
            let view = Span<UInt8>(_unsafeStart: readablePointer.assumingMemoryBound(to: UInt8.self), count: count)
            return _overrideLifetime(view, borrowing: self)
        }
    }

    /// The readable bytes, untyped.
    public var bytes: RawSpan {
        @_lifetime(borrow self)
        borrowing get {
            let view = RawSpan(_unsafeStart: readablePointer, byteCount: count)
            return _overrideLifetime(view, borrowing: self)
        }
    }

    /// The readable bytes, to change in place (the storage is made the buffer's own first).
    public var mutableSpan: MutableSpan<UInt8> {
        @_lifetime(&self)
        mutating get {
            makeUnique()
            let view = MutableSpan<UInt8>(_unsafeStart: readablePointer.assumingMemoryBound(to: UInt8.self), count: count)
            return _overrideLifetime(view, mutating: &self)
        }
    }

    /// The readable bytes, untyped, to change in place (the storage is made the buffer's own first).
    public var mutableBytes: MutableRawSpan {
        @_lifetime(&self)
        mutating get {
            makeUnique()
            let view = MutableRawSpan(_unsafeStart: readablePointer, byteCount: count)
            return _overrideLifetime(view, mutating: &self)
        }
    }

    /// The first readable byte (a valid address even with no storage: nothing is read through it then).
    @usableFromInline var readablePointer: UnsafeMutableRawPointer {
        guard let storage else { return UnsafeMutableRawPointer(bitPattern: 1)! }
        return storage.base + start
    }

    // MARK: Adding

    /// Appends one byte.
    public mutating func append(_ byte: UInt8) {
        ensureRoom(1)
        storage!.base.storeBytes(of: byte, toByteOffset: end, as: UInt8.self)
        end += 1
    }

    /// Appends a copy of `bytes` (one copy of contiguous collections: `[UInt8]`, `Bytes`, ...).
    public mutating func append(contentsOf bytes: some Sequence<UInt8>) {
        let copied: Void? = bytes.withContiguousStorageIfAvailable { buffer in
            append(UnsafeRawBufferPointer(buffer))
        }
        if copied != nil { return }
        // The count is the sequence's estimate, not bytes that exist: room for it is a hint, and a
        // count that cannot be allocated (any Int) is not a trap; each byte gets room as it comes.
        _ = makeRoom(bytes.underestimatedCount)
        for byte in bytes { append(byte) }
    }

    /// Appends a copy of `span`'s bytes.
    public mutating func append(contentsOf span: RawSpan) {
        span.withUnsafeBytes { append($0) }
    }

    /// Appends a copy of `span`'s bytes.
    public mutating func append(contentsOf span: Span<UInt8>) {
        span.withUnsafeBytes { append($0) }
    }

    /// Appends up to `maximum` bytes written by `body` into uninitialised room (what it appends to
    /// `output` is kept; nothing is zero-filled). A `maximum` of 0 or less gives `body` no room; one
    /// that cannot be allocated (past ``maximumCapacity``, or more than malloc gives) gives `body` the
    /// room the buffer has already (possibly none), never a trap: check what was appended.
    public mutating func append<E: Error>(addingCapacity maximum: Int,
                                          initializingWith body: (inout OutputRawSpan) throws(E) -> Void) throws(E) {
        var room = Swift.max(maximum, 0)
        if room > 0, !makeRoom(room) {
            // The room already there, only in storage this buffer alone holds (never shared bytes).
            room = storage != nil && isKnownUniquelyReferenced(&storage) ? Swift.min(room, capacity - end) : 0
        }
        guard let storage else {
            var output = OutputRawSpan()
            try body(&output)
            return
        }
        let tail = UnsafeMutableRawBufferPointer(start: storage.base + end, count: room)
        var output = OutputRawSpan(buffer: tail, initializedCount: 0)
        do throws(E) {
            try body(&output)
        } catch {
            end += output.finalize(for: tail)   // what `body` appended before it threw is initialised
            throw error
        }
        end += output.finalize(for: tail)
    }

    // MARK: Removing

    /// Removes the first `count` bytes without moving the rest: all of them when `count` is the
    /// ``count`` or more, none when it is 0 or less. Emptied, the buffer's whole capacity is room again.
    public mutating func removeFirst(_ count: Int) {
        guard count > 0 else { return }
        if count >= self.count {
            start = 0
            end = 0
        } else {
            start += count
        }
    }

    /// Removes every byte; with `keepingCapacity` (what a reused buffer wants) the storage stays for the
    /// next read, otherwise it is released.
    public mutating func removeAll(keepingCapacity: Bool = false) {
        start = 0
        end = 0
        if !keepingCapacity { storage = nil }
    }

    /// Makes room for `minimumCapacity` bytes in all (the readable ones included) without a further
    /// allocation. Returns false when that memory could not be allocated (the buffer is unchanged);
    /// a `minimumCapacity` of ``capacity`` or less changes nothing (storage shared with a copy is made
    /// the buffer's own at its capacity at least: reserving never shrinks).
    @discardableResult
    public mutating func reserveCapacity(_ minimumCapacity: Int) -> Bool {
        let wanted = Swift.max(minimumCapacity, count)
        if let storage, storage.capacity >= wanted, isKnownUniquelyReferenced(&self.storage) { return true }
        if wanted == 0 { return true }
        return reallocate(capacity: Swift.max(wanted, capacity))
    }

    // MARK: For the socket layer

    /// Whether `room` bytes can be had after the readable ones without allocating (the storage is the
    /// buffer's own and large enough, once the consumed front is reclaimed).
    package mutating func hasRoom(_ room: Int) -> Bool {
        guard let storage, storage.capacity - count >= room else { return false }
        return isKnownUniquelyReferenced(&self.storage)
    }

    /// Makes at least `room` bytes free after the readable ones: nothing when there are; else the
    /// readable bytes move to the front when that frees enough; else it grows (at least doubling).
    /// Returns false when the memory could not be allocated (the buffer is unchanged).
    @discardableResult
    package mutating func makeRoom(_ room: Int) -> Bool {
        let room = Swift.max(room, 0)
        let unique = storage != nil && isKnownUniquelyReferenced(&storage)
        if unique, let storage {
            if storage.capacity - end >= room { return true }
            if storage.capacity - count >= room {
                if count > 0 { memmove(storage.base, storage.base + start, count) }
                end = count
                start = 0
                return true
            }
        }
        let (needed, overflow) = count.addingReportingOverflow(room)
        if overflow { return false }
        if needed == 0 { return true }
        // Grown: at least doubled (appends stay amortised O(1)); shared: copied at its capacity.
        let preferred = unique ? (capacity > Int.max / 2 ? Int.max : capacity * 2) : capacity
        if preferred > needed, reallocate(capacity: preferred) { return true }
        return reallocate(capacity: needed)
    }

    /// The room after the readable bytes (call ``makeRoom(_:)`` first), to be filled by a system call
    /// that then reports what it wrote with ``commit(_:)``. Valid until the buffer is next changed.
    package var unsafeRoom: UnsafeMutableRawBufferPointer {
        guard let storage else { return UnsafeMutableRawBufferPointer(start: nil, count: 0) }
        return UnsafeMutableRawBufferPointer(start: storage.base + end, count: storage.capacity - end)
    }

    /// Makes `count` bytes of the room readable (what a read wrote there).
    package mutating func commit(_ count: Int) {
        end += Swift.max(0, Swift.min(count, capacity - end))
    }

    // MARK: Library authors

    /// Calls `body` with the readable bytes' memory, valid only during the call. For library authors
    /// handing the bytes to C; applications use ``span`` or ``bytes``.
    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(UnsafeRawBufferPointer(start: storage == nil ? nil : readablePointer, count: count))
    }

    // MARK: Private

    private mutating func makeUnique() {
        guard let storage, !isKnownUniquelyReferenced(&self.storage) else { return }
        if !reallocate(capacity: storage.capacity) { fatalError("Bytes: out of memory copying \(count) bytes") }
    }

    /// Room for `room` more bytes at the end, or a trap: only for sizes of bytes that exist already
    /// (the caller's own appends), never for a count taken from a caller.
    private mutating func ensureRoom(_ room: Int) {
        if !makeRoom(room) { fatalError("Bytes: out of memory for \(count) + \(room) bytes") }
    }

    private mutating func append(_ raw: UnsafeRawBufferPointer) {
        guard raw.count > 0, let source = raw.baseAddress else { return }
        ensureRoom(raw.count)
        (storage!.base + end).copyMemory(from: source, byteCount: raw.count)
        end += raw.count
    }

    /// New storage of `capacity` bytes holding the readable ones at its start.
    private mutating func reallocate(capacity: Int) -> Bool {
        guard let new = Storage(capacity: capacity) else { return false }
        if let storage, count > 0 { new.base.copyMemory(from: storage.base + start, byteCount: count) }
        end = count
        start = 0
        storage = new
        return true
    }
}

extension Bytes: RandomAccessCollection {
    /// Offsets from the first readable byte.
    public typealias Index = Int
    /// A byte.
    public typealias Element = UInt8

    /// 0: the first readable byte.
    @inlinable public var startIndex: Int { 0 }
    /// ``count``.
    @inlinable public var endIndex: Int { count }

    /// The readable byte at `position` (0 is the first readable byte).
    @inlinable public subscript(position: Int) -> UInt8 {
        precondition(position >= 0 && position < count, "Bytes: index \(position) out of 0..<\(count)")
        return storage!.base.load(fromByteOffset: start + position, as: UInt8.self)
    }

    /// Calls `body` with the readable bytes (always contiguous), valid only during the call.
    public func withContiguousStorageIfAvailable<R>(_ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R? {
        try body(UnsafeBufferPointer(start: storage == nil ? nil : readablePointer.assumingMemoryBound(to: UInt8.self), count: count))
    }
}

extension Bytes: Equatable, Hashable {
    /// Equal when the readable bytes are.
    public static func == (lhs: Bytes, rhs: Bytes) -> Bool {
        guard lhs.count == rhs.count else { return false }
        if lhs.count == 0 || (lhs.storage === rhs.storage && lhs.start == rhs.start) { return true }
        return memcmp(lhs.readablePointer, rhs.readablePointer, lhs.count) == 0
    }

    /// Hashes the readable bytes.
    public func hash(into hasher: inout Hasher) {
        withUnsafeBytes { hasher.combine(bytes: $0) }
    }
}

extension Bytes: ExpressibleByArrayLiteral {
    /// A buffer holding the literal's bytes.
    public init(arrayLiteral elements: UInt8...) {
        self.init(elements)
    }
}

extension Bytes: CustomStringConvertible {
    /// The count, and the first bytes in hexadecimal.
    public var description: String {
        let shown = prefix(16).map { byte in
            let hex = String(byte, radix: 16)
            return hex.count == 1 ? "0" + hex : hex
        }.joined(separator: " ")
        return "Bytes(\(count): \(shown)\(count > 16 ? " ..." : ""))"
    }
}

extension StreamSocket {
    /// The `maximum` of a read into ``Bytes`` when none is given (64 KiB).
    public static let defaultReadSize = 64 * 1024

    /// The most room one read into ``Bytes`` asks for (1 MiB): a larger `maximum` reads into the room
    /// the buffer has, or asks for this much more (growing, the buffer at least doubles its capacity,
    /// as it does for any growth).
    public static let maximumReadReservation = 1 << 20

    /// Appends up to `maximum` bytes read now to `buffer`: ``IOResult/transferred(_:)`` with the count,
    /// ``IOResult/wouldBlock``, or ``IOResult/endOfStream``.
    ///
    /// Room: when `buffer` has fewer than `min(maximum,` ``maximumReadReservation``) bytes free after
    /// its readable ones, its consumed front is reclaimed, and it grows only when that is not enough (at
    /// least doubling). Read into again and again with the same `maximum`, a buffer emptied between
    /// reads allocates only on its first read, and one that keeps fewer than `maximum` unconsumed bytes
    /// grows once more at most (to twice that room). A
    /// `maximum` below 1 is refused (``SocketError/Kind/invalidArgument``), memory that cannot be
    /// allocated is ``SocketError/Kind/resourceExhausted``; `buffer` is unchanged then. Room is made
    /// before the system call, so a read that would block may leave it made (call it once readable).
    public func read(into buffer: inout Bytes, maximum: Int = defaultReadSize) throws(SocketError) -> IOResult {
        guard maximum > 0 else { throw SocketError(.invalidArgument, operation: "read(into:maximum: \(maximum))") }
        let wanted = Swift.min(maximum, Self.maximumReadReservation)
        guard buffer.makeRoom(wanted) else {
            throw SocketError(.resourceExhausted, operation: "read: allocating room for \(wanted) bytes")
        }
        let room = buffer.unsafeRoom
        let result = try readImpl(UnsafeMutableRawBufferPointer(rebasing: room[..<Swift.min(maximum, room.count)]))
        if case .transferred(let n) = result { buffer.commit(n) }
        return result
    }

    /// Writes as much of `bytes` (its readable bytes `offset..<end`; end: all of them) as the socket
    /// takes now; a range outside `0...bytes.count` is refused (``SocketError/Kind/invalidArgument``).
    public func write(_ bytes: Bytes, from offset: Int = 0, to end: Int? = nil) throws(SocketError) -> IOResult {
        let end = end ?? bytes.count
        guard offset >= 0, offset <= end, end <= bytes.count else {
            throw SocketError(.invalidArgument, operation: "write(from: \(offset), to: \(end)) of \(bytes.count) bytes")
        }
        if offset == end { return try writeImpl(UnsafeRawBufferPointer(start: nil, count: 0)) }
        return try bytes.withUnsafeBytes { (raw) throws(SocketError) -> IOResult in
            try writeImpl(UnsafeRawBufferPointer(rebasing: raw[offset..<end]))
        }
    }
}
