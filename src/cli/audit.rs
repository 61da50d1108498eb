//! `kube-baseline audit`: is every selected namespace compliant, right now? Read-only, with any
//! kubeconfig, whether or not the operator runs; exit code 0 when all comply, 1 otherwise.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::api::SecurityBaseline;
use crate::cli::cluster::{self, ClusterArgs, Snapshot};
use crate::cli::judge::{self, Report};

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Judge against these baseline files (or directories, or - for stdin) instead of the
    /// baselines stored in the cluster; the CRD need not be installed.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Only these baselines (by name; repeatable).
    #[arg(long = "baseline", value_name = "NAME")]
    pub baselines: Vec<String>,
    /// Namespaces no baseline touches besides kube-system, kube-public, kube-node-lease and
    /// kube-baseline-system
    /// (give the operator's --system-namespace values).
    #[arg(long = "system-namespace", value_name = "NAME")]
    pub system_namespaces: Vec<String>,
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Keep judging (every 2 s) until every selected namespace complies, or fail after this
    /// long (e.g. 5m): for bootstrap pipelines.
    #[arg(long, value_name = "DURATION", value_parser = crate::cli::parse_duration)]
    pub wait: Option<Duration>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

pub async fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let client = args.cluster.client().await?;
    let from_files = if args.files.is_empty() {
        None
    } else {
        Some(crate::cli::read_baselines(&args.files)?)
    };
    let system: BTreeSet<String> = crate::cli::system_namespaces(&args.system_namespaces);
    let deadline = args.wait.map(|w| Instant::now() + w);
    loop {
        let mut baselines: Vec<SecurityBaseline> = match &from_files {
            Some(b) => b.clone(),
            None => cluster::baselines(&client).await?,
        };
        if !args.baselines.is_empty() {
            let missing: Vec<&String> = args
                .baselines
                .iter()
                .filter(|n| !baselines.iter().any(|b| &b.name_any() == *n))
                .collect();
            if !missing.is_empty() {
                anyhow::bail!(
                    "no baseline named {missing:?} (the baselines are: {:?})",
                    names(&baselines)
                );
            }
            baselines.retain(|b| args.baselines.contains(&b.name_any()));
        }
        if baselines.is_empty() {
            anyhow::bail!("no SecurityBaseline to audit against: create one, or pass baseline files with -f");
        }
        let snapshot = Snapshot::read(&client).await?;
        let report = judge::judge(&snapshot, &baselines, &system, Timestamp::now());
        let waiting = deadline.is_some_and(|d| Instant::now() < d);
        if report.compliant || !waiting {
            print!("{}", render(&report, args.output)?);
            if !report.compliant && args.wait.is_some() {
                eprintln!("not compliant after {:?}", args.wait.unwrap_or_default());
            }
            return Ok(if report.compliant {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        let failing = report.namespaces.iter().filter(|r| !r.state.complies()).count();
        eprintln!(
            "waiting: {failing} of {} selected namespaces do not comply yet",
            report.namespaces.len()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn names(baselines: &[SecurityBaseline]) -> Vec<String> {
    baselines.iter().map(|b| b.name_any()).collect()
}

/// The report in the chosen format.
pub fn render(report: &Report, output: Output) -> anyhow::Result<String> {
    Ok(match output {
        Output::Json => serde_json::to_string_pretty(report)? + "\n",
        Output::Yaml => serde_saphyr::to_string(report)?,
        Output::Table => table(report),
    })
}

fn table(report: &Report) -> String {
    let mut rows: Vec<[String; 4]> = vec![["NAMESPACE".into(), "BASELINE".into(), "STATE".into(), "AT FAULT".into()]];
    for r in &report.namespaces {
        let mut fault: Vec<String> = r
            .problems
            .iter()
            .map(|p| format!("{} {}: {}", p.object, p.reason, p.message))
            .collect();
        if let Some(ex) = &r.exemption {
            let controls: Vec<&str> = ex.controls.iter().map(|c| c.as_str()).collect();
            fault.push(format!("exempt from {} until {}", controls.join(", "), ex.expires.0));
        }
        rows.push([
            r.namespace.clone(),
            r.baseline.clone(),
            r.state.as_str().into(),
            fault.join("; "),
        ]);
    }
    let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
    let (w0, w1, w2) = (width(0), width(1), width(2));
    let mut out = String::new();
    for r in &rows {
        let line = format!("{:w0$}  {:w1$}  {:w2$}  {}", r[0], r[1], r[2], r[3]);
        let _ = writeln!(out, "{}", line.trim_end());
    }
    for bad in &report.invalid_baselines {
        let _ = writeln!(out, "baseline {} is invalid: {}", bad.baseline, bad.message);
    }
    for (baseline, families) in &report.ip_families {
        let _ = writeln!(out, "baseline {baseline} renders address families {families}");
    }
    for (baseline, engine) in &report.engines {
        let _ = writeln!(out, "baseline {baseline} writes for engine {engine}");
    }
    let counts: Vec<String> = report
        .summary
        .iter()
        .filter(|(k, _)| **k != "selected")
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    let _ = writeln!(
        out,
        "{} selected namespace(s){}{}: {}",
        report.summary.get("selected").copied().unwrap_or(0),
        if counts.is_empty() { "" } else { ", " },
        counts.join(", "),
        if report.compliant { "COMPLIANT" } else { "NOT COMPLIANT" }
    );
    out
}
