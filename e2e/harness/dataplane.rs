//! The dataplane harness: a real NetworkPolicy engine and real packets.
//!
//! A "node" network namespace holds a bridge (`10.244.0.1/16`, also the Node's InternalIP); each
//! pod is a network namespace with a veth on that bridge, registered as a Pod object (nodeName,
//! hostIP, podIP, phase Running; no kubelet). Stubs answer TCP: the Instance Metadata endpoint
//! at 169.254.169.254:80 and an "outside" host at 203.0.113.10:80, each in a namespace of its own
//! routed by the node, a node-local DNS stub at 169.254.10.11:53 on the node, and a listener on
//! :8080 in every pod. The engine is kube-router's network policy controller (iptables and
//! ipset), run alone (`--run-firewall` only) inside the node namespace, so its rules live there.
//! It reaches the API server on the host's 127.0.0.1 through a relay: a listener created inside
//! the node namespace, whose connections this process forwards to the API server.
//!
//! kube-router is a TEST engine: advisories are reported against the version built here
//! (e2e/dataplane/versions.env). It runs only inside a network namespace this harness made, and
//! it is never shipped or recommended.
//!
//! # Safety
//!
//! - Every test address lives in network namespaces this harness made (`ip netns add`). Links
//!   are created inside them (`ip -n <netns> link add ... peer ... netns <other>`), so the host
//!   network namespace never gets a link, an address or a route for them. The host may have a
//!   real service at 169.254.169.254: it must never see a packet from here. No traffic leaves
//!   these namespaces but the relay's, which goes to the API server on the host's 127.0.0.1.
//! - Forwarding (`net.ipv4.ip_forward`) and bridge netfilter are enabled only inside the node
//!   namespace (both are per network namespace on the kernels this runs on: [`Dataplane::start`]
//!   checks that the node namespace has its own copy before writing one, and no host-wide
//!   setting is ever written).
//! - The host's addresses and routes (`ip -j addr`, `ip -j route`, `ip -j -6 route`) and its
//!   forwarding and bridge-netfilter settings are recorded before anything is made; a test
//!   compares them while the topology is up, and the exit hook compares them again after the
//!   teardown and fails the test binary when they differ.
//! - Everything made is removed: processes by PID (they also die with the test process, by
//!   PR_SET_PDEATHSIG), Pod and Node objects (force-deleted), network namespaces. The teardown
//!   runs at exit (an `atexit` hook, which also runs after a failed test). What a killed run left
//!   behind is harmless and removed by the next run: names carry the run's PID, and a run removes
//!   namespaces and objects whose PID is gone.
//!
//! The whole topology is shared by the tests of one binary (they use namespaces and pods of their
//! own); only one dataplane run per control plane at a time (a second one refuses to start).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;

pub const IMDS: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
pub const OUTSIDE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const DNS: Ipv4Addr = Ipv4Addr::new(169, 254, 10, 11);
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
pub const POD_PORT: u16 = 8080;
/// The label on every Pod and Node object a run registers; its value starts with the run's PID.
pub const RUN_LABEL: &str = "e2e.kubebaseline.io/dataplane-run";
const NETNS_PREFIX: &str = "kbdp-";
/// How long one probe's connect may take: a blocked SYN mostly times out (the engine's ICMP
/// rejects are rate-limited), an open one is answered in well under a millisecond.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(150);

/// A pod: a network namespace with a veth on the node's bridge, and its Pod object.
#[derive(Clone, Debug)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub netns: String,
    pub ip: Ipv4Addr,
}

/// The topology and the engine (see the module documentation).
pub struct Dataplane {
    pub run: String,
    pub node: String,
    node_ns: String,
    stub_ns: Vec<String>,
    pods: Mutex<Vec<Pod>>,
    next_host: AtomicU16,
    engine: Mutex<Option<Child>>,
    pub engine_log: PathBuf,
    host_before: HostNetwork,
}

