//! The OpenAPI v3 keywords of a structural schema, checked as kube-openapi checks them, with its
//! wording; and the type names it prints.

use serde_json::Value;

use super::*;

/// The OpenAPI v3 keywords a structural schema can carry, checked as kube-openapi checks them.
pub(super) fn validate_value(value: &Value, schema: &Value, path: &str, out: &mut Vec<FieldError>) {
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

pub(super) fn not_supported(value: &Value, allowed: &[Value], path: &str) -> FieldError {
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
pub(super) fn validate_string(s: &str, schema: &Value, path: &str, out: &mut Vec<FieldError>) {
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

pub(super) fn validate_number(n: &serde_json::Number, schema: &Value, path: &str, out: &mut Vec<FieldError>) {
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
pub(super) fn matches(pattern: &str, s: &str) -> bool {
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

pub(super) fn has_type(value: &Value, ty: &str) -> bool {
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
pub(super) fn json_type(value: &Value) -> &'static str {
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
pub(super) fn go_type(value: &Value) -> &'static str {
    match value {
        Value::Number(n) if n.is_i64() || n.is_u64() => "int64",
        Value::Number(_) => "float64",
        _ => "",
    }
}
