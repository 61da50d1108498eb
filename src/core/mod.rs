//! The pure core: what every namespace should look like, who wins, whether a namespace's
//! NetworkPolicies let pods reach a blocked address, and what the status says. No I/O: plain
//! values in, plain values out, most of the unit tests.

pub mod cel;
pub mod cilium;
pub mod cluster;
pub mod desired;
pub mod disposal;
pub mod egress;
pub mod engine;
pub mod evaluate;
pub mod families;
pub mod objects;
pub mod outcomes;
pub mod policy;
pub mod report;
pub mod schema;
pub mod status;
pub mod wants;
