//! The policy the operator writes on Cilium, judged by Cilium's own policy engine: the referee in
//! e2e/cilium/ (Cilium v1.20.2's `policy.LookupFlow` on the distilled policy map state, with its
//! reference simulator as a second opinion). Needs Go (the first run builds the referee into the
//! cache), not the local control plane.
//!
//! The operator's CiliumNetworkPolicy comes from the library (`core::cilium::metadata_deny_spec`),
//! for several blockedCIDRs lists, each next to a team's own policies (none, NetworkPolicies, CNPs,
//! a CCNP), for two pods of the namespace, in three cluster configurations (IPv4 only, dual-stack,
//! IPv4 with `--policy-cidr-match-mode=nodes`). Every verdict is compared with what the operator
//! promises: each address inside a blocked CIDR is denied whatever the team allows, and the rest
//! (the Internet, the node, other nodes, the API server, LocalDNS, other pods) is left to the
//! team's policies: allowed when no team policy narrows it.
//!
//! The NetworkPolicy the operator writes on other engines (`core::policy::metadata_egress_spec`)
//! is asked too, as documentation (docs/network-policy-engines.md): on Cilium it denies the
//! metadata endpoint, and also the node, other nodes and LocalDNS as a node address.
//!
//! Controls change one thing in the operator's policy and must flip a verdict, so that a referee
//! or a generator that answers blindly fails. Not asked: `toFQDNs` (the referee has no DNS proxy
//! state; e2e/cilium/README.md lists what it does not model).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube_baseline::core::cilium::{CiliumNetworkPolicy, CiliumPolicySpec, metadata_deny_spec};
use kube_baseline::core::objects::{BASELINE_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use kube_baseline::core::policy::metadata_egress_spec;
use serde::Deserialize;
use serde_json::{Value, json};

const NAMESPACE: &str = "team-a";
const POLICY_NAME: &str = "restrict-instance-metadata";
const BASELINE: &str = "cloud-defaults";

/// A cluster configuration the referee models (its `cluster` input).
#[derive(Clone, Copy, Debug)]
struct Cluster {
    name: &'static str,
    ipv6: bool,
    cidr_match_nodes: bool,
}

const CLUSTERS: [Cluster; 3] = [
    Cluster {
        name: "ipv4",
        ipv6: false,
        cidr_match_nodes: false,
    },
    Cluster {
        name: "dual-stack",
        ipv6: true,
        cidr_match_nodes: false,
    },
    Cluster {
        name: "ipv4 cidr-match-nodes",
        ipv6: false,
        cidr_match_nodes: true,
    },
];

/// blockedCIDRs lists a baseline may have.
const BLOCKED: [(&str, &[&str]); 4] = [
    ("IMDS", &["169.254.169.254/32"]),
    ("IMDS+WireServer", &["169.254.169.254/32", "168.63.129.16/32"]),
    ("IMDS+IPv6", &["169.254.169.254/32", "fd00:ec2::254/128"]),
    ("link-local /16", &["169.254.0.0/16"]),
];

/// What a destination is to Cilium (see "How the destinations of the questions are modelled" in
/// e2e/cilium/README.md).
#[derive(Clone, Copy, Debug)]
enum To {
    /// An address outside the cluster: `world` (`world-ipv4`/`-ipv6` when dual-stack).
    Addr(&'static str),
    /// An address the agent knows as its node's own (`reserved:host`), such as AKS LocalDNS.
    HostAddr(&'static str),
    /// The pod's node.
    Host,
    /// Another node.
    RemoteNode,
    /// A managed API server outside the nodes (AKS): `kube-apiserver` and `world`.
    ApiServerOutside(&'static str),
    /// An API server on a node (kubeadm, kind): `kube-apiserver` and `remote-node`.
    ApiServerOnNode,
    /// A pod.
    Pod(&'static str, &'static str),
}

#[derive(Clone, Copy, Debug)]
struct Flow {
    name: &'static str,
    to: To,
    port: u16,
    protocol: &'static str,
}

const fn flow(name: &'static str, to: To, port: u16, protocol: &'static str) -> Flow {
    Flow {
        name,
        to,
        port,
        protocol,
    }
}

/// Addresses inside and beside each blocked CIDR, and everything a pod must keep reaching.
const FLOWS: [Flow; 17] = [
    flow("imds", To::Addr("169.254.169.254"), 80, "TCP"),
    flow("imds udp", To::Addr("169.254.169.254"), 53, "UDP"),
    flow("imds neighbour", To::Addr("169.254.169.253"), 80, "TCP"),
    flow("link-local low", To::Addr("169.254.0.1"), 80, "TCP"),
    flow("link-local high", To::Addr("169.254.255.254"), 443, "TCP"),
    flow("wireserver", To::Addr("168.63.129.16"), 80, "TCP"),
    flow("wireserver 32526", To::Addr("168.63.129.16"), 32526, "TCP"),
    flow("localdns as world", To::Addr("169.254.10.10"), 53, "UDP"),
    flow("localdns .10 as host", To::HostAddr("169.254.10.10"), 53, "UDP"),
    flow("localdns .11 as host", To::HostAddr("169.254.10.11"), 53, "TCP"),
    flow("world", To::Addr("203.0.113.10"), 443, "TCP"),
    flow("host", To::Host, 10250, "TCP"),
    flow("remote-node", To::RemoteNode, 10250, "TCP"),
    flow("apiserver outside", To::ApiServerOutside("198.51.100.20"), 443, "TCP"),
    flow("apiserver on node", To::ApiServerOnNode, 6443, "TCP"),
    flow("pod other namespace", To::Pod("team-b", "db"), 5432, "TCP"),
    flow("pod same namespace", To::Pod(NAMESPACE, "cache"), 6379, "TCP"),
];

/// Asked in dual-stack clusters only.
const FLOWS_V6: [Flow; 3] = [
    flow("imds v6", To::Addr("fd00:ec2::254"), 80, "TCP"),
    flow("imds v6 neighbour", To::Addr("fd00:ec2::253"), 80, "TCP"),
    flow("world v6", To::Addr("2001:db8::10"), 443, "TCP"),
];

impl Flow {
    fn destination(&self) -> Value {
        match self.to {
            To::Addr(ip) => json!({"ip": ip}),
            To::HostAddr(ip) => json!({"ip": ip, "reserved": ["host"]}),
            To::Host => json!({"reserved": ["host"]}),
            To::RemoteNode => json!({"reserved": ["remote-node"]}),
            To::ApiServerOutside(ip) => json!({"ip": ip, "reserved": ["kube-apiserver"]}),
            To::ApiServerOnNode => json!({"reserved": ["kube-apiserver", "remote-node"]}),
            To::Pod(namespace, app) => json!({"pod": {"namespace": namespace, "labels": {"app": app}}}),
        }
    }

    fn question(&self) -> Value {
        json!({"name": self.name, "to": self.destination(), "port": self.port, "protocol": self.protocol})
    }

    /// The address, for a destination known by one.
    fn ip(&self) -> Option<IpAddr> {
        match self.to {
            To::Addr(ip) | To::HostAddr(ip) | To::ApiServerOutside(ip) => Some(ip.parse().unwrap()),
            _ => None,
        }
    }

    /// Whether Cilium gives the destination a `world` label (an address outside the cluster).
    fn is_world(&self) -> bool {
        matches!(self.to, To::Addr(_) | To::ApiServerOutside(_))
    }

    /// Whether a deny to `blocked` CIDRs applies: to an address outside the cluster in one of
    /// them. To the node only where CIDR selectors select nodes (`--policy-cidr-match-mode=nodes`;
    /// otherwise a node identity has no `cidr:` label, so no CIDR rule, allow or deny, matches
    /// it), and then to all of it: the node has one identity, carrying the labels of all its
    /// addresses (the host addresses among `flows`), so one address inside a blocked CIDR puts
    /// every flow to the node under the deny.
    fn blocked_by(&self, blocked: &[IpNet], cluster: Cluster, flows: &[Flow]) -> Option<IpNet> {
        let inside = |ip: IpAddr| blocked.iter().copied().find(|net| net.contains(&ip));
        match self.to {
            To::Addr(_) | To::ApiServerOutside(_) => inside(self.ip()?),
            To::Host | To::HostAddr(_) if cluster.cidr_match_nodes => flows
                .iter()
                .filter(|f| matches!(f.to, To::HostAddr(_)))
                .find_map(|f| inside(f.ip()?)),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        let to = match self.to {
            To::Addr(ip) => ip.to_string(),
            To::HostAddr(ip) => format!("{ip} (reserved:host)"),
            To::Host => "reserved:host".into(),
            To::RemoteNode => "reserved:remote-node".into(),
            To::ApiServerOutside(ip) => format!("{ip} (reserved:kube-apiserver)"),
            To::ApiServerOnNode => "reserved:kube-apiserver+remote-node".into(),
            To::Pod(ns, app) => format!("pod {ns} app={app}"),
        };
        format!("{to} {}/{}", self.port, self.protocol)
    }
}

/// The two pods of the namespace every policy here is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pod {
    Web,
    Batch,
}

impl Pod {
    fn name(self) -> &'static str {
        match self {
            Pod::Web => "web",
            Pod::Batch => "batch",
        }
    }

    fn to_json(self) -> Value {
        match self {
            Pod::Web => json!({"namespace": NAMESPACE, "labels": {"app": "web"}}),
            Pod::Batch => json!({
                "namespace": NAMESPACE,
                "labels": {"app": "batch", "role": "worker"},
                "namespaceLabels": {"team": "a"},
                "serviceAccount": "builder",
            }),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Verdict {
    Allowed,
    Denied,
}

impl Verdict {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "allowed" => Some(Self::Allowed),
            "denied" => Some(Self::Denied),
            _ => None,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Allowed => "allowed",
            Verdict::Denied => "denied",
        })
    }
}

/// A team's own policies in the namespace (or, for the CCNP, the cluster).
#[derive(Clone, Copy, Debug)]
enum Team {
    None,
    NpAllowAll,
    NpIpBlockAll,
    NpImds,
    NpDefaultDeny,
    NpDefaultDenyWebOnly,
    CnpEntitiesAll,
    CnpEntitiesWorld,
    CnpToCidrImds,
    CcnpAllowAll,
}

const TEAMS: [Team; 10] = [
    Team::None,
    Team::NpAllowAll,
    Team::NpIpBlockAll,
    Team::NpImds,
    Team::NpDefaultDeny,
    Team::NpDefaultDenyWebOnly,
    Team::CnpEntitiesAll,
    Team::CnpEntitiesWorld,
    Team::CnpToCidrImds,
    Team::CcnpAllowAll,
];

fn np(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec})
}

fn cnp(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
           "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec})
}

/// Policies of one scenario, by kind, as the referee takes them.
#[derive(Default, Clone)]
struct Policies {
    nps: Vec<Value>,
    cnps: Vec<Value>,
    ccnps: Vec<Value>,
}

impl Team {
    fn name(self) -> &'static str {
        match self {
            Team::None => "no team policy",
            Team::NpAllowAll => "team NP egress [{}]",
            Team::NpIpBlockAll => "team NP ipBlock 0.0.0.0/0",
            Team::NpImds => "team NP ipBlock 169.254.169.254/32",
            Team::NpDefaultDeny => "team NP default-deny egress",
            Team::NpDefaultDenyWebOnly => "team NP default-deny egress for app=web",
            Team::CnpEntitiesAll => "team CNP toEntities [all]",
            Team::CnpEntitiesWorld => "team CNP toEntities [world]",
            Team::CnpToCidrImds => "team CNP toCIDR 169.254.169.254/32",
            Team::CcnpAllowAll => "CCNP toEntities [all]",
        }
    }

    fn add_to(self, p: &mut Policies) {
        let egress = |to: Value| json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [to]}]});
        match self {
            Team::None => {}
            Team::NpAllowAll => p.nps.push(np(
                "team-allow-all",
                json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}),
            )),
            Team::NpIpBlockAll => p
                .nps
                .push(np("team-internet", egress(json!({"ipBlock": {"cidr": "0.0.0.0/0"}})))),
            Team::NpImds => p.nps.push(np(
                "team-imds",
                egress(json!({"ipBlock": {"cidr": "169.254.169.254/32"}})),
            )),
            Team::NpDefaultDeny => p.nps.push(np(
                "team-default-deny",
                json!({"podSelector": {}, "policyTypes": ["Egress"]}),
            )),
            Team::NpDefaultDenyWebOnly => p.nps.push(np(
                "team-default-deny-web",
                json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"]}),
            )),
            Team::CnpEntitiesAll => p.cnps.push(cnp(
                "team-all",
                json!({"endpointSelector": {}, "egress": [{"toEntities": ["all"]}]}),
            )),
            Team::CnpEntitiesWorld => p.cnps.push(cnp(
                "team-world",
                json!({"endpointSelector": {}, "egress": [{"toEntities": ["world"]}]}),
            )),
            Team::CnpToCidrImds => p.cnps.push(cnp(
                "team-imds",
                json!({"endpointSelector": {}, "egress": [{"toCIDR": ["169.254.169.254/32"]}]}),
            )),
            Team::CcnpAllowAll => p.ccnps.push(json!({
                "apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
                "metadata": {"name": "platform-allow-all"},
                "spec": {"endpointSelector": {}, "egress": [{"toEntities": ["all"]}]},
            })),
        }
    }

    /// What the team's policies alone do to `flow` from `pod`, and why. A policy with an egress
    /// rule (NetworkPolicy, or CNP with the default `enableDefaultDeny`) puts the pod in egress
    /// default deny: then only what it allows is allowed.
    fn verdict(self, flow: &Flow, pod: Pod) -> (Verdict, &'static str) {
        use Verdict::*;
        let is_imds = flow.ip() == Some("169.254.169.254".parse().unwrap()) && flow.is_world();
        let ipv4_world = flow.is_world() && flow.ip().is_some_and(|ip| ip.is_ipv4());
        match self {
            Team::None => (Allowed, "no team policy narrows it"),
            Team::NpAllowAll | Team::CnpEntitiesAll | Team::CcnpAllowAll => (Allowed, "the team allows all egress"),
            Team::NpDefaultDeny => (Denied, "the team's default deny"),
            Team::NpDefaultDenyWebOnly if pod == Pod::Web => (Denied, "the team's default deny for app=web"),
            Team::NpDefaultDenyWebOnly => (Allowed, "the team's default deny selects app=web only"),
            Team::NpIpBlockAll if ipv4_world => (Allowed, "the team allows 0.0.0.0/0 (world-ipv4)"),
            Team::NpIpBlockAll => (
                Denied,
                "the team's default deny: 0.0.0.0/0 selects world IPv4 addresses only, no node, pod or IPv6",
            ),
            Team::CnpEntitiesWorld if flow.is_world() => (Allowed, "the team allows the world entity"),
            Team::CnpEntitiesWorld => (Denied, "the team's default deny: not world"),
            Team::NpImds | Team::CnpToCidrImds if is_imds => (Allowed, "the team allows IMDS"),
            Team::NpImds | Team::CnpToCidrImds => (Denied, "the team's default deny: it allows IMDS only"),
        }
    }
}

