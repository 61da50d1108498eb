# kube-baseline — `make run` (operator on a local control plane) and `make test` (everything CI runs).
SHELL := /bin/bash
CLUSTER := e2e/controlplane/cluster.sh
CRD := crds/securitybaselines.kubebaseline.io.yaml
E2E_TESTS := $(patsubst e2e/tests/%.rs,--test e2e_%,$(wildcard e2e/tests/*.rs))

.PHONY: all build test fmt-check clippy unit crds check-crds e2e cluster-up cluster-down cluster-status run bench bench-kyverno clean

all: build

build:
	cargo build --bins

## The whole check, in order: format, lints, unit tests, CRD freshness, end-to-end tests.
test: fmt-check clippy unit check-crds e2e

fmt-check:
	cargo fmt --all -- --check

clippy:
	cargo clippy --all-targets -- -D warnings

unit:
	cargo test --lib --bins

## Regenerate crds/ from the Rust types.
crds:
	cargo run -q -- crd > $(CRD).tmp && mv $(CRD).tmp $(CRD)

## Fail when crds/ differs from what the Rust types generate.
check-crds:
	@cargo run -q -- crd | diff -u $(CRD) - || { echo "crds/ is stale: run 'make crds' and commit" >&2; exit 1; }

## End-to-end tests on the local control plane (started and stopped here unless already running).
e2e:
	e2e/scripts/with-cluster.sh cargo test $(E2E_TESTS)

cluster-up:
	$(CLUSTER) up

cluster-down:
	$(CLUSTER) down

cluster-status:
	$(CLUSTER) status

## The operator in the foreground on a local control plane (or $$KUBECONFIG), with a sample baseline.
run:
	e2e/scripts/run.sh

## Scale and latency on the local control plane (release build); see BENCHMARKS.md.
bench:
	e2e/scripts/with-cluster.sh cargo test --release --test e2e_bench -- --ignored --nocapture --test-threads 1

## The operator and Kyverno v1.19.1 side by side on a fresh control plane of their own (not in `make test`).
bench-kyverno:
	e2e/kyverno/bench.sh

clean:
	cargo clean
