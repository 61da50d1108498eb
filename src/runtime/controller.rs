//! The watch wiring: which watches feed the namespace queue, what is cached from them, and how
//! baseline changes and re-lists map to namespaces.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use futures::{Stream, StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, ApiResource, DynamicObject, PartialObjectMeta};
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tracing::debug;

use crate::api::SecurityBaseline;
use crate::core::cilium::CiliumNetworkPolicy;
use crate::core::desired::{self, NamespaceFacts, PSA_PREFIX};
use crate::core::egress::EgressSummary;
use crate::core::objects::{self, BASELINE_LABEL};
use crate::error::Result;
use crate::runtime::context::{Context, Settings};
use crate::runtime::interner::Interner;
use crate::runtime::metrics::Metrics;
use crate::runtime::namespaces::{CachedNamespace, Catalog};
use crate::runtime::reconcile::{error_policy, reconcile};
use crate::runtime::retry::WatchBackoff;
use crate::runtime::scope::{self, Scope};
use crate::runtime::writer::Cached;

/// Baseline events that can change what a namespace should look like: spec changes
/// (generation), deletion, and every object at (re)start. Status-only updates are dropped, so
/// writing a baseline's status does not re-trigger its namespaces.
fn spec_changes(
    events: impl Stream<Item = Result<watcher::Event<SecurityBaseline>, watcher::Error>>,
) -> impl Stream<Item = Result<SecurityBaseline, watcher::Error>> {
    let mut seen: HashMap<String, (Option<i64>, bool)> = HashMap::new();
    events
        .map_ok(move |event| {
            let changed: Vec<SecurityBaseline> = match event {
                watcher::Event::Apply(b) | watcher::Event::InitApply(b) => {
                    let key = (b.metadata.generation, b.metadata.deletion_timestamp.is_some());
                    if seen.insert(b.uid().unwrap_or_default(), key) != Some(key) {
                        vec![b]
                    } else {
                        vec![]
                    }
                }
                watcher::Event::Delete(b) => {
                    seen.remove(&b.uid().unwrap_or_default());
                    vec![b]
                }
                watcher::Event::Init | watcher::Event::InitDone => vec![],
            };
            stream::iter(changed.into_iter().map(Ok))
        })
        .try_flatten()
}

/// The namespaces a baseline change can affect: those it selects, those holding objects it made,
/// and those whose Pod Security labels this operator set.
fn affected_namespaces(ctx: &Context, baseline: &SecurityBaseline) -> Vec<ObjectRef<CachedNamespace>> {
    let name = baseline.name_any();
    // `out`: the namespaces this baseline's change can touch (enqueued); of those, the ones it
    // selects, made objects in or reported on are what its status waits for.
    let mut out = BTreeSet::new();
    let mut psa_elsewhere = BTreeSet::new();
    let valid = desired::validate(baseline).ok();
    for (ns, known) in ctx.catalog.all() {
        let facts = NamespaceFacts {
            name: ns.to_string(),
            labels: objects::selectable_labels(&known.meta(&ns)),
            terminating: false,
        };
        let selected = valid.as_ref().is_some_and(|v| desired::selects(baseline, v, &facts));
        if selected {
            out.insert(facts.name);
        } else if known
            .owned_labels()
            .iter()
            .any(|k| k.starts_with(PSA_PREFIX) || k == objects::GUARD_LABEL)
        {
            // Pod Security and guard labels carry no baseline name: the one that set them may
            // be this one.
            psa_elsewhere.insert(facts.name);
        }
    }
    let made_by = |labels: &BTreeMap<String, String>| labels.get(BASELINE_LABEL) == Some(&name);
    let made_by = |meta: &kube::api::ObjectMeta| meta.labels.as_ref().is_some_and(made_by);
    out.extend(ctx.namespaces_with_managed(made_by));
    // Namespaces it reported on before (an Audit baseline makes no objects): their counts must
    // go when the selector no longer matches.
    out.extend(
        ctx.results
            .lock()
            .unwrap()
            .outcomes
            .get(&name)
            .into_iter()
            .flat_map(|o| o.keys().cloned()),
    );
    debug!(baseline = %name, namespaces = out.len(), "baseline changed");
    ctx.results
        .lock()
        .unwrap()
        .pending
        .insert(name.clone(), (baseline.metadata.generation, out.clone()));
    // A new spec generation needs a status even when no namespace result changes.
    ctx.status_changed.notify_one();
    // Into the controller's store first: a namespace it selects may not have been in scope.
    out.iter()
        .chain(&psa_elsewhere)
        .map(|n| match ctx.catalog.get(n) {
            Some(known) => ctx.catalog.admit(n, &known),
            None => ObjectRef::new(n),
        })
        .collect()
}

