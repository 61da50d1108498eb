use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;
static BYTES: AtomicIsize = AtomicIsize::new(0);
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        BYTES.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        BYTES.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}
#[global_allocator]
static A: Counting = Counting;

fn measure<T>(what: &str, n: usize, f: impl Fn(usize) -> T) -> Vec<T> {
    let before = BYTES.load(Ordering::Relaxed);
    let v: Vec<T> = (0..n).map(f).collect();
    let after = BYTES.load(Ordering::Relaxed);
    println!("{what}: {} bytes each", (after - before) as usize / n);
    v
}

fn main() {
    let np = serde_json::json!({"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"restrict-instance-metadata","namespace":"bench-5a53fd44404-abcdef","uid":"7b6c2f8e-1111-2222-3333-444455556666","resourceVersion":"123456","generation":1,"creationTimestamp":"2026-11-28T18:00:00Z","labels":{"app.kubernetes.io/managed-by":"kube-baseline","kubebaseline.io/baseline":"aks-bench-5a53fd44404"},"ownerReferences":[{"apiVersion":"kubebaseline.io/v1alpha1","kind":"SecurityBaseline","name":"aks-bench-5a53fd44404","uid":"7b6c2f8e-1111-2222-3333-444455556667","controller":true}]},"spec":{"podSelector":{},"policyTypes":["Egress"],"egress":[{"to":[{"ipBlock":{"cidr":"0.0.0.0/0","except":["169.254.169.254/32"]}},{"ipBlock":{"cidr":"::/0"}},{"namespaceSelector":{}}]}]}});
    let rb = serde_json::json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"team-dev","namespace":"bench-5a53fd44404-abcdef","uid":"7b6c2f8e-1111-2222-3333-444455556666","resourceVersion":"123456","creationTimestamp":"2026-11-28T18:00:00Z","labels":{"app.kubernetes.io/managed-by":"kube-baseline","kubebaseline.io/baseline":"aks-bench-5a53fd44404"},"ownerReferences":[{"apiVersion":"kubebaseline.io/v1alpha1","kind":"SecurityBaseline","name":"aks-bench-5a53fd44404","uid":"7b6c2f8e-1111-2222-3333-444455556667","controller":true}]},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"edit"},"subjects":[{"apiGroup":"rbac.authorization.k8s.io","kind":"Group","name":"3f2504e0-4f89-11d3-9a0c-0305e82c3301"}]});
    let ns = serde_json::json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"bench-5a53fd44404-abcdef","uid":"7b6c2f8e-1111-2222-3333-444455556666","resourceVersion":"123456","creationTimestamp":"2026-11-28T18:00:00Z","labels":{"e2e.kubebaseline.io/scenario":"bench-5a53fd44404","kubernetes.io/metadata.name":"bench-5a53fd44404-abcdef","pod-security.kubernetes.io/enforce":"baseline","pod-security.kubernetes.io/enforce-version":"latest","pod-security.kubernetes.io/warn":"restricted","pod-security.kubernetes.io/warn-version":"latest"},"managedFields":[{"manager":"kube-baseline","operation":"Apply","apiVersion":"v1","time":"2026-11-28T18:00:00Z","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{"f:pod-security.kubernetes.io/enforce":{},"f:pod-security.kubernetes.io/enforce-version":{},"f:pod-security.kubernetes.io/warn":{},"f:pod-security.kubernetes.io/warn-version":{}}}}}]}});
    let foreign = serde_json::json!({"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"allow-dns","namespace":"bench-5a53fd44404-abcdef"},"spec":{"podSelector":{"matchLabels":{"app":"web"}},"policyTypes":["Egress"],"egress":[{"to":[{"ipBlock":{"cidr":"10.0.0.0/8"}}],"ports":[{"port":53,"protocol":"UDP"}]}]}});
    let n = 10_000;
    let _a = measure("NetworkPolicy (Arc)", n, |_| {
        Arc::new(serde_json::from_value::<k8s_openapi::api::networking::v1::NetworkPolicy>(np.clone()).unwrap())
    });
    let _b = measure("RoleBinding (Arc)", n, |_| {
        Arc::new(serde_json::from_value::<k8s_openapi::api::rbac::v1::RoleBinding>(rb.clone()).unwrap())
    });
    let _c = measure("Namespace PartialObjectMeta (Arc)", n, |_| {
        Arc::new(
            serde_json::from_value::<kube::api::PartialObjectMeta<k8s_openapi::api::core::v1::Namespace>>(ns.clone())
                .unwrap(),
        )
    });
    let mut bare = ns.clone();
    bare["metadata"].as_object_mut().unwrap().remove("managedFields");
    let _c2 = measure("Namespace without managedFields", n, |_| {
        Arc::new(
            serde_json::from_value::<kube::api::PartialObjectMeta<k8s_openapi::api::core::v1::Namespace>>(bare.clone())
                .unwrap(),
        )
    });
    bare["metadata"].as_object_mut().unwrap().remove("uid");
    bare["metadata"].as_object_mut().unwrap().remove("creationTimestamp");
    let _c3 = measure("Namespace without managedFields, uid, creationTimestamp", n, |_| {
        Arc::new(
            serde_json::from_value::<kube::api::PartialObjectMeta<k8s_openapi::api::core::v1::Namespace>>(bare.clone())
                .unwrap(),
        )
    });
    let _d = measure("EgressSummary of a foreign policy", n, |_| {
        kube_baseline::core::egress::EgressSummary::of(&serde_json::from_value(foreign.clone()).unwrap()).map(Arc::new)
    });
    let _e = measure("String name", n, |i| format!("bench-5a53fd44404-{i:06}"));
}
