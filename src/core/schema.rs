//! Offline admission of a `SecurityBaseline` document: what the API server does with a create
//! under `fieldValidation=Strict` (as `kubectl apply` sends it), then the checks the operator
//! makes after admission (`desired::validate`). No I/O.
//!
//! The schema is the CRD's `openAPIV3Schema`, taken at run time from the Rust types that generate
//! the CRD, so `validate` cannot drift from what is installed. The steps follow the API server's:
//! strict decoding (unknown fields stop everything), nulls pruned and defaults applied, the
//! OpenAPI schema, `metadata`, `x-kubernetes-list-type`, then the CEL rules (skipped, as the API
//! server does, when a type, required, enum, maxLength or maxItems error was found). Messages are
//! worded as the API server words them (`spec.mode: Unsupported value: "Foo": supported values:
//! "Enforce", "Audit"`).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, OnceLock};

use kube::CustomResourceExt;
use regex::Regex;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::api::SecurityBaseline;
use crate::core::{cel, desired};

mod decode;
mod metadata;
mod openapi;
use decode::{decode_errors, prune_nulls_and_default};
use metadata::validate_metadata;
pub use openapi::is_date_time;
use openapi::{json_type, matches, validate_value};

pub const API_VERSION: &str = "kubebaseline.io/v1alpha1";
pub const KIND: &str = "SecurityBaseline";

/// The API server's error types (`field.ErrorType`), plus the ones only `validate` has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Reason {
    Invalid,
    TypeInvalid,
    Required,
    NotSupported,
    TooLong,
    TooMany,
    Duplicate,
    /// A field the schema does not declare (strict decoding).
    UnknownField,
    /// Not a `kubebaseline.io/v1alpha1` `SecurityBaseline` at all.
    WrongKind,
    /// The API server's note that CEL rules were skipped because of the errors before.
    RulesNotChecked,
    /// A check the operator makes after admission (`desired::validate`).
    Operator,
    /// Admitted, but the operator cannot decode it into its types.
    Undecodable,
}

impl Reason {
    /// Errors after which the API server does not evaluate CEL rules (apiextensions'
    /// `hasBlockingErr`).
    fn blocks_rules(self) -> bool {
        matches!(
            self,
            Self::NotSupported | Self::Required | Self::TooLong | Self::TooMany | Self::TypeInvalid
        )
    }
}

/// One error: the field path (`spec.roleBindings[0].name`; empty for the whole document) and
/// the message after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub reason: Reason,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl FieldError {
    fn new(field: &str, reason: Reason, message: impl Into<String>) -> Self {
        Self {
            field: field.to_string(),
            reason,
            message: message.into(),
        }
    }
}

/// What `check` found in one document.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// `metadata.name`, when there is one.
    pub name: Option<String>,
    /// What the API server refuses at admission.
    pub admission: Vec<FieldError>,
    /// What the API server accepts but the operator rejects after admission (the baseline gets
    /// the `Invalid` condition and nothing of it is applied).
    pub operator: Vec<FieldError>,
    /// The baseline as the operator reads it (defaults applied), when both lists are empty.
    pub baseline: Option<SecurityBaseline>,
}

impl Report {
    pub fn is_valid(&self) -> bool {
        self.admission.is_empty() && self.operator.is_empty()
    }
}

/// Admission, then the operator's checks, for one document.
pub fn check(doc: &Value) -> Report {
    let name = doc["metadata"]["name"].as_str().map(str::to_string);
    let object = match admit(doc) {
        Ok(object) => object,
        Err(admission) => {
            return Report {
                name,
                admission,
                ..Default::default()
            };
        }
    };
    let mut report = Report {
        name,
        ..Default::default()
    };
    match serde_json::from_value::<SecurityBaseline>(object) {
        // The operator lists baselines as typed objects: one it cannot decode fails the whole
        // list, so no baseline is reconciled while it exists.
        Err(e) => report.operator.push(FieldError::new(
            "",
            Reason::Undecodable,
            format!(
                "the API server accepts this baseline but the operator cannot decode it ({e}); while it exists the \
                 operator's watch of SecurityBaselines fails and no baseline is reconciled"
            ),
        )),
        Ok(baseline) => match desired::validate(&baseline) {
            Ok(_) => report.baseline = Some(baseline),
            Err(desired::InvalidSpec(message)) => report.operator.push(operator_error(&message)),
        },
    }
    report
}

