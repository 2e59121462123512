# Readiness: `make run` (the main job: the conformance suite on every backend) and `make test`.
# Both install what is missing first (libevent-dev, pkg-config, and nginx-light, curl and wrk for the HTTP examples' tests, python3 and
# iproute2 for the FlyingFox stage) through apt.

SWIFT ?= swift
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
TEST_FLAGS := --no-parallel --disable-xctest

.PHONY: run tool test check sanitize deps build bench bench-smoke bench-net bench-flyingfox bench-http bench-udp bench-idle docs clean flyingfox

deps:
	@if pkg-config --exists libevent 2>/dev/null && { command -v nginx || [ -x /usr/sbin/nginx ]; } >/dev/null 2>&1 \
	    && command -v curl >/dev/null 2>&1 && command -v wrk >/dev/null 2>&1 \
	    && command -v python3 >/dev/null 2>&1 && { command -v ip || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ]; } >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  echo "Installing libevent-dev, pkg-config, nginx-light, curl and wrk (the HTTP examples' peers), python3 and iproute2 (the FlyingFox stage) with apt (log: .build/apt.log)..."; \
	  mkdir -p .build; \
	  { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq libevent-dev pkg-config nginx-light curl wrk python3 iproute2; } > .build/apt.log 2>&1 \
	    || { tail -20 .build/apt.log >&2; echo "error: could not install libevent-dev and nginx-light (need root or sudo; log: .build/apt.log). Install them by hand: apt-get install libevent-dev pkg-config nginx-light curl wrk python3 iproute2" >&2; exit 1; }; \
	else \
	  echo "error: a dependency is missing (libevent-dev, nginx, curl, wrk, python3 or iproute2) and apt-get is not available; install them by hand" >&2; exit 1; \
	fi
	@command -v $(SWIFT) >/dev/null || { echo "error: swift is not on PATH (Swift 6.2 or newer is needed: the async layer uses nonisolated(nonsending))" >&2; exit 1; }

build: deps
	$(SWIFT) build

# The command-line tool (Sources/readiness): an executable of this package, with no package dependency
# (it parses its own command line), so that a dependent resolves nothing but Readiness.
TOOL := .build/debug/readiness
tool: deps
	$(SWIFT) build --product readiness

# The main job: the conformance matrices (poller and async), every scenario on every available backend, plus
# 200 poller and 500 async differential scripts (about 65 s on the 2-core machine: see Docs/Conformance.md).
run: tool
	$(TOOL) backends
	$(TOOL) conformance --differential 200 --differential-async 500

# Every stage, quietly, then a summary table (.ci/test; V=1 prints everything): the test suite, the
# tool's tests, the downstream package with the trait on and off, FlyingFox's and FlyingSocks' suites
# on Readiness (make flyingfox), the benchmark smoke run (every contender runs; no timing is asserted),
# make docs, the suite under ASan, and under TSan built without the Libevent trait (libevent hidden).
# Logs: .build/test-logs/. The last line: "N passed, N failed, N skipped".
test: deps
	@SWIFT="$(SWIFT)" V="$(V)" .ci/test

# The suite under ASan and TSan on every backend at full load, with the toolchain's lld (see .ci/test
# for why); `make test`'s sanitizer stages run a tenth of the load on a share of the backends, TSan
# without the Libevent trait, in .build-tsan-nolibevent.
LLD := $(shell [ -x "$$(dirname "$$(readlink -f "$$(command -v $(SWIFT))")")/ld.lld" ] && echo -Xswiftc -use-ld=lld)
sanitize: deps
	$(SWIFT) build --build-tests --sanitize=address --scratch-path .build-asan $(LLD)
	$(SWIFT) test --skip-build --sanitize=address --scratch-path .build-asan $(LLD) $(TEST_FLAGS)
	$(SWIFT) build --build-tests --sanitize=thread --scratch-path .build-tsan $(LLD)
	TSAN_OPTIONS=halt_on_error=1 $(SWIFT) test --skip-build --sanitize=thread --scratch-path .build-tsan $(LLD) $(TEST_FLAGS)

check: test

# FlyingFox's and FlyingSocks' own test suites (FlyingFox 0.27.1, unmodified tests) with their socket pool
# swapped for Readiness's (Integrations/FlyingSocks), once per backend, in a network namespace with
# loopback only; first the adapter's own tests. One line per backend; the known failures and their
# reasons are listed in .ci/flyingfox. Docs/Integrations.md has the results. Needs root or user
# namespaces (unshare -n), and resolves FlyingFox (the only stage that does).
flyingfox: deps
	@SWIFT="$(SWIFT)" .ci/flyingfox

# Benchmarks: a separate package (Tests/Benchmarks) so that SwiftNIO and the allocation counter never
# reach what a library user resolves. `make bench` rewrites Docs/Benchmarks.md and the scaling plot.
bench: deps
	$(SWIFT) build -c release --package-path Tests/Benchmarks --scratch-path Tests/Benchmarks/.build
	Tests/Benchmarks/.build/release/readiness-bench

# Writes its report to Tests/Benchmarks/.build/tiny-report; its allocation figures are labelled as
# those of a debug build.
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

# FlyingFox's HTTPServer on its own epoll pool beside ReadinessSocketPool on every backend, under wrk
# (Docs/Integrations.md, "Measured"); prints a Markdown table.
bench-flyingfox: deps
	@command -v wrk >/dev/null 2>&1 || { echo "Installing wrk through apt..."; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk || { echo "error: no wrk" >&2; exit 1; }; }
	$(SWIFT) build -c release --package-path Tests/Benchmarks --scratch-path Tests/Benchmarks/.build --product readiness-flyingfox-bench
	Tests/Benchmarks/.build/release/readiness-flyingfox-bench