/// One scenario: its policies, its pod, and the verdict expected for each flow.
struct Scenario {
    name: String,
    pod: Pod,
    policies: Policies,
    expected: Vec<(Verdict, String)>,
}

impl Scenario {
    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "pod": self.pod.to_json(),
            "networkPolicies": self.policies.nps,
            "ciliumNetworkPolicies": self.policies.cnps,
            "ciliumClusterwideNetworkPolicies": self.policies.ccnps,
        })
    }
}

fn nets(cidrs: &[&str]) -> Vec<IpNet> {
    cidrs.iter().map(|c| c.parse().unwrap()).collect()
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
        (BASELINE_LABEL.to_string(), BASELINE.to_string()),
    ])
}

fn meta() -> ObjectMeta {
    ObjectMeta {
        name: Some(POLICY_NAME.into()),
        namespace: Some(NAMESPACE.into()),
        labels: Some(labels()),
        ..Default::default()
    }
}

/// The operator's CiliumNetworkPolicy, as it would write it: the library's spec, whole.
fn operator_cnp(spec: CiliumPolicySpec) -> Value {
    let policy = CiliumNetworkPolicy {
        api_version: "cilium.io/v2".into(),
        kind: "CiliumNetworkPolicy".into(),
        metadata: meta(),
        spec: Some(spec),
        specs: None,
    };
    serde_json::to_value(policy).unwrap()
}

