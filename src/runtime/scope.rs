//! Which namespaces a reconcile can change anything in. Everywhere else it computes an empty
//! plan, prunes nothing and records nothing, so the controller neither queues it nor keeps it in
//! its store (the catalog of `runtime::namespaces` knows it, compactly): a cluster of 30,000
//! namespaces of which baselines select 10,000 queues 10,000 reconciles after a start, a
//! re-list or the hourly resync, not 30,000, and kube-runtime's queue (whose tables keep their
//! largest size) and store are sized by the namespaces in scope.
//!
//! A namespace is in scope when a valid baseline selects it, when it holds an object this
//! operator manages (its own, adopted, or one naming a baseline that does not exist), when it
//! carries a label this operator owns or the guard label, or when a baseline's outcome is
//! recorded for it (its reconcile then records the departure). It is put in the store when it
//! comes into scope: by its own update, by a baseline's change that selects it, by an event of
//! an object in it, and after every re-list. A namespace not known yet is queued as it is: the
//! runner skips it until the store has it, and the re-list that fills the catalog judges it.

use std::cell::OnceCell;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::core::desired::{self, NamespaceFacts};
use crate::core::objects;
use crate::runtime::context::{Context, Selecting};
use crate::runtime::namespaces::{CachedNamespace, Known};

/// The caches as they are now, to judge one namespace or many.
pub struct Scope<'a> {
    ctx: &'a Context,
    selecting: OnceCell<Selecting>,
}

impl<'a> Scope<'a> {
    pub fn now(ctx: &'a Context) -> Self {
        Self {
            ctx,
            selecting: OnceCell::new(),
        }
    }

    /// Whether a reconcile of namespace `name` can change anything (see the module's
    /// documentation).
    pub fn holds(&self, name: &str, known: &Known) -> bool {
        known.carries_operator_labels() || self.holds_managed(name) || self.recorded(name) || self.selected(name, known)
    }

    /// The namespace `ns` names, to queue (put in the controller's store first), unless it is
    /// known and out of scope.
    pub fn queue(&self, ns: Option<String>) -> Option<ObjectRef<CachedNamespace>> {
        let name = ns?;
        match self.ctx.catalog.get(&name) {
            Some(known) if self.holds(&name, &known) => Some(self.ctx.catalog.admit(&name, &known)),
            Some(_) => None,
            None => Some(ObjectRef::new(&name)),
        }
    }

    /// Every namespace in scope, put in the controller's store.
    pub fn all(&self) -> Vec<ObjectRef<CachedNamespace>> {
        self.ctx
            .catalog
            .all()
            .iter()
            .filter(|(name, known)| self.holds(name, known))
            .map(|(name, known)| self.ctx.catalog.admit(name, known))
            .collect()
    }

    fn holds_managed(&self, ns: &str) -> bool {
        let ctx = self.ctx;
        ctx.policies.holds_any(ns) || ctx.bindings.holds_any(ns) || ctx.cilium_policies.holds_any(ns)
    }

    fn recorded(&self, ns: &str) -> bool {
        let results = self.ctx.results.lock().unwrap();
        results.outcomes.values().any(|o| o.get(ns).is_some())
    }

    fn selected(&self, name: &str, known: &Known) -> bool {
        let selecting = self.selecting.get_or_init(|| self.ctx.selecting());
        if selecting.is_empty() {
            return false;
        }
        let facts = NamespaceFacts {
            name: name.to_string(),
            labels: objects::selectable_labels(&known.meta(name)),
            terminating: false,
        };
        selecting.iter().any(|(b, v)| desired::selects(b, v, &facts))
    }
}

/// Whether namespace `ns` is known and in scope now.
pub fn is_in_scope(ctx: &Context, ns: Option<String>) -> bool {
    let Some(name) = ns else { return false };
    ctx.catalog
        .get(&name)
        .is_some_and(|known| Scope::now(ctx).holds(&name, &known))
}

/// One event of the watch of every namespace: the catalog records it, the controller's store
/// gets or loses the namespace by its scope (after a re-list, the store is filled anew with
/// the namespaces in scope). Returns the namespace to queue: an update of one in scope.
pub fn namespace_event(ctx: &Context, event: &watcher::Event<PartialObjectMeta<Namespace>>) -> Option<CachedNamespace> {
    let recorded = ctx.catalog.record(event);
    match (event, recorded) {
        (watcher::Event::Apply(o), Some((name, Some(known)))) => {
            let queued = if Scope::now(ctx).holds(&name, &known) {
                ctx.catalog.admit(&name, &known);
                Some(CachedNamespace::of(&name, &known))
            } else {
                ctx.catalog.evict(&name);
                None
            };
            // Once the store holds a namespace at a version, a label write up to it is no
            // longer "just written".
            ctx.label_write_seen(&name, o.metadata.resource_version.as_deref());
            queued
        }
        (watcher::Event::Delete(_), Some((name, _))) => {
            ctx.catalog.evict(&name);
            None
        }
        (watcher::Event::InitDone, _) => {
            let scope = Scope::now(ctx);
            ctx.catalog.restock(|name, known| scope.holds(name, known));
            None
        }
        _ => None,
    }
}
