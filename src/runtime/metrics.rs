//! Prometheus metrics, served on `/metrics`. Every metric is listed in docs/operations.md.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// NetworkPolicy, RoleBinding or Namespace.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    /// A short stable error class: forbidden, invalid, conflict, transport, ...
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub baseline: String,
    /// compliant, drifted, bypassed, exempted, conflicted or failed.
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabel {
    /// apply or delete.
    pub verb: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabel {
    pub baseline: String,
    pub condition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EngineLabel {
    pub baseline: String,
    /// NetworkPolicy or Cilium.
    pub engine: String,
}

/// All metrics of one operator process.
pub struct Metrics {
    pub reconciles: Counter,
    pub reconcile_duration: Histogram,
    pub repairs: Family<KindLabel, Counter>,
    pub drift: Family<KindLabel, Counter>,
    pub errors: Family<ErrorLabel, Counter>,
    pub writes: Family<VerbLabel, Counter>,
    pub namespaces: Family<StateLabel, Gauge<i64, AtomicI64>>,
    pub conditions: Family<ConditionLabel, Gauge<i64, AtomicI64>>,
    pub engine: Family<EngineLabel, Gauge<i64, AtomicI64>>,
    pub status_writes: Counter,
    pub leader: Gauge<i64, AtomicI64>,
    pub ready: Gauge<i64, AtomicI64>,
    pub first_pass_complete: Gauge<i64, AtomicI64>,
}

impl Metrics {
    /// Creates the metrics and registers them (prefix `kube_baseline_`).
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            reconciles: Counter::default(),
            // 100 µs .. ~3.3 s: a compliant namespace reconciles in microseconds, one with
            // writes in milliseconds.
            reconcile_duration: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.0001, 2.0, 16,
            )),
            repairs: Family::default(),
            drift: Family::default(),
            errors: Family::default(),
            writes: Family::default(),
            namespaces: Family::default(),
            conditions: Family::default(),
            engine: Family::default(),
            status_writes: Counter::default(),
            leader: Gauge::default(),
            ready: Gauge::default(),
            first_pass_complete: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("kube_baseline");
        r.register("reconciles", "Namespace reconciles run", m.reconciles.clone());
        r.register(
            "reconcile_duration_seconds",
            "Duration of one namespace reconcile",
            m.reconcile_duration.clone(),
        );
        r.register(
            "repairs",
            "Objects created, updated or deleted to repair drift, by kind",
            m.repairs.clone(),
        );
        r.register(
            "drift_detected",
            "Objects found not matching their baseline, by kind (Audit and Enforce)",
            m.drift.clone(),
        );
        r.register(
            "errors",
            "Failed API requests and reconciles, by error class",
            m.errors.clone(),
        );
        r.register(
            "write_requests",
            "Write requests sent to the API server, by verb and kind",
            m.writes.clone(),
        );
        r.register(
            "namespaces",
            "Selected namespaces by baseline and compliance state",
            m.namespaces.clone(),
        );
        r.register(
            "condition",
            "1 while the baseline's condition is True, by baseline and condition type (Ready, Degraded, Conflict, Invalid, EngineUncertain)",
            m.conditions.clone(),
        );
        r.register(
            "engine",
            "1 for the policy engine a baseline's metadata policy is written for (NetworkPolicy or Cilium), 0 for the other",
            m.engine.clone(),
        );
        r.register(
            "status_writes",
            "Baseline status updates written",
            m.status_writes.clone(),
        );
        r.register(
            "leader",
            "1 while this process holds the leader lease",
            m.leader.clone(),
        );
        r.register("ready", "1 once every cache has synced", m.ready.clone());
        r.register(
            "first_pass_complete",
            "1 once every namespace in scope has been reconciled since the controller started",
            m.first_pass_complete.clone(),
        );
        m
    }

    pub fn kind(kind: &str) -> KindLabel {
        KindLabel { kind: kind.to_string() }
    }
}
