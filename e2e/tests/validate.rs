//! `kube-baseline validate` agrees with the real API server: every document of
//! `e2e/corpus/validate/` is created with a server-side dry run under `fieldValidation=Strict`
//! (what `kubectl apply` sends), and `validate` must accept exactly what the API server accepts,
//! with the same field paths and messages for what it refuses, and the same defaulted spec for
//! what it accepts. Documents the API server accepts but the operator rejects after admission
//! (`operator-*` files) must be reported as operator errors. The file name prefixes are explained
//! in the corpus's README.md.

#[path = "../harness/mod.rs"]
mod harness;

use std::path::PathBuf;
use std::process::Command;

use harness::*;
use kube_baseline::cli::load;
use kube_baseline::core::schema::{self, Reason};
use serde_json::Value;

fn corpus_dir() -> PathBuf {
    repo_root().join("e2e/corpus/validate")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// The API server accepts it; `validate` finds nothing.
    Good,
    /// The API server refuses it; `validate` too, with the same (field, message) pairs.
    Bad,
    /// The API server accepts it; the operator rejects it after admission.
    Operator,
    /// Not a v1alpha1 SecurityBaseline: both refuse it, each in its own words.
    Kind,
}

fn class(location: &load::Location) -> Class {
    let name = std::path::Path::new(&location.file)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    match name.split('-').next().unwrap() {
        "good" => Class::Good,
        "bad" => Class::Bad,
        "operator" => Class::Operator,
        "kind" => Class::Kind,
        other => panic!("{name}: unknown corpus prefix {other:?} (see e2e/corpus/validate/README.md)"),
    }
}

/// The API server's answer to a dry-run create: the object as it would be stored, or its errors as (field, message), with
/// its `<nil>` field (the "rules not checked" note) as the empty path, like `validate`'s.
async fn server_verdict(client: &kube::Client, doc: &Value) -> Result<Value, Vec<(String, String)>> {
    let request =
        http::Request::post("/apis/kubebaseline.io/v1alpha1/securitybaselines?dryRun=All&fieldValidation=Strict")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(doc).unwrap())
            .unwrap();
    match client.request::<Value>(request).await {
        Ok(stored) => Ok(stored),
        Err(kube::Error::Api(status)) => {
            let causes: Vec<(String, String)> = status
                .details
                .iter()
                .flat_map(|d| &d.causes)
                .map(|c| {
                    // The note that CEL rules were skipped is `<nil>: Invalid value: null: some
                    // validation rules were not checked…`; validate prints just the sentence.
                    if c.field == "<nil>" {
                        let message = c.message.trim_start_matches("Invalid value: null: ");
                        (String::new(), message.to_string())
                    } else {
                        (c.field.clone(), c.message.clone())
                    }
                })
                .collect();
            if !causes.is_empty() {
                return Err(causes);
            }
            // Decoding errors come as one message: `strict decoding error: unknown field "a.b",
            // unknown field "c"`, or `json: cannot unmarshal … Go struct field ObjectMeta.labels …`.
            let message = &status.message;
            let mut fields: Vec<(String, String)> = message
                .split("unknown field \"")
                .skip(1)
                .filter_map(|rest| rest.split('"').next())
                .map(|f| (f.to_string(), "unknown field".to_string()))
                .collect();
            if let Some(rest) = message.split("json: ").nth(1) {
                let field = rest
                    .split("Go struct field ObjectMeta.")
                    .nth(1)
                    .and_then(|r| r.split(' ').next())
                    .map(|f| format!("metadata.{f}"))
                    .unwrap_or_default();
                fields.push((field, rest.to_string()));
            }
            if fields.is_empty() {
                fields.push((String::new(), message.clone()));
            }
            Err(fields)
        }
        Err(other) => Err(vec![(String::new(), format!("request failed: {other}"))]),
    }
}

fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort();
    v
}

/// Messages agree when equal; a CEL rule that fails to evaluate (`Invalid value: "object": <Go's
/// decode or time-parse error> evaluating rule: <message>`) agrees on everything but Go's own
/// wording of the cause.
fn same_message(ours: &str, theirs: &str) -> bool {
    const PREFIX: &str = "Invalid value: \"object\": ";
    let rule = |m: &str| {
        m.strip_prefix(PREFIX)
            .and_then(|r| r.split_once(" evaluating rule: "))
            .map(|(_, msg)| msg.to_string())
    };
    ours == theirs || (rule(ours).is_some() && rule(ours) == rule(theirs))
}