/// Watch errors are handled (logged, backed off) by each watch; the controller sees only objects.
fn no_errors<T, E>(item: &Result<T, E>) -> futures::future::Ready<bool> {
    futures::future::ready(item.is_ok())
}

/// The object a watch event asks to reconcile the namespace of (as `touched_objects` would),
/// unless the event is an echo.
fn trigger<K>(event: watcher::Event<K>, echo: bool) -> Option<K> {
    match event {
        watcher::Event::Apply(o) if !echo => Some(o),
        watcher::Event::Delete(o) | watcher::Event::InitApply(o) => Some(o),
        _ => None,
    }
}

/// Signals every completed (re)list of a watch.
fn on_relist<K>(tx: futures::channel::mpsc::UnboundedSender<()>) -> impl FnMut(&watcher::Event<K>) {
    move |event| {
        if matches!(event, watcher::Event::InitDone) {
            let _ = tx.unbounded_send(());
        }
    }
}

/// Raises a readiness flag when a stream has delivered its first full list.
fn on_listed<K>(
    ctx: Arc<Context>,
    flag: fn(&Context) -> &tokio::sync::watch::Sender<bool>,
) -> impl FnMut(&watcher::Event<K>) {
    move |event| {
        if matches!(event, watcher::Event::InitDone) {
            flag(&ctx).send_replace(true);
        }
    }
}

fn decoded(event: watcher::Event<DynamicObject>) -> watcher::Event<SecurityBaseline> {
    use watcher::Event::*;
    match event {
        Apply(o) => Apply(crate::api::decode(o)),
        Delete(o) => Delete(crate::api::decode(o)),
        Init => Init,
        InitApply(o) => InitApply(crate::api::decode(o)),
        InitDone => InitDone,
    }
}

/// The watch of every object of a managed kind (`K::managed` keeps the managed ones whole,
/// `K::names` the names of those in namespaces in scope): each event is applied to both caches,
/// an echo of this process's own write is not applied twice, and the object is handed on to
/// trigger its namespace's reconcile (None for an echo or a list marker).
fn managed_objects<K: Cached>(
    ctx: Arc<Context>,
    client: Client,
    relisted_tx: futures::channel::mpsc::UnboundedSender<()>,
) -> impl Stream<Item = Result<Option<K>, watcher::Error>> + Send + 'static {
    let present = Arc::new(());
    let mut relisted = on_relist(relisted_tx);
    watcher(Api::<K>::all(client), watch_config())
        .backoff(WatchBackoff::default())
        .modify(|o| o.managed_fields_mut().clear())
        .map_ok(move |e| {
            let index = K::managed(&ctx);
            let echo = index.is_echo(&e);
            if !echo {
                index.apply(&e);
            }
            K::names(&ctx).apply_with(&e, |o| scope::is_in_scope(&ctx, o.namespace()).then(|| present.clone()));
            relisted(&e);
            trigger(e, echo)
        })
}

/// Every namespace in scope (runtime::scope) is reconciled again this often, against events
/// missed for any reason.
const RESYNC: std::time::Duration = std::time::Duration::from_secs(3600);

/// A tick every `period`, the first one `period` from now.
fn every(period: std::time::Duration) -> impl Stream<Item = ()> {
    stream::unfold((), move |()| async move {
        tokio::time::sleep(period).await;
        Some(((), ()))
    })
}

