//! `metadata` of a custom resource as the API server checks it: the name a DNS subdomain, label
//! keys and values, annotation keys, in apimachinery's wording.

use serde_json::Value;

use super::{FieldError, Reason, go_quote, matches};

/// What the API server checks in `metadata` of a custom resource: the name, labels, annotations.
pub(super) fn validate_metadata(meta: &Value, out: &mut Vec<FieldError>) {
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
