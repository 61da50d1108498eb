//! The I/O layer: watches and caches, the per-namespace reconcile and the object writer, the
//! status, event and finalizer writers, leader election, and the HTTP endpoints.

pub mod cluster;
pub mod context;
pub mod controller;
pub mod events;
pub mod finalizer;
pub mod index;
pub mod interner;
pub mod leader;
pub mod managed;
pub mod memory;
pub mod metrics;
pub mod namespaces;
pub mod progress;
pub mod reconcile;
pub mod reports;
pub mod retry;
pub mod scope;
pub mod server;
pub mod status_writer;
pub mod telemetry;
pub mod writer;