/// What the host network namespace looks like: the things this harness must never change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostNetwork {
    pub addresses: BTreeSet<String>,
    pub routes: BTreeSet<String>,
    pub sysctls: BTreeSet<String>,
    pub links: BTreeSet<String>,
}

impl HostNetwork {
    pub fn read() -> Self {
        let json = |args: &[&str]| -> Value {
            let out = Command::new("ip").args(args).output().expect("ip runs");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice(&out.stdout).expect("ip -j prints JSON")
        };
        let mut addresses = BTreeSet::new();
        let mut links = BTreeSet::new();
        for link in json(&["-j", "addr"]).as_array().unwrap() {
            let ifname = link["ifname"].as_str().unwrap_or_default();
            links.insert(ifname.to_string());
            for a in link["addr_info"].as_array().into_iter().flatten() {
                // Lifetimes of dynamic addresses count down: compare what the address is.
                addresses.insert(format!("{ifname} {} {}/{}", a["family"], a["local"], a["prefixlen"]));
            }
        }
        let mut routes = BTreeSet::new();
        for family in ["-4", "-6"] {
            for r in json(&["-j", family, "route", "show", "table", "all"])
                .as_array()
                .unwrap()
            {
                routes.insert(format!(
                    "{family} {} {} via {} dev {} table {}",
                    r["type"], r["dst"], r["gateway"], r["dev"], r["table"]
                ));
            }
        }
        let mut sysctls = BTreeSet::new();
        for key in [
            "net/ipv4/ip_forward",
            "net/ipv4/conf/all/forwarding",
            "net/ipv6/conf/all/forwarding",
            "net/bridge/bridge-nf-call-iptables",
            "net/bridge/bridge-nf-call-ip6tables",
        ] {
            let value = std::fs::read_to_string(format!("/proc/sys/{key}")).unwrap_or_else(|_| "absent".into());
            sysctls.insert(format!("{key}={}", value.trim()));
        }
        Self {
            addresses,
            routes,
            sysctls,
            links,
        }
    }

    /// What differs from `before`, one line each (empty when nothing does).
    pub fn diff(&self, before: &HostNetwork) -> Vec<String> {
        let mut out = vec![];
        for (what, b, a) in [
            ("address", &before.addresses, &self.addresses),
            ("route", &before.routes, &self.routes),
            ("sysctl", &before.sysctls, &self.sysctls),
            ("link", &before.links, &self.links),
        ] {
            out.extend(b.difference(a).map(|x| format!("{what} gone: {x}")));
            out.extend(a.difference(b).map(|x| format!("{what} new: {x}")));
        }
        out
    }
}

/// Runs `ip` with `args`; panics with its stderr on failure.
fn ip_cmd(args: &[&str]) {
    run("ip", args);
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into()
}

/// Runs `f` on a new thread that has entered network namespace `netns` (`/run/netns/<netns>`),
/// and returns its result. Sockets made there stay in that namespace wherever they are used.
/// Threads spawned by `f` inherit the namespace.
pub fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> T {
    let file = std::fs::File::open(format!("/run/netns/{netns}")).unwrap_or_else(|e| panic!("netns {netns}: {e}"));
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on this thread only (a network namespace is per thread); the thread
            // ends when `f` returns, so nothing else ever runs in the namespace by mistake.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {netns}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in netns")
    })
}

/// A TCP listener in `netns` on `addr` that accepts and closes connections, for the life of the
/// test process.
fn listen_in(netns: &str, addr: SocketAddr) {
    let listener =
        in_netns(netns, || TcpListener::bind(addr)).unwrap_or_else(|e| panic!("listen {addr} in {netns}: {e}"));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
}

