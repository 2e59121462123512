// The layer is written over the poller contract; a user of ReadinessNet gets the contract too.
@_spi(Backend) @_exported import ReadinessCore