#[tokio::test]
async fn validate_accepts_exactly_what_the_api_server_accepts() {
    install();
    let client = client().await;
    let (docs, parse_errors) = load::read(&[corpus_dir()]).unwrap();
    assert!(parse_errors.is_empty(), "{parse_errors:?}");
    assert!(docs.len() >= 25, "the corpus has {} documents", docs.len());

    let mut disagreements = Vec::new();
    let mut seen = std::collections::BTreeMap::<&str, usize>::new();
    for doc in &docs {
        let at = doc.location.to_string();
        let class = class(&doc.location);
        let report = schema::check(&doc.value);
        let server = server_verdict(&client, &doc.value).await;
        *seen
            .entry(match class {
                Class::Good => "good",
                Class::Bad => "bad",
                Class::Operator => "operator",
                Class::Kind => "kind",
            })
            .or_default() += 1;

        // What is stored is what `validate` computed: the same defaults, in the same places.
        if let (Ok(stored), Ok(ours)) = (&server, schema::admit(&doc.value))
            && stored["spec"] != ours["spec"]
        {
            disagreements.push(format!(
                "{at}: the stored spec differs from validate's defaulted spec:\n  API server: {}\n  validate:   {}",
                stored["spec"], ours["spec"]
            ));
        }
        // The one promise for every document: admission says yes exactly when the API server does.
        if server.is_ok() != report.admission.is_empty() {
            disagreements.push(format!(
                "{at}: API server {}, validate {}: server {server:?}, validate {:?}",
                if server.is_ok() { "accepts" } else { "refuses" },
                if report.admission.is_empty() {
                    "accepts"
                } else {
                    "refuses"
                },
                report.admission.iter().map(ToString::to_string).collect::<Vec<_>>()
            ));
            continue;
        }
        match class {
            Class::Good => {
                if !report.operator.is_empty() {
                    disagreements.push(format!(
                        "{at}: good, but the operator rejects it: {:?}",
                        report.operator
                    ));
                }
                if server.is_err() {
                    disagreements.push(format!("{at}: good, but the API server refuses it: {server:?}"));
                }
            }
            Class::Operator => {
                if server.is_err() || report.operator.is_empty() {
                    disagreements.push(format!(
                        "{at}: expected admitted and rejected by the operator; server {server:?}, operator {:?}",
                        report.operator
                    ));
                }
                assert!(
                    report
                        .operator
                        .iter()
                        .all(|e| matches!(e.reason, Reason::Operator | Reason::Undecodable))
                );
            }
            Class::Bad => {
                let Err(causes) = server else {
                    disagreements.push(format!("{at}: bad, but the API server accepts it"));
                    continue;
                };
                let ours: Vec<(String, String)> = report
                    .admission
                    .iter()
                    .map(|e| (e.field.clone(), e.message.clone()))
                    .collect();
                let (ours, theirs) = (sorted(ours), sorted(causes));
                let fields = |v: &[(String, String)]| v.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>();
                if fields(&ours) != fields(&theirs) {
                    disagreements.push(format!(
                        "{at}: field paths differ:\n  API server: {:?}\n  validate:   {:?}",
                        fields(&theirs),
                        fields(&ours)
                    ));
                } else if ours.iter().zip(&theirs).any(|(a, b)| !same_message(&a.1, &b.1)) {
                    let differ: Vec<_> = ours
                        .iter()
                        .zip(&theirs)
                        .filter(|(a, b)| !same_message(&a.1, &b.1))
                        .collect();
                    disagreements.push(format!("{at}: messages differ (validate, API server): {differ:#?}"));
                }
            }
            Class::Kind => {
                if server.is_ok() || !report.admission.iter().all(|e| e.reason == Reason::WrongKind) {
                    disagreements.push(format!(
                        "{at}: expected a wrong-kind error from both; server {server:?}, validate {:?}",
                        report.admission
                    ));
                }
            }
        }
    }
    eprintln!("corpus: {} documents {seen:?}", docs.len());
    assert!(
        disagreements.is_empty(),
        "{} of {} documents disagree:\n{}",
        disagreements.len(),
        docs.len(),
        disagreements.join("\n")
    );
    for class in ["good", "bad", "operator", "kind"] {
        assert!(
            seen.get(class).is_some_and(|n| *n > 0),
            "no {class} document in the corpus"
        );
    }
}

