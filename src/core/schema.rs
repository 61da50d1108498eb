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

/// `metav1.ObjectMeta`'s fields: strict decoding knows them, the CRD schema does not list them.
const OBJECT_META_FIELDS: &[&str] = &[
    "annotations",
    "creationTimestamp",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
    "finalizers",
    "generateName",
    "generation",
    "labels",
    "managedFields",
    "name",
    "namespace",
    "ownerReferences",
    "resourceVersion",
    "selfLink",
    "uid",
];

/// Strict decoding: fields the schema does not declare, and metadata of the wrong shape.
fn decode_errors(value: &Value, schema: &Value, path: &str, out: &mut Vec<FieldError>) {
    if path.is_empty() {
        let map = value.as_object().expect("checked by wrong_kind");
        for (key, v) in map {
            match key.as_str() {
                "apiVersion" | "kind" => {}
                "metadata" => decode_metadata(v, out),
                _ => match schema["properties"].get(key) {
                    Some(s) => decode_errors(v, s, key, out),
                    None => out.push(unknown(key)),
                },
            }
        }
        return;
    }
    if schema["x-kubernetes-preserve-unknown-fields"] == true {
        return;
    }
    match value {
        Value::Object(map) => {
            let properties = schema["properties"].as_object();
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, v) in map {
                let here = format!("{path}.{key}");
                match (properties.and_then(|p| p.get(key)), additional) {
                    (Some(s), _) | (None, Some(s)) => decode_errors(v, s, &here, out),
                    // Also where the schema wants no object at all: every key is unknown.
                    (None, None) => out.push(unknown(&here)),
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                decode_errors(v, &schema["items"], &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn unknown(path: &str) -> FieldError {
    FieldError::new(path, Reason::UnknownField, "unknown field")
}

fn decode_metadata(meta: &Value, out: &mut Vec<FieldError>) {
    let Some(map) = meta.as_object() else {
        if !meta.is_null() {
            out.push(FieldError::new(
                "metadata",
                Reason::TypeInvalid,
                format!("cannot unmarshal {} into ObjectMeta", json_type(meta)),
            ));
        }
        return;
    };
    for (key, v) in map {
        let here = format!("metadata.{key}");
        if !OBJECT_META_FIELDS.contains(&key.as_str()) {
            out.push(unknown(&here));
            continue;
        }
        // What Go's encoding/json says when ObjectMeta cannot hold the value.
        let go_kind = |x: &Value| match x {
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            _ => "object",
        };
        let wrong = match key.as_str() {
            "labels" | "annotations" => match v {
                Value::Null => None,
                Value::Object(m) => m
                    .values()
                    .find(|x| !(x.is_string() || x.is_null()))
                    .map(|x| (go_kind(x), "string")),
                other => Some((go_kind(other), "map[string]string")),
            },
            "name" | "generateName" | "namespace" => (!(v.is_string() || v.is_null())).then(|| (go_kind(v), "string")),
            _ => None,
        };
        // Go's JSON decoder reports only its first type error.
        if let Some((kind, ty)) = wrong
            && !out.iter().any(|e| e.reason == Reason::TypeInvalid)
        {
            out.push(FieldError::new(
                &here,
                Reason::TypeInvalid,
                format!("cannot unmarshal {kind} into Go struct field ObjectMeta.{key} of type {ty}"),
            ));
        }
    }
}

/// Structural defaulting: a null where the schema is not nullable is dropped, then every
/// missing field with a default gets it (and the default's own fields theirs).
fn prune_nulls_and_default(value: &mut Value, schema: &Value) {
    match value {
        Value::Object(map) => {
            if let Some(properties) = schema["properties"].as_object() {
                for (key, s) in properties {
                    if map.get(key).is_some_and(Value::is_null) && s["nullable"] != true {
                        map.remove(key);
                    }
                    if !map.contains_key(key)
                        && let Some(default) = s.get("default")
                    {
                        map.insert(key.clone(), default.clone());
                    }
                    if let Some(v) = map.get_mut(key) {
                        prune_nulls_and_default(v, s);
                    }
                }
            } else if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                if additional["nullable"] != true {
                    map.retain(|_, v| !v.is_null());
                }
                for v in map.values_mut() {
                    prune_nulls_and_default(v, additional);
                }
            }
        }
        Value::Array(items) => {
            for v in items {
                prune_nulls_and_default(v, &schema["items"]);
            }
        }
        _ => {}
    }
}

/// The OpenAPI v3 keywords a structural schema can carry, checked as kube-openapi checks them.
fn validate_value(value: &Value, schema: &Value, path: &str, out: &mut Vec<FieldError>) {
    if value.is_null() && schema["nullable"] == true {
        // The API server checks enums even for null, and null fails even where the generated
        // CRD lists it among the values (`admission: null` is refused).
        if let Some(allowed) = schema["enum"].as_array() {
            out.push(not_supported(value, allowed, path));
        }
        return;
    }
    let ty = schema["type"].as_str();
    let format = schema["format"].as_str();
    if let Some(ty) = ty
        && !has_type(value, ty)
    {
        // kube-openapi names a formatted field's expected type by its format and the value by
        // its Go type, and lets an array through where a formatted string is expected (the
        // operator then cannot read the baseline: see `check`).
        let (expected, actual) = match (format, value) {
            (Some(_), Value::Array(_)) => return,
            (Some(format), v) => (format, go_type(v)),
            (None, v) => (ty, json_type(v)),
        };
        out.push(FieldError::new(
            path,
            Reason::TypeInvalid,
            format!("Invalid value: \"{actual}\": {path} in body must be of type {expected}: \"{actual}\""),
        ));
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        out.push(not_supported(value, allowed, path));
    }
    if ty.is_some_and(|ty| !has_type(value, ty)) {
        return;
    }
    match value {
        Value::String(s) => validate_string(s, schema, path, out),
        Value::Number(n) => validate_number(n, schema, path, out),
        Value::Array(items) => {
            let len = items.len();
            if let Some(min) = schema["minItems"].as_u64()
                && (len as u64) < min
            {
                out.push(FieldError::new(
                    path,
                    Reason::Invalid,
                    format!("Invalid value: {len}: {path} in body should have at least {min} items"),
                ));
            }
            if let Some(max) = schema["maxItems"].as_u64()
                && (len as u64) > max
            {
                out.push(FieldError::new(
                    path,
                    Reason::TooMany,
                    format!("Too many: {len}: must have at most {max} items"),
                ));
            }
            for (i, v) in items.iter().enumerate() {
                validate_value(v, &schema["items"], &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for required in schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !map.contains_key(required) {
                    out.push(FieldError::new(
                        &format!("{path}.{required}"),
                        Reason::Required,
                        "Required value",
                    ));
                }
            }
            let properties = schema["properties"].as_object();
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, v) in map {
                if let Some(s) = properties.and_then(|p| p.get(key)).or(additional) {
                    validate_value(v, s, &format!("{path}.{key}"), out);
                }
            }
        }
        _ => {}
    }
}

fn not_supported(value: &Value, allowed: &[Value], path: &str) -> FieldError {
    let supported: Vec<String> = allowed
        .iter()
        .map(|v| match v {
            Value::String(s) => go_quote(s),
            other => go_quote(&other.to_string()),
        })
        .collect();
    FieldError::new(
        path,
        Reason::NotSupported,
        format!(
            "Unsupported value: {}: supported values: {}",
            show(value),
            supported.join(", ")
        ),
    )
}

/// kube-openapi stops at a string's first failing keyword: maxLength, minLength, pattern.
fn validate_string(s: &str, schema: &Value, path: &str, out: &mut Vec<FieldError>) {
    let len = s.chars().count() as u64;
    if let Some(max) = schema["maxLength"].as_u64()
        && len > max
    {
        out.push(FieldError::new(
            path,
            Reason::TooLong,
            format!("Too long: may not be more than {max} bytes"),
        ));
    } else if let Some(min) = schema["minLength"].as_u64()
        && len < min
    {
        out.push(FieldError::new(
            path,
            Reason::Invalid,
            format!(
                "Invalid value: {}: {path} in body should be at least {min} chars long",
                go_quote(s)
            ),
        ));
    } else if let Some(pattern) = schema["pattern"].as_str()
        && !matches(pattern, s)
    {
        out.push(FieldError::new(
            path,
            Reason::Invalid,
            format!(
                "Invalid value: {}: {path} in body should match '{pattern}'",
                go_quote(s)
            ),
        ));
    }
    if schema["format"] == "date-time" && !is_date_time(s) {
        out.push(FieldError::new(
            path,
            Reason::TypeInvalid,
            format!(
                "Invalid value: {q}: {path} in body must be of type date-time: {q}",
                q = go_quote(s)
            ),
        ));
    }
}

fn validate_number(n: &serde_json::Number, schema: &Value, path: &str, out: &mut Vec<FieldError>) {
    let Some(x) = n.as_f64() else { return };
    if let Some(min) = schema["minimum"].as_f64()
        && x < min
    {
        out.push(FieldError::new(
            path,
            Reason::Invalid,
            format!("Invalid value: {n}: {path} in body should be greater than or equal to {min}"),
        ));
    }
    if let Some(max) = schema["maximum"].as_f64()
        && x > max
    {
        out.push(FieldError::new(
            path,
            Reason::Invalid,
            format!("Invalid value: {n}: {path} in body should be less than or equal to {max}"),
        ));
    }
}

/// A pattern is an unanchored RE2 search, as in Go; Rust's regex crate has the same syntax for
/// what CRDs use.
fn matches(pattern: &str, s: &str) -> bool {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<Regex>>>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    cache
        .entry(pattern.to_string())
        .or_insert_with(|| Regex::new(pattern).ok())
        .as_ref()
        .is_none_or(|re| re.is_match(s))
}

/// kube-openapi's `date-time`: RFC 3339 (`T` and `Z` in either case), a real calendar date.
pub fn is_date_time(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    let Some((date, time)) = lower.split_once('t') else {
        return false;
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let num = |t: &str| t.parse::<u32>().unwrap_or(u32::MAX);
    let d: Vec<&str> = date.split('-').collect();
    if d.len() != 3 || d[0].len() != 4 || d[1].len() != 2 || d[2].len() != 2 || !d.iter().all(|p| digits(p)) {
        return false;
    }
    let (year, month, day) = (num(d[0]), num(d[1]), num(d[2]));
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    if day == 0 || day > days {
        return false;
    }
    let (clock, zone) = if let Some(c) = time.strip_suffix('z') {
        (c, None)
    } else if let Some(i) = time.rfind(['+', '-']) {
        (&time[..i], Some(&time[i + 1..]))
    } else {
        return false;
    };
    let hms = |t: &str, parts: usize| {
        let p: Vec<&str> = t.split(':').collect();
        p.len() == parts && p.iter().all(|x| x.len() == 2 && digits(x))
    };
    if let Some(zone) = zone
        && !(hms(zone, 2) && num(&zone[..2]) <= 23 && num(&zone[3..]) <= 59)
    {
        return false;
    }
    let (clock, fraction) = clock.split_once('.').unwrap_or((clock, "1"));
    hms(clock, 3) && digits(fraction) && num(&clock[..2]) <= 23 && num(&clock[3..5]) <= 59 && num(&clock[6..]) <= 59
}

/// What the API server checks in `metadata` of a custom resource: the name, labels, annotations.
fn validate_metadata(meta: &Value, out: &mut Vec<FieldError>) {
    match (meta["name"].as_str(), meta["generateName"].as_str()) {
        (Some(name), _) if !name.is_empty() => {
            let problems = dns_subdomain(name);
            if !problems.is_empty() {
                out.push(FieldError::new(
                    "metadata.name",
                    Reason::Invalid,
                    format!("Invalid value: {}: {}", go_quote(name), problems.join("; ")),
                ));
            }
        }
        (_, Some(prefix)) if !prefix.is_empty() => {}
        _ => out.push(FieldError::new(
            "metadata.name",
            Reason::Required,
            "Required value: name or generateName is required",
        )),
    }
    for (key, value) in meta["labels"].as_object().into_iter().flatten() {
        for problem in qualified_name(key) {
            out.push(FieldError::new(
                "metadata.labels",
                Reason::Invalid,
                format!("Invalid value: {}: {problem}", go_quote(key)),
            ));
        }
        let value = value.as_str().unwrap_or_default();
        for problem in label_value(value) {
            out.push(FieldError::new(
                "metadata.labels",
                Reason::Invalid,
                format!("Invalid value: {}: {problem}", go_quote(value)),
            ));
        }
    }
    for key in meta["annotations"].as_object().into_iter().flatten().map(|(k, _)| k) {
        for problem in qualified_name(&key.to_lowercase()) {
            out.push(FieldError::new(
                "metadata.annotations",
                Reason::Invalid,
                format!("Invalid value: {}: {problem}", go_quote(key)),
            ));
        }
    }
}

const DNS1123_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
const QUALIFIED_NAME: &str = "^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$";
const LABEL_VALUE: &str = "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";

fn dns_subdomain(s: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if s.len() > 253 {
        problems.push("must be no more than 253 characters".to_string());
    }
    if !matches(DNS1123_SUBDOMAIN, s) {
        problems.push(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must \
             start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                .to_string(),
        );
    }
    problems
}

/// apimachinery's `IsQualifiedName`: `[prefix/]name`, the prefix a DNS subdomain.
fn qualified_name(s: &str) -> Vec<String> {
    let parts: Vec<&str> = s.split('/').collect();
    let name_rule = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an \
                     alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation \
                     is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
    // The API server says "label key" for annotations too.
    let (prefix, name) = match parts.as_slice() {
        [name] => (None, *name),
        [prefix, name] => (Some(*prefix), *name),
        _ => {
            return vec![format!(
                "a valid label key {name_rule} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )];
        }
    };
    let mut problems = Vec::new();
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            problems.push("prefix part must be non-empty".to_string());
        } else {
            problems.extend(dns_subdomain(prefix).into_iter().map(|p| format!("prefix part {p}")));
        }
    }
    if name.is_empty() {
        problems.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        problems.push("name part must be no more than 63 bytes".to_string());
    }
    if !matches(QUALIFIED_NAME, name) {
        problems.push(format!("name part {name_rule}"));
    }
    problems
}

fn label_value(s: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if s.len() > 63 {
        problems.push("must be no more than 63 bytes".to_string());
    }
    if !matches(LABEL_VALUE, s) {
        problems.push(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must \
             start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used \
             for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
                .to_string(),
        );
    }
    problems
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

fn has_type(value: &Value, ty: &str) -> bool {
    match ty {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => true,
    }
}

/// The JSON type name the API server prints.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The Go type kube-openapi names for a value that does not fit a formatted field.
fn go_type(value: &Value) -> &'static str {
    match value {
        Value::Number(n) if n.is_i64() || n.is_u64() => "int64",
        Value::Number(_) => "float64",
        _ => "",
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