/// Watches end on the server within 25 s and restart (cheaply, from their resource version), so
/// a connection that died silently is noticed within the client's 30 s read timeout.
fn watch_config() -> watcher::Config {
    watcher::Config::default().timeout(25)
}

/// Builds the controller and its watches; the returned future runs until `shutdown` resolves
/// and in-flight reconciles have finished.
pub fn controller(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> (Arc<Context>, impl std::future::Future<Output = ()>) {
    let (baseline_reader, baseline_writer) = reflector::store();
    let (ns_reader, ns_writer) = reflector::store();
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings.clone(),
        baseline_reader,
        Catalog::new(ns_writer),
        metrics,
    ));

    // After any re-list (a 410 after an API server restart, a dropped watch), every namespace in
    // scope is reconciled again: objects deleted during the gap left no event to map from, and a
    // namespace created during the gap arrives before the re-listed store holds it (kube-runtime's
    // runner skips an object its store does not have yet), so it is reconciled once the store swaps.
    let (relisted_tx, relisted) = futures::channel::mpsc::unbounded::<()>();
    // A change of the cluster's address families or policy engine re-renders every namespace.
    tokio::spawn(crate::runtime::cluster::keep_current(
        ctx.clone(),
        client.clone(),
        settings.cluster_recheck,
        relisted_tx.clone(),
    ));
    // Every namespace goes to the catalog; those in scope to the controller's store and queue.
    let namespaces = watcher(Api::<PartialObjectMeta<Namespace>>::all(client.clone()), watch_config())
        .backoff(WatchBackoff::default())
        .map_ok({
            let ctx = ctx.clone();
            let mut listed = on_listed(ctx.clone(), |c| &c.namespaces_listed);
            let mut relisted = on_relist(relisted_tx.clone());
            move |e| {
                let queued = scope::namespace_event(&ctx, &e);
                listed(&e);
                relisted(&e);
                queued
            }
        })
        .try_filter_map(|o| futures::future::ready(Ok(o)))
        .filter(no_errors);
    let baselines = spec_changes(
        // Read untyped and decoded one by one: a baseline the operator cannot decode is Invalid
        // on its own instead of failing the list of all of them.
        watcher(
            Api::<DynamicObject>::all_with(client.clone(), &ApiResource::erase::<SecurityBaseline>(&())),
            watch_config(),
        )
        .backoff(WatchBackoff::default())
        .map_ok(decoded)
        .reflect(baseline_writer)
        .inspect_ok({
            let ctx = ctx.clone();
            move |_| ctx.baselines_changed()
        })
        // Status-only updates never reach the namespaces, but one the operator did not write
        // (a forged exemption) must be written over.
        .inspect_ok({
            let ctx = ctx.clone();
            move |e| {
                if let watcher::Event::Apply(b) = e {
                    crate::runtime::status_writer::status_changed_elsewhere(&ctx, b);
                }
            }
        })
        .inspect_ok(on_listed(ctx.clone(), |c| &c.baselines_listed))
        .inspect_ok(on_relist(relisted_tx.clone())),
    )
    .filter(no_errors);
    // Every NetworkPolicy, for the bypass check; only managed ones are kept whole, and of the
    // rest only the summary of those that can open an external address.
    let policies = {
        let (managed_index, egress_index, names) = (ctx.policies.clone(), ctx.egress.clone(), ctx.policy_names.clone());
        let ctx = ctx.clone();
        // Teams copy policies between namespaces: equal summaries are kept once.
        let summaries = Interner::<EgressSummary, EgressSummary>::default();
        let present = Arc::new(());
        watcher(Api::<NetworkPolicy>::all(client.clone()), watch_config())
            .backoff(WatchBackoff::default())
            .modify(|o| o.managed_fields_mut().clear())
            .map_ok({
                let mut relisted = on_relist(relisted_tx.clone());
                move |e| {
                    // An echo is already cached, from the write's response.
                    let echo = managed_index.is_echo(&e);
                    if !echo {
                        managed_index.apply(&e);
                    }
                    egress_index.apply_with(&e, |p| EgressSummary::of(p).map(|s| summaries.intern(s)));
                    names.apply_with(&e, |p| scope::is_in_scope(&ctx, p.namespace()).then(|| present.clone()));
                    relisted(&e);
                    trigger(e, echo)
                }
            })
            .try_filter_map(|o| futures::future::ready(Ok(o)))
            .filter(no_errors)
    };
    // Pods on their node's network, metadata only: the API server filters them (spec.hostNetwork
    // and status.phase are field selectors it serves for pods), so the cache holds a handful.
    let host_network_pods = {
        let (index, present) = (ctx.host_network_pods.clone(), Arc::new(()));
        let fields = "spec.hostNetwork=true,status.phase!=Succeeded,status.phase!=Failed";
        watcher(
            Api::<PartialObjectMeta<Pod>>::all(client.clone()),
            watch_config().fields(fields),
        )
        .backoff(WatchBackoff::default())
        .map_ok(move |e| {
            index.apply_with(&e, |_| Some(present.clone()));
            trigger(e, false)
        })
        .try_filter_map(|o| futures::future::ready(Ok(o)))
        .filter(no_errors)
    };
    // Every CiliumNetworkPolicy, once the API serves them: managed ones kept whole, the others by
    // name only (a Cilium deny cannot be re-opened, so other policies need no summary).
    let cilium_policies = {
        let mut served = ctx.cilium_served.subscribe();
        let (client, relisted_tx, ctx_for_cilium) = (client.clone(), relisted_tx.clone(), ctx.clone());
        stream::once(async move {
            let _ = served.wait_for(|served| *served).await;
        })
        .flat_map(move |()| {
            managed_objects::<CiliumNetworkPolicy>(ctx_for_cilium.clone(), client.clone(), relisted_tx.clone())
        })
        .try_filter_map(|o| futures::future::ready(Ok(o)))
        .filter(no_errors)
    };
    // Every RoleBinding: managed ones kept whole, the others in namespaces in scope by name only
    // (see Context).
    let bindings = managed_objects::<RoleBinding>(ctx.clone(), client, relisted_tx)
        .try_filter_map(|o| futures::future::ready(Ok(o)))
        .filter(no_errors);

    let mapper_ctx = ctx.clone();
    let in_scope = |ctx: &Arc<Context>| {
        let ctx = ctx.clone();
        move |ns: Option<String>| Scope::now(&ctx).queue(ns)
    };
    let (policy_scope, binding_scope, cilium_scope, pod_scope) =
        (in_scope(&ctx), in_scope(&ctx), in_scope(&ctx), in_scope(&ctx));
    // After a re-list and every hour, every namespace in scope (see runtime::scope).
    let everything = {
        let ctx = ctx.clone();
        futures::stream::select(relisted, every(RESYNC)).flat_map(move |()| stream::iter(Scope::now(&ctx).all()))
    };
    let run = Controller::for_stream(namespaces, ns_reader)
        .with_config(kube::runtime::controller::Config::default().concurrency(settings.concurrency))
        // Watch errors never reach the controller (each watch backs off on its own): kube-runtime's
        // controller backs off all its triggers on any error, which after an API server restart
        // (several watches answered 410 in turn) kept it deaf for tens of seconds.
        .trigger_backoff(WatchBackoff::default())
        .watches_stream(baselines, move |b| affected_namespaces(&mapper_ctx, &b))
        .watches_stream(policies, move |p: NetworkPolicy| policy_scope(p.namespace()))
        .watches_stream(bindings, move |b: RoleBinding| binding_scope(b.namespace()))
        .watches_stream(cilium_policies, move |p: CiliumNetworkPolicy| {
            cilium_scope(p.namespace())
        })
        .watches_stream(host_network_pods, move |p: PartialObjectMeta<Pod>| {
            pod_scope(p.namespace())
        })
        .reconcile_on(everything)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| {
            if let Err(e) = result {
                debug!(error = %e, "controller event");
            }
            futures::future::ready(())
        });
    (ctx, run)
}