/// The operator's NetworkPolicy, as it writes it on other engines.
fn operator_np(blocked: &[IpNet], ipv6: bool) -> NetworkPolicy {
    NetworkPolicy {
        metadata: meta(),
        spec: Some(metadata_egress_spec(blocked, ipv6)),
    }
}

/// What a NetworkPolicy like the operator's does on Cilium: `ipBlock`s select world addresses
/// only, `namespaceSelector: {}` selects pods only, so everything on a node is denied.
fn np_on_cilium(flow: &Flow, blocked: &[IpNet], ipv6_peer: bool) -> (Verdict, String) {
    use Verdict::*;
    let excepted = flow.ip().and_then(|ip| blocked.iter().find(|n| n.contains(&ip)));
    match flow.to {
        To::Addr(_) | To::ApiServerOutside(_) => match (flow.ip().unwrap().is_ipv6(), excepted) {
            (_, Some(net)) => (Denied, format!("an except of the operator's NetworkPolicy ({net})")),
            (true, None) if !ipv6_peer => (Denied, "no ::/0 peer: default deny".into()),
            _ => (Allowed, "the 0.0.0.0/0 (or ::/0) peer: a world address".into()),
        },
        To::Pod(..) => (Allowed, "the namespaceSelector: {} peer".into()),
        To::HostAddr(_) | To::Host | To::RemoteNode | To::ApiServerOnNode => (
            Denied,
            "default deny: on Cilium no ipBlock selects a node identity (documented in docs/network-policy-engines.md)"
                .into(),
        ),
    }
}