/// `desired::validate` says `namespaceSelector: …` or `roleBindings[name].groups: …`: the part
/// before the first `: ` is a path under `spec`.
fn operator_error(message: &str) -> FieldError {
    match message.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') => FieldError::new(&format!("spec.{path}"), Reason::Operator, rest),
        _ => FieldError::new("spec", Reason::Operator, message),
    }
}

/// What the API server does with a create of `doc`: the object as it would be stored (defaults
/// applied, status dropped), or every error it would report.
pub fn admit(doc: &Value) -> Result<Value, Vec<FieldError>> {
    if let Some(wrong) = wrong_kind(doc) {
        return Err(vec![wrong]);
    }
    // Strict decoding fails the request before any validation.
    let mut errors = Vec::new();
    decode_errors(doc, root_schema(), "", &mut errors);
    if !errors.is_empty() {
        errors.sort_by(|a, b| a.field.cmp(&b.field));
        return Err(errors);
    }
    let mut object = doc.clone();
    let map = object.as_object_mut().expect("an object, checked above");
    // A create ignores status (the status subresource owns it); it is never validated.
    map.remove("status");
    prune_nulls_and_default(&mut object, root_schema());

    let spec_schema = &root_schema()["properties"]["spec"];
    match object.get("spec") {
        None => errors.push(FieldError::new("spec", Reason::Required, "Required value")),
        Some(spec) => validate_value(spec, spec_schema, "spec", &mut errors),
    }
    validate_metadata(&object["metadata"], &mut errors);
    if let Some(spec) = object.get("spec") {
        list_types(spec, spec_schema, "spec", &mut errors);
    }
    if errors.iter().any(|e| e.reason.blocks_rules()) {
        errors.push(FieldError::new(
            "",
            Reason::RulesNotChecked,
            "some validation rules were not checked because the object was invalid; correct the existing errors to \
             complete validation",
        ));
    } else if let Some(spec) = object.get("spec") {
        rules(spec, spec_schema, "spec", &mut errors);
    }
    if errors.is_empty() { Ok(object) } else { Err(errors) }
}

/// The CRD's `openAPIV3Schema` for v1alpha1.
pub fn root_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let crd = serde_json::to_value(SecurityBaseline::crd()).expect("the CRD serializes");
        crd["spec"]["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == "v1alpha1")
            .map(|v| v["schema"]["openAPIV3Schema"].clone())
            .expect("the CRD has a v1alpha1 schema")
    })
}

fn wrong_kind(doc: &Value) -> Option<FieldError> {
    let Some(map) = doc.as_object() else {
        return Some(FieldError::new(
            "",
            Reason::WrongKind,
            format!(
                "not a SecurityBaseline: the document is a YAML {} where a mapping with apiVersion: {API_VERSION}, \
                 kind: {KIND}, metadata and spec is expected",
                json_type(doc)
            ),
        ));
    };
    let kind = map.get("kind").and_then(Value::as_str);
    let api_version = map.get("apiVersion").and_then(Value::as_str);
    match (kind, api_version) {
        (Some(KIND), Some(API_VERSION)) => None,
        (Some(KIND), Some(other)) => Some(FieldError::new(
            "apiVersion",
            Reason::WrongKind,
            format!(
                "Unsupported value: {}: supported values: {}",
                go_quote(other),
                go_quote(API_VERSION)
            ),
        )),
        (Some(KIND), None) => Some(FieldError::new(
            "apiVersion",
            Reason::WrongKind,
            format!("Required value: a SecurityBaseline needs apiVersion: {API_VERSION}"),
        )),
        (Some(other), _) => Some(FieldError::new(
            "kind",
            Reason::WrongKind,
            format!(
                "Invalid value: {}: not a SecurityBaseline: this document is a {other}{}; validate reads only \
                 {API_VERSION} SecurityBaseline documents, so pass the baseline files (or a directory holding only \
                 baselines)",
                go_quote(other),
                api_version.map(|v| format!(" ({v})")).unwrap_or_default()
            ),
        )),
        (None, _) => Some(FieldError::new(
            "kind",
            Reason::WrongKind,
            format!(
                "Required value: not a Kubernetes object (no kind); a baseline starts with apiVersion: {API_VERSION} \
                 and kind: {KIND}"
            ),
        )),
    }
}

