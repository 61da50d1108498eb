//! What goes from a namespace, and how: the removal half of one namespace's plan. An object a
//! known, writing baseline made and no baseline wants any more is deleted (released, when it
//! was adopted); what a baseline being deleted must release is released; what names a baseline
//! that does not exist is deleted once that is confirmed. Nothing else is touched. Pure: the
//! runtime's prune executes it.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use crate::api::{DeletionPolicy, Mode, SecurityBaseline};
use crate::core::desired::{ObjectKey, Plan};
use crate::core::objects::{self, BASELINE_LABEL, RELEASE_FINALIZER};

/// What happens to an object that goes, with the baseline it belonged to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposal {
    /// Labels, mark and ownerReference removed, content kept.
    Release(String),
    Delete(String),
    /// Deleted once the baseline (name, uid) is confirmed gone (the caches may lag a baseline
    /// just created).
    Orphan(String, String),
}

/// Whether `b` holds the release finalizer.
pub fn has_finalizer(b: &SecurityBaseline) -> bool {
    b.finalizers().iter().any(|f| f == RELEASE_FINALIZER)
}

/// Whether `b` is being deleted and still waits for the operator to release what it must.
pub fn releasing(b: &SecurityBaseline) -> bool {
    b.metadata.deletion_timestamp.is_some() && has_finalizer(b)
}

/// Whether `how` must wait: a metadata policy is deleted only once every metadata policy the
/// plan wants in the namespace is in place (`egress_settled`), so switching engines (a
/// NetworkPolicy for a CiliumNetworkPolicy, or back) writes the new object before the old one
/// goes and the endpoint is never open in between. A release keeps the content: it never waits.
pub fn waits(key: &ObjectKey, how: &Disposal, egress_settled: bool) -> bool {
    key.is_metadata_policy() && !egress_settled && !matches!(how, Disposal::Release(_))
}

/// What becomes of the managed object `key` (with `meta`) in a namespace whose plan is `plan`,
/// given the baselines the caches know by name. None: it stays.
pub fn disposal(
    key: &ObjectKey,
    meta: &ObjectMeta,
    plan: &Plan,
    known: &BTreeMap<String, Arc<SecurityBaseline>>,
) -> Option<Disposal> {
    let baseline = meta.labels.as_ref()?.get(BASELINE_LABEL)?;
    let owned_by = |b: &SecurityBaseline| {
        b.uid()
            .is_some_and(|uid| meta.owner_references.iter().flatten().any(|o| o.uid == uid))
    };
    let Some(b) = known.get(baseline) else {
        // Labelled for, and controlled by, a SecurityBaseline the caches do not know: owned by
        // nothing once that is confirmed, the garbage collector's to delete, which after an API
        // server restart can take minutes (its retries back off). The fence cannot refuse such
        // an object (no admission policy can say "some baseline exists"), so it goes at once.
        let owner = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.kind == "SecurityBaseline" && o.controller == Some(true) && &o.name == baseline)?;
        return objects::is_managed(meta).then(|| Disposal::Orphan(baseline.clone(), owner.uid.clone()));
    };
    // A baseline being deleted that holds the release finalizer: what it adopted (and, with
    // deletionPolicy Orphan, everything it made) is released before the finalizer goes.
    if releasing(b) && owned_by(b) && (b.spec.deletion_policy == DeletionPolicy::Orphan || objects::is_adopted(meta)) {
        return Some(Disposal::Release(baseline.clone()));
    }
    // Ours to prune: labelled for a known, writing baseline *and* owned by it (a copy of our
    // object made by someone else keeps the labels but not the ownerReference).
    let writing = b.spec.mode == Mode::Enforce && !plan.hands_off.contains(baseline);
    if writing && owned_by(b) && !plan.objects.contains_key(key) {
        return Some(if objects::is_adopted(meta) {
            Disposal::Release(baseline.clone())
        } else {
            Disposal::Delete(baseline.clone())
        });
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_deleting_a_metadata_policy_waits_for_its_replacement() {
        let np = ObjectKey::NetworkPolicy("p".into());
        let rb = ObjectKey::RoleBinding("r".into());
        let delete = Disposal::Delete("aks".into());
        assert!(waits(&np, &delete, false));
        assert!(!waits(&np, &delete, true));
        assert!(!waits(&np, &Disposal::Release("aks".into()), false));
        assert!(!waits(&rb, &delete, false));
    }

    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
    use k8s_openapi::jiff::Timestamp;

    fn baseline(name: &str, uid: &str) -> Arc<SecurityBaseline> {
        let mut b = SecurityBaseline::new(name, Default::default());
        b.metadata.uid = Some(uid.into());
        Arc::new(b)
    }

    fn made_by(name: &str, uid: &str) -> ObjectMeta {
        ObjectMeta {
            labels: Some(
                [
                    (
                        objects::MANAGED_BY_LABEL.to_string(),
                        objects::MANAGED_BY_VALUE.to_string(),
                    ),
                    (BASELINE_LABEL.to_string(), name.to_string()),
                ]
                .into(),
            ),
            owner_references: Some(vec![OwnerReference {
                api_version: "kubebaseline.io/v1alpha1".into(),
                kind: "SecurityBaseline".into(),
                name: name.into(),
                uid: uid.into(),
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..Default::default()
        }
    }

    fn known(bs: &[Arc<SecurityBaseline>]) -> BTreeMap<String, Arc<SecurityBaseline>> {
        bs.iter().map(|b| (b.name_any(), b.clone())).collect()
    }

    #[test]
    fn what_no_baseline_wants_goes_and_what_a_baseline_wants_stays() {
        let key = ObjectKey::NetworkPolicy("p".into());
        let aks = known(&[baseline("aks", "u1")]);
        let mut plan = Plan::default();
        assert_eq!(
            disposal(&key, &made_by("aks", "u1"), &plan, &aks),
            Some(Disposal::Delete("aks".into()))
        );
        let mut adopted = made_by("aks", "u1");
        objects::mark_adopted(&mut adopted);
        assert_eq!(
            disposal(&key, &adopted, &plan, &aks),
            Some(Disposal::Release("aks".into()))
        );
        // Hands off (Audit, invalid, being deleted without the finalizer): stays.
        plan.hands_off.insert("aks".into());
        assert_eq!(disposal(&key, &made_by("aks", "u1"), &plan, &aks), None);
        // A copy by someone else (labels, no ownerReference of that baseline): never ours.
        assert_eq!(
            disposal(&key, &made_by("aks", "other-uid"), &Plan::default(), &aks),
            None
        );
        // Not labelled at all: never ours.
        assert_eq!(disposal(&key, &ObjectMeta::default(), &Plan::default(), &aks), None);
    }

    #[test]
    fn a_baseline_being_deleted_releases_with_orphan_and_a_missing_one_is_confirmed_first() {
        let key = ObjectKey::CiliumPolicy("p".into());
        let mut b = (*baseline("aks", "u1")).clone();
        b.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        b.metadata.finalizers = Some(vec![RELEASE_FINALIZER.into()]);
        b.spec.deletion_policy = DeletionPolicy::Orphan;
        let plan = Plan {
            hands_off: ["aks".to_string()].into(),
            ..Default::default()
        };
        let aks = known(&[Arc::new(b)]);
        assert_eq!(
            disposal(&key, &made_by("aks", "u1"), &plan, &aks),
            Some(Disposal::Release("aks".into()))
        );
        assert_eq!(
            disposal(&key, &made_by("gone", "u9"), &plan, &aks),
            Some(Disposal::Orphan("gone".into(), "u9".into()))
        );
    }
}
