//! The per-namespace reconcile (docs/architecture.md): read the caches, compute the desired state with
//! the pure core, let the writer make it true, record the outcome for the status writer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::{info, instrument, warn};

use crate::api::{Departure, Problem, SecurityBaseline};
use crate::core::desired::{self, NamespaceFacts, ObjectKey, Plan};
use crate::core::evaluate::{self, Findings};
use crate::core::objects::{self};
use crate::error::{Error, Result};
use crate::runtime::context::{Context, ObjectResult};
use crate::runtime::namespaces::CachedNamespace;
use crate::runtime::writer::NamespaceWriter;

/// Reconciles one namespace against every baseline.
#[instrument(skip_all, fields(namespace = %ns.name_any()))]
pub async fn reconcile(ns: Arc<CachedNamespace>, ctx: Arc<Context>) -> Result<Action> {
    // Bounded: a shutdown stops the streams that would finish the sync, and the controller waits
    // for in-flight reconciles, so an unbounded wait here could hold the process forever.
    if tokio::time::timeout(Duration::from_secs(2), ctx.wait_until_synced())
        .await
        .is_err()
    {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let started = Instant::now();
    let name = ns.name_any();
    let _in_flight = crate::runtime::progress::InFlight::new(&ctx.settings.progress, &name);
    let ns_meta = ns.meta_with_labels();
    let facts = NamespaceFacts {
        name: name.clone(),
        labels: objects::selectable_labels(&ns_meta),
        terminating: ns_meta.deletion_timestamp.is_some(),
    };
    let baselines = ctx.baselines.state();
    let refs: Vec<&SecurityBaseline> = baselines.iter().map(AsRef::as_ref).collect();
    let now = Timestamp::now();
    let cluster = ctx.cluster.read().unwrap().clone();
    let validated = Context::validated(&baselines);
    let plan = desired::plan(
        &facts,
        &refs,
        &validated,
        &ctx.settings.system_namespaces,
        &cluster,
        now,
    );
    let known: BTreeMap<String, Arc<SecurityBaseline>> = baselines.iter().map(|b| (b.name_any(), b.clone())).collect();

    let mut results: BTreeMap<ObjectKey, ObjectResult> = BTreeMap::new();
    let mut repairs: Vec<(String, ObjectKey, &'static str)> = Vec::new();
    let mut failures = Vec::new();
    let mut guard_failed = false;
    if !facts.terminating && !desired::is_system_namespace(&name, &ctx.settings.system_namespaces) {
        let writer = NamespaceWriter {
            ctx: &ctx,
            ns: &name,
            guarded: plan.guarded,
        };
        for (key, want) in &plan.objects {
            let result = writer.ensure(&ns_meta, key, want).await;
            if let ObjectResult::Repaired(how) = result {
                repairs.push((want.owner.name.clone(), key.clone(), how));
            }
            results.insert(key.clone(), result);
        }
        // Released Pod Security labels belong to no baseline: logged and counted, not attributed.
        let egress_settled = results
            .iter()
            .filter(|(key, _)| key.is_metadata_policy())
            .all(|(_, r)| matches!(r, ObjectResult::InSync | ObjectResult::Repaired(_)));
        for (owner, key, result) in writer.prune(&ns_meta, &plan, &known, egress_settled).await {
            match (owner, result) {
                (Some(owner), ObjectResult::Repaired(how)) => repairs.push((owner, key, how)),
                (Some(owner), ObjectResult::Failed { reason, message }) => failures.push((owner, key, reason, message)),
                (None, ObjectResult::Repaired(how)) => info!(object = %key, "{}", log_verb(how)),
                _ => {}
            }
        }
        // The guard label is the protection policy's, not a baseline's object: logged and
        // counted (a failure backs off like any other), no Event.
        match writer.ensure_guard(&ns_meta).await {
            Some(ObjectResult::Repaired(_)) => info!(
                label = objects::GUARD_LABEL,
                guarded = plan.guarded,
                "guard label {}",
                if plan.guarded { "set" } else { "removed" }
            ),
            Some(ObjectResult::Failed { reason, message }) => {
                warn!(label = objects::GUARD_LABEL, reason, message, "guard label not written");
                guard_failed = true;
            }
            _ => {}
        }
    }

    let findings = protection_findings(&ctx, &name, &ns_meta, &plan);
    let judged = Judged {
        plan: &plan,
        results: &results,
        findings: &findings,
        repairs: &repairs,
    };
    let (new_problems, departures) = record(&ctx, &facts, &judged, &baselines, &validated);
    for (baseline, why) in departures {
        warn!(baseline, why = %why, "namespace left the baseline");
        let note = format!("namespace {name} left the baseline: {why}");
        ctx.publish(&baseline, EventType::Warning, "NamespaceLeft", note.clone())
            .await;
        let note = format!("{note} (SecurityBaseline {baseline})");
        ctx.events
            .publish_in_namespace(&name, "Namespace", "NamespaceLeft", note)
            .await;
    }
    for (baseline, key, how) in &repairs {
        info!(baseline, object = %key, "{}", log_verb(how));
        ctx.publish(
            baseline,
            EventType::Normal,
            how,
            format!("{how} {key} in namespace {name}{}", composed_of(&plan, key)),
        )
        .await;
    }
    for (baseline, problem) in new_problems {
        warn!(
            baseline,
            object = %problem.object,
            reason = %problem.reason,
            message = %problem.message,
            "{}",
            problem.reason.to_lowercase()
        );
        ctx.publish(
            &baseline,
            EventType::Warning,
            &problem.reason,
            format!("{}/{}: {}", problem.namespace, problem.object, problem.message),
        )
        .await;
        // The team sees it in its own namespace, about the object.
        ctx.events
            .publish_in_namespace(
                &problem.namespace,
                &problem.object,
                &problem.reason,
                format!("SecurityBaseline {baseline}: {}", problem.message),
            )
            .await;
    }
    for (baseline, key, reason, message) in &failures {
        ctx.publish(
            baseline,
            EventType::Warning,
            reason,
            format!("could not prune {key} in namespace {name}: {message}"),
        )
        .await;
    }

    ctx.metrics.reconciles.inc();
    ctx.metrics.reconcile_duration.observe(started.elapsed().as_secs_f64());
    let any_failed =
        guard_failed || !failures.is_empty() || results.values().any(|r| matches!(r, ObjectResult::Failed { .. }));
    let attempts = {
        let mut r = ctx.results.lock().unwrap();
        if any_failed {
            let n = r.failures.entry(name.clone()).or_default();
            *n += 1;
            *n
        } else {
            r.failures.remove(&name);
            0
        }
    };
    Ok(next_action(attempts, plan.next_expiry, now))
}

/// Which baselines an object composes, for its Event, when more than one.
fn composed_of(plan: &Plan, key: &ObjectKey) -> String {
    match plan.objects.get(key) {
        Some(o) if o.contributors.len() > 1 => format!(" (for baselines {})", o.contributors.join(", ")),
        _ => String::new(),
    }
}

/// What a repair did, for the log: created, repaired (an object that drifted, written over),
/// adopted, pruned or released.
fn log_verb(how: &str) -> &'static str {
    match how {
        "Created" => "created",
        "Adopted" => "adopted",
        "Pruned" => "pruned",
        "Released" => "released",
        _ => "repaired",
    }
}

/// When to look at a namespace again: failures back off exponentially up to five minutes
/// (never a hot loop); an exemption is re-evaluated the moment it expires; otherwise only on a
/// change, or at the controller's hourly resync of every namespace (one timer for all of them,
/// not one each: a scheduled entry per namespace cost ~750 bytes).
fn next_action(failed_attempts: u32, next_expiry: Option<Timestamp>, now: Timestamp) -> Action {
    let expiry = next_expiry.map(|t| {
        let secs = t.duration_since(now).as_secs_f64().max(0.0);
        Duration::from_secs_f64(secs) + Duration::from_millis(500)
    });
    let backoff = (failed_attempts > 0)
        .then(|| Duration::from_secs(5 * 2u64.pow(failed_attempts.min(7) - 1)).min(Duration::from_secs(300)));
    match [expiry, backoff].into_iter().flatten().min() {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    }
}

/// The findings of every baseline in namespace `ns`, from the cached policy summaries.
fn protection_findings(
    ctx: &Context,
    ns: &str,
    ns_meta: &kube::api::ObjectMeta,
    plan: &Plan,
) -> BTreeMap<String, Findings> {
    let summaries = ctx.egress.in_namespace(ns);
    let host_network_pods: Vec<String> = ctx.host_network_pods.in_namespace(ns).into_keys().collect();
    evaluate::protection_findings(
        ns,
        ns_meta,
        plan,
        summaries.values().map(AsRef::as_ref),
        &host_network_pods,
    )
}

/// What one reconcile of a namespace planned, wrote and found.
struct Judged<'a> {
    plan: &'a Plan,
    results: &'a BTreeMap<ObjectKey, ObjectResult>,
    findings: &'a BTreeMap<String, Findings>,
    repairs: &'a [(String, ObjectKey, &'static str)],
}

