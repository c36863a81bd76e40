# punktfunk — the two commands of the README are `make demo` and `make test`.
CARGO ?= cargo
DEMO_ARGS ?=

.PHONY: all deps build demo test lint bench fuzz clean

all: build

deps:
	./scripts/install-deps.sh

build: deps
	$(CARGO) build --workspace --release

# The main job. Until the streaming host lands this runs the loss harness: real frames through
# the real packetizer, FEC, AES-GCM and reassembler over a seeded impaired network.
demo: deps
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

# Short fuzz runs (needs a nightly toolchain and cargo-fuzz); FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 30
fuzz:
	cd fuzz && for t in $$($(CARGO) +nightly fuzz list); do \
		$(CARGO) +nightly fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; done

clean:
	$(CARGO) clean
