//! The subcommands users run beside (or before) the operator: `validate` a baseline offline,
//! `render` what it would write, `audit` a live cluster. They share the core with the
//! controller, so they decide exactly as it does.

pub mod api_docs;
pub mod audit;
pub mod cluster;
pub mod judge;
pub mod load;
pub mod positions;
pub mod render;
pub mod validate;

use std::path::PathBuf;
use std::time::Duration;

use crate::api::SecurityBaseline;

/// The operator's own namespace in `config/default` (the chart uses its release namespace, which
/// it also makes a system namespace): both installs pass it as `--system-namespace`, so the
/// subcommands count it as one too, besides what `--system-namespace` adds.
pub const OPERATOR_NAMESPACE: &str = "kube-baseline-system";

/// The namespaces no baseline touches besides the built-in ones, as the installed operator sees them.
pub fn system_namespaces(extra: &[String]) -> std::collections::BTreeSet<String> {
    extra
        .iter()
        .cloned()
        .chain(std::iter::once(OPERATOR_NAMESPACE.to_string()))
        .collect()
}

/// Durations like `500ms`, `15s`, `2m` (and `1h` for waits).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 15s or 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{s:?} is not a duration like 500ms, 15s or 2m")),
    }
}

/// The SecurityBaselines of `paths` when every document is valid (`validate`'s checks and
/// wording, with `file:document` locations); otherwise every problem.
pub fn read_baselines(paths: &[PathBuf]) -> anyhow::Result<Vec<SecurityBaseline>> {
    Ok(validate::load_baselines(paths)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operators_own_namespace_is_always_a_system_namespace() {
        let s = system_namespaces(&["platform".to_string()]);
        assert!(s.contains("platform") && s.contains(OPERATOR_NAMESPACE));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    }
}