fn scenarios(cluster: Cluster, flows: &[Flow]) -> Vec<Scenario> {
    let mut out = Vec::new();
    for (set, cidrs) in BLOCKED {
        let blocked = nets(cidrs);
        let baseline = operator_cnp(metadata_deny_spec(&blocked));
        for team in TEAMS {
            for pod in [Pod::Web, Pod::Batch] {
                let mut policies = Policies {
                    cnps: vec![baseline.clone()],
                    ..Default::default()
                };
                team.add_to(&mut policies);
                let expected = flows
                    .iter()
                    .map(|f| match f.blocked_by(&blocked, cluster, flows) {
                        Some(net) => (Verdict::Denied, format!("the operator's egressDeny to {net}")),
                        None => {
                            let (v, why) = team.verdict(f, pod);
                            (v, why.to_string())
                        }
                    })
                    .collect();
                out.push(Scenario {
                    name: format!("operator CNP {set} | {} | pod {}", team.name(), pod.name()),
                    pod,
                    policies,
                    expected,
                });
            }
        }

        // Documentation: the NetworkPolicy the operator writes elsewhere, on Cilium. In a
        // dual-stack cluster also without its ::/0 peer (a baseline with ipFamilies [IPv4]).
        let variants: &[bool] = if cluster.ipv6 { &[true, false] } else { &[false] };
        for &ipv6_peer in variants {
            let policy = serde_json::to_value(operator_np(&blocked, ipv6_peer)).unwrap();
            out.push(Scenario {
                name: format!(
                    "operator NetworkPolicy {set}{} (documentation) | pod web",
                    if ipv6_peer { " with ::/0" } else { "" }
                ),
                pod: Pod::Web,
                policies: Policies {
                    nps: vec![policy],
                    ..Default::default()
                },
                expected: flows.iter().map(|f| np_on_cilium(f, &blocked, ipv6_peer)).collect(),
            });
        }
    }
    out.extend(controls(cluster, flows));
    out
}

