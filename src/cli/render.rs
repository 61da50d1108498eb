//! `kube-baseline render`: offline, the exact objects the operator would apply for a baseline
//! file in given namespaces (the controller's own plan and builders), and why each namespace is
//! selected, excluded or exempted. `--diff` compares them with a live cluster, read-only.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::ObjectMeta;
use kube::core::Selector;
use serde::Serialize;

use crate::api::{IpFamily, Mode, ResolvedEngine, SecurityBaseline};
use crate::cli::cluster::{ClusterArgs, Snapshot};
use crate::cli::judge;
use crate::cli::load;
use crate::core::cilium::CiliumNetworkPolicy;
use crate::core::cluster::Cluster;
use crate::core::desired::{self, Content, DesiredObject, InvalidSpec, ObjectKey, ValidBaseline};
use crate::core::engine::ClusterEngine;
use crate::core::families::ClusterFamilies;
use crate::core::objects::{self, ManagedKind};

mod diff;
pub use diff::diff;

#[derive(Args, Debug)]
pub struct RenderArgs {
    /// The baseline file(s) (or directories, or - for stdin).
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Namespaces to render for: Namespace objects or a List of them (`kubectl get ns -o yaml`).
    #[arg(long, value_name = "FILE", conflicts_with = "namespace")]
    pub namespaces: Option<PathBuf>,
    /// One namespace to render for, with --labels.
    #[arg(long, value_name = "NAME")]
    pub namespace: Option<String>,
    /// The labels of --namespace, as k=v,k2=v2.
    #[arg(long, value_name = "K=V,...", requires = "namespace", value_parser = parse_labels)]
    pub labels: Option<BTreeMap<String, String>>,
    /// Namespaces no baseline touches besides kube-system, kube-public, kube-node-lease and
    /// kube-baseline-system.
    #[arg(long = "system-namespace", value_name = "NAME")]
    pub system_namespaces: Vec<String>,
    /// Compare with the live cluster (read-only) instead of printing the objects: what would be
    /// created, updated, replaced or pruned. Without --namespaces/--namespace, every namespace of
    /// the cluster. Exit code 1 when something would change.
    #[arg(long)]
    pub diff: bool,
    /// The address families the cluster uses, for baselines that leave metadataEgress.ipFamilies
    /// to the cluster (IPv4, or IPv4,IPv6). Without --diff nothing is read from a cluster, and
    /// IPv4 is assumed; with --diff the cluster's own are read.
    #[arg(long = "ip-families", value_name = "IPv4[,IPv6]", value_parser = parse_families, conflicts_with = "diff")]
    pub ip_families: Option<Vec<IpFamily>>,
    /// The policy engine, for baselines whose metadataEgress.engine is Auto: NetworkPolicy (the
    /// default offline) or Cilium (a deny CiliumNetworkPolicy). With --diff the cluster is asked.
    #[arg(long, value_name = "NetworkPolicy|Cilium", value_parser = parse_engine, conflicts_with = "diff")]
    pub engine: Option<ResolvedEngine>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    s.split(',')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| format!("{kv:?} is not k=v"))
        })
        .collect()
}

fn parse_engine(s: &str) -> Result<ResolvedEngine, String> {
    match s {
        "NetworkPolicy" => Ok(ResolvedEngine::NetworkPolicy),
        "Cilium" => Ok(ResolvedEngine::Cilium),
        other => Err(format!("{other:?} is not NetworkPolicy or Cilium")),
    }
}

fn parse_families(s: &str) -> Result<Vec<IpFamily>, String> {
    s.split(',')
        .filter(|f| !f.is_empty())
        .map(|f| match f.trim() {
            "IPv4" => Ok(IpFamily::IPv4),
            "IPv6" => Ok(IpFamily::IPv6),
            other => Err(format!("{other:?} is not IPv4 or IPv6")),
        })
        .collect()
}

