//! kube-baseline: a Kubernetes operator that keeps every selected namespace on a declared
//! `SecurityBaseline` (instance-metadata egress policy, Entra ID group RoleBindings, Pod
//! Security labels), repairs drift, detects bypasses and reports compliance.
//!
//! [`api`] is the CRD; [`core`] decides (pure); [`runtime`] talks to the API server.

pub mod api;
pub mod cli;
pub mod core;
pub mod error;
pub mod runtime;

pub use error::{Error, Result};
