//! Authentication and authorization as a tower layer in front of every gRPC service of a process:
//! it validates the bearer token, spends a single-use token (which may ask Redis, hence a layer
//! and not tonic's synchronous interceptor), checks the caller against the one RPC table
//! ([`crate::policy`]) and a kiosk's device against its client certificate ([`crate::device`]),
//! and puts the [`Principal`] into the request's extensions, where handlers
//! find it. Refusals are recorded through a [`RefusalLog`] before they are answered. Health
//! checks stay open so that orchestrators can probe without credentials.

use crate::Authenticator;
use biomatch_domain::{ErrorClass, Principal};
use futures::future::BoxFuture;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Paths answered without a token: the standard health and reflection services.
const OPEN_PREFIXES: [&str; 3] =
    ["/grpc.health.v1.Health/", "/grpc.reflection.v1.ServerReflection/", "/grpc.reflection.v1alpha."];

/// Where the pipeline records what it refused, before answering. Recording is best effort: a
/// refusal stands even when the log cannot be reached.
pub trait RefusalLog: Send + Sync + 'static {
    /// An authenticated caller asked for an RPC its role may not call (`why` names the RPC).
    fn denied(&self, principal: Principal, why: String) -> BoxFuture<'static, ()>;
    /// A call whose token was missing or refused, from `source` (the peer's address).
    fn unauthenticated(&self, source: String, rpc: String, why: String) -> BoxFuture<'static, ()>;
}

#[derive(Clone)]
pub struct AuthLayer {
    auth: Authenticator,
    refusals: Option<Arc<dyn RefusalLog>>,
    certificates_required: bool,
}

impl std::fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLayer").field("auth", &self.auth).finish()
    }
}

impl AuthLayer {
    pub fn new(auth: Authenticator) -> Self {
        Self { auth, refusals: None, certificates_required: false }
    }

    /// The server runs mutual TLS: every kiosk call must come with its client certificate.
    pub fn with_client_certificates_required(mut self, required: bool) -> Self {
        self.certificates_required = required;
        self
    }

    /// Records refusals in `log`.
    pub fn with_refusal_log(mut self, log: Arc<dyn RefusalLog>) -> Self {
        self.refusals = Some(log);
        self
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            auth: self.auth.clone(),
            refusals: self.refusals.clone(),
            certificates_required: self.certificates_required,
            inner,
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    auth: Authenticator,
    refusals: Option<Arc<dyn RefusalLog>>,
    certificates_required: bool,
    inner: S,
}

type TlsInfo = tonic::transport::server::TlsConnectInfo<tonic::transport::server::TcpConnectInfo>;

/// The peer's address as tonic recorded it (without the port: one source, many connections).
fn source<B>(request: &http::Request<B>) -> String {
    let tcp =
        request.extensions().get::<tonic::transport::server::TcpConnectInfo>().and_then(|c| c.remote_addr());
    let tls = request.extensions().get::<TlsInfo>().and_then(|c| c.get_ref().remote_addr());
    tcp.or(tls).map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string())
}

/// The client certificate (DER) the connection was made with, when it is a TLS connection.
fn client_certificate<B>(request: &http::Request<B>) -> Option<Vec<u8>> {
    let chain = request.extensions().get::<TlsInfo>()?.peer_certs()?;
    chain.first().map(|leaf| leaf.as_ref().to_vec())
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
        let refusals = self.refusals.clone();
        let certificates_required = self.certificates_required;
        Box::pin(async move {
            let path = request.uri().path();
            if OPEN_PREFIXES.iter().any(|open| path.starts_with(open)) {
                return inner.call(request).await;
            }
            let rpc = crate::policy::rpc_of_path(path).to_owned();
            let headers = request.headers();
            let checked = auth.authenticate(|name| headers.get(name).and_then(|v| v.to_str().ok())).await;
            let principal = match checked {
                Ok(principal) => principal,
                Err(status) => {
                    if let Some(log) = &refusals {
                        log.unauthenticated(source(&request), rpc, status.message().to_owned()).await;
                    }
                    return Ok(status.into_http());
                }
            };
            let certificate = client_certificate(&request);
            let allowed = crate::policy::authorize(&rpc, &principal).and_then(|()| {
                crate::device::check(&principal, certificate.as_deref(), certificates_required)
            });
            if let Err(crate::policy::Denied(why)) = allowed {
                if let Some(log) = &refusals {
                    log.denied(principal, why.clone()).await;
                }
                return Ok(biomatch_proto::status_with(ErrorClass::PermissionDenied, why).into_http());
            }
            request.extensions_mut().insert(principal);
            inner.call(request).await
        })
    }
}
