//! `kube-baseline validate FILE|DIR|-`: offline, what the API server would refuse in
//! SecurityBaseline files (schema and CEL rules, unknown fields, wrong kinds) and what the
//! operator would mark `Invalid` after admission, each at its `file:document` location. Other
//! subcommands read baseline files through [`load_baselines`], so they accept exactly what
//! `validate` accepts.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::api::SecurityBaseline;
use crate::cli::load::{self, Location};
use crate::core::schema::{self, FieldError, Reason};

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// SecurityBaseline files, directories (their .yaml, .yml and .json files, recursively) or
    /// `-` for stdin.
    #[arg(required = true, value_name = "FILE|DIR|-")]
    pub paths: Vec<PathBuf>,
    /// `text`: one line per error (`file:document: field: message`) and a summary; `json`: every
    /// document with its errors, for machines.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Who refuses a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The API server (CRD schema and CEL rules, strict decoding): `kubectl apply` fails.
    Admission,
    /// The operator after admission (`desired::validate`): `kubectl apply` succeeds, the
    /// baseline gets the `Invalid` condition and nothing of it is applied.
    Operator,
    /// The document is not YAML.
    Yaml,
}

#[derive(Clone, Debug, Serialize)]
pub struct ErrorEntry {
    /// The field path (`spec.roleBindings[0].name`); empty for the whole document.
    pub field: String,
    pub message: String,
    pub source: Source,
}

/// One document and what `validate` found in it.
#[derive(Clone, Debug, Serialize)]
pub struct DocumentResult {
    /// `file:document` (documents count from 1; `-` is stdin).
    pub location: String,
    pub file: String,
    pub document: usize,
    /// The line the document starts on.
    pub line: usize,
    pub name: Option<String>,
    pub valid: bool,
    pub errors: Vec<ErrorEntry>,
    #[serde(skip)]
    pub baseline: Option<SecurityBaseline>,
}

impl DocumentResult {
    fn new(location: &Location) -> Self {
        Self {
            location: location.to_string(),
            file: location.file.clone(),
            document: location.document,
            line: location.line,
            name: None,
            valid: false,
            errors: Vec::new(),
            baseline: None,
        }
    }

    /// The text lines of its errors: `file:document: field: message`.
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        self.errors.iter().map(move |e| {
            let field = if e.field.is_empty() {
                String::new()
            } else {
                format!("{}: ", e.field)
            };
            let note = match e.source {
                // (An undecodable baseline, on the whole document, explains itself.)
                Source::Operator if !e.field.is_empty() => {
                    " (operator check after admission: the API server accepts this baseline, the operator marks it \
                     Invalid and applies nothing of it)"
                }
                _ => "",
            };
            format!("{}: {field}{}{note}", self.location, e.message)
        })
    }
}

fn entry(e: &FieldError, source: Source) -> ErrorEntry {
    ErrorEntry {
        field: e.field.clone(),
        message: e.message.clone(),
        source: match e.reason {
            Reason::Operator | Reason::Undecodable => Source::Operator,
            _ => source,
        },
    }
}

/// Every document of `paths`, checked, in file and document order. Fails only when a path
/// cannot be read.
pub fn validate_paths(paths: &[PathBuf]) -> anyhow::Result<Vec<DocumentResult>> {
    let (docs, parse_errors) = load::read(paths)?;
    let mut results: Vec<DocumentResult> = Vec::new();
    for doc in &docs {
        let report = schema::check(&doc.value);
        let mut result = DocumentResult::new(&doc.location);
        result.name = report.name.clone();
        result.valid = report.is_valid();
        result
            .errors
            .extend(report.admission.iter().map(|e| entry(e, Source::Admission)));
        result
            .errors
            .extend(report.operator.iter().map(|e| entry(e, Source::Operator)));
        result.baseline = report.baseline;
        results.push(result);
    }
    for e in parse_errors {
        let mut result = DocumentResult::new(&e.location);
        result.errors.push(ErrorEntry {
            field: String::new(),
            message: format!("not valid YAML (line {}): {}", e.location.line, e.message),
            source: Source::Yaml,
        });
        results.push(result);
    }
    results.sort_by(|a, b| (&a.file, a.document).cmp(&(&b.file, b.document)));
    Ok(results)
}

