//! `kube-baseline validate FILE|DIR|-`: offline, what the API server would refuse in
//! SecurityBaseline files (schema and CEL rules, unknown fields, wrong kinds) and what the
//! operator would mark `Invalid` after admission, each at its `file:line:column`, with a
//! did-you-mean for a misspelt field and warnings for roles the default allow-list forbids.
//! Documents of other kinds are skipped (`--strict` refuses them). Other
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
    /// Refuse documents that are not SecurityBaselines instead of skipping them.
    #[arg(long)]
    pub strict: bool,
    /// The ClusterRoles the operator may bind (its RBAC `bind` allow-list and the fence's);
    /// a roleBinding to another role is a warning: the API server accepts the baseline, and the
    /// operator's write is then forbidden.
    #[arg(long, value_delimiter = ',', default_value = "view,edit", value_name = "ROLE,...")]
    pub allowed_roles: Vec<String>,
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
    /// Accepted by both, and not what was meant (a role the operator may not bind).
    Warning,
}

#[derive(Clone, Debug, Serialize)]
pub struct ErrorEntry {
    /// The field path (`spec.roleBindings[0].name`); empty for the whole document.
    pub field: String,
    pub message: String,
    pub source: Source,
    /// Where the field is in the file (the document's first line for the whole document).
    pub line: usize,
    pub column: usize,
    /// A suggestion: the declared field a misspelt one is closest to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
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
    /// Not a SecurityBaseline, and not refused for it (without --strict).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    pub errors: Vec<ErrorEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<ErrorEntry>,
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
            skipped: false,
            errors: Vec::new(),
            warnings: Vec::new(),
            baseline: None,
        }
    }

    /// The text lines of its errors: `file:line:column: field: message`.
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        self.errors.iter().map(move |e| self.line(e))
    }

    /// The text lines of its warnings: `file:line:column: warning: field: message`.
    pub fn warning_lines(&self) -> impl Iterator<Item = String> + '_ {
        self.warnings.iter().map(move |e| self.line(e))
    }

    fn line(&self, e: &ErrorEntry) -> String {
        let field = if e.field.is_empty() {
            String::new()
        } else {
            format!("{}: ", e.field)
        };
        let hint = e.hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default();
        let warning = if e.source == Source::Warning { "warning: " } else { "" };
        let note = match e.source {
            // (An undecodable baseline, on the whole document, explains itself.)
            Source::Operator if !e.field.is_empty() => {
                " (operator check after admission: the API server accepts this baseline, the operator marks it \
                     Invalid and applies nothing of it)"
            }
            _ => "",
        };
        format!(
            "{}:{}:{}: {warning}{field}{}{hint}{note}",
            self.file, e.line, e.column, e.message
        )
    }
}

/// What `validate` checks beyond the API server's rules.
#[derive(Clone, Debug)]
pub struct Checks {
    /// Refuse other kinds instead of skipping them.
    pub strict: bool,
    /// The roles the operator may bind.
    pub allowed_roles: Vec<String>,
}

impl Default for Checks {
    fn default() -> Self {
        Self {
            strict: false,
            allowed_roles: vec!["view".into(), "edit".into()],
        }
    }
}

fn entry(doc: &load::Document, e: &FieldError, source: Source) -> ErrorEntry {
    // A list rule's message names the list: point at the entry that breaks it, and quote it.
    let culprit = (e.reason == Reason::Invalid).then(|| culprit(&doc.value, e)).flatten();
    let at = doc.position_of(culprit.as_ref().map_or(&e.field, |(path, _)| path));
    let hint = match e.reason {
        Reason::UnknownField => did_you_mean(&e.field).map(|f| format!("did you mean {f:?}?")),
        _ => culprit.map(|(_, why)| why),
    };
    ErrorEntry {
        field: e.field.clone(),
        message: e.message.clone(),
        source: match e.reason {
            Reason::Operator | Reason::Undecodable => Source::Operator,
            _ => source,
        },
        line: at.line,
        column: at.column,
        hint,
    }
}

