# punktfunk — the two commands of the README are `make demo` and `make test`.
CARGO ?= cargo
DEMO_ARGS ?=

.PHONY: all deps build demo loss-harness test lint bench fuzz clean

all: build

deps:
	./scripts/install-deps.sh

build: deps
	$(CARGO) build --workspace --release

# The main job: a private headless sway, the host giving the client its own output with the
# desktop probe app on it, and the client over punktfunk/1 (x264 video, FEC, AES-GCM): the
# client's report of every frame (app render -> decoded latency), the stream file, a decoded
# frame and the app's input log in demo-out/.
# Variables for scripts/demo.sh: DESKTOP (sway, existing, none), MODE, SECONDS_TO_RUN, CODEC,
# BITRATE, IMPAIR (e.g. loss=5%), FEC, OUT.
demo: deps
	$(CARGO) build --release -p punktfunk-host -p punktfunk-client -p punktfunk-impair \
		-p punktfunk-desktop-probe -p punktfunk-testenv
	./scripts/demo.sh

# The loss harness: loss rate x burstiness x FEC over the real data plane (virtual time).
loss-harness: deps
	$(CARGO) run --release -p punktfunk-loss-harness -- $(DEMO_ARGS)

# Every test: formatting, lints, unit/property/integration tests and doc tests.
test: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Benchmarks print each figure beside a baseline measured in the same run.
bench: deps
	$(CARGO) bench -p punktfunk-core
	$(CARGO) bench -p punktfunk-net
	$(CARGO) bench -p punktfunk-media
	$(CARGO) bench -p punktfunk-host --bench gamestream_send
	$(CARGO) build --release -p punktfunk-desktop-probe
	$(CARGO) bench -p punktfunk-desktop --bench screencopy

# Short fuzz runs (needs a nightly toolchain and cargo-fuzz); FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 30
fuzz:
	cd fuzz && for t in $$($(CARGO) +nightly fuzz list); do \
		$(CARGO) +nightly fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; done

clean:
	$(CARGO) clean