fn validate_bin(args: &[&str], stdin: Option<&str>) -> (Option<i32>, String, String) {
    let out = output_with_stdin(
        Command::new(env!("CARGO_BIN_EXE_kube-baseline"))
            .arg("validate")
            .args(args),
        stdin,
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn the_binary_reports_every_invalid_document_at_its_location() {
    let dir = corpus_dir();
    let dir_arg = dir.to_str().unwrap();
    let (docs, _) = load::read(std::slice::from_ref(&dir)).unwrap();

    // --strict: documents of other kinds are refused too, as the API server refuses them.
    let (code, stdout, _) = validate_bin(&["--strict", dir_arg], None);
    assert_eq!(code, Some(1), "{stdout}");
    // Each error is at file:line:column, the line inside its document.
    let reported_in = |stdout: &str, doc: &load::Document| {
        let next = docs
            .iter()
            .filter(|d| d.location.file == doc.location.file && d.location.line > doc.location.line)
            .map(|d| d.location.line)
            .min()
            .unwrap_or(usize::MAX);
        // Errors only: a warning (a role the default allow-list forbids) is no refusal.
        stdout.lines().filter(|l| !l.contains(": warning: ")).any(|l| {
            l.strip_prefix(&format!("{}:", doc.location.file))
                .and_then(|rest| rest.split(':').next()?.parse::<usize>().ok())
                .is_some_and(|line| line >= doc.location.line && line < next)
        })
    };
    for doc in &docs {
        let reported = reported_in(&stdout, doc);
        assert_eq!(
            reported,
            class(&doc.location) != Class::Good,
            "{}: reported {reported}\n{stdout}",
            doc.location
        );
    }
    let summary = stdout.lines().last().unwrap();
    assert!(summary.starts_with(&format!("{} documents: ", docs.len())), "{summary}");
    // The corpus's misspelt field gets the declared one it is closest to, and a list rule's error
    // quotes the entry that breaks it, at that entry's line.
    assert!(
        stdout.contains(r#"spec.metadataEgress.blockedCidrs: unknown field (did you mean "blockedCIDRs"?)"#),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"("developers" at spec.roleBindings[0].groups[0] is not a GUID)"#),
        "{stdout}"
    );
    // Without --strict, documents of other kinds are skipped and said to be.
    let (_, plain, _) = validate_bin(&[dir_arg], None);
    for doc in docs.iter().filter(|d| class(&d.location) == Class::Kind) {
        assert!(!reported_in(&plain, doc), "{}: skipped\n{plain}", doc.location);
    }
    assert!(
        plain.lines().last().unwrap().contains("skipped (--strict refuses"),
        "{plain}"
    );
    for line in stdout.lines().filter(|l| l.contains("/operator-")) {
        assert!(
            line.contains("operator check after admission") || line.contains("the operator cannot decode it"),
            "{line}"
        );
    }

    // JSON: one entry per document, valid exactly for the good ones, errors with their source.
    let (code, stdout, _) = validate_bin(&["-o", "json", "--strict", dir_arg], None);
    assert_eq!(code, Some(1));
    let out: Value = serde_json::from_str(&stdout).unwrap();
    let documents = out["documents"].as_array().unwrap();
    assert_eq!(documents.len(), docs.len());
    for (doc, result) in docs.iter().zip(documents) {
        assert_eq!(result["location"], doc.location.to_string());
        let class = class(&doc.location);
        assert_eq!(result["valid"], class == Class::Good, "{result}");
        let sources: Vec<&str> = result["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["source"].as_str().unwrap())
            .collect();
        match class {
            Class::Good => assert!(sources.is_empty()),
            Class::Operator => assert!(
                !sources.is_empty() && sources.iter().all(|s| *s == "operator"),
                "{result}"
            ),
            Class::Bad | Class::Kind => {
                assert!(
                    !sources.is_empty() && sources.iter().all(|s| *s == "admission"),
                    "{result}"
                )
            }
        }
    }

    // Only good files: exit 0.
    let good: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.contains("/good-"))
        .collect();
    let good: Vec<&str> = good.iter().map(String::as_str).collect();
    let (code, stdout, _) = validate_bin(&good, None);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.lines().last().unwrap().contains(" valid, 0 invalid"), "{stdout}");

    // stdin, with a YAML error in the second document.
    let text = "apiVersion: kubebaseline.io/v1alpha1\nkind: SecurityBaseline\nmetadata: {name: a}\nspec: {mode: Foo}\n---\nspec: [\n";
    let (code, stdout, _) = validate_bin(&["-"], Some(text));
    assert_eq!(code, Some(1));
    assert!(
        stdout.contains(r#"-:4:8: spec.mode: Unsupported value: "Foo": supported values: "Enforce", "Audit""#),
        "{stdout}"
    );
    assert!(stdout.contains("-:6:1: not valid YAML (line 6)"), "{stdout}");

    // A path that does not exist: exit 1, naming it.
    let (code, _, stderr) = validate_bin(&["/nonexistent/baselines"], None);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("/nonexistent/baselines"), "{stderr}");
}