/// The first entry that breaks the blockedCIDRs or the groups rule (whose messages name only the
/// list), as its path and a note quoting it.
fn culprit(doc: &serde_json::Value, e: &FieldError) -> Option<(String, String)> {
    if e.field == "spec.metadataEgress.blockedCIDRs" {
        let cidrs = doc["spec"]["metadataEgress"]["blockedCIDRs"].as_array()?;
        return cidrs.iter().enumerate().find_map(|(i, c)| {
            let c = c.as_str()?;
            let path = format!("{}[{i}]", e.field);
            let why = match c.parse::<ipnet::IpNet>() {
                Err(_) => "is not a CIDR".to_string(),
                Ok(net) if net.prefix_len() == 0 => "would block all egress".to_string(),
                Ok(net) if net.trunc() != net => format!("has bits set past the prefix: {} is canonical", net.trunc()),
                Ok(net) if net.to_string() != c => format!("is not written canonically: {net}"),
                Ok(_) => return None,
            };
            Some((path.clone(), format!("{c:?} at {path} {why}")))
        });
    }
    if e.field == "spec" && e.message.contains("roleBindings[].groups") {
        let guid = |g: &str| {
            let parts: Vec<&str> = g.split('-').collect();
            parts.len() == 5
                && parts
                    .iter()
                    .zip([8, 4, 4, 4, 12])
                    .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
        };
        let bindings = doc["spec"]["roleBindings"].as_array()?;
        return bindings.iter().enumerate().find_map(|(i, rb)| {
            rb["groups"].as_array()?.iter().enumerate().find_map(|(j, g)| {
                let g = g.as_str()?;
                let path = format!("spec.roleBindings[{i}].groups[{j}]");
                (!guid(g)).then(|| (path.clone(), format!("{g:?} at {path} is not a GUID")))
            })
        });
    }
    None
}

/// The declared field closest to the misspelt last step of `field` (same parent), when one is
/// close enough to be what was meant.
fn did_you_mean(field: &str) -> Option<String> {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(SecurityBaseline::crd()).ok()?;
    let mut schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let steps: Vec<&str> = field.split('.').collect();
    let (last, parents) = steps.split_last()?;
    for step in parents {
        let name = step.split('[').next().unwrap_or(step);
        schema = &schema["properties"][name];
        for _ in step.matches('[') {
            schema = &schema["items"];
        }
    }
    let wrong = last.split('[').next().unwrap_or(last);
    let mut names: Vec<&str> = schema["properties"].as_object()?.keys().map(String::as_str).collect();
    if parents.is_empty() {
        names.extend(["apiVersion", "kind", "metadata"]);
    }
    names
        .into_iter()
        .map(|n| (distance(&wrong.to_ascii_lowercase(), &n.to_ascii_lowercase()), n))
        .filter(|(d, n)| *d <= (n.len() / 3).max(1))
        .min()
        .map(|(_, n)| n.to_string())
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}

/// RoleBindings to roles the operator may not bind: accepted by the API server, forbidden when
/// the operator writes them.
fn role_warnings(doc: &load::Document, baseline: &SecurityBaseline, allowed: &[String]) -> Vec<ErrorEntry> {
    baseline
        .spec
        .role_bindings
        .iter()
        .enumerate()
        .filter(|(_, rb)| !allowed.contains(&rb.cluster_role))
        .map(|(i, rb)| {
            let field = format!("spec.roleBindings[{i}].clusterRole");
            let at = doc.position_of(&field);
            ErrorEntry {
                message: format!(
                    "{:?} is not on the allow-list of roles the operator may bind ({}): the API server accepts the baseline, and the operator's RoleBinding is then forbidden in every namespace (widen the allow-list in RBAC and the fence together, see config/components/allow-admin; never cluster-admin)",
                    rb.cluster_role,
                    allowed.join(", ")
                ),
                field,
                source: Source::Warning,
                line: at.line,
                column: at.column,
                hint: None,
            }
        })
        .collect()
}

