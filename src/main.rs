//! The `kube-baseline` binary: flags and wiring only; everything else lives in the library.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use kube_baseline::api;
use kube_baseline::cli::validate::{self, ValidateArgs};
use kube_baseline::runtime::context::Settings;
use kube_baseline::runtime::controller;
use kube_baseline::runtime::leader::{self, Leadership, LeaseSettings};
use kube_baseline::runtime::metrics::Metrics;
use kube_baseline::runtime::telemetry::{self, LogFormat};
use kube_baseline::runtime::{server, status_writer};
use tokio::sync::watch;
use tracing::info;

#[derive(Parser)]
#[command(version, about = "Keeps every selected namespace on its SecurityBaseline")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Run(RunArgs),
    /// Print the SecurityBaseline CustomResourceDefinition as YAML.
    Crd,
    /// Judge a live cluster (read-only): is every selected namespace compliant? Exit code 0
    /// when all comply, 1 otherwise.
    Audit(kube_baseline::cli::audit::AuditArgs),
    /// Print the objects a baseline file would make in given namespaces (offline), and why each
    /// namespace is selected, excluded or exempted; --diff compares with a live cluster.
    Render(kube_baseline::cli::render::RenderArgs),
    /// Check SecurityBaseline files offline, as the API server and the operator would.
    Validate(ValidateArgs),
    /// Print docs/api.md (read on stdin) with its field tables generated anew from the CRD file
    /// (`make docs`).
    #[command(hide = true)]
    ApiDocs {
        /// The CRD, as crds/ holds it.
        crd: std::path::PathBuf,
    },
}

#[derive(Args)]
struct RunArgs {
    /// More namespaces no baseline may touch (repeatable), besides kube-system, kube-public
    /// and kube-node-lease.
    #[arg(long = "system-namespace", value_name = "NAME")]
    system_namespaces: Vec<String>,
    /// Namespaces reconciled concurrently (at least 1).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// How long namespace results are gathered before baseline statuses are written.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    status_debounce: Duration,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter when RUST_LOG is unset (RUST_LOG syntax).
    #[arg(long, default_value = "info,kube_client=warn,kube_runtime=warn")]
    log_filter: String,
    /// Elect a leader through a Lease so several replicas can run; only the leader writes.
    #[arg(long)]
    leader_elect: bool,
    #[arg(long, default_value = "kube-baseline-leader")]
    lease_name: String,
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-baseline-system")]
    lease_namespace: String,
    /// How long a lease lasts without renewal: the longest a dead leader blocks a standby.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,
    /// Maintain a wgpolicyk8s.io/v1alpha2 PolicyReport per selected namespace and a
    /// ClusterPolicyReport summary: Auto (default) when the API serves them at start, On, Off.
    /// A bare --policy-reports means On.
    #[arg(long, value_enum, default_value_t = ReportsMode::Auto, num_args = 0..=1, default_missing_value = "On")]
    policy_reports: ReportsMode,
    /// How often the cluster's address families and policy engine (Cilium's API and agents) are
    /// read again; a change re-renders every namespace.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    cluster_recheck: Duration,
    /// This replica's identity in the lease and in Events (default: the host name).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
}

/// Whether PolicyReports are kept.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ReportsMode {
    #[value(name = "Auto")]
    Auto,
    #[value(name = "On")]
    On,
    #[value(name = "Off")]
    Off,
}

/// How long in-flight work may take after SIGTERM (the Deployment allows 30 s in all).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

use kube_baseline::cli::parse_duration;

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", api::crd_yaml().context("serializing the CRD")?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate(args) => validate::run(args),
        Command::ApiDocs { crd } => {
            let crd = std::fs::read_to_string(&crd).with_context(|| format!("reading {}", crd.display()))?;
            let page = std::io::read_to_string(std::io::stdin()).context("reading the page on stdin")?;
            print!("{}", kube_baseline::cli::api_docs::splice(&page, &crd)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => {
            kube_baseline::runtime::memory::limit_arenas();
            let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
            let result = runtime.block_on(run(args));
            // Blocking tasks left behind (connection pools, resolvers) must not hold up exit.
            runtime.shutdown_timeout(Duration::from_secs(2));
            result.map(|()| ExitCode::SUCCESS)
        }
        Command::Audit(args) => tool(kube_baseline::cli::audit::run(args)),
        Command::Render(args) => tool(kube_baseline::cli::render::run(args)),
    }
}

