//! A panic in a gRPC handler becomes an `INTERNAL` answer instead of a dropped connection: the
//! panic is caught around the handler's future, counted in `biomatch_panics_total{method}`,
//! logged once by method (never with the panic's message, which could carry request data), and
//! the process goes on serving. A panic is still a bug; this only keeps one bad request from
//! taking the kiosk's connection, and every call multiplexed on it, down with it.

use futures::FutureExt;
use futures::future::BoxFuture;
use std::panic::AssertUnwindSafe;
use std::task::{Context, Poll};

#[derive(Debug, Clone, Copy, Default)]
pub struct CatchPanicLayer;

impl<S> tower::Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CatchPanic { inner }
    }
}

#[derive(Debug, Clone)]
pub struct CatchPanic<S> {
    inner: S,
}

/// The path as a metric label when it looks like one of this cluster's RPCs, else `other`: the
/// label set stays bounded whatever paths callers send.
fn method_label(path: &str) -> String {
    let rpc_like = path.len() <= 96
        && path.starts_with("/biomatch.v1.")
        && path.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/');
    if rpc_like { path.to_owned() } else { "other".to_owned() }
}

/// Replaces the default panic hook, which prints the panic's message (it may carry request
/// data) to stderr, by one that logs where the panic happened only. Called once at start.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        tracing::error!(location = %location, "panic (its message is not logged: it may carry request data)");
    }));
}

fn internal<B: Default>(method: String) -> http::Response<B> {
    tracing::error!(method = %method, "a handler panicked; answered INTERNAL");
    metrics::counter!("biomatch_panics_total", "method" => method).increment(1);
    tonic::Status::internal("internal error").into_http()
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for CatchPanic<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let method = method_label(request.uri().path());
        let inner = &mut self.inner;
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.call(request))) {
            Ok(future) => Box::pin(async move {
                match AssertUnwindSafe(future).catch_unwind().await {
                    Ok(answer) => answer,
                    Err(_) => Ok(internal(method)),
                }
            }),
            Err(_) => Box::pin(async move { Ok(internal(method)) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, ServiceExt};

    #[tokio::test]
    async fn a_panicking_handler_answers_internal_and_the_service_goes_on() {
        let handler = tower::service_fn(|request: http::Request<()>| async move {
            if request.uri().path().ends_with("/Panic") {
                panic!("a bug in a handler");
            }
            Ok::<_, std::convert::Infallible>(http::Response::new(String::from("served")))
        });
        let service = CatchPanicLayer.layer(handler);
        let call = |path: &str| {
            let request = http::Request::builder().uri(path).body(()).expect("request");
            service.clone().oneshot(request)
        };
        let answer = call("/biomatch.v1.SearchService/Panic").await.expect("an answer, not a dropped call");
        assert_eq!(answer.headers().get("grpc-status").map(|v| v.as_bytes()), Some(&b"13"[..]));
        let answer = call("/biomatch.v1.SearchService/Identify").await.expect("answer");
        assert_eq!(answer.into_body(), "served", "the next call is served as usual");
        assert_eq!(
            method_label("/biomatch.v1.SearchService/Identify"),
            "/biomatch.v1.SearchService/Identify"
        );
        assert_eq!(method_label("/x/../%00anything"), "other", "labels stay bounded");
    }
}
