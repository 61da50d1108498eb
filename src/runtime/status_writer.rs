//! The one task that writes baseline statuses: it gathers namespace outcomes for a short
//! debounce, then writes each baseline's status only when it differs from what it has.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, warn};

mod gauges;

use crate::api::{SecurityBaseline, SecurityBaselineStatus};
use crate::core::desired;
use crate::core::objects::FIELD_MANAGER;
use crate::core::status::{self, StatusInput};
use crate::runtime::context::Context;
use crate::runtime::index::revision;
use crate::runtime::metrics::ErrorLabel;
use crate::runtime::scope::Scope;

/// Runs until the process stops.
pub async fn run(ctx: Arc<Context>) {
    let mut pacing = Pacing::default();
    let trimmer = crate::runtime::memory::Trimmer::default();
    loop {
        ctx.status_changed.notified().await;
        tokio::time::sleep(ctx.settings.status_debounce).await;
        if !all_namespaces_seen(&ctx) {
            // Not every namespace has been reconciled since start: counts would be partial.
            // The remaining reconciles will notify again.
            continue;
        }
        let settled = crate::runtime::finalizer::settle(&ctx).await;
        let statuses_written = write_all(&ctx, Some(&mut pacing)).await;
        // What the reconciles since the last pass allocated and dropped goes back to the kernel.
        trimmer.soon();
        // After the statuses: what is gone has been forgotten, and reports follow suit.
        if let Some(reports) = &ctx.reports
            && !reports.sync(&ctx).await
        {
            crate::runtime::reports::retry_later(ctx.clone());
        }
        if !statuses_written || !settled {
            tokio::time::sleep(Duration::from_secs(2)).await;
            ctx.status_changed.notify_one();
        } else if let Some(at) = pacing.next_due() {
            // Work held back (a progress update, forgetting): done when due, even if nothing
            // else changes.
            let ctx = ctx.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(at.into()).await;
                ctx.status_changed.notify_one();
            });
        }
    }
}

/// How often the writer does its O(namespaces) work, so a pass costs little while thousands of
/// namespaces converge. Progress updates of a baseline still applying a generation are spaced
/// out: the first at once, then 1 s, 2 s, 4 s ... up to 30 s apart, so converging writes
/// O(log time) statuses per baseline instead of one per debounce, and a baseline that is not due
/// is not even computed. The status that settles is written at once. Forgetting deleted
/// namespaces and baselines runs at most every 5 s.
#[derive(Default)]
struct Pacing {
    /// By baseline uid: when its last progress update was written, and the gap before the next.
    last: HashMap<String, (Instant, Duration)>,
    /// Held-back work: when the earliest is due.
    due: Option<Instant>,
    forgotten_at: Option<Instant>,
}

const PROGRESS_FIRST_GAP: Duration = Duration::from_secs(1);
const PROGRESS_MAX_GAP: Duration = Duration::from_secs(30);
const FORGET_EVERY: Duration = Duration::from_secs(5);

impl Pacing {
    fn hold(&mut self, until: Instant) {
        self.due = Some(self.due.map_or(until, |d| d.min(until)));
    }

    /// Whether a converging baseline's progress may be written now (else a wake-up is held).
    fn due(&mut self, uid: &str, now: Instant) -> bool {
        match self.last.get(uid).copied() {
            Some((at, gap)) if now < at + gap => {
                self.hold(at + gap);
                false
            }
            _ => true,
        }
    }

    /// A progress update was written: the next one waits twice as long.
    fn wrote(&mut self, uid: &str, now: Instant) {
        let gap = self
            .last
            .get(uid)
            .map_or(PROGRESS_FIRST_GAP, |(_, gap)| (*gap * 2).min(PROGRESS_MAX_GAP));
        self.last.insert(uid.to_string(), (now, gap));
    }

    /// A settled status starts the spacing over for the next generation.
    fn settled(&mut self, uid: &str) {
        self.last.remove(uid);
    }

    fn forget_due(&mut self, now: Instant) -> bool {
        match self.forgotten_at {
            Some(at) if now < at + FORGET_EVERY => {
                self.hold(at + FORGET_EVERY);
                false
            }
            _ => {
                self.forgotten_at = Some(now);
                true
            }
        }
    }

    fn next_due(&mut self) -> Option<Instant> {
        self.due.take()
    }
}

