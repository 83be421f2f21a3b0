//! Authentication as a tower layer in front of every gRPC service of a process: it validates the
//! bearer token, spends a single-use token (which may ask Redis, hence a layer and not tonic's
//! synchronous interceptor), and puts the [`Principal`](biomatch_domain::Principal) into the
//! request's extensions, where handlers find it. Health checks stay open so that orchestrators can
//! probe without credentials.

use crate::Authenticator;
use futures::future::BoxFuture;
use std::task::{Context, Poll};

/// Paths answered without a token: the standard health and reflection services.
const OPEN_PREFIXES: [&str; 3] =
    ["/grpc.health.v1.Health/", "/grpc.reflection.v1.ServerReflection/", "/grpc.reflection.v1alpha."];

#[derive(Debug, Clone)]
pub struct AuthLayer {
    auth: Authenticator,
}

impl AuthLayer {
    pub fn new(auth: Authenticator) -> Self {
        Self { auth }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService { auth: self.auth.clone(), inner }
    }
}

#[derive(Debug, Clone)]
pub struct AuthService<S> {
    auth: Authenticator,
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for AuthService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    ReqBody: Send + 'static,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        // The clone that was polled ready serves this request; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            let path = request.uri().path();
            if OPEN_PREFIXES.iter().any(|open| path.starts_with(open)) {
                return inner.call(request).await;
            }
            let headers = request.headers();
            let checked = auth.authenticate(|name| headers.get(name).and_then(|v| v.to_str().ok())).await;
            match checked {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                    inner.call(request).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}