/// Every document of `paths`, checked, in file and document order. Fails only when a path
/// cannot be read.
pub fn validate_paths(paths: &[PathBuf], check: &Checks) -> anyhow::Result<Vec<DocumentResult>> {
    let (docs, parse_errors) = load::read(paths)?;
    let mut results: Vec<DocumentResult> = Vec::new();
    for doc in &docs {
        let report = schema::check(&doc.value);
        let mut result = DocumentResult::new(&doc.location);
        result.name = report.name.clone();
        let other_kind = !report.admission.is_empty() && report.admission.iter().all(|e| e.reason == Reason::WrongKind);
        if other_kind && !check.strict {
            // Kept, to say what was skipped when nothing else is there.
            result.skipped = true;
            result
                .errors
                .extend(report.admission.iter().map(|e| entry(doc, e, Source::Admission)));
            results.push(result);
            continue;
        }
        result.valid = report.is_valid();
        result
            .errors
            .extend(report.admission.iter().map(|e| entry(doc, e, Source::Admission)));
        result
            .errors
            .extend(report.operator.iter().map(|e| entry(doc, e, Source::Operator)));
        if let Some(b) = &report.baseline {
            result.warnings = role_warnings(doc, b, &check.allowed_roles);
        }
        result.baseline = report.baseline;
        results.push(result);
    }
    for e in parse_errors {
        let mut result = DocumentResult::new(&e.location);
        result.errors.push(ErrorEntry {
            field: String::new(),
            message: format!("not valid YAML (line {}): {}", e.location.line, e.message),
            source: Source::Yaml,
            line: e.location.line,
            column: 1,
            hint: None,
        });
        results.push(result);
    }
    results.sort_by(|a, b| (&a.file, a.document).cmp(&(&b.file, b.document)));
    Ok(results)
}

/// The baselines of `paths` when every document is a valid SecurityBaseline (for `render -f`
/// and `audit -f`); otherwise every problem, worded as `validate` words it.
pub fn load_baselines(paths: &[PathBuf]) -> Result<Vec<SecurityBaseline>, InvalidBaselines> {
    let results = validate_paths(paths, &Checks::default()).map_err(|e| InvalidBaselines {
        messages: vec![e.to_string()],
    })?;
    let (skipped, results): (Vec<DocumentResult>, Vec<DocumentResult>) = results.into_iter().partition(|r| r.skipped);
    if results.is_empty() && !skipped.is_empty() {
        return Err(InvalidBaselines {
            messages: skipped.iter().flat_map(DocumentResult::lines).collect(),
        });
    }
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
    let checks = Checks {
        strict: args.strict,
        allowed_roles: args.allowed_roles.clone(),
    };
    let results = validate_paths(&args.paths, &checks)?;
    let valid = results.iter().filter(|r| r.valid).count();
    let skipped = results.iter().filter(|r| r.skipped).count();
    let invalid = results.len() - valid - skipped;
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
            for r in results.iter().filter(|r| !r.skipped) {
                for line in r.lines().chain(r.warning_lines()) {
                    println!("{line}");
                }
            }
            println!("{}", summary(&results));
        }
    }
    Ok(if results.len() == skipped || invalid > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn summary(results: &[DocumentResult]) -> String {
    let skipped = results.iter().filter(|r| r.skipped).count();
    let results: Vec<&DocumentResult> = results.iter().filter(|r| !r.skipped).collect();
    let skipped = match skipped {
        0 => String::new(),
        1 => "; 1 document of another kind skipped (--strict refuses it)".into(),
        n => format!("; {n} documents of other kinds skipped (--strict refuses them)"),
    };
    if results.is_empty() {
        return format!("no SecurityBaseline documents found (validate reads .yaml, .yml and .json files){skipped}");
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
    line.push_str(&skipped);
    if let Some(n) = Some(results.iter().map(|r| r.warnings.len()).sum::<usize>()).filter(|n| *n > 0) {
        line.push_str(&format!("; {n} warning{}", if n == 1 { "" } else { "s" }));
    }
    line
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
