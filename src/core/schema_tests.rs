//! Unit tests of offline admission (`schema.rs`). The messages are the API server's, copied from
//! what kube-apiserver 1.36 answered to the same documents (e2e/tests/validate.rs checks the
//! whole corpus against it).

use super::*;
use serde_json::json;

const GROUP_A: &str = "3f2504e0-4f89-11d3-9a0c-0305e82c3301";

fn doc(spec: Value) -> Value {
    json!({"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "aks"}, "spec": spec})
}

/// `field: message` of every admission error.
fn errors(doc: &Value) -> Vec<String> {
    match admit(doc) {
        Ok(_) => vec![],
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

const RULES_NOT_CHECKED: &str = "some validation rules were not checked because the object was invalid; correct the \
                                 existing errors to complete validation";

#[test]
fn every_crd_rule_is_implemented() {
    fn walk(schema: &Value, path: &str, missing: &mut Vec<String>) {
        for rule in schema["x-kubernetes-validations"].as_array().into_iter().flatten() {
            let text = rule["rule"].as_str().unwrap();
            if cel::implementation(text).is_none() {
                missing.push(format!("{path}: {text}"));
            }
            assert!(rule["message"].is_string(), "{path}: rule {text:?} has no message");
        }
        for (key, s) in schema["properties"].as_object().into_iter().flatten() {
            walk(s, &format!("{path}.{key}"), missing);
        }
        walk_opt(&schema["items"], &format!("{path}[]"), missing);
        walk_opt(&schema["additionalProperties"], &format!("{path}.*"), missing);
    }
    fn walk_opt(schema: &Value, path: &str, missing: &mut Vec<String>) {
        if schema.is_object() {
            walk(schema, path, missing);
        }
    }
    let mut missing = Vec::new();
    walk(root_schema(), "", &mut missing);
    assert!(
        missing.is_empty(),
        "CRD rules without an implementation in core/cel.rs: {missing:#?}"
    );
    // And no implementation outlives its rule.
    let text = serde_json::to_string(root_schema()).unwrap();
    for (rule, _) in cel::RULES {
        assert!(
            text.contains(&serde_json::to_string(rule).unwrap()),
            "cel::RULES has {rule:?}, which the CRD no longer has"
        );
    }
}

#[test]
fn the_sample_baseline_is_valid() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/samples/aks-default.yaml")).unwrap();
    let sample: Value = serde_saphyr::from_str(&text).unwrap();
    let report = check(&sample);
    assert!(report.is_valid(), "{:?} {:?}", report.admission, report.operator);
    assert_eq!(report.baseline.unwrap().metadata.name.as_deref(), Some("aks-default"));
}

#[test]
fn defaults_are_applied_before_the_rules() {
    let object = admit(&doc(json!({"metadataEgress": {}}))).unwrap();
    assert_eq!(object["spec"]["mode"], "Enforce");
    assert_eq!(object["spec"]["groupFormat"], "Guid");
    assert_eq!(
        object["spec"]["metadataEgress"],
        json!({"policyName": "restrict-instance-metadata", "blockedCIDRs": ["169.254.169.254/32"]}),
        "no ipFamilies: the cluster's are rendered"
    );
}

#[test]
fn nulls_are_dropped_where_not_nullable_and_then_defaulted_or_required() {
    let object = admit(&doc(json!({"mode": null, "metadataEgress": null}))).unwrap();
    assert_eq!(object["spec"]["mode"], "Enforce");
    assert!(object["spec"]["metadataEgress"].is_null());
    // A nullable enum refuses null all the same, though the CRD lists it.
    assert_eq!(
        errors(&doc(json!({"admission": null}))),
        [
            r#"spec.admission: Unsupported value: null: supported values: "Deny", "Warn", "Off", "null""#,
            RULES_NOT_CHECKED
        ]
    );
    let exemption =
        json!({"namespace": "a", "controls": ["podSecurity"], "reason": null, "expires": "2027-01-31T00:00:00Z"});
    assert_eq!(
        errors(&doc(json!({"exemptions": [exemption]}))),
        ["spec.exemptions[0].reason: Required value", RULES_NOT_CHECKED]
    );
}

#[test]
fn unknown_fields_are_errors_and_stop_validation() {
    let mut d = doc(
        json!({"mode": "Foo", "foo": 1, "roleBindings": [{"name": "a", "clusterRole": "edit", "groups": [GROUP_A], "q": 1}]}),
    );
    d["metadata"]["foo"] = json!(1);
    d["extra"] = json!(true);
    assert_eq!(
        errors(&d),
        [
            "extra: unknown field",
            "metadata.foo: unknown field",
            "spec.foo: unknown field",
            "spec.roleBindings[0].q: unknown field"
        ]
    );
}

#[test]
fn enums_types_and_patterns_are_worded_like_the_api_server() {
    let spec = json!({
        "mode": "Foo",
        "groupFormat": 3,
        "excludedNamespaces": ["B"],
        "podSecurity": {"enforce": "foo", "version": "v2"},
    });
    let mut got = errors(&doc(spec));
    got.sort();
    assert_eq!(
        got,
        [
            "some validation rules were not checked because the object was invalid; correct the existing errors to \
             complete validation",
            r#"spec.excludedNamespaces[0]: Invalid value: "B": spec.excludedNamespaces[0] in body should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'"#,
            r#"spec.groupFormat: Invalid value: "integer": spec.groupFormat in body must be of type string: "integer""#,
            r#"spec.groupFormat: Unsupported value: 3: supported values: "Guid", "Any""#,
            r#"spec.mode: Unsupported value: "Foo": supported values: "Enforce", "Audit""#,
            r#"spec.podSecurity.enforce: Unsupported value: "foo": supported values: "privileged", "baseline", "restricted", "null""#,
            r#"spec.podSecurity.version: Invalid value: "v2": spec.podSecurity.version in body should match '^(latest|v1\.[0-9]+)$'"#,
        ]
    );
}

#[test]
fn lengths_and_item_counts() {
    let long = "a".repeat(64);
    let spec = json!({
        "excludedNamespaces": [long],
        "metadataEgress": {"ipFamilies": ["IPv4", "IPv6", "IPv4"]},
        "exemptions": [{"namespace": "a", "controls": ["podSecurity"], "reason": "", "expires": "2027-01-31T00:00:00Z"}],
        "roleBindings": [{"name": "a", "clusterRole": "edit", "groups": []}],
    });
    assert_eq!(
        errors(&doc(spec)),
        [
            "spec.excludedNamespaces[0]: Too long: may not be more than 63 bytes",
            r#"spec.exemptions[0].reason: Invalid value: "": spec.exemptions[0].reason in body should be at least 1 chars long"#,
            "spec.metadataEgress.ipFamilies: Too many: 3: must have at most 2 items",
            "spec.roleBindings[0].groups: Invalid value: 0: spec.roleBindings[0].groups in body should have at least 1 items",
            r#"spec.metadataEgress.ipFamilies[2]: Duplicate value: "IPv4""#,
            RULES_NOT_CHECKED,
        ]
    );
}

#[test]
fn sets_and_maps_reject_duplicates_without_blocking_the_rules() {
    let rb = |name: &str| json!({"name": name, "clusterRole": "edit", "groups": ["developers"]});
    let spec = json!({"excludedNamespaces": ["a", "a"], "roleBindings": [rb("x"), rb("x")]});
    assert_eq!(
        errors(&doc(spec)),
        [
            r#"spec.excludedNamespaces[1]: Duplicate value: "a""#,
            r#"spec.roleBindings[1]: Duplicate value: {"name":"x"}"#,
            "spec: Invalid value: roleBindings[].groups must be Microsoft Entra ID group object IDs (GUIDs such as \
             3f2504e0-4f89-11d3-9a0c-0305e82c3301); set groupFormat: Any to allow other OIDC group names",
        ]
    );
}

#[test]
fn cel_rules_report_the_crd_message_at_their_field() {
    let spec = json!({"metadataEgress": {"blockedCIDRs": ["10.0.0.1/8"], "ipFamilies": ["IPv6"]}});
    assert_eq!(
        errors(&doc(spec)),
        [
            "spec.metadataEgress.blockedCIDRs: Invalid value: blockedCIDRs must be canonical IPv4 or IPv6 CIDRs with \
             a non-zero prefix, such as 169.254.169.254/32 or fd00:ec2::254/128",
            "spec.metadataEgress.ipFamilies: Invalid value: ipFamilies must contain IPv4: without it pods would lose \
             all IPv4 egress",
        ]
    );
}

#[test]
fn date_times_are_rfc3339() {
    for ok in [
        "2027-01-31T00:00:00Z",
        "2027-01-31t00:00:00z",
        "2027-01-31T00:00:00.5+01:00",
        "2028-02-29T23:59:59-12:00",
    ] {
        assert!(is_date_time(ok), "{ok}");
    }
    for bad in [
        "2027-01-31T00:00:00",
        "2027-01-31",
        "2027-01-31T00:00Z",
        "2027-01-31 00:00:00Z",
        "2027-02-30T00:00:00Z",
        "2027-01-31T25:00:00Z",
        "2027-02-29T00:00:00Z",
        "not-a-date",
    ] {
        assert!(!is_date_time(bad), "{bad}");
    }
    let spec = json!({"exemptions": [{"namespace": "a", "controls": ["podSecurity"], "reason": "r", "expires": "2027-01-31"}]});
    assert_eq!(
        errors(&doc(spec))[0],
        r#"spec.exemptions[0].expires: Invalid value: "2027-01-31": spec.exemptions[0].expires in body must be of type date-time: "2027-01-31""#
    );
}

#[test]
fn metadata_name_is_required_and_a_dns_subdomain() {
    let mut d = doc(json!({}));
    d["metadata"] = json!({});
    assert_eq!(
        errors(&d),
        [
            "metadata.name: Required value: name or generateName is required",
            RULES_NOT_CHECKED
        ]
    );
    d["metadata"]["name"] = json!("Bad_Name");
    assert!(errors(&d)[0].starts_with(
        r#"metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist of lower case"#
    ));
    d["metadata"] = json!({"name": "ok", "labels": {"a b": "c"}});
    assert!(errors(&d)[0].starts_with(r#"metadata.labels: Invalid value: "a b": name part must consist of"#));
}

#[test]
fn a_missing_spec_is_required() {
    let mut d = doc(json!({}));
    d.as_object_mut().unwrap().remove("spec");
    assert_eq!(errors(&d), ["spec: Required value", RULES_NOT_CHECKED]);
}

#[test]
fn status_is_ignored_on_create_but_its_unknown_fields_are_not() {
    let mut d = doc(json!({}));
    d["status"] = json!({"repairs": "many"});
    assert_eq!(errors(&d), Vec::<String>::new());
    d["status"] = json!({"zz": 1});
    assert_eq!(errors(&d), ["status.zz: unknown field"]);
}

#[test]
fn a_document_of_another_kind_says_what_it_is() {
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {}});
    let got = errors(&cm);
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with(
            r#"kind: Invalid value: "ConfigMap": not a SecurityBaseline: this document is a ConfigMap (v1)"#
        ),
        "{got:?}"
    );
    let mut wrong_version = doc(json!({}));
    wrong_version["apiVersion"] = json!("kubebaseline.io/v1");
    assert_eq!(
        errors(&wrong_version),
        [r#"apiVersion: Unsupported value: "kubebaseline.io/v1": supported values: "kubebaseline.io/v1alpha1""#]
    );
    assert!(errors(&json!(["a"]))[0].starts_with("not a SecurityBaseline: the document is a YAML array"));
}

#[test]
fn operator_checks_run_after_admission_and_are_reported_apart() {
    let selector = json!({"matchExpressions": [{"key": "team", "operator": "Sometimes", "values": ["a"]}]});
    let report = check(&doc(json!({"namespaceSelector": selector})));
    assert!(report.admission.is_empty());
    assert_eq!(report.operator.len(), 1);
    assert_eq!(report.operator[0].field, "spec.namespaceSelector");
    assert_eq!(report.operator[0].reason, Reason::Operator);
    assert!(report.baseline.is_none());

    let report = check(&doc(
        json!({"roleBindings": [{"name": "a", "clusterRole": "edit", "groups": [GROUP_A]}]}),
    ));
    assert!(report.is_valid());
    assert_eq!(report.baseline.unwrap().spec.role_bindings[0].groups, [GROUP_A]);
}