/// `x-kubernetes-list-type`: `set` items and `map` keys must be unique.
fn list_types(value: &Value, schema: &Value, path: &str, out: &mut Vec<FieldError>) {
    match value {
        Value::Array(items) => {
            match schema["x-kubernetes-list-type"].as_str() {
                // Each repeated item (or key) is reported once, at its first repetition.
                Some("set") => {
                    for (i, item) in items.iter().enumerate() {
                        if items[..i].iter().filter(|x| *x == item).count() == 1 {
                            out.push(FieldError::new(
                                &format!("{path}[{i}]"),
                                Reason::Duplicate,
                                format!("Duplicate value: {}", show(item)),
                            ));
                        }
                    }
                }
                Some("map") => {
                    let key_names: Vec<&str> = schema["x-kubernetes-list-map-keys"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    let keys: Vec<Option<Map<String, Value>>> = items
                        .iter()
                        .map(|item| {
                            let obj = item.as_object()?;
                            Some(
                                key_names
                                    .iter()
                                    .filter_map(|k| obj.get(*k).map(|v| (k.to_string(), v.clone())))
                                    .collect(),
                            )
                        })
                        .collect();
                    for (i, key) in keys.iter().enumerate() {
                        if let Some(key) = key
                            && keys[..i].iter().filter(|k| k.as_ref() == Some(key)).count() == 1
                        {
                            out.push(FieldError::new(
                                &format!("{path}[{i}]"),
                                Reason::Duplicate,
                                format!("Duplicate value: {}", Value::Object(key.clone())),
                            ));
                        }
                    }
                }
                _ => {}
            }
            for (i, v) in items.iter().enumerate() {
                list_types(v, &schema["items"], &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (key, v) in map {
                if let Some(s) = schema["properties"].get(key) {
                    list_types(v, s, &format!("{path}.{key}"), out);
                }
            }
        }
        _ => {}
    }
}

/// `x-kubernetes-validations`, each rule by its Rust implementation (`cel::RULES`).
fn rules(value: &Value, schema: &Value, path: &str, out: &mut Vec<FieldError>) {
    if value.is_null() {
        return;
    }
    for rule in schema["x-kubernetes-validations"].as_array().into_iter().flatten() {
        let text = rule["rule"].as_str().unwrap_or_default();
        let message = rule["message"].as_str().unwrap_or(text);
        match cel::implementation(text).map(|check| check(value)) {
            Some(Ok(true)) => {}
            Some(Ok(false)) => out.push(FieldError::new(
                path,
                Reason::Invalid,
                format!("Invalid value: {message}"),
            )),
            Some(Err(why)) => out.push(FieldError::new(
                path,
                Reason::Invalid,
                format!("Invalid value: \"object\": {why} evaluating rule: {message}"),
            )),
            None => out.push(FieldError::new(
                path,
                Reason::Invalid,
                format!(
                    "the CRD rule {text:?} has no implementation in kube-baseline validate (a bug: please report it)"
                ),
            )),
        }
    }
    match value {
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                rules(v, &schema["items"], &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (key, v) in map {
                if let Some(s) = schema["properties"].get(key) {
                    rules(v, s, &format!("{path}.{key}"), out);
                }
            }
        }
        _ => {}
    }
}

/// A value as apimachinery's field errors print it: strings quoted, numbers and booleans bare,
/// the rest as JSON.
fn show(value: &Value) -> String {
    match value {
        Value::String(s) => go_quote(s),
        other => other.to_string(),
    }
}

/// Go's `%q` for the strings people write (JSON quoting is the same for printable text).
fn go_quote(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

#[cfg(test)]
#[path = "schema_tests.rs"]
mod tests;