/// Whether a TCP connect from `netns` to `addr` completes within `timeout`.
pub fn connects(netns: &str, addr: SocketAddr, timeout: Duration) -> bool {
    in_netns(netns, || TcpStream::connect_timeout(&addr, timeout).is_ok())
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

static SHARED: OnceLock<Result<Dataplane, String>> = OnceLock::new();

extern "C" fn teardown_at_exit() {
    if let Some(Ok(dp)) = SHARED.get() {
        dp.teardown();
        let diff = HostNetwork::read().diff(&dp.host_before);
        if !diff.is_empty() {
            eprintln!(
                "dataplane: the host network changed during the run:\n  {}",
                diff.join("\n  ")
            );
            // SAFETY: ends the process at once with a failure, from the exit hook.
            unsafe { libc::_exit(3) };
        }
        eprintln!("dataplane: torn down; the host's addresses, routes and settings are as before");
    }
}

/// The binary's topology and engine, set up on first use and torn down at exit. When the setup
/// fails, what it made is removed and every test fails with the same message.
pub fn shared() -> &'static Dataplane {
    let result = SHARED.get_or_init(|| {
        let dp = Dataplane::start().map_err(|e| format!("the dataplane did not start: {e}"))?;
        // SAFETY: registers a plain extern "C" function.
        unsafe { libc::atexit(teardown_at_exit) };
        Ok(dp)
    });
    match result {
        Ok(dp) => dp,
        Err(e) => panic!("{e}"),
    }
}