# Examples/readiness-http-server beside nginx (1 worker) and SwiftNIO's NIOHTTP1 server (1 thread) under
# wrk -c64 and -c256: requests/s, server CPU per request, p99 latency, peak RSS; interleaved rounds, ratios
# per round. Both Swift servers are linked with the Swift runtime static (--static-swift-stdlib, as Swift
# servers are deployed: the runtime's thread-local reads are then direct instead of __tls_get_addr calls;
# measured 5-7% more requests/s for the example), each in a build directory of its own.
bench-http: deps
	$(SWIFT) build -c release --static-swift-stdlib --scratch-path .build/static --product readiness-http-server
	$(SWIFT) build -c release --package-path Tests/Benchmarks --scratch-path Tests/Benchmarks/.build --product readiness-http-bench
	$(SWIFT) build -c release --static-swift-stdlib --package-path Tests/Benchmarks --scratch-path Tests/Benchmarks/.build-static --product nio-http-server
	Tests/Benchmarks/.build/release/readiness-http-bench --server .build/static/release/readiness-http-server \
	  --nio Tests/Benchmarks/.build-static/release/nio-http-server $(if $(ROUNDS),--rounds $(ROUNDS)) $(if $(SECONDS_PER_RUN),--seconds $(SECONDS_PER_RUN))

# UDP echo (issue 23; Docs/Sockets.md, "Datagrams", "Measured"): AsyncDatagramSocket one datagram at a
# time and batched beside SwiftNIO's DatagramBootstrap (vectored reads) and C recvmmsg/sendmmsg and
# recvfrom/sendto loops, one C load client for all; datagrams/s, server CPU and system calls per datagram
# (strace -c, and perf stat when it works). ROUNDS, SECONDS_PER_RUN; QUICK=1 for a sanity run.
bench-udp: deps
	@command -v strace >/dev/null 2>&1 || { echo "Installing strace through apt..."; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq strace || echo "warning: no strace; the system-call breakdown is skipped"; }
	$(SWIFT) build -c release --package-path Tests/Benchmarks --scratch-path Tests/Benchmarks/.build --product readiness-udp-bench
	Tests/Benchmarks/.build/release/readiness-udp-bench $(if $(QUICK),--quick) $(if $(ROUNDS),--rounds $(ROUNDS)) $(if $(SECONDS_PER_RUN),--seconds $(SECONDS_PER_RUN))

# Memory per idle connection (Docs/Async.md, "Memory per idle connection"): the release async echo example
# (epoll, io_uring, poll) beside SwiftNIO (handler-based, NIOAsyncChannel) and FlyingSocks, 4,000
# connections each with one 4-byte round trip, the server's RSS before and after; 3 rounds, rotated;
# then where Readiness's bytes go (mallinfo2, glibc's mtrace). Prints Markdown.
bench-idle: deps
	$(SWIFT) build -c release --product readiness-async-echo
	$(SWIFT) build -c release --package-path Tests/Benchmarks --scratch-path Tests/Benchmarks/.build --product readiness-idle-bench
	Tests/Benchmarks/.build/release/readiness-idle-bench --echo $$($(SWIFT) build -c release --show-bin-path)/readiness-async-echo \
	  $(if $(ROUNDS),--rounds $(ROUNDS)) $(if $(CONNECTIONS),--connections $(CONNECTIONS))

# DocC: one combined archive for the modules the Readiness product exports, warnings as errors. The
# catalog (Sources/Readiness/Readiness.docc) holds the landing page and symbolic links to Docs/*.md, so
# each article has one copy: its Docs/ page. A Docs/ page without a link gets one here. .ci/doc-check
# first fails on any public declaration without a doc comment. swift-docc-plugin is declared only
# with READINESS_DOCS=1 (Package.swift), so dependents never resolve it.
# (Every backend folder's Readiness* target: a new backend is documented without editing this line.)
DOC_TARGETS := Readiness ReadinessCore ReadinessNet ReadinessAsync $(sort $(notdir $(wildcard Backends/*/Readiness*)))
DOCS_ARCHIVE := .build-docs/plugins/Swift-DocC/outputs/Readiness.doccarchive
docs: deps
	@for page in Docs/*.md; do \
	  link=Sources/Readiness/Readiness.docc/$$(basename $$page); \
	  if [ ! -e $$link ]; then ln -s ../../../$$page $$link; echo "linked $$page into the DocC catalog (commit $$link)"; fi; \
	done
	@.ci/doc-check
	@mkdir -p .build-docs; READINESS_DOCS=1 $(SWIFT) package --scratch-path .build-docs generate-documentation \
	  $(addprefix --target ,$(DOC_TARGETS)) --enable-experimental-combined-documentation --warnings-as-errors \
	  > .build-docs/make-docs.log 2>&1 || { grep -vE '^\[[0-9]+/[0-9]+\]' .build-docs/make-docs.log; echo "make docs: failed (log: .build-docs/make-docs.log)"; exit 1; }
	@if grep -E '^(warning|error):' .build-docs/make-docs.log; then echo "make docs: diagnostics above"; exit 1; fi
	@echo "make docs: no warnings; $(DOCS_ARCHIVE)"

clean:
	rm -rf .build .build-asan .build-tsan .build-tsan-nolibevent .build-docs Tests/Benchmarks/.build Integrations/FlyingSocks/.build
