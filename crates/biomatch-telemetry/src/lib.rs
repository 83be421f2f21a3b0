//! One telemetry set-up for every biomatch role: structured `tracing` logs to stderr, filtered by
//! `RUST_LOG` (default `info`), as text or JSON lines.
//!
//! Log fields carry identifiers and counts, never templates, images or scores of named subjects.
//! [`GrpcMetricsLayer`] counts and times every RPC for Prometheus.

mod grpc_metrics;

pub use grpc_metrics::{GrpcMetrics, GrpcMetricsLayer};

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber; later calls (as in tests that start several roles) are no-ops.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