/// Runs a read-only subcommand: its errors are one clear message and exit code 2 (1 means
/// "not compliant", so scripts can tell the two apart).
fn tool(work: impl std::future::Future<Output = anyhow::Result<ExitCode>>) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    match runtime.block_on(work) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(2))
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format, &args.log_filter);
    let mut config = kube::Config::infer()
        .await
        .context("reading the Kubernetes client configuration (in-cluster or KUBECONFIG)")?;
    // Every request has a deadline: a dead connection fails in seconds instead of hanging a
    // reconcile (watches end within their own, shorter server-side timeout, see controller).
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(30));
    config.write_timeout = Some(Duration::from_secs(10));
    let instance = args.instance.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "kube-baseline".into())
    });
    // The replica's name in every request, so the API server's audit log tells replicas apart.
    let agent = format!("kube-baseline/{} ({instance})", env!("CARGO_PKG_VERSION"));
    if let Ok(value) = agent.parse() {
        config.headers.push((http::header::USER_AGENT, value));
    }
    let client = kube::Client::try_from(config).context("connecting to the Kubernetes API")?;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));

    // One signal fans out to every task: stop taking work, finish in-flight writes, release.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutting down");
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let (ready_tx, ready_rx) = watch::channel(false);
    let progress = Arc::new(kube_baseline::runtime::progress::Progress::default());
    let health = server::Health {
        registry: Arc::new(registry),
        ready: ready_rx,
        progress: progress.clone(),
    };
    let listener = server::bind(args.metrics_addr)
        .await
        .with_context(|| format!("listening on {}", args.metrics_addr))?;
    let http = tokio::spawn(server::serve(listener, health, stopped(stop_rx.clone())));

    let mut leadership = None;
    if args.leader_elect {
        let lease = LeaseSettings {
            name: args.lease_name.clone(),
            namespace: args.lease_namespace.clone(),
            identity: instance.clone(),
            duration: args.lease_duration,
        };
        let mut l = Leadership::campaign(client.clone(), &lease).await?;
        // A standby is ready: it can take over. A Deployment's rollout must not wait for it.
        ready_tx.send_replace(true);
        info!(lease = %lease.name, namespace = %lease.namespace, identity = %instance, "waiting for leadership");
        tokio::select! {
            r = l.acquired() => r?,
            _ = stopped(stop_rx.clone()) => { l.release().await; return Ok(()); }
        }
        metrics.leader.set(1);
        ready_tx.send_replace(false);
        // A leader that cannot confirm its lease stops writing at once: the process exits
        // non-zero (no grace, no final status, no release) and comes back as a standby.
        let held = l.is_leader.clone();
        let fence = leader::fence(client.clone(), lease);
        let stop = stopped(stop_rx.clone());
        tokio::spawn(async move {
            let why = tokio::select! {
                // A stop releases the lease (every receiver must be gone for that).
                _ = stop => return,
                _ = Leadership::lost(held) => "another replica holds the lease".to_string(),
                why = fence => why,
            };
            tracing::error!(%why, "leadership lost: exiting now so that nothing more is written");
            std::process::exit(1);
        });
        leadership = Some(l);
    }

    let cluster = kube_baseline::runtime::cluster::initial(&client).await;
    let settings = Settings {
        cluster,
        cluster_recheck: args.cluster_recheck,
        system_namespaces: args.system_namespaces.into_iter().collect::<BTreeSet<_>>(),
        concurrency: args.concurrency,
        status_debounce: args.status_debounce,
        instance,
        progress,
        policy_reports: match args.policy_reports {
            ReportsMode::On => true,
            ReportsMode::Off => false,
            ReportsMode::Auto => kube_baseline::runtime::reports::served(&client).await,
        },
    };
    // The controller stops on a signal (leadership lost ends the process, above).
    let stop = stopped(stop_rx.clone());
    let (halting_tx, halting_rx) = watch::channel(false);
    let shutdown = async move {
        stop.await;
        halting_tx.send_replace(true);
    };
    let (ctx, controller) = controller::controller(client, settings, metrics.clone(), shutdown);
    let ready_ctx = ctx.clone();
    tokio::spawn(async move {
        ready_ctx.wait_until_synced().await;
        // send_replace stores the value even while no request holds a receiver.
        ready_tx.send_replace(true);
        info!("ready");
    });
    let writer = tokio::spawn(status_writer::run(ctx.clone()));
    let events = tokio::spawn(ctx.events.clone().run());
    let reports = ctx.reports.clone().map(|r| tokio::spawn(r.watch(ctx.clone())));
    info!("controller started");
    // In-flight reconciles get a grace period after a stop; kube-runtime's runner can wait for a
    // store that will never fill once its watches stop, so the wait is bounded.
    let grace = async {
        stopped(halting_rx).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        _ = controller => {}
        _ = grace => tracing::warn!(grace = ?SHUTDOWN_GRACE, "controller did not stop in time; exiting anyway"),
    }
    writer.abort();
    events.abort();
    if let Some(r) = reports {
        r.abort();
    }
    if leadership.as_ref().is_none_or(|l| *l.is_leader.borrow()) {
        status_writer::flush(&ctx).await;
        ctx.events.flush().await;
    }
    if let Some(l) = leadership {
        metrics.leader.set(0);
        l.release().await;
    }
    http.abort();
    info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_ms_s_and_m() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("2d").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn run_flags_parse_with_their_defaults() {
        let cli = Cli::try_parse_from([
            "kube-baseline",
            "run",
            "--system-namespace",
            "a",
            "--system-namespace",
            "b",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else { panic!("run") };
        assert_eq!(args.system_namespaces, ["a", "b"]);
        assert_eq!(args.concurrency, 8);
        assert_eq!(args.lease_duration, Duration::from_secs(15));
        assert!(!args.leader_elect);
        assert!(Cli::try_parse_from(["kube-baseline", "run", "--concurrency", "0"]).is_err());
    }
}
