//! What the operator's caches hold per object, in heap bytes (an allocation-counting allocator):
//! `cargo run --release --example cache_sizes`. BENCHMARKS.md uses it to say what bounds memory.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::PartialObjectMeta;
use kube::runtime::watcher;
use kube_baseline::core::egress::EgressSummary;
use kube_baseline::runtime::index::NamespacedIndex;
use kube_baseline::runtime::interner::Interner;
use kube_baseline::runtime::managed::ManagedIndex;
use kube_baseline::runtime::namespaces::{CachedNamespace, Catalog};
use serde_json::json;

struct Counting;
static BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap bytes per item of `n` items made by `make`, kept alive together as a cache would.
fn per_item<T>(what: &str, n: usize, make: impl Fn(usize) -> T) {
    let before = BYTES.load(Ordering::Relaxed);
    let kept: Vec<T> = (0..n).map(make).collect();
    let after = BYTES.load(Ordering::Relaxed);
    println!("| {what} | {} |", (after - before) as usize / n);
    drop(kept);
}

fn main() {
    let meta = |name: &str| {
        json!({"name": name, "namespace": "team-a-0001", "uid": "7b6c2f8e-1111-2222-3333-444455556666",
               "resourceVersion": "123456", "creationTimestamp": "2026-11-28T18:00:00Z",
               "labels": {"app.kubernetes.io/managed-by": "kube-baseline", "kubebaseline.io/baseline": "aks"},
               "ownerReferences": [{"apiVersion": "kubebaseline.io/v1alpha1", "kind": "SecurityBaseline", "name": "aks",
                                    "uid": "7b6c2f8e-1111-2222-3333-444455556667", "controller": true}]})
    };
    let policy = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta("restrict-instance-metadata"),
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}, {"ipBlock": {"cidr": "::/0"}}, {"namespaceSelector": {}}]}]}});
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta("team-dev"),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "3f2504e0-4f89-11d3-9a0c-0305e82c3301"}]});
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "team-a-0001", "uid": "7b6c2f8e-1111-2222-3333-444455556666", "resourceVersion": "123456",
        "creationTimestamp": "2026-11-28T18:00:00Z",
        "labels": {"team": "a", "kubernetes.io/metadata.name": "team-a-0001",
                   "pod-security.kubernetes.io/enforce": "baseline", "pod-security.kubernetes.io/enforce-version": "latest",
                   "pod-security.kubernetes.io/warn": "restricted", "pod-security.kubernetes.io/warn-version": "latest"},
        "managedFields": [{"manager": "kube-baseline", "operation": "Apply", "apiVersion": "v1", "time": "2026-11-28T18:00:00Z",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {
                "f:pod-security.kubernetes.io/enforce": {}, "f:pod-security.kubernetes.io/enforce-version": {},
                "f:pod-security.kubernetes.io/warn": {}, "f:pod-security.kubernetes.io/warn-version": {}}}}}]}});
    let team_policy = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "allow-dns", "namespace": "team-a-0001"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
                 "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 53, "protocol": "UDP"}]}]}});

    let n = 10_000;
    let in_ns = |v: &serde_json::Value, i: usize| {
        let mut v = v.clone();
        v["metadata"]["namespace"] = json!(format!("team-{i:05}"));
        v["metadata"]["uid"] = json!(format!("7b6c2f8e-1111-2222-3333-{i:012}"));
        v
    };
    println!("| cached object | heap bytes each |\n|---|---|");
    per_item("managed NetworkPolicy, whole", n, |_| {
        Arc::new(serde_json::from_value::<NetworkPolicy>(policy.clone()).unwrap())
    });
    let policies = ManagedIndex::<NetworkPolicy>::default();
    per_index("managed NetworkPolicy in the managed cache (content shared)", n, |i| {
        let p: NetworkPolicy = serde_json::from_value(in_ns(&policy, i)).unwrap();
        policies.apply(&watcher::Event::Apply(p));
    });
    per_item("managed RoleBinding, whole", n, |_| {
        Arc::new(serde_json::from_value::<RoleBinding>(binding.clone()).unwrap())
    });
    let bindings = ManagedIndex::<RoleBinding>::default();
    per_index("managed RoleBinding in the managed cache (content shared)", n, |i| {
        let b: RoleBinding = serde_json::from_value(in_ns(&binding, i)).unwrap();
        bindings.apply(&watcher::Event::Apply(b));
    });
    per_item("namespace metadata as listed (own managedFields entry)", n, |_| {
        Arc::new(serde_json::from_value::<PartialObjectMeta<Namespace>>(namespace.clone()).unwrap())
    });
    let (_, writer) = kube::runtime::reflector::store::<CachedNamespace>();
    let catalog = Catalog::new(writer);
    let listed = |i: usize| {
        let mut ns = namespace.clone();
        ns["metadata"]["name"] = json!(format!("team-{i:05}"));
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(format!("team-{i:05}"));
        serde_json::from_value::<PartialObjectMeta<Namespace>>(ns).unwrap()
    };
    per_index(
        "namespace in the catalog, every namespace (label sets shared)",
        n,
        |i| {
            catalog.record(&watcher::Event::Apply(listed(i)));
        },
    );
    per_index(
        "… and in the controller's store, a namespace in scope (its key included)",
        n,
        |i| {
            let name = format!("team-{i:05}");
            catalog.admit(&name, &catalog.get(&name).unwrap());
        },
    );
    per_item("egress summary of a team's policy, whole", n, |_| {
        EgressSummary::of(&serde_json::from_value(team_policy.clone()).unwrap()).map(Arc::new)
    });
    let summaries = Interner::<EgressSummary, EgressSummary>::default();
    let egress = NamespacedIndex::<EgressSummary>::default();
    per_index("egress summary in its cache (equal summaries shared)", n, |i| {
        let p: NetworkPolicy = serde_json::from_value(in_ns(&team_policy, i)).unwrap();
        egress.apply_with(&watcher::Event::Apply(p), |p| {
            EgressSummary::of(p).map(|s| summaries.intern(s))
        });
    });
    let names = NamespacedIndex::<()>::default();
    let present = Arc::new(());
    per_index("an object's name in the names index", n, |i| {
        let p: NetworkPolicy = serde_json::from_value(in_ns(&team_policy, i)).unwrap();
        names.apply_with(&watcher::Event::Apply(p), |_| Some(present.clone()));
    });
}

/// Heap bytes per object of `n` objects added to a cache by `add` (the cache is kept).
fn per_index(what: &str, n: usize, add: impl Fn(usize)) {
    let before = BYTES.load(Ordering::Relaxed);
    (0..n).for_each(add);
    let after = BYTES.load(Ordering::Relaxed);
    println!("| {what} | {} |", (after - before) as usize / n);
}
