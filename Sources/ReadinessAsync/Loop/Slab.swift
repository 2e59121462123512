import ReadinessCore
import ReadinessNet

/// A resource's place in the loop's ``Slab``: the slot's index and the generation the slot had when
/// the resource took it. A key outlives its resource harmlessly: once the slot is freed (and perhaps
/// reused) its generation differs, and a lookup with the old key finds nothing.
///
/// Packed into a ``Token`` (and into an `AsyncSocket`'s or `AsyncListener`'s number) as
/// `purpose << purposeShift | generation << generationShift | index`; bit 63 is never set, so no
/// key is ever ``Token/waker``.
struct ResourceKey: Hashable {
    let index: UInt32
    let generation: UInt32

    static let indexBits: UInt64 = 24
    static let indexMask: UInt64 = (1 << indexBits) - 1
    static let generationShift: UInt64 = indexBits
    static let generationMask: UInt64 = 0xFFFF_FFFF
    static let purposeShift: UInt64 = generationShift + 32
    /// The most slots a slab holds (the index's bits).
    static let maximumSlots = Int(indexMask) + 1

    init(index: UInt32, generation: UInt32) {
        self.index = index
        self.generation = generation
    }

    /// The key a token or number carries (its purpose bits ignored).
    init(_ raw: UInt64) {
        index = UInt32(raw & Self.indexMask)
        generation = UInt32((raw >> Self.generationShift) & Self.generationMask)
    }

    /// The key as one number (the public handles' `id`).
    var raw: UInt64 { UInt64(generation) << Self.generationShift | UInt64(index) }

    /// The token of the resource's poller registration (its readiness events).
    var token: Token { Token(rawValue: raw) }

    /// A timer token: this key and what the timer is for.
    func token(_ purpose: TimerPurpose) -> Token {
        Token(rawValue: UInt64(purpose.rawValue) << Self.purposeShift | raw)
    }
}

/// What a timer of the loop is for; carried in its token beside the resource's key. The loop handles
/// the wait deadlines itself; any other purpose is the resource's (a resource kind declares its own
/// purposes in its own file, as a static constant).
struct TimerPurpose: RawRepresentable, Hashable {
    let rawValue: UInt8
    init(rawValue: UInt8) { self.rawValue = rawValue }

    /// The purpose bits of a token (7: bit 63 stays clear).
    static let bits: UInt64 = 7
    /// A token with no purpose: a registration's, or a timer the resource scheduled with its own token.
    static let none = TimerPurpose(rawValue: 0)
    /// A read wait's deadline.
    static let readDeadline = TimerPurpose(rawValue: 1)
    /// A write wait's deadline.
    static let writeDeadline = TimerPurpose(rawValue: 2)
    /// The deadline of a read (or accept) waiting for its turn (LoopClaims.swift).
    static let readTurnDeadline = TimerPurpose(rawValue: 4)
    /// The deadline of a write waiting for its turn.
    static let writeTurnDeadline = TimerPurpose(rawValue: 5)

    /// The purpose a token carries.
    init(of token: Token) {
        rawValue = UInt8((token.rawValue >> ResourceKey.purposeShift) & ((1 << Self.bits) - 1))
    }
}

/// The loop's resources by index (mio's and tokio's slab): an event's or timer's token names a slot,
/// found by array index (no hashing), and its generation tells a stale token (of a resource closed
/// since, its slot perhaps reused) from a live one. Freed slots are reused, the most recently freed
/// first; nothing is allocated once the array has grown to the most resources held at once. A slot
/// whose generation would wrap is retired instead (``lastGeneration``).
///
/// A resource may take extra slots, aliases of itself, for tokens of its own (a Happy Eyeballs
/// connect's attempts and timers): they dispatch to it like its own key, are not counted in
/// ``count``, and are freed with it.
struct Slab {
    private struct Slot {
        var generation: UInt32 = 0
        var resource: (any LoopResource)?
        var isAlias = false
        var nextFree: Int32 = -1
    }

