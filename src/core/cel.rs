//! The CRD's CEL rules (`x-kubernetes-validations`), implemented in Rust for offline validation.
//!
//! A rule is found by its exact text, so a rule that changes in `api.rs` no longer matches its
//! old implementation: `validate` then reports it as unimplemented, and the unit test
//! `every_crd_rule_is_implemented` fails, so no rule can be forgotten.

use std::net::IpAddr;
use std::sync::OnceLock;

use regex::Regex;
use serde_json::Value;

/// A rule's Rust implementation: whether `self` (the value at the rule's schema node, with
/// defaults applied) satisfies it, or why evaluating it fails (the API server then reports
/// `Invalid value: "object": <why> evaluating rule: <message>`).
pub type Check = fn(&Value) -> Result<bool, String>;

/// Every rule of the CRD, by its exact text.
pub const RULES: &[(&str, Check)] = &[
    (
        "self.groupFormat == 'Any' || self.roleBindings.all(rb, rb.groups.all(g, g.matches('^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$')))",
        groups_are_guids_unless_any,
    ),
    (
        "self.all(c, isCIDR(c) && cidr(c).prefixLength() > 0 && cidr(c) == cidr(c).masked())",
        cidrs_are_canonical_with_a_prefix,
    ),
    ("'IPv4' in self", contains_ipv4),
    ("type(self.expires) == google.protobuf.Timestamp", expires_is_a_time),
];

/// The implementation of `rule`, when there is one.
pub fn implementation(rule: &str) -> Option<Check> {
    RULES.iter().find(|(text, _)| *text == rule).map(|(_, check)| *check)
}

fn groups_are_guids_unless_any(spec: &Value) -> Result<bool, String> {
    static GUID: OnceLock<Regex> = OnceLock::new();
    let guid = GUID.get_or_init(|| {
        Regex::new("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$").expect("GUID regex")
    });
    if spec["groupFormat"] == "Any" {
        return Ok(true);
    }
    Ok(items(&spec["roleBindings"])
        .all(|rb| items(&rb["groups"]).all(|g| g.as_str().is_some_and(|g| guid.is_match(g)))))
}

fn cidrs_are_canonical_with_a_prefix(cidrs: &Value) -> Result<bool, String> {
    Ok(items(cidrs).all(|c| {
        c.as_str()
            .and_then(parse_cidr)
            .is_some_and(|(addr, bits)| bits > 0 && masked(addr, bits) == addr)
    }))
}

fn contains_ipv4(families: &Value) -> Result<bool, String> {
    Ok(items(families).any(|f| f == "IPv4"))
}

/// CEL reads `expires` (`format: date-time`) as a timestamp: anything but a string, or a string
/// Go's strict RFC 3339 parser refuses (a lower-case `t` or `z`, which the format check lets
/// through), fails the evaluation.
fn expires_is_a_time(exemption: &Value) -> Result<bool, String> {
    static RFC3339: OnceLock<Regex> = OnceLock::new();
    let strict = RFC3339.get_or_init(|| {
        Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$").expect("RFC 3339 regex")
    });
    match &exemption["expires"] {
        Value::String(s) if strict.is_match(s) => Ok(true),
        Value::String(s) => Err(format!(
            "Invalid date-time formatted string {s}: not RFC 3339 (upper-case T and Z, e.g. 2027-01-31T00:00:00Z)"
        )),
        other => Err(format!("invalid data, expected string, got {}", go_type(other))),
    }
}

/// The Go type a JSON value decodes to, as the API server names it.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_i64() || n.is_u64() => "int64",
        Value::Number(_) => "float64",
        Value::Null => "<nil>",
        Value::String(_) => "string",
    }
}

fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

/// CEL's `isCIDR`/`cidr()` of the Kubernetes CEL library: Go's `netip.ParsePrefix` (no zone, no
/// leading zeros in the prefix length or in IPv4 octets), and no IPv4-mapped IPv6 address.
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, bits) = s.split_once('/')?;
    if addr.contains('%') || bits.is_empty() || !bits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if bits.len() > 1 && bits.starts_with('0') {
        return None;
    }
    let addr: IpAddr = addr.parse().ok()?;
    let bits: u8 = bits.parse().ok()?;
    let max = match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(v6) => {
            if v6.to_ipv4_mapped().is_some() {
                return None;
            }
            128
        }
    };
    (bits <= max).then_some((addr, bits))
}

fn masked(addr: IpAddr, bits: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cidrs_parse_like_go_netip() {
        assert_eq!(
            parse_cidr("169.254.169.254/32"),
            Some(("169.254.169.254".parse().unwrap(), 32))
        );
        assert!(parse_cidr("fd00:ec2::254/128").is_some());
        for bad in [
            "10.0.0.0",
            "10.0.0.0/08",
            "010.0.0.0/8",
            "10.0.0.0/33",
            "::ffff:10.0.0.0/104",
            "fe80::1%eth0/64",
            "10.0.0.0/",
            "10.0.0.0/+8",
        ] {
            assert_eq!(parse_cidr(bad), None, "{bad}");
        }
    }

    #[test]
    fn cidr_rule_wants_canonical_cidrs_with_a_prefix() {
        let ok = |v: Value| cidrs_are_canonical_with_a_prefix(&v) == Ok(true);
        assert!(ok(json!(["169.254.169.254/32", "fd00:ec2::254/128", "10.0.0.0/8"])));
        assert!(!ok(json!(["10.0.0.1/8"])));
        assert!(!ok(json!(["0.0.0.0/0"])));
        assert!(!ok(json!(["::/0"])));
        assert!(!ok(json!(["nope"])));
    }

    #[test]
    fn group_rule_allows_any_name_only_with_group_format_any() {
        let spec = |format: &str, group: &str| json!({"groupFormat": format, "roleBindings": [{"name": "a", "clusterRole": "edit", "groups": [group]}]});
        let ok = |v: Value| groups_are_guids_unless_any(&v) == Ok(true);
        assert!(ok(spec("Guid", "3F2504E0-4f89-11d3-9a0c-0305e82c3301")));
        assert!(!ok(spec("Guid", "developers")));
        assert!(ok(spec("Any", "developers")));
    }

    #[test]
    fn ip_families_must_contain_ipv4() {
        assert_eq!(contains_ipv4(&json!(["IPv6", "IPv4"])), Ok(true));
        assert_eq!(contains_ipv4(&json!(["IPv6"])), Ok(false));
    }

    #[test]
    fn expires_must_be_a_strict_rfc3339_string() {
        let check = |v: Value| expires_is_a_time(&json!({ "expires": v }));
        assert_eq!(check(json!("2027-01-31T00:00:00Z")), Ok(true));
        assert_eq!(check(json!("2027-01-31T00:00:00.5+01:00")), Ok(true));
        assert!(check(json!("2027-01-31t00:00:00z")).is_err());
        assert_eq!(
            check(json!(["2027-01-31T00:00:00Z"])),
            Err("invalid data, expected string, got []interface {}".into())
        );
    }
}