/// The baselines of `paths` when every document is a valid SecurityBaseline (for `render -f`
/// and `audit -f`); otherwise every problem, worded as `validate` words it.
pub fn load_baselines(paths: &[PathBuf]) -> Result<Vec<SecurityBaseline>, InvalidBaselines> {
    let results = validate_paths(paths).map_err(|e| InvalidBaselines {
        messages: vec![e.to_string()],
    })?;
    if results.is_empty() {
        return Err(InvalidBaselines {
            messages: vec![format!(
                "no SecurityBaseline documents in {}",
                paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )],
        });
    }
    let messages: Vec<String> = results.iter().flat_map(DocumentResult::lines).collect();
    if !messages.is_empty() {
        return Err(InvalidBaselines { messages });
    }
    Ok(results.into_iter().filter_map(|r| r.baseline).collect())
}

/// Baseline files that `validate` rejects: one message per problem, `file:document: …`.
#[derive(Debug, thiserror::Error)]
#[error("{}", .messages.join("\n"))]
pub struct InvalidBaselines {
    pub messages: Vec<String>,
}

#[derive(Serialize)]
struct JsonOutput<'a> {
    documents: &'a [DocumentResult],
    valid: usize,
    invalid: usize,
}

/// Runs `validate`: exit code 0 when every document is a valid SecurityBaseline, 1 otherwise
/// (also for YAML errors, and when no document was found).
pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let results = validate_paths(&args.paths)?;
    let valid = results.iter().filter(|r| r.valid).count();
    let invalid = results.len() - valid;
    match args.output {
        Output::Json => {
            let out = JsonOutput {
                documents: &results,
                valid,
                invalid,
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Output::Text => {
            for line in results.iter().flat_map(DocumentResult::lines) {
                println!("{line}");
            }
            println!("{}", summary(&results));
        }
    }
    Ok(if results.is_empty() || invalid > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn summary(results: &[DocumentResult]) -> String {
    if results.is_empty() {
        return "no documents found (validate reads .yaml, .yml and .json files)".into();
    }
    let count = |source: Source| {
        results
            .iter()
            .flat_map(|r| &r.errors)
            .filter(|e| e.source == source)
            .count()
    };
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let invalid = results.iter().filter(|r| !r.valid).count();
    let mut line = format!(
        "{}: {} valid, {} invalid",
        plural(results.len(), "document"),
        results.len() - invalid,
        invalid
    );
    if invalid > 0 {
        let parts: Vec<String> = [
            (count(Source::Admission), "admission error"),
            (count(Source::Operator), "operator error"),
            (count(Source::Yaml), "YAML error"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| plural(n, what))
        .collect();
        line.push_str(&format!(" ({})", parts.join(", ")));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    const GOOD: &str =
        "apiVersion: kubebaseline.io/v1alpha1\nkind: SecurityBaseline\nmetadata: {name: good}\nspec: {}\n";

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
        let results = validate_paths(std::slice::from_ref(&dir)).unwrap();
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
        assert!(
            lines[0]
                .ends_with(r#"b.yaml:2: spec.mode: Unsupported value: "Foo": supported values: "Enforce", "Audit""#)
        );
        assert!(
            lines.last().unwrap().contains("b.yaml:3: not valid YAML (line 11)"),
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
        let results = validate_paths(&[path]).unwrap();
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
    fn no_documents_is_an_error_for_load_baselines() {
        let dir = temp_dir("empty");
        assert!(
            load_baselines(std::slice::from_ref(&dir)).unwrap_err().messages[0]
                .starts_with("no SecurityBaseline documents")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
