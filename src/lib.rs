//! kube-baseline: a Kubernetes operator that keeps every selected namespace on a declared
//! `SecurityBaseline` (instance-metadata egress policy, Entra ID group RoleBindings, Pod
//! Security labels), repairs drift and reports compliance.
//!
//! The pure core ([`desired`], [`policy`], [`objects`], [`status`]) decides; the thin I/O layer
//! ([`controller`], [`status_writer`], [`server`], [`leader`]) talks to the API server.

pub mod api;
pub mod context;
pub mod controller;
pub mod desired;
pub mod egress;
pub mod error;
pub mod events;
pub mod finalizer;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod objects;
pub mod policy;
pub mod progress;
pub mod reconcile;
pub mod retry;
pub mod server;
pub mod status;
pub mod status_writer;
pub mod telemetry;
pub mod writer;

pub use error::{Error, Result};
