//! Per-RPC metrics as a tower layer in front of a process's gRPC services:
//! `biomatch_grpc_requests_total{method,code}` and the histogram
//! `biomatch_grpc_request_duration_seconds{method,code}`. `method` is the full gRPC path when it
//! is one of the contract's methods and `other` otherwise, so a caller cannot blow up the label
//! set; `code` is the numeric gRPC status of the response headers (trailers-only errors), `0`
//! when the status comes in trailers (successes). No label ever carries a subject id.

use futures::future::BoxFuture;
use std::collections::HashSet;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer {
    known: Arc<HashSet<String>>,
}

impl GrpcMetricsLayer {
    /// `paths`: every `/package.Service/Method` the process may serve.
    pub fn new(paths: impl IntoIterator<Item = String>) -> Self {
        Self { known: Arc::new(paths.into_iter().collect()) }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { known: self.known.clone(), inner }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    known: Arc<HashSet<String>>,
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for GrpcMetrics<S>
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
        let path = request.uri().path();
        let method = if self.known.contains(path) { path.to_owned() } else { "other".to_owned() };
        Box::pin(async move {
            let started = Instant::now();
            let response = inner.call(request).await;
            let code = match &response {
                Ok(r) => {
                    r.headers().get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("0").to_owned()
                }
                Err(_) => "transport".to_owned(),
            };
            let labels = [("method", method), ("code", code)];
            metrics::counter!("biomatch_grpc_requests_total", &labels).increment(1);
            metrics::histogram!("biomatch_grpc_request_duration_seconds", &labels)
                .record(started.elapsed().as_secs_f64());
            response
        })
    }
}
