//! Logging: human-readable text or JSON lines, filtered with `RUST_LOG` syntax.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. `filter` is used when `RUST_LOG` is unset.
pub fn init(format: LogFormat, filter: &str) {
    // An empty RUST_LOG counts as unset (an empty filter would silence everything but errors).
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => EnvFilter::new(env),
        _ => EnvFilter::new(filter),
    };
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        // Colours only on a terminal: a log written to a file or a pipe stays plain text.
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_target(false)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())),
            )
            .init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true).with_current_span(true))
            .init(),
    }
}
