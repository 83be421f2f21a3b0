//! Per-request telemetry as a tower layer in front of a process's gRPC services or REST routes:
//! a server span that continues the caller's W3C trace context, and Prometheus metrics.
//!
//! - gRPC: `biomatch_grpc_requests_total{method,code}` and the histogram
//!   `biomatch_grpc_request_duration_seconds{method,code}`. `method` is the full gRPC path when it
//!   is one of the contract's methods and `other` otherwise, so a caller cannot blow up the label
//!   set; `code` is the numeric gRPC status of the response headers (trailers-only errors), `0`
//!   when the status comes in trailers (successes).
//! - HTTP: `biomatch_http_requests_total{route,method,status}` and
//!   `biomatch_http_request_duration_seconds{route,method,status}`, where `route` is the matched
//!   route template (`/v1/galleries/{gallery}/identify`), never the concrete path.
//!
//! No label or span field ever carries a subject id.

use futures::future::BoxFuture;
use std::collections::HashSet;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tracing::Instrument;

#[derive(Debug)]
enum Protocol {
    Grpc { known: HashSet<String> },
    Http,
}

#[derive(Debug, Clone)]
pub struct RpcTelemetryLayer {
    protocol: Arc<Protocol>,
}

impl RpcTelemetryLayer {
    /// For gRPC services; `paths`: every `/package.Service/Method` the process may serve.
    pub fn grpc(paths: impl IntoIterator<Item = String>) -> Self {
        Self { protocol: Arc::new(Protocol::Grpc { known: paths.into_iter().collect() }) }
    }

    /// For an axum router, applied with `route_layer` so that the matched route is known.
    pub fn http() -> Self {
        Self { protocol: Arc::new(Protocol::Http) }
    }
}

impl<S> tower::Layer<S> for RpcTelemetryLayer {
    type Service = RpcTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcTelemetry { protocol: self.protocol.clone(), inner }
    }
}

#[derive(Debug, Clone)]
pub struct RpcTelemetry<S> {
    protocol: Arc<Protocol>,
    inner: S,
}

/// What one request is called in spans and metrics.
struct Named {
    span: tracing::Span,
    labels: Vec<(&'static str, String)>,
}

impl Protocol {
    fn name<B>(&self, request: &http::Request<B>) -> Named {
        match self {
            Protocol::Grpc { known } => {
                let path = request.uri().path();
                let method = if known.contains(path) { path } else { "other" };
                let span = tracing::info_span!(
                    "grpc.server",
                    otel.name = method.trim_start_matches('/'),
                    otel.kind = "server",
                    rpc.system = "grpc",
                    rpc.grpc.status_code = tracing::field::Empty,
                    otel.status_code = tracing::field::Empty,
                );
                Named { span, labels: vec![("method", method.to_owned())] }
            }
            Protocol::Http => {
                let route = request
                    .extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map_or("other", axum::extract::MatchedPath::as_str);
                let method = request.method().as_str();
                let span = tracing::info_span!(
                    "http.server",
                    otel.name = format!("{method} {route}"),
                    otel.kind = "server",
                    http.route = route,
                    http.request.method = method,
                    http.response.status_code = tracing::field::Empty,
                    otel.status_code = tracing::field::Empty,
                );
                Named { span, labels: vec![("route", route.to_owned()), ("method", method.to_owned())] }
            }
        }
    }

    /// Records the outcome on the span and returns the status label.
    fn outcome<B>(&self, response: &http::Response<B>, span: &tracing::Span) -> (&'static str, String) {
        match self {
            Protocol::Grpc { .. } => {
                let code = response.headers().get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("0");
                span.record("rpc.grpc.status_code", code);
                if code != "0" {
                    span.record("otel.status_code", "ERROR");
                }
                (self.status_label(), code.to_owned())
            }
            Protocol::Http => {
                let status = response.status();
                span.record("http.response.status_code", status.as_u16());
                if status.is_server_error() {
                    span.record("otel.status_code", "ERROR");
                }
                (self.status_label(), status.as_str().to_owned())
            }
        }
    }

    fn status_label(&self) -> &'static str {
        match self {
            Protocol::Grpc { .. } => "code",
            Protocol::Http => "status",
        }
    }

    fn metric_names(&self) -> (&'static str, &'static str) {
        match self {
            Protocol::Grpc { .. } => {
                ("biomatch_grpc_requests_total", "biomatch_grpc_request_duration_seconds")
            }
            Protocol::Http => ("biomatch_http_requests_total", "biomatch_http_request_duration_seconds"),
        }
    }
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for RpcTelemetry<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    ReqBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let protocol = self.protocol.clone();
        let Named { span, mut labels } = protocol.name(&request);
        crate::traces::extract(request.headers(), &span);
        Box::pin(
            async move {
                let started = Instant::now();
                let response = inner.call(request).await;
                let span = tracing::Span::current();
                labels.push(match &response {
                    Ok(response) => protocol.outcome(response, &span),
                    Err(_) => (protocol.status_label(), "transport".to_owned()),
                });
                let (count, duration) = protocol.metric_names();
                metrics::counter!(count, &labels).increment(1);
                metrics::histogram!(duration, &labels).record(started.elapsed().as_secs_f64());
                response
            }
            .instrument(span),
        )
    }
}