/// Writes what is pending once more (at shutdown, while still allowed to write), so debounced
/// results and repair counts are not lost.
pub async fn flush(ctx: &Context) {
    if all_namespaces_seen(ctx) && !write_all(ctx, None).await {
        warn!("could not write every status at shutdown");
    }
}

/// How long after the caches synced the status waits for every namespace to be reconciled once;
/// past that it is written anyway (one namespace that cannot be reconciled must not freeze every
/// status), and observedGeneration stays honest through the pending sets.
const FIRST_PASS_DEADLINE: Duration = Duration::from_secs(30);

fn all_namespaces_seen(ctx: &Context) -> bool {
    // Before the caches have synced the namespace list may be partial, or empty, and "every
    // namespace seen" vacuously true: a restart then wrote a status with zero counts, then the
    // real one (two writes over a compliant cluster, found by the audit-log count of make bench).
    if !ctx.is_synced() {
        return false;
    }
    if ctx.all_seen.get().is_some() {
        return true;
    }
    // Once true it stays true: only the first pass after a start can leave counts partial. Until
    // then this runs every pass: the namespaces not reconciled yet, then which of them are in
    // scope (runtime::scope; the others are never queued).
    let unseen: Vec<_> = {
        let r = ctx.results.lock().unwrap();
        ctx.catalog
            .all()
            .into_iter()
            .filter(|(ns, _)| !r.seen.contains(&**ns))
            .collect()
    };
    let scope = Scope::now(ctx);
    if !unseen.iter().any(|(ns, known)| scope.holds(ns, known)) {
        let _ = ctx.all_seen.set(());
        ctx.metrics.first_pass_complete.set(1);
        return true;
    }
    // Past the deadline a status is written with what is known; the first pass is still
    // awaited for the metric.
    ctx.synced_at.get().is_some_and(|t| t.elapsed() > FIRST_PASS_DEADLINE)
}

