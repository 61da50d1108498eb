//! The subcommands users run beside (or before) the operator: `validate` a baseline offline,
//! `render` what it would write, `audit` a live cluster. They share the core with the
//! controller, so they decide exactly as it does.

pub mod load;
pub mod validate;
