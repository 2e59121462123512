import Readiness

/// Every backend usable here: the tests are parameterised over this.
let backends: [Backend] = Backend.available
