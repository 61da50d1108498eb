//! Strict decoding (fields the schema does not declare, metadata of the wrong shape) and
//! structural defaulting, as the API server does them before validation.

use super::*;

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
pub(super) fn decode_errors(value: &Value, schema: &Value, path: &str, out: &mut Vec<FieldError>) {
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

pub(super) fn unknown(path: &str) -> FieldError {
    FieldError::new(path, Reason::UnknownField, "unknown field")
}

pub(super) fn decode_metadata(meta: &Value, out: &mut Vec<FieldError>) {
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
pub(super) fn prune_nulls_and_default(value: &mut Value, schema: &Value) {
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