/// Writes every baseline status that changed; false when a write failed.
/// `pacing` spaces out the work of a pass (None does and writes everything).
async fn write_all(ctx: &Context, mut pacing: Option<&mut Pacing>) -> bool {
    let baselines = ctx.baselines.state();
    // Untyped: the response of a baseline the operator cannot decode must not fail the write.
    let api: Api<kube::api::DynamicObject> = Api::all_with(
        ctx.client.clone(),
        &kube::api::ApiResource::erase::<SecurityBaseline>(&()),
    );
    let now = Timestamp::now();
    let cluster = ctx.cluster.read().unwrap().clone();
    let mut ok = true;
    if pacing.as_deref_mut().is_none_or(|p| p.forget_due(Instant::now())) {
        for (baseline, namespaces) in forget_what_is_gone(ctx, &baselines) {
            for ns in namespaces {
                warn!(baseline = %baseline, namespace = %ns, "namespace left the baseline: it was deleted");
                let note = format!("namespace {ns} left SecurityBaseline {baseline}: the SecurityBaseline was deleted");
                ctx.events
                    .publish_in_namespace(&ns, "Namespace", "NamespaceLeft", note)
                    .await;
            }
        }
    }
    for baseline in &baselines {
        let name = baseline.name_any();
        let uid = baseline.uid().unwrap_or_default();
        let converging = ctx
            .results
            .lock()
            .unwrap()
            .pending
            .get(&name)
            .is_some_and(|(_, left)| !left.is_empty());
        if converging && pacing.as_deref_mut().is_some_and(|p| !p.due(&uid, Instant::now())) {
            continue;
        }
        let egress = baseline.spec.metadata_egress.as_ref();
        let mine = ctx.status_written.lock().unwrap().get(&uid).cloned();
        let mine = mine.filter(|(rv, _)| !stored_is_newer(baseline, *rv)).map(|(_, s)| s);
        let previous = mine.as_ref().or(baseline.status.as_ref());
        let (status, pending, unsettled) = {
            let r = ctx.results.lock().unwrap();
            let pending = r.pending_repairs.get(&name).cloned().unwrap_or_default();
            let departed = r.departures.get(&name).cloned().unwrap_or_default();
            let invalid = desired::validate(baseline).err().map(|e| e.0);
            let generation = baseline.meta().generation;
            let outcomes = r.outcomes.get(&name);
            let unsettled =
                r.pending.get(&name).map_or(0, |(_, left)| left.len()) + outcomes.map_or(0, |o| o.not_at(generation));
            let input = StatusInput {
                generation,
                mode: baseline.spec.mode,
                invalid: invalid.as_deref(),
                outcomes,
                repairs: previous.map_or(0, |p| p.repairs) + pending.0,
                last_repair_time: pending
                    .1
                    .clone()
                    .or_else(|| previous.and_then(|p| p.last_repair_time.clone())),
                unsettled,
                ip_families: egress.map(|egress| crate::core::families::rendered(egress, &cluster.families)),
                engine: egress.map(|egress| cluster.engine.resolve(egress)),
                departed: &departed,
            };
            (
                status::compute(&input, previous, now),
                (pending, departed.len()),
                unsettled,
            )
        };
        gauges::update(ctx, &name, &status);
        announce_uncertain_engine(ctx, &name, previous, &status).await;
        if let Some(p) = pacing.as_deref_mut()
            && unsettled == 0
        {
            p.settled(&uid);
        }
        // The stored status decides, not this process's last write: a status someone else
        // changed (a forged exemption, say) is written over. Until the cache shows our own
        // write, that write stands for the stored status.
        if baseline.status.as_ref() == Some(&status) || is_mine_and_unseen(ctx, baseline, &uid, &status) {
            continue;
        }
        if let Some(p) = pacing.as_deref_mut()
            && unsettled > 0
        {
            p.wrote(&uid, Instant::now());
        }
        let patch = json!({
            "apiVersion": SecurityBaseline::api_version(&()),
            "kind": SecurityBaseline::kind(&()),
            "status": status,
        });
        let written_now = match api
            .patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await
        {
            // A stored object the API server cannot type (a shape an older CRD admitted) refuses
            // server-side apply with a 500; a merge patch of the status still goes through.
            Err(kube::Error::Api(s)) if s.code == 500 => {
                let merge = PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                };
                api.patch_status(&name, &merge, &Patch::Merge(&json!({"status": status})))
                    .await
            }
            other => other,
        };
        match written_now {
            Ok(stored) => {
                debug!(baseline = %name, "status written");
                ctx.metrics.status_writes.inc();
                let mut r = ctx.results.lock().unwrap();
                if let Some(p) = r.pending_repairs.get_mut(&name) {
                    p.0 -= pending.0.0;
                }
                if let Some(d) = r.departures.get_mut(&name) {
                    d.drain(..pending.1.min(d.len()));
                }
                drop(r);
                let rv = revision(stored.metadata.resource_version.as_deref());
                ctx.status_written.lock().unwrap().insert(uid, (rv, status));
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {} // deleted meanwhile
            Err(e) => {
                warn!(baseline = %name, error = %e, "could not write status");
                ctx.metrics
                    .errors
                    .get_or_create(&ErrorLabel { error: "status".into() })
                    .inc();
                ok = false;
            }
        }
    }
    ok
}

/// Whether the cached baseline is a newer version than the one this process's status write made
/// (someone wrote after it), or its version is unknown.
fn stored_is_newer(baseline: &SecurityBaseline, written: Option<u64>) -> bool {
    match (revision(baseline.metadata.resource_version.as_deref()), written) {
        (Some(cached), Some(written)) => cached > written,
        _ => true,
    }
}

/// Whether `status` is what this process wrote last and the cache has not caught up with it.
fn is_mine_and_unseen(ctx: &Context, baseline: &SecurityBaseline, uid: &str, status: &SecurityBaselineStatus) -> bool {
    let written = ctx.status_written.lock().unwrap();
    written
        .get(uid)
        .is_some_and(|(rv, mine)| mine == status && !stored_is_newer(baseline, *rv))
}

/// The baseline watch's part: a status changed by someone else (its version is not this
/// process's last write, and it differs from what this process wrote) wakes the status writer,
/// which writes the true status again.
pub fn status_changed_elsewhere(ctx: &Context, baseline: &SecurityBaseline) {
    let Some(uid) = baseline.metadata.uid.as_deref() else {
        return;
    };
    let rv = revision(baseline.metadata.resource_version.as_deref());
    let changed = ctx
        .status_written
        .lock()
        .unwrap()
        .get(uid)
        .is_some_and(|(written, mine)| *written != rv && baseline.status.as_ref() != Some(mine));
    if changed {
        debug!(baseline = %baseline.name_any(), "status changed by someone else");
        ctx.status_changed.notify_one();
    }
}

