//! Unit tests of `validate` (`validate.rs`).

use super::*;

fn write(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const GOOD: &str = "apiVersion: kubebaseline.io/v1alpha1\nkind: SecurityBaseline\nmetadata: {name: good}\nspec: {}\n";

/// What `validate` reports for one file or directory.
fn validated(path: &std::path::Path, checks: &Checks) -> Vec<DocumentResult> {
    validate_paths(&[path.to_path_buf()], checks).unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kube-baseline-validate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn errors_carry_file_and_document_and_valid_files_load() {
    let dir = temp_dir("locations");
    let good = write(&dir, "a.yaml", GOOD);
    write(
        &dir,
        "b.yaml",
        &format!(
            "{GOOD}---\napiVersion: kubebaseline.io/v1alpha1\nkind: SecurityBaseline\nmetadata: {{name: b}}\nspec: {{mode: Foo}}\n---\nnot: [yaml\n"
        ),
    );
    let results = validated(&dir, &Checks::default());
    let locations: Vec<(String, bool)> = results
        .iter()
        .map(|r| {
            (
                r.location.trim_start_matches(dir.to_str().unwrap()).to_string(),
                r.valid,
            )
        })
        .collect();
    assert_eq!(
        locations,
        [
            ("/a.yaml:1".to_string(), true),
            ("/b.yaml:1".to_string(), true),
            ("/b.yaml:2".to_string(), false),
            ("/b.yaml:3".to_string(), false)
        ]
    );
    let lines: Vec<String> = results.iter().flat_map(DocumentResult::lines).collect();
    // file:line:column of the field itself (the second document starts on line 6).
    assert!(
        lines[0].ends_with(r#"b.yaml:9:8: spec.mode: Unsupported value: "Foo": supported values: "Enforce", "Audit""#),
        "{lines:?}"
    );
    assert!(
        lines.last().unwrap().contains("b.yaml:11:1: not valid YAML (line 11)"),
        "{lines:?}"
    );
    assert_eq!(results[3].errors[0].source, Source::Yaml);
    assert_eq!(
        summary(&results),
        "4 documents: 2 valid, 2 invalid (2 admission errors, 1 YAML error)"
    );

    assert_eq!(
        load_baselines(&[good]).unwrap()[0].metadata.name.as_deref(),
        Some("good")
    );
    let err = load_baselines(std::slice::from_ref(&dir)).unwrap_err();
    assert_eq!(err.messages.len(), lines.len());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn operator_errors_are_marked_as_such() {
    let dir = temp_dir("operator");
    let path = write(
        &dir,
        "sel.yaml",
        "apiVersion: kubebaseline.io/v1alpha1\nkind: SecurityBaseline\nmetadata: {name: s}\nspec:\n  namespaceSelector:\n    matchExpressions: [{key: a, operator: Maybe}]\n",
    );
    let results = validate_paths(&[path], &Checks::default()).unwrap();
    assert_eq!(results[0].errors[0].source, Source::Operator);
    assert!(
        results[0]
            .lines()
            .next()
            .unwrap()
            .contains("operator check after admission")
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_misspelt_field_gets_a_suggestion_other_kinds_are_skipped_and_unbindable_roles_warned() {
    let dir = temp_dir("hints");
    let path = write(
        &dir,
        "mixed.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\napiVersion: kubebaseline.io/v1alpha1\nkind: SecurityBaseline\nmetadata: {name: s}\nspec:\n  metadataEgres: {}\n  roleBindings:\n    - {name: root, clusterRole: cluster-admin, groups: [3f2504e0-4f89-11d3-9a0c-0305e82c3301]}\n",
    );
    let results = validated(&path, &Checks::default());
    assert!(results[0].skipped, "a ConfigMap is skipped");
    let lines: Vec<String> = results[1].lines().collect();
    assert!(
        lines[0].ends_with(r#"mixed.yaml:9:3: spec.metadataEgres: unknown field (did you mean "metadataEgress"?)"#),
        "{lines:?}"
    );
    let strict = Checks {
        strict: true,
        ..Checks::default()
    };
    let results = validated(&path, &strict);
    assert!(!results[0].skipped && !results[0].valid);
    // A valid baseline binding cluster-admin: a warning, not an error.
    let ok = write(
        &dir,
        "admin.yaml",
        "apiVersion: kubebaseline.io/v1alpha1\nkind: SecurityBaseline\nmetadata: {name: s}\nspec:\n  roleBindings:\n    - name: root\n      clusterRole: cluster-admin\n      groups: [3f2504e0-4f89-11d3-9a0c-0305e82c3301]\n",
    );
    let results = validated(&ok, &Checks::default());
    assert!(results[0].valid);
    let warning: Vec<String> = results[0].warning_lines().collect();
    assert!(
        warning[0].contains(
            "admin.yaml:7:7: warning: spec.roleBindings[0].clusterRole: \"cluster-admin\" is not on the allow-list"
        ),
        "{warning:?}"
    );
    assert!(summary(&results).ends_with("; 1 warning"), "{}", summary(&results));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_list_rule_points_at_and_quotes_the_entry_that_breaks_it() {
    let dir = temp_dir("culprits");
    let path = write(
        &dir,
        "lists.yaml",
        "apiVersion: kubebaseline.io/v1alpha1\nkind: SecurityBaseline\nmetadata: {name: s}\nspec:\n  metadataEgress:\n    blockedCIDRs:\n      - 169.254.169.254/32\n      - 10.0.0.1/8\n  roleBindings:\n    - name: devs\n      clusterRole: edit\n      groups: [3f2504e0-4f89-11d3-9a0c-0305e82c3301, developers]\n",
    );
    let results = validated(&path, &Checks::default());
    let lines: Vec<String> = results[0].lines().collect();
    assert!(
        lines.iter().any(|l| l.contains("lists.yaml:8:9: spec.metadataEgress.blockedCIDRs: Invalid value")
            && l.ends_with("(\"10.0.0.1/8\" at spec.metadataEgress.blockedCIDRs[1] has bits set past the prefix: 10.0.0.0/8 is canonical)")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("lists.yaml:12:")
            && l.ends_with("(\"developers\" at spec.roleBindings[0].groups[1] is not a GUID)")),
        "{lines:#?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn no_documents_is_an_error_for_load_baselines() {
    let dir = temp_dir("empty");
    assert!(
        load_baselines(std::slice::from_ref(&dir)).unwrap_err().messages[0]
            .starts_with("no SecurityBaseline documents")
    );
    std::fs::remove_dir_all(dir).unwrap();
}