/// One change each to the operator's policies that must flip verdicts.
fn controls(cluster: Cluster, flows: &[Flow]) -> Vec<Scenario> {
    use Verdict::*;
    let blocked = nets(&["169.254.169.254/32"]);
    let one_cnp = |name: &str, spec: CiliumPolicySpec, expect: &dyn Fn(&Flow) -> (Verdict, String)| Scenario {
        name: format!("control: {name}"),
        pod: Pod::Web,
        policies: Policies {
            cnps: vec![operator_cnp(spec)],
            ..Default::default()
        },
        expected: flows.iter().map(expect).collect(),
    };
    let mut out = Vec::new();

    // Without enableDefaultDeny a rule in a direction (a deny rule too) turns default deny on
    // for it: the deny would cut everything else off. The operator's `egress: false` is needed.
    let mut spec = metadata_deny_spec(&blocked);
    spec.enable_default_deny = None;
    out.push(one_cnp(
        "operator CNP without enableDefaultDeny",
        spec,
        &|f| match f.blocked_by(&blocked, cluster, flows) {
            Some(net) => (Denied, format!("the egressDeny to {net}")),
            None => (
                Denied,
                "egress default deny, on by default for a policy with egress rules".into(),
            ),
        },
    ));

    // Selecting other pods, it leaves this one alone.
    let mut spec = metadata_deny_spec(&blocked);
    spec.endpoint_selector = Some(LabelSelector {
        match_labels: Some(BTreeMap::from([("app".to_string(), "other".to_string())])),
        ..Default::default()
    });
    out.push(one_cnp("operator CNP selecting app=other", spec, &|_| {
        (Allowed, "no policy selects the pod".into())
    }));

    // The blocked CIDRs in the other rule list: allowed, not denied; with default deny off an
    // allow changes nothing. (Without any rule list Cilium refuses the policy: "rule must have
    // at least one of Ingress, IngressDeny, Egress, EgressDeny".)
    let mut spec = metadata_deny_spec(&blocked);
    let rules = spec.egress_deny.take();
    spec.other.insert("egress".into(), serde_json::to_value(rules).unwrap());
    out.push(one_cnp("operator CNP with egress instead of egressDeny", spec, &|_| {
        (Allowed, "an allow with default deny off adds nothing".into())
    }));

    // The operator's NetworkPolicy without its except.
    let mut policy = operator_np(&blocked, cluster.ipv6);
    for rule in policy.spec.as_mut().unwrap().egress.iter_mut().flatten() {
        for peer in rule.to.iter_mut().flatten() {
            if let Some(block) = peer.ip_block.as_mut() {
                block.except = None;
            }
        }
    }
    out.push(Scenario {
        name: "control: operator NetworkPolicy without except".into(),
        pod: Pod::Web,
        policies: Policies {
            nps: vec![serde_json::to_value(policy).unwrap()],
            ..Default::default()
        },
        expected: flows.iter().map(|f| np_on_cilium(f, &[], cluster.ipv6)).collect(),
    });
    out
}