impl Dataplane {
    /// Builds the topology, registers the Node, starts the engine and waits until it enforces;
    /// on failure, removes what it made and says why.
    pub fn start() -> Result<Self, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("the dataplane suite needs root (network namespaces, iptables inside them)".into());
        }
        // A CiliumNode says an agent runs: engine Auto would write CiliumNetworkPolicies, which
        // this engine does not read (a leftover of a killed Cilium test, say).
        let cilium_nodes = Command::new(kubectl_path())
            .env("KUBECONFIG", kubeconfig_path())
            .args(["get", "ciliumnodes.cilium.io", "-o", "name"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        if !cilium_nodes.is_empty() {
            return Err(format!(
                "CiliumNode objects exist ({cilium_nodes}): engine Auto would pick Cilium; delete them first"
            ));
        }
        let host_before = HostNetwork::read();
        let pid = std::process::id();
        Self::remove_stale(pid);
        let run = format!("{pid}-{}", unique("r").trim_start_matches("r-"));
        let node_ns = format!("{NETNS_PREFIX}{pid}-node");
        let dp = Self {
            node: format!("kbdp-{run}"),
            node_ns: node_ns.clone(),
            stub_ns: vec![
                format!("{NETNS_PREFIX}{pid}-imds"),
                format!("{NETNS_PREFIX}{pid}-outside"),
            ],
            pods: Mutex::new(vec![]),
            next_host: AtomicU16::new(2),
            engine: Mutex::new(None),
            engine_log: cluster_dir().join("logs").join(format!("kube-router-{run}.log")),
            run,
            host_before,
        };
        let started = Instant::now();
        let setup = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            dp.build_topology();
            dp.register_node();
            dp.start_engine();
        }));
        if let Err(panic) = setup {
            dp.teardown();
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            return Err(message);
        }
        eprintln!("dataplane: topology and engine up in {:?}", started.elapsed());
        Ok(dp)
    }

    /// Removes what a killed run left: network namespaces, Pod and Node objects of PIDs that are
    /// gone. Refuses to start next to a live run (their pods would share addresses).
    fn remove_stale(me: u32) {
        let list = run("ip", &["netns", "list"]);
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if pid == me {
                continue;
            }
            assert!(
                !pid_alive(pid),
                "another dataplane run (PID {pid}) is using this machine"
            );
            eprintln!("dataplane: removing {name}, left by a run that is gone");
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
        let namespaces = kubectl(&["get", "namespaces", "-o", "name"]);
        for name in namespaces
            .lines()
            .filter_map(|l| l.strip_prefix("namespace/kbdp-canary-"))
        {
            let Some(pid) = name.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if pid != me && !pid_alive(pid) {
                let _ = Command::new(kubectl_path())
                    .env("KUBECONFIG", kubeconfig_path())
                    .args(["delete", "namespace", &format!("kbdp-canary-{name}"), "--wait=false"])
                    .output();
            }
        }
        for kind in ["pods", "nodes"] {
            let out = kubectl(&["get", kind, "-A", "-l", RUN_LABEL, "-o", "json"]);
            let list: Value = serde_json::from_str(&out).unwrap();
            for item in list["items"].as_array().unwrap() {
                let run = item["metadata"]["labels"][RUN_LABEL].as_str().unwrap_or_default();
                let Some(pid) = run.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                    continue;
                };
                if pid == me || pid_alive(pid) {
                    assert!(
                        pid == me,
                        "another dataplane run (PID {pid}) is using this control plane"
                    );
                    continue;
                }
                let name = item["metadata"]["name"].as_str().unwrap();
                let mut args = vec!["delete", kind, name, "--grace-period=0", "--force", "--wait=false"];
                let ns = item["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
                if !ns.is_empty() {
                    args.extend(["-n", ns.as_str()]);
                }
                let _ = Command::new(kubectl_path())
                    .env("KUBECONFIG", kubeconfig_path())
                    .args(&args)
                    .output();
            }
        }
    }

    fn add_netns(name: &str) {
        ip_cmd(&["netns", "add", name]);
        ip_cmd(&["-n", name, "link", "set", "lo", "up"]);
    }

    fn build_topology(&self) {
        let node = self.node_ns.as_str();
        Self::add_netns(node);
        // Per-namespace settings: make sure the node namespace has its own copy of each before
        // writing it (a host-wide file would not be one to touch).
        for key in ["net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables"] {
            let host = std::fs::read_to_string(format!("/proc/sys/{key}")).ok();
            in_netns(node, || {
                let path = format!("/proc/sys/{key}");
                std::fs::write(&path, "1").unwrap_or_else(|e| panic!("{path} in the node netns: {e}"));
            });
            let after = std::fs::read_to_string(format!("/proc/sys/{key}")).ok();
            assert_eq!(
                host, after,
                "{key} is not per network namespace here: refusing to go on"
            );
        }
        // A fixed address: a bridge otherwise takes its lowest port's, so a new pod's veth could
        // change it under the other pods' neighbour caches (routed traffic then goes nowhere
        // until their entries expire, which looks like a block).
        ip_cmd(&[
            "-n",
            node,
            "link",
            "add",
            "br0",
            "address",
            "02:6b:62:00:00:01",
            "type",
            "bridge",
        ]);
        ip_cmd(&["-n", node, "addr", "add", &format!("{NODE_IP}/16"), "dev", "br0"]);
        ip_cmd(&["-n", node, "link", "set", "br0", "up"]);
        // The node-local DNS address on the node's loopback (no dummy links on every kernel).
        ip_cmd(&["-n", node, "addr", "add", &format!("{DNS}/32"), "dev", "lo"]);
        listen_in(node, SocketAddr::from((DNS, 53)));
        for (i, (stub_ns, addr)) in self.stub_ns.iter().zip([IMDS, OUTSIDE]).enumerate() {
            let n = i + 1;
            let (near, far) = (format!("10.250.{n}.1"), format!("10.250.{n}.2"));
            Self::add_netns(stub_ns);
            let link = format!("v-stub{n}");
            ip_cmd(&[
                "-n", node, "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", stub_ns,
            ]);
            ip_cmd(&["-n", node, "addr", "add", &format!("{near}/30"), "dev", &link]);
            ip_cmd(&["-n", node, "link", "set", &link, "up"]);
            ip_cmd(&["-n", stub_ns, "addr", "add", &format!("{far}/30"), "dev", "eth0"]);
            ip_cmd(&["-n", stub_ns, "addr", "add", &format!("{addr}/32"), "dev", "eth0"]);
            ip_cmd(&["-n", stub_ns, "link", "set", "eth0", "up"]);
            ip_cmd(&["-n", stub_ns, "route", "add", "default", "via", &near]);
            ip_cmd(&["-n", node, "route", "add", &format!("{addr}/32"), "via", &far]);
            listen_in(stub_ns, SocketAddr::from((addr, 80)));
        }
    }

    fn register_node(&self) {
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.node, "labels": {RUN_LABEL: self.run}},
        });
        let (ok, _, err) = kubectl_as_admin(&["create", "-f", "-"], &node.to_string());
        assert!(ok, "create node: {err}");
        let status = json!({"status": {
            "addresses": [{"type": "InternalIP", "address": NODE_IP.to_string()}, {"type": "Hostname", "address": self.node}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "a dataplane test node",
                            "lastHeartbeatTime": now_rfc3339(), "lastTransitionTime": now_rfc3339()}],
        }});
        kubectl(&[
            "patch",
            "node",
            &self.node,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ]);
    }

    /// The engine's kubeconfig: the admin's, with the server at the relay inside the node netns.
    fn engine_kubeconfig(&self, relay_port: u16) -> PathBuf {
        let admin = std::fs::read_to_string(kubeconfig_path()).unwrap();
        let api = api_server();
        let text = admin.replace(
            &format!("server: https://{api}"),
            &format!("server: https://127.0.0.1:{relay_port}"),
        );
        assert_ne!(text, admin, "the kubeconfig names the API server as https://{api}");
        let path = cluster_dir().join(format!("kube-router-{}.kubeconfig", self.run));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A relay from 127.0.0.1:`port` inside the node namespace to the API server on the host's
    /// 127.0.0.1: the listening socket is made in the node namespace; connecting to the API
    /// server and copying bytes happen on threads of the host namespace.
    fn start_relay(&self, port: u16) {
        let listener = in_netns(&self.node_ns, || TcpListener::bind(("127.0.0.1", port))).expect("relay listens");
        let api = api_server();
        assert!(api.ip().is_loopback(), "the relay goes to 127.0.0.1 only, not {api}");
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(inner) = conn else { continue };
                let Ok(outer) = TcpStream::connect(api) else {
                    let _ = inner.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = inner.set_nodelay(true);
                let _ = outer.set_nodelay(true);
                for (mut from, mut to) in [(inner.try_clone().unwrap(), outer.try_clone().unwrap()), (outer, inner)] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
            }
        });
    }

    /// The engine's version (e2e/dataplane/versions.env).
    pub fn engine_version() -> String {
        let env = std::fs::read_to_string(repo_root().join("e2e/dataplane/versions.env")).unwrap();
        env.lines()
            .find_map(|l| l.strip_prefix("KUBE_ROUTER_VERSION="))
            .expect("KUBE_ROUTER_VERSION in versions.env")
            .trim()
            .to_string()
    }

    pub fn engine_binary() -> PathBuf {
        static BIN: OnceLock<PathBuf> = OnceLock::new();
        BIN.get_or_init(|| {
            let out = run(repo_root().join("e2e/dataplane/build.sh").to_str().unwrap(), &[]);
            PathBuf::from(out.trim())
        })
        .clone()
    }

    fn start_engine(&self) {
        let bin = Self::engine_binary();
        let relay_port = 6443;
        self.start_relay(relay_port);
        let kubeconfig = self.engine_kubeconfig(relay_port);
        let log = std::fs::File::create(&self.engine_log).unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.node_ns])
            .arg(&bin)
            .args([
                "--run-firewall=true",
                "--run-router=false",
                "--run-service-proxy=false",
                "--enable-ipv6=false",
                "--enable-ipv4=true",
                &format!("--hostname-override={}", self.node),
                &format!("--kubeconfig={}", kubeconfig.display()),
                "--metrics-port=0",
                "-v=1",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // The engine must not outlive the test process (`ip netns exec` execs it: same PID).
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        // PR_SET_PDEATHSIG fires when the spawning *thread* ends: spawn from a thread that lives
        // as long as the test process.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(cmd.spawn());
            loop {
                std::thread::park();
            }
        });
        *self.engine.lock().unwrap() = Some(rx.recv().unwrap().expect("the engine starts"));
        // Enforcing, proven with a packet: a pod under a deny-all-egress policy (in a namespace
        // no baseline selects) cannot reach the outside stub.
        let ns = self.canary_namespace();
        kubectl(&["create", "namespace", &ns]);
        let canary = self.pod(&ns, "canary");
        let deny = json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "deny-egress", "namespace": ns},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"]},
        });
        let (ok, _, err) = kubectl_as_admin(&["create", "-f", "-"], &deny.to_string());
        assert!(ok, "canary policy: {err}");
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.reachable(&canary, OUTSIDE, 80) {
            assert!(
                self.engine_running(),
                "the engine exited: see {}",
                self.engine_log.display()
            );
            assert!(
                Instant::now() < deadline,
                "the engine does not enforce after 120 s: see {}",
                self.engine_log.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = Command::new(kubectl_path())
            .env("KUBECONFIG", kubeconfig_path())
            .args(["delete", "namespace", &ns, "--wait=false"])
            .output();
    }

    fn canary_namespace(&self) -> String {
        format!("kbdp-canary-{}", self.run)
    }

    /// What the engine programmed and what it was told, for a failing test's message: the node
    /// namespace's filter rules and ipsets, the run's pods and every NetworkPolicy.
    pub fn dump(&self) -> String {
        let capture = |program: &str, args: &[&str]| -> String {
            Command::new(program)
                .args(args)
                .env("KUBECONFIG", kubeconfig_path())
                .output()
                .map(|o| {
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )
                })
                .unwrap_or_else(|e| e.to_string())
        };
        let kubectl = kubectl_path();
        let kubectl = kubectl.to_str().unwrap();
        let selector = format!("{RUN_LABEL}={}", self.run);
        [
            capture(
                "ip",
                &["netns", "exec", &self.node_ns, "iptables-save", "-c", "-t", "filter"],
            ),
            capture("ip", &["netns", "exec", &self.node_ns, "ipset", "list", "-t"]),
            capture(kubectl, &["get", "pods", "-A", "-o", "wide", "-l", &selector]),
            capture(kubectl, &["get", "networkpolicies", "-A"]),
        ]
        .join("\n----\n")
    }

    /// The engine log's length now (for [`Dataplane::engine_syncs_since`]).
    pub fn engine_log_offset(&self) -> usize {
        std::fs::read(&self.engine_log).map(|b| b.len()).unwrap_or(0)
    }

    /// How long each of the engine's full syncs (iptables and ipsets) took since `offset`.
    pub fn engine_syncs_since(&self, offset: usize) -> Vec<Duration> {
        let text = std::fs::read(&self.engine_log).unwrap_or_default();
        let text = String::from_utf8_lossy(&text[offset.min(text.len())..]).into_owned();
        text.lines()
            .filter_map(|l| l.split("sync iptables took ").nth(1))
            .filter_map(|d| go_duration(d.trim()))
            .collect()
    }

    /// The host network as it was before anything was made.
    pub fn host_before(&self) -> &HostNetwork {
        &self.host_before
    }

    pub fn engine_running(&self) -> bool {
        self.engine
            .lock()
            .unwrap()
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// A pod in namespace `ns`: its network namespace, veth, listener on :8080 and Pod object
    /// (Running on this node). The engine programs it once it sees the object.
    pub fn pod(&self, ns: &str, name: &str) -> Pod {
        let host = self.next_host.fetch_add(1, Ordering::Relaxed);
        assert!(host < 65000, "out of pod addresses");
        let ip = Ipv4Addr::new(10, 244, (host >> 8) as u8, host as u8);
        let netns = format!("{NETNS_PREFIX}{}-p{host}", std::process::id());
        let pod = Pod {
            namespace: ns.into(),
            name: name.into(),
            netns: netns.clone(),
            ip,
        };
        self.pods.lock().unwrap().push(pod.clone());
        Self::add_netns(&netns);
        let link = format!("vp{host}");
        ip_cmd(&[
            "-n",
            &self.node_ns,
            "link",
            "add",
            &link,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &netns,
        ]);
        ip_cmd(&["-n", &self.node_ns, "link", "set", &link, "master", "br0", "up"]);
        ip_cmd(&["-n", &netns, "addr", "add", &format!("{ip}/16"), "dev", "eth0"]);
        ip_cmd(&["-n", &netns, "link", "set", "eth0", "up"]);
        ip_cmd(&["-n", &netns, "route", "add", "default", "via", &NODE_IP.to_string()]);
        listen_in(&netns, SocketAddr::from((ip, POD_PORT)));

        let object = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": {RUN_LABEL: self.run, "app": name}},
            "spec": {
                "nodeName": self.node,
                "automountServiceAccountToken": false,
                // No kubelet heartbeats: the node turns NotReady; the pods stay.
                "tolerations": [{"operator": "Exists"}],
                "containers": [{"name": "c", "image": "registry.invalid/none:0"}],
            },
        });
        // The namespace's default ServiceAccount (which admission wants) may not exist yet.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (ok, _, err) = kubectl_as_admin(&["create", "-f", "-"], &object.to_string());
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "create pod {ns}/{name}: {err}");
            std::thread::sleep(Duration::from_millis(200));
        }
        let status = json!({"status": {
            "phase": "Running",
            "hostIP": NODE_IP.to_string(), "hostIPs": [{"ip": NODE_IP.to_string()}],
            "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}],
            "conditions": [{"type": "Ready", "status": "True"}],
        }});
        kubectl(&[
            "patch",
            "pod",
            name,
            "-n",
            ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ]);
        pod
    }

    /// Whether a new TCP connection from `pod` to `addr:port` is answered (one try, 1 s).
    pub fn reachable(&self, pod: &Pod, addr: Ipv4Addr, port: u16) -> bool {
        connects(&pod.netns, SocketAddr::from((addr, port)), Duration::from_secs(1))
    }

    /// Stops the engine (SIGKILL by PID) and removes everything this run made. Idempotent.
    pub fn teardown(&self) {
        if let Some(mut child) = self.engine.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new(kubectl_path())
            .env("KUBECONFIG", kubeconfig_path())
            .args(["delete", "pods", "-A", "-l", &format!("{RUN_LABEL}={}", self.run)])
            .args(["--grace-period=0", "--force", "--wait=false"])
            .output();
        let _ = Command::new(kubectl_path())
            .env("KUBECONFIG", kubeconfig_path())
            .args(["delete", "node", &self.node, "--wait=false", "--ignore-not-found"])
            .output();
        let _ = Command::new(kubectl_path())
            .env("KUBECONFIG", kubeconfig_path())
            .args([
                "delete",
                "namespace",
                &self.canary_namespace(),
                "--wait=false",
                "--ignore-not-found",
            ])
            .output();
        let _ = std::fs::remove_file(cluster_dir().join(format!("kube-router-{}.kubeconfig", self.run)));
        let pods = std::mem::take(&mut *self.pods.lock().unwrap());
        for netns in pods
            .iter()
            .map(|p| &p.netns)
            .chain(&self.stub_ns)
            .chain([&self.node_ns])
        {
            let _ = Command::new("ip").args(["netns", "del", netns]).output();
        }
    }
}

