use super::*;
use crate::api::{ActiveExemption, Problem};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

fn outcome(problems: Vec<Problem>, exemption: Option<ActiveExemption>) -> NsOutcome {
    let mut o = NsOutcome::from_problems(problems, exemption);
    o.wanted = std::sync::Arc::new(vec![
        ObjectKey::NetworkPolicy("restrict-instance-metadata".into()),
        ObjectKey::RoleBinding("team-dev".into()),
    ]);
    o
}

/// The report of namespace `a` with one baseline, `aks`, in `mode`.
fn report_of(o: &NsOutcome, mode: Mode, previous: Option<&Value>, now: Timestamp) -> Value {
    let list = [BaselineOutcome {
        baseline: "aks",
        mode,
        outcome: o,
    }];
    namespace_report("a", &list, previous, now).unwrap()
}

fn problem(object: &str, reason: &str) -> Problem {
    Problem {
        namespace: "a".into(),
        object: object.into(),
        reason: reason.into(),
        message: "m".into(),
    }
}

fn results_of(report: &Value) -> Vec<(String, String, String)> {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["rule"].as_str().unwrap().to_string(),
                r["result"].as_str().unwrap().to_string(),
                r["resources"][0]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_compliant_namespace_reports_a_pass_per_object() {
    let o = outcome(vec![], None);
    let report = report_of(&o, Mode::Enforce, None, Timestamp::UNIX_EPOCH);
    assert_eq!(report["kind"], "PolicyReport");
    assert_eq!(report["metadata"]["namespace"], "a");
    assert_eq!(report["summary"]["pass"], 2);
    assert_eq!(report["summary"]["fail"], 0);
    assert!(results_of(&report).iter().all(|(_, r, _)| r == "pass"));
}

#[test]
fn drift_fails_the_object_and_a_bypass_fails_the_policy_that_opens_the_address() {
    let o = outcome(
        vec![
            problem("RoleBinding/team-dev", "Drift"),
            problem("NetworkPolicy/allow-all", "Bypassed"),
        ],
        None,
    );
    let report = report_of(&o, Mode::Audit, None, Timestamp::UNIX_EPOCH);
    let results = results_of(&report);
    assert!(results.contains(&("roleBindings".into(), "fail".into(), "team-dev".into())));
    assert!(results.contains(&("metadataEgress".into(), "fail".into(), "allow-all".into())));
    assert!(results.contains(&(
        "metadataEgress".into(),
        "pass".into(),
        "restrict-instance-metadata".into()
    )));
    assert_eq!(report["summary"]["fail"], 2);
}

#[test]
fn an_exempted_control_is_skipped_until_its_expiry() {
    let ex = ActiveExemption {
        namespace: "a".into(),
        controls: vec![Control::MetadataEgress],
        expires: Time(Timestamp::from_second(2_000_000_000).unwrap()),
    };
    let mut o = outcome(vec![], Some(ex));
    std::sync::Arc::make_mut(&mut o.wanted).retain(|k| !matches!(k, ObjectKey::NetworkPolicy(_)));
    let report = report_of(&o, Mode::Enforce, None, Timestamp::UNIX_EPOCH);
    assert!(results_of(&report).contains(&("metadataEgress".into(), "skip".into(), "a".into())));
    assert_eq!(report["summary"]["skip"], 1);
}

#[test]
fn an_unchanged_result_keeps_its_timestamp_so_the_report_is_not_rewritten() {
    let o = outcome(vec![], None);
    let (at_100, at_999) = (
        Timestamp::from_second(100).unwrap(),
        Timestamp::from_second(999).unwrap(),
    );
    let first = report_of(&o, Mode::Enforce, None, at_100);
    let again = report_of(&o, Mode::Enforce, Some(&first), at_999);
    assert!(same(&first, &again));
    let drifted = outcome(vec![problem("RoleBinding/team-dev", "Drift")], None);
    let changed = report_of(&drifted, Mode::Enforce, Some(&first), at_999);
    assert!(!same(&first, &changed));
    let stamps: Vec<i64> = changed["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["timestamp"]["seconds"].as_i64().unwrap())
        .collect();
    assert!(
        stamps.contains(&100) && stamps.contains(&999),
        "the unchanged result keeps 100: {stamps:?}"
    );
}

#[test]
fn no_selecting_baseline_means_no_report() {
    assert!(namespace_report("a", &[], None, Timestamp::UNIX_EPOCH).is_none());
}

#[test]
fn the_cluster_summary_has_one_result_per_baseline_whatever_the_namespace_count() {
    let mut counts = BTreeMap::new();
    counts.insert(
        "aks".to_string(),
        BaselineCounts {
            mode: Some(Mode::Enforce),
            selected: 10_000,
            complying: 9_998,
            by_state: BTreeMap::from([("compliant".into(), 9_998), ("drifted".into(), 2)]),
            failing: vec!["x".into(), "y".into()],
        },
    );
    let report = cluster_report(&counts, None, Timestamp::UNIX_EPOCH);
    assert_eq!(report["results"].as_array().unwrap().len(), 1);
    assert_eq!(report["results"][0]["result"], "fail");
    assert_eq!(
        report["results"][0]["message"],
        "9998 of 10000 selected namespaces comply; not: x, y"
    );
}

#[test]
fn the_metadata_results_name_the_engine_their_policy_is_written_for() {
    let mut o = outcome(vec![], None);
    let engine_of = |report: &Value, rule: &str| -> Vec<Option<String>> {
        report["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["rule"] == rule)
            .map(|r| r["properties"]["engine"].as_str().map(str::to_string))
            .collect()
    };
    let report = report_of(&o, Mode::Enforce, None, Timestamp::UNIX_EPOCH);
    assert_eq!(
        engine_of(&report, "metadataEgress"),
        vec![Some("NetworkPolicy".to_string())]
    );
    assert_eq!(engine_of(&report, "roleBindings"), vec![None]);
    o.wanted = std::sync::Arc::new(vec![ObjectKey::CiliumPolicy("restrict-instance-metadata".into())]);
    let report = report_of(&o, Mode::Enforce, None, Timestamp::UNIX_EPOCH);
    assert_eq!(engine_of(&report, "metadataEgress"), vec![Some("Cilium".to_string())]);
    assert_eq!(report["results"][0]["resources"][0]["kind"], "CiliumNetworkPolicy");
    assert_eq!(report["results"][0]["resources"][0]["apiVersion"], "cilium.io/v2");
}