    private var slots: [Slot] = []
    private var freeHead: Int32 = -1
    /// Resources held (aliases excluded).
    private(set) var count = 0
    /// The most slots it holds, aliases included: ``ResourceKey/maximumSlots`` (what a key can number);
    /// a test lowers it to reach the limit.
    let maximumSlots: Int
    /// The last generation a slot is given: freed at it, the slot is retired (never reused), since the
    /// next would wrap to 0 and a key kept from the slot's first resource, an `AsyncSocket` closed long
    /// ago, would name the new one (its reads, writes and close would reach another connection). At
    /// `UInt32.max` a slot is retired after 2^32 resources, one slot's worth of memory lost each time;
    /// a test lowers it to reach the wrap.
    let lastGeneration: UInt32

    init(capacity: Int, maximumSlots: Int = ResourceKey.maximumSlots, lastGeneration: UInt32 = .max) {
        self.maximumSlots = Swift.min(Swift.max(1, maximumSlots), ResourceKey.maximumSlots)
        self.lastGeneration = lastGeneration
        slots.reserveCapacity(Swift.min(capacity, self.maximumSlots))
    }

    /// Whether every slot is taken: the next insert fails with ``LoopError/resourceExhausted``.
    var isFull: Bool { freeHead < 0 && slots.count >= maximumSlots }

    /// Takes a slot for the resource `make` builds with its key. Fails with
    /// ``LoopError/resourceExhausted`` when every slot is taken (`make` is not called then).
    @discardableResult
    mutating func insert<R: LoopResource>(_ make: (ResourceKey) -> R) throws(LoopError) -> R {
        let key = try takeSlot()
        let resource = make(key)
        slots[Int(key.index)].resource = resource
        slots[Int(key.index)].isAlias = false
        count += 1
        return resource
    }

    /// Takes a slot that dispatches to `resource` (which frees it with ``remove(alias:)``); fails
    /// like ``insert(_:)``.
    mutating func insertAlias(of resource: any LoopResource) throws(LoopError) -> ResourceKey {
        let key = try takeSlot()
        slots[Int(key.index)].resource = resource
        slots[Int(key.index)].isAlias = true
        return key
    }

    private mutating func takeSlot() throws(LoopError) -> ResourceKey {
        if freeHead >= 0 {
            let index = Int(freeHead)
            freeHead = slots[index].nextFree
            slots[index].nextFree = -1
            return ResourceKey(index: UInt32(index), generation: slots[index].generation)
        }
        guard slots.count < maximumSlots else { throw .resourceExhausted }
        slots.append(Slot())
        return ResourceKey(index: UInt32(slots.count - 1), generation: 0)
    }

    /// The live resource (or alias) under `key`; nil for a stale or unknown key.
    subscript(key: ResourceKey) -> (any LoopResource)? {
        let index = Int(key.index)
        guard index < slots.count, slots[index].generation == key.generation else { return nil }
        return slots[index].resource
    }

    /// The resource a token names (purpose bits ignored), nil when stale.
    subscript(token: Token) -> (any LoopResource)? { self[ResourceKey(token.rawValue)] }

    /// Whether `resource` still holds its slot.
    func contains(_ resource: any LoopResource) -> Bool {
        self[resource.key] === resource
    }

    /// Frees the resource's slot; its key (and every token made from it) is stale from now on.
    mutating func remove(_ key: ResourceKey) {
        guard let resource = self[key], !slots[Int(key.index)].isAlias, resource.key == key else { return }
        free(Int(key.index))
        count -= 1
    }

    /// Frees an alias slot.
    mutating func remove(alias key: ResourceKey) {
        guard self[key] != nil, slots[Int(key.index)].isAlias else { return }
        free(Int(key.index))
    }

    private mutating func free(_ index: Int) {
        slots[index].resource = nil
        slots[index].isAlias = false
        guard slots[index].generation < lastGeneration else { return }   // retired: every key of it stays stale
        slots[index].generation += 1
        slots[index].nextFree = freeHead
        freeHead = Int32(index)
    }

    /// Every resource held (aliases excluded), for shutdown.
    var resources: [any LoopResource] {
        slots.compactMap { $0.isAlias ? nil : $0.resource }
    }
}