/// `kubectl` as the admin with `stdin`; (success, stdout, stderr).
pub fn kubectl_as_admin(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut cmd = Command::new(kubectl_path());
    cmd.env("KUBECONFIG", kubeconfig_path()).args(args);
    let out = output_with_stdin(&mut cmd, Some(stdin));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// One probe: when the connect started, and whether it was answered.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub at: Instant,
    pub open: bool,
    /// Why a closed sample failed (refused: the engine's reject came back; timed out: dropped).
    pub error: Option<std::io::ErrorKind>,
}

/// A probe that starts a new connection from a pod every `every` (each with
/// [`PROBE_TIMEOUT`]), whatever the earlier ones are doing, and records the timeline.
pub struct Probe {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<Sample>>>,
}

impl Probe {
    pub fn start(pod: &Pod, addr: Ipv4Addr, port: u16, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let file = std::fs::File::open(format!("/run/netns/{}", pod.netns)).unwrap();
        let target = SocketAddr::from((addr, port));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            // SAFETY: this thread is the probe's own; the workers it spawns inherit the netns.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let (tx, rx) = mpsc::channel();
            let mut next = Instant::now();
            let mut started = 0usize;
            while !flag.load(Ordering::Relaxed) {
                let tx = tx.clone();
                let at = Instant::now();
                std::thread::spawn(move || {
                    let result = TcpStream::connect_timeout(&target, PROBE_TIMEOUT);
                    let _ = tx.send(Sample {
                        at,
                        open: result.is_ok(),
                        error: result.err().map(|e| e.kind()),
                    });
                });
                started += 1;
                next += every;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
            drop(tx);
            let mut samples: Vec<Sample> = rx.iter().take(started).collect();
            samples.sort_by_key(|s| s.at);
            samples
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops probing and returns the samples, oldest first.
    pub fn stop(mut self) -> Timeline {
        self.stop.store(true, Ordering::Relaxed);
        Timeline(self.thread.take().unwrap().join().expect("probe thread"))
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A probe's samples, oldest first.
#[derive(Debug)]
pub struct Timeline(pub Vec<Sample>);

impl Timeline {
    /// From `since`: how long until the first sample of the final run of closed samples (the
    /// moment the destination was blocked for good), or None when the last sample was open.
    pub fn blocked_after(&self, since: Instant) -> Option<Duration> {
        let after: Vec<&Sample> = self.0.iter().filter(|s| s.at >= since).collect();
        if after.last()?.open {
            return None;
        }
        let first_closed = after.iter().rposition(|s| s.open).map_or(0, |i| i + 1);
        Some(after[first_closed].at.saturating_duration_since(since))
    }

    /// From `since`: the first open sample, or None.
    pub fn opened_after(&self, since: Instant) -> Option<Duration> {
        self.0
            .iter()
            .find(|s| s.at >= since && s.open)
            .map(|s| s.at.saturating_duration_since(since))
    }

    pub fn open_count(&self) -> usize {
        self.0.iter().filter(|s| s.open).count()
    }

    /// The span from the first to the last open sample (zero with one, None with none).
    pub fn open_span(&self) -> Option<Duration> {
        let first = self.0.iter().find(|s| s.open)?;
        let last = self.0.iter().rev().find(|s| s.open)?;
        Some(last.at - first.at)
    }

    /// The timeline as runs of open and closed samples, times from `since` (for messages).
    pub fn summary(&self, since: Instant) -> String {
        let at = |s: &Sample| {
            let ms = if s.at >= since {
                (s.at - since).as_millis() as i128
            } else {
                -((since - s.at).as_millis() as i128)
            };
            format!("{ms}ms")
        };
        let mut runs: Vec<String> = vec![];
        let mut start = 0;
        for i in 1..=self.0.len() {
            if i == self.0.len() || self.0[i].open != self.0[start].open {
                let (first, last) = (&self.0[start], &self.0[i - 1]);
                let state = if first.open {
                    "open".to_string()
                } else {
                    let mut kinds: Vec<String> = self.0[start..i]
                        .iter()
                        .map(|s| format!("{:?}", s.error.unwrap()))
                        .collect();
                    kinds.sort();
                    kinds.dedup();
                    format!("closed [{}]", kinds.join(","))
                };
                runs.push(format!("{state} {}..{} ({})", at(first), at(last), i - start));
                start = i;
            }
        }
        runs.join(", ")
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A Go duration as the engine logs it ("67.06ms", "1.2s", "950µs", "1m2.5s").
fn go_duration(text: &str) -> Option<Duration> {
    let mut total = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..end].parse().ok()?;
        rest = &rest[end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "µs" | "us" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_end..];
    }
    Some(Duration::from_secs_f64(total))
}
