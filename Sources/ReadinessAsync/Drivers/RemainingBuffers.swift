import ReadinessNet

/// The unwritten part of a vectored write, without copying the buffer list. Random access, so that
/// `count` (asked before each sendmsg) is O(1): as a plain `Collection` it walked the rest of the list,
/// and a write of N buffers took time in N² (Go's `Buffers.WriteTo` is linear).
struct RemainingBuffers: RandomAccessCollection {
    let buffers: [UnsafeRawBufferPointer]
    var first = 0
    var offset = 0

    init(buffers: [UnsafeRawBufferPointer]) {
        self.buffers = buffers
        skipEmpty()
    }

    var startIndex: Int { first }
    var endIndex: Int { buffers.count }
    func index(after i: Int) -> Int { i + 1 }
    func index(before i: Int) -> Int { i - 1 }
    subscript(position: Int) -> UnsafeRawBufferPointer {
        position == first ? UnsafeRawBufferPointer(rebasing: buffers[position][offset...]) : buffers[position]
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
