import ReadinessNet

/// The unwritten part of a vectored write, without copying the buffer list. Random access, so that
/// `count` (asked before each sendmsg) is O(1): as a plain `Collection` it walked the rest of the list,
/// and a write of N buffers took time in N² (Go's `Buffers.WriteTo` is linear).
struct RemainingBuffers: RandomAccessCollection {
    let buffers: [UnsafeRawBufferPointer]
    var first = 0
    var offset = 0
    /// Where the view ends: `buffers.count`, or less in a ``limited(to:)`` copy.
    private var end: Int
    /// In a ``limited(to:)`` copy, how many bytes of the view's last buffer are in it.
    private var lastLength = Int.max

    init(buffers: [UnsafeRawBufferPointer]) {
        self.buffers = buffers
        end = buffers.count
        skipEmpty()
    }

    var startIndex: Int { first }
    var endIndex: Int { end }
    func index(after i: Int) -> Int { i + 1 }
    func index(before i: Int) -> Int { i - 1 }
    subscript(position: Int) -> UnsafeRawBufferPointer {
        let buffer = position == first ? UnsafeRawBufferPointer(rebasing: buffers[position][offset...]) : buffers[position]
        return position == end - 1 && lastLength < buffer.count ? UnsafeRawBufferPointer(rebasing: buffer[..<lastLength]) : buffer
    }

    /// The first `limit` bytes of what remains (the last buffer cut), and at most
    /// `StreamSocket.maximumVectoredBuffers` non-empty buffers, for one send: a walk over the buffers
    /// that send takes and no further, so a whole write stays linear in its buffers. Not to be advanced.
    func limited(to limit: Int) -> RemainingBuffers {
        var view = self
        var total = 0
        var index = first
        var taken = 0
        while index < end {
            let length = self[index].count
            if total + length >= limit {
                view.end = index + 1
                view.lastLength = limit - total
                return view
            }
            total += length
            index += 1
            if length > 0 {
                taken += 1
                if taken == StreamSocket.maximumVectoredBuffers {
                    view.end = index
                    return view
                }
            }
        }
        return view
    }

    mutating func advance(by count: Int) {
        var left = count
        while left > 0, first < buffers.count {
            let available = buffers[first].count - offset
            if left < available {
                offset += left
                return
            }
            left -= available
            first += 1
            offset = 0
        }
        skipEmpty()
    }

    private mutating func skipEmpty() {
        while first < buffers.count, buffers[first].count - offset == 0 {
            first += 1
            offset = 0
        }
    }
}