fn referee_binary() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/cilium/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("referee")
        .stderr(Stdio::inherit())
        .output()
        .expect("run e2e/cilium/build.sh referee");
    assert!(
        out.status.success(),
        "{} referee failed (it needs Go)",
        script.display()
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// One verdict of the referee (e2e/cilium/main.go's `verdict`).
#[derive(Deserialize, Debug)]
struct Answer {
    scenario: String,
    flow: String,
    identity: u32,
    labels: Vec<String>,
    verdict: String,
    simulator: String,
    why: String,
}

fn ask(binary: &Path, input: &Value) -> Vec<Answer> {
    let input = serde_json::to_vec(input).unwrap();
    let mut child = Command::new(binary)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
    let mut stdin = child.stdin.take().unwrap();
    // Written from another thread: a referee that dies early must not leave us blocked on a pipe.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    assert!(
        out.status.success(),
        "the Cilium referee failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the referee prints a JSON array of verdicts")
}

#[test]
fn cilium_denies_the_blocked_cidrs_and_nothing_else() {
    let started = Instant::now();
    let binary = referee_binary();
    let mut failures = Vec::new();
    let (mut total_scenarios, mut total, mut allowed) = (0, 0, 0);
    let mut per_cluster = Vec::new();
    for cluster in CLUSTERS {
        let flows: Vec<Flow> = FLOWS
            .iter()
            .chain(if cluster.ipv6 { &FLOWS_V6[..] } else { &[] })
            .copied()
            .collect();
        let scenarios = scenarios(cluster, &flows);
        let input = json!({
            "cluster": {"ipv6": cluster.ipv6, "policyCIDRMatchNodes": cluster.cidr_match_nodes},
            "flows": flows.iter().map(Flow::question).collect::<Vec<_>>(),
            "scenarios": scenarios.iter().map(Scenario::to_json).collect::<Vec<_>>(),
        });
        let answers = ask(&binary, &input);
        assert_eq!(
            answers.len(),
            scenarios.len() * flows.len(),
            "[{}] one verdict per scenario and flow",
            cluster.name
        );
        let asked = scenarios
            .iter()
            .flat_map(|s| flows.iter().zip(&s.expected).map(move |(f, e)| (s, f, e)));
        for ((scenario, flow, (expected, because)), answer) in asked.zip(&answers) {
            assert_eq!(
                (answer.scenario.as_str(), answer.flow.as_str()),
                (scenario.name.as_str(), flow.name),
                "the referee answers in the order asked"
            );
            let here = || {
                format!(
                    "[{}] scenario \"{}\", flow \"{}\" ({}):",
                    cluster.name,
                    scenario.name,
                    flow.name,
                    flow.describe()
                )
            };
            let said = || {
                format!(
                    "Cilium's LookupFlow said {} ({}; destination identity {} {:?})",
                    answer.verdict, answer.why, answer.identity, answer.labels
                )
            };
            match Verdict::parse(&answer.verdict) {
                Some(v) if v == *expected => {}
                _ => failures.push(format!("{} expected {expected} ({because}); {}", here(), said())),
            }
            if answer.simulator != answer.verdict {
                failures.push(format!(
                    "{} Cilium's simulator said {}, its map state {}",
                    here(),
                    answer.simulator,
                    answer.verdict
                ));
            }
            allowed += usize::from(answer.verdict == "allowed");
        }
        per_cluster.push(format!(
            "{}: {} x {} = {}",
            cluster.name,
            scenarios.len(),
            flows.len(),
            answers.len()
        ));
        total_scenarios += scenarios.len();
        total += answers.len();
    }
    println!(
        "cilium referee: {total_scenarios} scenarios x {}-{} flows = {total} verdicts checked ({allowed} allowed, {} denied; {}) in {:.1}s",
        FLOWS.len(),
        FLOWS.len() + FLOWS_V6.len(),
        total - allowed,
        per_cluster.join(", "),
        started.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        let shown = failures.iter().take(40).cloned().collect::<Vec<_>>().join("\n");
        panic!(
            "{} of {total} verdicts are not what the operator promises:\n{shown}{}",
            failures.len(),
            if failures.len() > 40 { "\n..." } else { "" }
        );
    }
}
