//! The per-baseline gauges a written status sets (namespaces by state, the resolved engine, the
//! conditions), and their removal with the baseline.

use crate::api::{ResolvedEngine, SecurityBaselineStatus};
use crate::runtime::context::Context;
use crate::runtime::metrics::{ConditionLabel, EngineLabel, StateLabel};

/// The `state` label values of the per-baseline namespace gauge.
const STATES: [&str; 6] = ["compliant", "drifted", "bypassed", "exempted", "conflicted", "failed"];

/// Sets the baseline's gauges from the status just written.
pub(super) fn update(ctx: &Context, baseline: &str, status: &SecurityBaselineStatus) {
    let c = &status.namespaces;
    let counts = [c.compliant, c.drifted, c.bypassed, c.exempted, c.conflicted, c.failed];
    for (state, n) in STATES.into_iter().zip(counts) {
        ctx.metrics
            .namespaces
            .get_or_create(&StateLabel {
                baseline: baseline.into(),
                state: state.into(),
            })
            .set(n);
    }
    let engine = status.engine.as_ref().map(|e| e.engine);
    for e in [ResolvedEngine::NetworkPolicy, ResolvedEngine::Cilium] {
        let label = EngineLabel {
            baseline: baseline.into(),
            engine: e.as_str().into(),
        };
        match engine {
            Some(current) => {
                ctx.metrics.engine.get_or_create(&label).set(i64::from(current == e));
            }
            None => {
                ctx.metrics.engine.remove(&label);
            }
        }
    }
    for c in &status.conditions {
        ctx.metrics
            .conditions
            .get_or_create(&ConditionLabel {
                baseline: baseline.into(),
                condition: c.type_.clone(),
            })
            .set(i64::from(c.status == "True"));
    }
}

/// The condition types a status carries (their gauges go with a deleted baseline).
const CONDITIONS: [&str; 5] = ["Ready", "Degraded", "Conflict", "Invalid", "EngineUncertain"];

/// Removes a deleted baseline's gauges: no series stays frozen at its last value.
pub(super) fn remove(ctx: &Context, baseline: &str) {
    for condition in CONDITIONS {
        ctx.metrics.conditions.remove(&ConditionLabel {
            baseline: baseline.into(),
            condition: condition.into(),
        });
    }
    for e in [ResolvedEngine::NetworkPolicy, ResolvedEngine::Cilium] {
        ctx.metrics.engine.remove(&EngineLabel {
            baseline: baseline.into(),
            engine: e.as_str().into(),
        });
    }
    for state in STATES {
        ctx.metrics.namespaces.remove(&StateLabel {
            baseline: baseline.into(),
            state: state.into(),
        });
    }
}
