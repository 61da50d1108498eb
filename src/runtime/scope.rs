//! Which namespaces a reconcile can change anything in. Everywhere else it computes an empty
//! plan, prunes nothing and records nothing, so the controller does not queue it: a cluster of
//! 30,000 namespaces of which baselines select 10,000 queues 10,000 reconciles after a start, a
//! re-list or the hourly resync, not 30,000, and kube-runtime's queue (whose tables keep their
//! largest size) is sized by the namespaces in scope.
//!
//! A namespace is in scope when a valid baseline selects it, when it holds an object this
//! operator manages (its own, adopted, or one naming a baseline that does not exist), when it
//! carries a label this operator owns or the guard label, or when a baseline's outcome is
//! recorded for it (its reconcile then records the departure). A namespace the cache does not
//! hold yet is in scope: the runner skips it until the cache has it, and the re-list that
//! fills the cache queues it again, judged then.

use std::cell::OnceCell;
use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::api::SecurityBaseline;
use crate::core::desired::{self, NamespaceFacts, ValidBaseline};
use crate::core::objects;
use crate::runtime::context::Context;
use crate::runtime::namespaces::CachedNamespace;

/// The caches as they are now, to judge one namespace or many (the baselines are validated once).
pub struct Scope<'a> {
    ctx: &'a Context,
    selecting: OnceCell<Vec<(Arc<SecurityBaseline>, ValidBaseline)>>,
}

impl<'a> Scope<'a> {
    pub fn now(ctx: &'a Context) -> Self {
        Self {
            ctx,
            selecting: OnceCell::new(),
        }
    }

    /// Whether a reconcile of `ns` can change anything (see the module's documentation).
    pub fn holds(&self, ns: &CachedNamespace) -> bool {
        let name = ns.name_any();
        ns.carries_operator_labels() || self.holds_managed(&name) || self.recorded(&name) || self.selected(ns, name)
    }

    /// The namespace `ns` names, to queue, unless it is cached and out of scope.
    pub fn queue(&self, ns: Option<String>) -> Option<ObjectRef<CachedNamespace>> {
        let key = ObjectRef::new(&ns?);
        match self.ctx.namespaces.get(&key) {
            Some(cached) if !self.holds(&cached) => None,
            _ => Some(key),
        }
    }

    /// Every cached namespace in scope.
    pub fn all(&self) -> Vec<ObjectRef<CachedNamespace>> {
        self.ctx
            .namespaces
            .state()
            .iter()
            .filter(|ns| self.holds(ns))
            .map(|ns| ObjectRef::new(&ns.name_any()))
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

    fn selected(&self, ns: &CachedNamespace, name: String) -> bool {
        let selecting = self.selecting.get_or_init(|| {
            self.ctx
                .baselines
                .state()
                .into_iter()
                .filter_map(|b| desired::validate(&b).ok().map(|v| (b, v)))
                .collect()
        });
        if selecting.is_empty() {
            return false;
        }
        let facts = NamespaceFacts {
            name,
            labels: objects::selectable_labels(&ns.meta_with_labels()),
            terminating: false,
        };
        selecting.iter().any(|(b, v)| desired::selects(b, v, &facts))
    }
}
