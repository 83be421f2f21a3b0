//! One telemetry set-up for every biomatch role: structured `tracing` logs to stderr, filtered by
//! `RUST_LOG` (default `info`), as text or JSON lines; OpenTelemetry traces over OTLP when the
//! standard `OTEL_*` variables ask for them ([`traces`]); and [`RpcTelemetryLayer`], which gives
//! every gRPC call and REST request a server span joined to the caller's trace, a request counter
//! and a latency histogram for Prometheus; [`CatchPanicLayer`] turns a handler's panic into an
//! `INTERNAL` answer, counted, instead of a dropped connection; [`AdmissionLayer`] bounds the calls
//! a role serves and queues, and refuses the rest at once with `RESOURCE_EXHAUSTED`.
//!
//! Log fields, span fields and metric labels carry identifiers, counts and durations, never
//! templates, images or scores of named subjects.
#![forbid(unsafe_code)]

mod admission;
mod latency_limit;
mod panics;
mod rpc_layer;
pub mod traces;

pub use admission::{Admission, AdmissionLayer, AdmissionLimits, caller_deadline};
pub use panics::{CatchPanic, CatchPanicLayer, install_panic_hook};
pub use rpc_layer::{RpcTelemetry, RpcTelemetryLayer};
pub use traces::{TelemetryError, current_trace_id, inject};

use opentelemetry_sdk::trace::SdkTracerProvider;
use std::io::IsTerminal;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// What [`init`] set up; [`Telemetry::shutdown`] sends the spans still buffered.
#[must_use = "call shutdown() before the process exits, or buffered spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn exporting_traces(&self) -> bool {
        self.provider.is_some()
    }

    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "spans could not be flushed at shutdown");
        }
    }
}

/// Installs the global subscriber: logs filtered by `RUST_LOG`, and spans at `info` and above to
/// OpenTelemetry when exporting is configured (`service_name` unless `OTEL_SERVICE_NAME` says
/// otherwise). A bad `OTEL_*` setting is an error. Later calls (as in tests that start several
/// roles) install nothing.
pub fn init(format: LogFormat, service_name: &str) -> Result<Telemetry, TelemetryError> {
    let provider = traces::provider_from_env(service_name)?;
    let filter = EnvFilter::try_from_default_env()
        // ONNX Runtime logs every session's graph rewrites and allocations at INFO.
        .unwrap_or_else(|_| EnvFilter::new("info,ort=warn"));
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let logs = match format {
        LogFormat::Text => logs.boxed(),
        LogFormat::Json => logs.json().boxed(),
    };
    let spans = provider.as_ref().map(|p| traces::layer(p).with_filter(LevelFilter::INFO));
    let installed =
        tracing_subscriber::registry().with(logs.with_filter(filter)).with(spans).try_init().is_ok();
    Ok(Telemetry { provider: provider.filter(|_| installed) })
}
