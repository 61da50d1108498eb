# kube-baseline — `make run` (operator on a local control plane) and `make test` (everything CI runs).
SHELL := /bin/bash
CLUSTER := e2e/controlplane/cluster.sh
CRD := crds/securitybaselines.kubebaseline.io.yaml
API_DOC := docs/api.md
E2E_TESTS := $(patsubst e2e/tests/%.rs,--test e2e_%,$(wildcard e2e/tests/*.rs))

.PHONY: all build test fmt-check clippy unit crds check-crds docs check-docs check-links e2e cluster-up cluster-down cluster-status run bench bench-writes bench-kyverno clean
.PHONY: tools image chart-sync check-chart check-monitoring dist

all: build

build:
	cargo build --bins

## The whole check, in order: format, lints, unit tests, CRD and API-reference freshness, the
## documents' links, chart and monitoring checks, end-to-end tests (they include the image, chart
## and monitoring tests).
test: fmt-check clippy unit check-crds check-docs check-links check-chart check-monitoring e2e

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

## Regenerate the field tables of docs/api.md from the CRD (the text around them is kept).
docs:
	cargo run -q -- api-docs $(CRD) < $(API_DOC) > $(API_DOC).tmp && mv $(API_DOC).tmp $(API_DOC)

## Fail when docs/api.md's field tables differ from what the CRD generates.
check-docs:
	@cargo run -q -- api-docs $(CRD) < $(API_DOC) | diff -u $(API_DOC) - || { echo "docs/api.md is stale: run 'make docs' and commit" >&2; exit 1; }

## Every relative link and anchor in the top-level Markdown files and docs/ resolves, and no
## document links to another site; the alerts' runbook annotations name a heading.
check-links:
	cargo test -q --test docs_links

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

## Scale and latency on the local control plane (release build), and time to blocked in packets
## on the dataplane suite's test engine; see BENCHMARKS.md.
bench:
	e2e/scripts/with-cluster.sh cargo test --release --test e2e_bench scale_and_repair_latency -- --ignored --nocapture --test-threads 1
	e2e/scripts/with-cluster.sh cargo test --release --test e2e_dataplane time_to_blocked_in_packets -- --ignored --nocapture --test-threads 1

## What the API server spends on one write, by write style (create, server-side apply) and identity.
bench-writes:
	e2e/scripts/with-cluster.sh cargo test --release --test e2e_bench cost_of_one_write -- --ignored --nocapture --test-threads 1

## The operator and Kyverno v1.19.1 side by side on a fresh control plane of their own (not in `make test`).
bench-kyverno:
	e2e/kyverno/bench.sh

clean:
	cargo clean

## --- Packaging: image, Helm chart, dashboard and alerts (docs/install.md, docs/operations.md) ---
HELM = $$(e2e/tools/build.sh helm)
PROMTOOL = $$(e2e/tools/build.sh promtool)

## helm and promtool, built from their Go modules into the cache (once per version).
tools:
	e2e/tools/build.sh helm
	e2e/tools/build.sh promtool

## The manager image (static binary FROM scratch) with podman: localhost/kube-baseline:<version>.
image:
	image/build.sh

## A release in dist/ (binary with cargo-auditable metadata, CycloneDX SBOM, image OCI archive,
## chart package, kubectl plugin and its krew manifest, CRD and kustomize config, SHA256SUMS).
## VERSION=x.y.z sets the version (default Cargo.toml's).
dist:
	release/dist.sh

## Copy the CRD, policies, rules and dashboard into the chart (and monitoring/prometheusrule.yaml).
chart-sync:
	charts/sync.sh

## The chart's copies are current and it lints (defaults and every option).
check-chart:
	charts/sync.sh --check
	$(HELM) lint --strict charts/kube-baseline
	$(HELM) lint --strict charts/kube-baseline --set namespace.create=true,serviceMonitor.enabled=true,prometheusRule.enabled=true,grafanaDashboard.enabled=true,rbac.teamVisibility=true

## The alert rules pass promtool's check and their unit tests.
check-monitoring:
	$(PROMTOOL) check rules monitoring/alerts.yaml
	$(PROMTOOL) test rules monitoring/alerts.test.yaml
