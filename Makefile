# Readiness: `make run` (the main job: the conformance suite on every backend) and `make test`.
# Both install what is missing first (libevent-dev, pkg-config, and nginx-light for the HTTP example's test) through apt.

SWIFT ?= swift
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
TEST_FLAGS := --no-parallel --disable-xctest

.PHONY: run test check sanitize deps build bench bench-smoke bench-net clean

deps:
	@if pkg-config --exists libevent 2>/dev/null && { command -v nginx || [ -x /usr/sbin/nginx ]; } >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  echo "Installing libevent-dev, pkg-config and nginx-light (the HTTP example's peer) through apt..."; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq libevent-dev pkg-config nginx-light \
	    || { echo "error: could not install libevent-dev and nginx-light (need root or sudo). Install them by hand: apt-get install libevent-dev pkg-config nginx-light" >&2; exit 1; }; \
	else \
	  echo "error: libevent-dev is missing and apt-get is not available; install libevent 2.1 development files and pkg-config" >&2; exit 1; \
	fi
	@command -v $(SWIFT) >/dev/null || { echo "error: swift is not on PATH (Swift 6.1 or newer is needed)" >&2; exit 1; }

build: deps
	$(SWIFT) build

# The main job: the conformance matrix, every scenario on every available backend, plus differential scripts.
run: deps
	$(SWIFT) build --product readiness
	$$($(SWIFT) build --show-bin-path)/readiness backends
	$$($(SWIFT) build --show-bin-path)/readiness conformance --differential 200

# The whole test suite, the benchmark smoke run (every contender runs; no timing is asserted),
# then the sanitizers over the same suite.
test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build $(TEST_FLAGS)
	$(MAKE) --no-print-directory bench-smoke
	$(MAKE) --no-print-directory sanitize

sanitize: deps
	$(SWIFT) build --build-tests --sanitize=address --scratch-path .build-asan
	$(SWIFT) test --skip-build --sanitize=address --scratch-path .build-asan $(TEST_FLAGS)
	$(SWIFT) build --build-tests --sanitize=thread --scratch-path .build-tsan
	TSAN_OPTIONS=halt_on_error=1 $(SWIFT) test --skip-build --sanitize=thread --scratch-path .build-tsan $(TEST_FLAGS)

check: test

# Benchmarks: a separate package (Tests/Benchmarks) so that SwiftNIO and the allocation counter never
# reach what a library user resolves. `make bench` rewrites Docs/Benchmarks.md and the scaling plot.
bench: deps
	$(SWIFT) build -c release --package-path Tests/Benchmarks --scratch-path Tests/Benchmarks/.build
	Tests/Benchmarks/.build/release/readiness-bench

bench-smoke: deps
	$(SWIFT) build --package-path Tests/Benchmarks --scratch-path Tests/Benchmarks/.build
	Tests/Benchmarks/.build/debug/readiness-bench --tiny

# The socket layer's figures (Docs/Sockets.md): the release examples against nginx beside `ab -k`, the
# echo example beside the same server on SwiftNIO, accept while out of descriptors, allocations.
bench-net: deps
	@command -v ab >/dev/null 2>&1 || { echo "Installing apache2-utils (ab) through apt..."; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq apache2-utils || echo "warning: no ab; its row is skipped"; }
	$(SWIFT) build -c release --product readiness-echo
	$(SWIFT) build -c release --product readiness-http-load
	$(SWIFT) build -c release --package-path Tests/Benchmarks --scratch-path Tests/Benchmarks/.build --product readiness-net-bench
	Tests/Benchmarks/.build/release/readiness-net-bench --examples $$($(SWIFT) build -c release --show-bin-path)

clean:
	rm -rf .build .build-asan .build-tsan Tests/Benchmarks/.build