/// Drops the results of deleted baselines and namespaces, once per pass. Returns the deleted
/// baselines with the namespaces they still selected: those left them.
fn forget_what_is_gone(ctx: &Context, baselines: &[Arc<SecurityBaseline>]) -> Vec<(String, Vec<String>)> {
    let live_namespaces: HashSet<String> = ctx.catalog.all().iter().map(|(n, _)| n.to_string()).collect();
    let live_baselines: HashSet<String> = baselines.iter().map(|b| b.name_any()).collect();
    let live_uids: HashSet<String> = baselines.iter().filter_map(|b| b.uid()).collect();
    let mut r = ctx.results.lock().unwrap();
    let gone: Vec<String> = r
        .outcomes
        .keys()
        .filter(|b| !live_baselines.contains(*b))
        .cloned()
        .collect();
    let mut left = Vec::new();
    for baseline in gone {
        // Its results leave the PolicyReports of the namespaces it selected.
        let selected: Vec<String> = r
            .outcomes
            .get(&baseline)
            .into_iter()
            .flat_map(|o| o.keys().cloned())
            .collect();
        r.reports_dirty.extend(selected.iter().cloned());
        let still_there = selected.into_iter().filter(|ns| live_namespaces.contains(ns)).collect();
        left.push((baseline.clone(), still_there));
        // A deleted baseline's gauges go with it (no series frozen at its last value).
        gauges::remove(ctx, &baseline);
    }
    r.outcomes.retain(|b, _| live_baselines.contains(b));
    for outcomes in r.outcomes.values_mut() {
        outcomes.retain(|ns| live_namespaces.contains(ns));
    }
    r.pending_repairs.retain(|b, _| live_baselines.contains(b));
    r.departures.retain(|b, _| live_baselines.contains(b));
    // A namespace deleted before it was reconciled against a new generation never will be.
    r.pending.retain(|b, _| live_baselines.contains(b));
    for (_, left) in r.pending.values_mut() {
        left.retain(|ns| live_namespaces.contains(ns));
    }
    r.seen.retain(|ns| live_namespaces.contains(ns));
    r.failures.retain(|ns, _| live_namespaces.contains(ns));
    drop(r);
    ctx.labels_written
        .lock()
        .unwrap()
        .retain(|ns, _| live_namespaces.contains(ns));
    ctx.status_written
        .lock()
        .unwrap()
        .retain(|uid, _| live_uids.contains(uid));
    left
}

/// A Warning Event when a baseline's engine becomes uncertain (the condition turns True): the
/// object written may be one that nothing enforces. Once per transition, restarts included
/// (the stored status already says so).
async fn announce_uncertain_engine(
    ctx: &Context,
    baseline: &str,
    previous: Option<&SecurityBaselineStatus>,
    status: &SecurityBaselineStatus,
) {
    let uncertain = |s: &SecurityBaselineStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == "EngineUncertain" && c.status == "True")
            .map(|c| c.message.clone())
    };
    if let Some(why) = uncertain(status)
        && previous.and_then(uncertain).is_none()
    {
        ctx.publish(
            baseline,
            kube::runtime::events::EventType::Warning,
            "EngineUncertain",
            why,
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_updates_are_spaced_out_doubling_and_start_over_once_settled() {
        let mut p = Pacing::default();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let write = |p: &mut Pacing, t: Instant| {
            let due = p.due("b", t);
            if due {
                p.wrote("b", t);
            }
            due
        };
        assert!(write(&mut p, t0));
        assert!(!write(&mut p, t0 + Duration::from_millis(500)));
        assert_eq!(p.next_due(), Some(t0 + s(1)));
        assert!(write(&mut p, t0 + s(1)));
        assert!(!write(&mut p, t0 + s(2)));
        assert!(write(&mut p, t0 + s(3)));
        // Over a 10,000-namespace converge of a few minutes: a handful of writes, not hundreds.
        let writes = (0..300).filter(|i| write(&mut p, t0 + s(3 + i))).count();
        assert!(writes <= 12, "{writes}");
        p.settled("b");
        assert!(write(&mut p, t0 + s(400)));
    }

    #[test]
    fn forgetting_runs_at_most_every_five_seconds_and_holds_a_wake_up() {
        let mut p = Pacing::default();
        let t0 = Instant::now();
        assert!(p.forget_due(t0));
        assert!(!p.forget_due(t0 + Duration::from_secs(1)));
        assert_eq!(p.next_due(), Some(t0 + FORGET_EVERY));
        assert!(p.forget_due(t0 + FORGET_EVERY));
    }
}