pub async fn run(args: RenderArgs) -> anyhow::Result<ExitCode> {
    let baselines = crate::cli::read_baselines(&args.files)?;
    if baselines.is_empty() {
        anyhow::bail!("no SecurityBaseline in {:?}", args.files);
    }
    let system: BTreeSet<String> = crate::cli::system_namespaces(&args.system_namespaces);
    let given = given_namespaces(&args)?;
    if !args.diff {
        let Some(namespaces) = given else {
            anyhow::bail!(
                "say which namespaces to render for: --namespaces FILE, or --namespace NAME [--labels k=v,...] (or --diff to use the cluster's)"
            );
        };
        let families = match &args.ip_families {
            Some(f) => ClusterFamilies {
                families: f.clone(),
                source: "--ip-families".into(),
            },
            None => ClusterFamilies::unknown("not known offline (--ip-families says)"),
        };
        let engine = match args.engine {
            Some(ResolvedEngine::Cilium) => ClusterEngine {
                cilium_policies_served: true,
                cilium_nodes: Some(1),
                unknown: None,
            },
            Some(ResolvedEngine::NetworkPolicy) => ClusterEngine::default(),
            None => ClusterEngine::unknown("offline; --engine says"),
        };
        let cluster = Cluster { families, engine };
        print!(
            "{}",
            render(&baselines, &namespaces, &system, &cluster, Timestamp::now())?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let client = args.cluster.client().await?;
    let snapshot = Snapshot::read(&client).await?;
    let namespaces = match given {
        Some(given) => given
            .into_iter()
            .map(|g| {
                // The live labels decide when the namespace exists; the given ones otherwise.
                snapshot
                    .namespaces
                    .iter()
                    .find(|live| live.name == g.name)
                    .cloned()
                    .unwrap_or(g)
            })
            .collect(),
        None => snapshot.namespaces.clone(),
    };
    let changes = diff(&baselines, &namespaces, &snapshot, &system, Timestamp::now());
    print!("{}", changes.text);
    Ok(if changes.count == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn given_namespaces(args: &RenderArgs) -> anyhow::Result<Option<Vec<ObjectMeta>>> {
    if let Some(name) = &args.namespace {
        return Ok(Some(vec![ObjectMeta {
            name: Some(name.clone()),
            labels: Some(args.labels.clone().unwrap_or_default()),
            ..Default::default()
        }]));
    }
    let Some(path) = &args.namespaces else {
        return Ok(None);
    };
    let (docs, errors) = load::read(std::slice::from_ref(path))?;
    if let Some(e) = errors.first() {
        anyhow::bail!("{e}");
    }
    let mut out = Vec::new();
    for doc in docs {
        let items = match doc.value.get("items").and_then(|i| i.as_array()) {
            Some(items) => items.clone(),
            None => vec![doc.value.clone()],
        };
        for item in items {
            let kind = item.get("kind").and_then(|k| k.as_str()).unwrap_or("Namespace");
            if kind != "Namespace" {
                anyhow::bail!("{}: is a {kind}, not a Namespace", doc.location);
            }
            let ns: Namespace =
                serde_json::from_value(item).map_err(|e| anyhow::anyhow!("{}: not a Namespace: {e}", doc.location))?;
            out.push(ns.metadata);
        }
    }
    Ok(Some(out))
}

/// Why `baseline` does or does not apply in namespace `meta` (one line).
fn why(
    baseline: &SecurityBaseline,
    valid: &Result<ValidBaseline, InvalidSpec>,
    meta: &ObjectMeta,
    plan: &desired::Plan,
) -> String {
    let name = baseline.name_any();
    let facts = judge::facts(meta);
    let valid = match valid {
        Err(e) => return format!("baseline {name} is invalid and writes nothing: {e}"),
        Ok(v) => v,
    };
    if baseline.spec.excluded_namespaces.contains(&facts.name) {
        return format!("excluded by {name} (excludedNamespaces)");
    }
    let Some(verdict) = plan.verdicts.get(&name) else {
        let selector: Selector = valid.selector.clone();
        return format!(
            "not selected by {name} (selector {:?} does not match labels {:?})",
            selector.to_string(),
            facts.labels
        );
    };
    let mut line = format!(
        "selected by {name} ({})",
        match baseline.spec.mode {
            Mode::Enforce => "Enforce: written and repaired",
            Mode::Audit => "Audit: reported, never written",
        }
    );
    if let Some(ex) = &verdict.exemption {
        let reasons: Vec<&str> = baseline
            .spec
            .exemptions
            .iter()
            .filter(|e| e.namespace == facts.name)
            .map(|e| e.reason.as_str())
            .collect();
        let _ = write!(
            line,
            "; exempt from {} until {} ({})",
            ex.controls.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", "),
            ex.expires.0,
            reasons.join("; ")
        );
    }
    for c in &verdict.conflicts {
        let _ = write!(line, "; {} is taken by the older baseline {}", c.key, c.winner);
    }
    line
}

/// The objects the operator would write for one desired entry, as it would write them.
#[derive(Serialize)]
#[serde(untagged)]
enum Rendered {
    Policy(NetworkPolicy),
    Cilium(CiliumNetworkPolicy),
    Binding(RoleBinding),
    Namespace(Namespace),
}

impl From<NetworkPolicy> for Rendered {
    fn from(p: NetworkPolicy) -> Self {
        Self::Policy(p)
    }
}

impl From<CiliumNetworkPolicy> for Rendered {
    fn from(p: CiliumNetworkPolicy) -> Self {
        Self::Cilium(p)
    }
}

impl From<RoleBinding> for Rendered {
    fn from(b: RoleBinding) -> Self {
        Self::Binding(b)
    }
}

fn build(ns: &ObjectMeta, key: &ObjectKey, want: &DesiredObject) -> Rendered {
    let name = ns.name.clone().unwrap_or_default();
    fn object<K: ManagedKind + Into<Rendered>>(ns: &str, name: &str, want: &DesiredObject) -> Rendered {
        objects::expected::<K>(ns, name, want, None)
            .expect("desired content matches its key")
            .into()
    }
    match (key, &want.content) {
        (ObjectKey::NetworkPolicy(n), _) => object::<NetworkPolicy>(&name, n, want),
        (ObjectKey::CiliumPolicy(n), _) => object::<CiliumNetworkPolicy>(&name, n, want),
        (ObjectKey::RoleBinding(n), _) => object::<RoleBinding>(&name, n, want),
        (ObjectKey::PodSecurityLabels, Content::PodSecurityLabels(labels)) => Rendered::Namespace(Namespace {
            metadata: ObjectMeta {
                name: Some(name),
                // An enforcing baseline's labels are applied with the guard label (the
                // protection policy's Deny bindings select on it).
                labels: Some({
                    let mut labels = objects::pod_security_floor(ns, labels);
                    if want.owner.mode == crate::api::Mode::Enforce {
                        labels.insert(objects::GUARD_LABEL.into(), objects::GUARD_VALUE.into());
                    }
                    labels
                }),
                ..Default::default()
            },
            ..Default::default()
        }),
        (ObjectKey::PodSecurityLabels, _) => unreachable!("desired content always matches its key"),
    }
}

/// The YAML stream: a comment block per namespace saying why, then its objects.
pub fn render(
    baselines: &[SecurityBaseline],
    namespaces: &[ObjectMeta],
    system: &BTreeSet<String>,
    cluster: &Cluster,
    now: Timestamp,
) -> anyhow::Result<String> {
    let validated = judge::validated(baselines);
    let mut out = String::from(
        "# Rendered by kube-baseline: the objects the operator applies (server-side apply, field\n# manager kube-baseline), with an ownerReference to the baseline once it exists in the cluster.\n",
    );
    for line in judge::cluster_lines(baselines, cluster) {
        let _ = writeln!(out, "# {line}");
    }
    for meta in namespaces {
        let name = meta.name.clone().unwrap_or_default();
        let plan = judge::plan_for(meta, baselines, &validated, system, cluster, now);
        let _ = writeln!(out, "#\n# namespace {name}:");
        if desired::is_system_namespace(&name, system) {
            let _ = writeln!(out, "#   a system namespace: no baseline ever touches it");
            continue;
        }
        if meta.deletion_timestamp.is_some() {
            let _ = writeln!(out, "#   terminating: nothing is written");
            continue;
        }
        for b in baselines {
            let _ = writeln!(out, "#   {}", why(b, &validated[&b.name_any()], meta, &plan));
        }
        for (key, want) in plan.objects.iter().filter(|(_, w)| w.owner.mode == Mode::Enforce) {
            let _ = writeln!(out, "---");
            if want.contributors.len() > 1 {
                let _ = writeln!(out, "# composed for baselines {}", want.contributors.join(", "));
            }
            out.push_str(&serde_saphyr::to_string(&build(meta, key, want))?);
        }
    }
    Ok(out)
}

/// What `--diff` found.
pub struct Changes {
    pub text: String,
    pub count: usize,
}

#[cfg(test)]
mod tests {
    use super::diff::unified;
    use super::*;

    #[test]
    fn the_line_diff_marks_removed_and_added_lines() {
        let d = unified("a\nb\nc\n", "a\nx\nc\n");
        assert_eq!(d, "      a\n    + x\n    - b\n      c\n");
    }

    #[test]
    fn on_cilium_the_deny_policy_is_rendered_instead_of_the_network_policy_and_says_why() {
        let spec = crate::api::SecurityBaselineSpec {
            metadata_egress: Some(Default::default()),
            ..Default::default()
        };
        let baselines = [SecurityBaseline::new("aks", spec)];
        let ns = [ObjectMeta {
            name: Some("team-a".into()),
            ..Default::default()
        }];
        let on = |engine| Cluster {
            families: ClusterFamilies::unknown("test"),
            engine,
        };
        let cilium = ClusterEngine {
            cilium_policies_served: true,
            cilium_nodes: Some(1),
            unknown: None,
        };
        let out = render(&baselines, &ns, &BTreeSet::new(), &on(cilium), Timestamp::UNIX_EPOCH).unwrap();
        assert!(out.contains("kind: CiliumNetworkPolicy"), "{out}");
        assert!(out.contains("egressDeny"), "{out}");
        assert!(!out.contains("kind: NetworkPolicy"), "{out}");
        assert!(out.contains("# aks: engine Cilium (Auto:"), "{out}");
        let out = render(
            &baselines,
            &ns,
            &BTreeSet::new(),
            &on(ClusterEngine::default()),
            Timestamp::UNIX_EPOCH,
        )
        .unwrap();
        assert!(
            out.contains("kind: NetworkPolicy") && !out.contains("CiliumNetworkPolicy"),
            "{out}"
        );
        assert!(out.contains("# aks: engine NetworkPolicy (Auto:"), "{out}");
    }

    #[test]
    fn labels_parse_as_comma_separated_pairs() {
        let l = parse_labels("a=1,b=two").unwrap();
        assert_eq!(l["a"], "1");
        assert_eq!(l["b"], "two");
        assert!(parse_labels("a").is_err());
    }
}
