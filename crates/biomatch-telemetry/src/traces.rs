//! OpenTelemetry traces: the OTLP exporter configured by the standard `OTEL_*` variables, W3C
//! trace context in and out of requests, and the current trace id for the audit log.
//!
//! Exporting is on when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
//! set (and neither `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none` says otherwise), over
//! HTTP with protobuf (`http/protobuf`, the collector's port 4318). The exporter itself reads the
//! endpoint, `OTEL_EXPORTER_OTLP_HEADERS` and the timeout; the SDK reads the sampler
//! (`OTEL_TRACES_SAMPLER`, default parent-based always-on) and `OTEL_SERVICE_NAME` /
//! `OTEL_RESOURCE_ATTRIBUTES`. When exporting is off no span gets a trace id and nothing is sent.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};
use tracing_subscriber::registry::LookupSpan;

/// Why tracing could not be set up as the environment asks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TelemetryError {
    /// An `OTEL_*` variable asks for something this build cannot do.
    #[error("{0}")]
    Unsupported(String),
    #[error("OpenTelemetry exporter: {0}")]
    Exporter(String),
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Whether the variables ask for exporting; an error names a variable that asks for something
/// this build cannot do.
fn exporting(var: impl Fn(&str) -> Option<String>) -> Result<bool, TelemetryError> {
    let var = |name: &str| var(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(false);
    }
    match var("OTEL_TRACES_EXPORTER").as_deref() {
        None | Some("otlp") => {}
        Some("none") => return Ok(false),
        Some(other) => {
            let what = format!("OTEL_TRACES_EXPORTER={other} is not supported: use otlp or none");
            return Err(TelemetryError::Unsupported(what));
        }
    }
    if var("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() && var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none() {
        return Ok(false);
    }
    for name in ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] {
        if let Some(protocol) = var(name).filter(|p| p != "http/protobuf") {
            return Err(TelemetryError::Unsupported(format!(
                "{name}={protocol} is not supported: biomatch exports OTLP as http/protobuf (port 4318)"
            )));
        }
    }
    Ok(true)
}

/// The tracer provider the environment asks for: `Ok(None)` when exporting is off.
pub fn provider_from_env(default_service_name: &str) -> Result<Option<SdkTracerProvider>, TelemetryError> {
    if !exporting(env)? {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if env("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(default_service_name.to_owned());
    }
    Ok(Some(
        SdkTracerProvider::builder().with_resource(resource.build()).with_batch_exporter(exporter).build(),
    ))
}

/// The `tracing` layer that turns spans into OpenTelemetry spans of `provider`; also installs
/// the W3C trace-context propagator that [`inject`] and [`extract`] use.
pub fn layer<S>(provider: &SdkTracerProvider) -> OpenTelemetryLayer<S, SdkTracer>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    tracing_opentelemetry::layer().with_tracer(provider.tracer("biomatch")).with_tracked_inactivity(false)
}

struct Metadata<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for Metadata<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) =
            (tonic::metadata::MetadataKey::from_bytes(key.as_bytes()), value.parse())
        {
            self.0.insert(key, value);
        }
    }
}

/// Writes the current span's trace context (`traceparent`, `tracestate`) into outgoing gRPC
/// metadata, so the callee's spans join the caller's trace.
pub fn inject(metadata: &mut tonic::metadata::MetadataMap) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut Metadata(metadata)));
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Makes the trace context of incoming headers (gRPC metadata or HTTP) the parent of `span`.
pub fn extract(headers: &http::HeaderMap, span: &tracing::Span) {
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)));
    if parent.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer is installed, i.e. tracing is off.
        let _ = span.set_parent(parent);
    }
}

/// The current trace id as 32 hex digits, or an empty string when tracing is off.
pub fn current_trace_id() -> String {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    if span_context.is_valid() { span_context.trace_id().to_string() } else { String::new() }
}

#[cfg(test)]
mod tests {
    use super::exporting;
    use std::collections::HashMap;

    fn with(vars: &[(&str, &str)]) -> Result<bool, String> {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        exporting(|name| vars.get(name).cloned()).map_err(|e| e.to_string())
    }

    #[test]
    fn exporting_follows_the_standard_variables() {
        assert_eq!(with(&[]), Ok(false));
        assert_eq!(with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]), Ok(true));
        assert_eq!(with(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/traces")]), Ok(true));
        assert_eq!(with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")]), Ok(false));
        let on = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert_eq!(with(&[on, ("OTEL_SDK_DISABLED", "TRUE")]), Ok(false));
        assert_eq!(with(&[on, ("OTEL_TRACES_EXPORTER", "none")]), Ok(false));
        assert_eq!(with(&[on, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]), Ok(true));
        let grpc = with(&[on, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).expect_err("refused");
        assert!(grpc.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc"), "{grpc}");
        let zipkin = with(&[on, ("OTEL_TRACES_EXPORTER", "zipkin")]).expect_err("refused");
        assert!(zipkin.contains("zipkin"), "{zipkin}");
    }
}