/// A baseline the namespace left, and what changed.
type Departed = (String, String);

/// Stores this namespace's outcome for every baseline; returns the problems that are new and
/// the baselines the namespace has left since its last reconcile (with what changed).
fn record(
    ctx: &Context,
    facts: &NamespaceFacts,
    judged: &Judged,
    baselines: &[Arc<SecurityBaseline>],
    validated: &BTreeMap<String, Result<desired::ValidBaseline, desired::InvalidSpec>>,
) -> (Vec<(String, Problem)>, Vec<Departed>) {
    let (ns, plan, repairs) = (facts.name.as_str(), judged.plan, judged.repairs);
    let mut judged = evaluate::outcomes(ns, plan, judged.results, judged.findings);
    let mut departures = Vec::new();
    let mut new_problems = Vec::new();
    let mut r = ctx.results.lock().unwrap();
    let mut changed = r.seen.insert(ns.to_string());
    for b in baselines {
        let bname = b.name_any();
        if let Some((generation, left)) = r.pending.get_mut(&bname)
            && *generation == b.metadata.generation
            && left.remove(ns)
        {
            changed = true;
        }
        let outcomes = r.outcomes.entry(bname.clone()).or_default();
        let Some(mut outcome) = judged.remove(&bname) else {
            if let Some(was) = outcomes.remove(ns) {
                changed = true;
                r.reports_dirty.insert(ns.to_string());
                let valid = validated.get(&bname).and_then(|v| v.as_ref().ok());
                let system = &ctx.settings.system_namespaces;
                if let Some(why) = desired::departure(b, valid, facts, system, was.generation) {
                    r.departures.entry(bname.clone()).or_default().push(Departure {
                        namespace: ns.to_string(),
                        reason: why.clone(),
                        time: Time(Timestamp::now()),
                    });
                    departures.push((bname.clone(), why));
                }
            }
            continue;
        };
        outcome.generation = b.metadata.generation;
        outcome.wanted = ctx.wanted_keys.intern((*outcome.wanted).clone());
        let previous = outcomes.insert(ns.to_string(), outcome.clone());
        if previous.as_ref() != Some(&outcome) {
            changed = true;
            r.reports_dirty.insert(ns.to_string());
            // After a restart nothing is remembered yet: what the stored status already lists
            // was announced before and is not announced again (a restart writes nothing).
            let old = previous.map(|p| p.problems).unwrap_or_else(|| {
                b.status
                    .iter()
                    .flat_map(|st| st.problems.iter())
                    .filter(|p| p.namespace == ns)
                    .cloned()
                    .collect()
            });
            new_problems.extend(
                outcome
                    .problems
                    .iter()
                    .filter(|p| !old.contains(p))
                    .map(|p| (bname.clone(), p.clone())),
            );
        }
    }
    let now = Time(Timestamp::now());
    for (baseline, _, _) in repairs {
        let pending = r.pending_repairs.entry(baseline.clone()).or_default();
        pending.0 += 1;
        pending.1 = Some(now.clone());
        changed = true;
    }
    drop(r);
    if changed {
        ctx.status_changed.notify_one();
    }
    (new_problems, departures)
}

pub fn error_policy(_ns: Arc<CachedNamespace>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .errors
        .get_or_create(&crate::runtime::metrics::ErrorLabel {
            error: error.metric_label().into(),
        })
        .inc();
    warn!(%error, "reconcile failed");
    Action::requeue(Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_up_to_five_minutes() {
        let now = Timestamp::UNIX_EPOCH;
        assert_eq!(next_action(1, None, now), Action::requeue(Duration::from_secs(5)));
        assert_eq!(next_action(3, None, now), Action::requeue(Duration::from_secs(20)));
        assert_eq!(next_action(30, None, now), Action::requeue(Duration::from_secs(300)));
        assert_eq!(next_action(0, None, now), Action::await_change());
    }

    #[test]
    fn an_exemption_expiry_schedules_the_next_reconcile() {
        let now = Timestamp::from_second(1000).unwrap();
        let expiry = Timestamp::from_second(1060).unwrap();
        assert_eq!(
            next_action(0, Some(expiry), now),
            Action::requeue(Duration::from_millis(60_500))
        );
    }
}
