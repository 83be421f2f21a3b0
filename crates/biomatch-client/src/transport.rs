//! How one role reaches another: over the network, or, when both run in the same process and the
//! operator named no endpoint for the callee, straight into the process's own gRPC stack.
//!
//! A [`Transport`] is what every role's clients are built on. One made from a
//! [`Channel`] calls over HTTP/2 and TCP (or mutual TLS). [`LocalServer::transport`] hands the request to
//! the very service stack the process's listener serves: the same admission, telemetry,
//! panic-catching and authentication layers, the same authorization table, the same handlers and
//! message limits. What it skips is what a call within one process does not need: HTTP/2 framing
//! and header compression, two trips through loopback TCP, and the wake-ups of the connection
//! tasks on both ends. The callee's handler runs in the caller's task. The caller's deadline
//! (`grpc-timeout`) is kept: past it, the call is dropped and answered `DEADLINE_EXCEEDED`, as a
//! network server would. Messages are still encoded and decoded, so a handler sees exactly what
//! it would see from the network; only the peer address is unknown (there is none).
//!
//! Mutual TLS is not short-circuited: the authorization of a device depends on the certificate
//! a connection presents, and a call that never left the process has none. A process with TLS
//! configured therefore calls its own roles over the network, as before.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::transport::Channel;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

/// Any error a transport's call can end in; tonic's clients turn it into a `Status`.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

type Boxed = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError>;

/// The service a role's gRPC clients send their requests through.
#[derive(Clone)]
pub struct Transport(Boxed);

/// Calls over the network.
impl From<Channel> for Transport {
    fn from(channel: Channel) -> Self {
        Self(BoxCloneSyncService::new(channel.map_err(BoxError::from)))
    }
}

impl Service<http::Request<Body>> for Transport {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = <Boxed as Service<http::Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        self.0.call(request)
    }
}

/// The process's own gRPC stack, for transports made before it is built (the roles' clients are
/// made first, and the stack holds the roles). Until [`LocalServer::serve`] is called, a call
/// through it is answered `UNAVAILABLE`.
#[derive(Clone, Default)]
pub struct LocalServer(Arc<OnceLock<Stack>>);

type Stack = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>;

impl LocalServer {
    /// Calls `stack` from now on. Only the first stack served is kept.
    pub fn serve<S>(&self, stack: S)
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        if self.0.set(BoxCloneSyncService::new(stack)).is_err() {
            tracing::warn!("the in-process gRPC stack was already set; the new one is ignored");
        }
    }

    /// A transport into this process's stack.
    pub fn transport(&self) -> Transport {
        Transport(BoxCloneSyncService::new(Local(self.0.clone())))
    }
}

#[derive(Clone)]
struct Local(Arc<OnceLock<Stack>>);

impl Service<http::Request<Body>> for Local {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The stack's own readiness is awaited in the call, where its admission layer decides.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let stack = self.0.get().cloned();
        let deadline = biomatch_telemetry::caller_deadline(&request);
        Box::pin(async move {
            let Some(stack) = stack else {
                return Ok(
                    tonic::Status::unavailable("this process's gRPC server is not started yet").into_http()
                );
            };
            let answer = stack.oneshot(request);
            let answered = match deadline {
                None => answer.await,
                Some(deadline) => match tokio::time::timeout(deadline, answer).await {
                    Ok(answered) => answered,
                    Err(_) => Ok(tonic::Status::deadline_exceeded("deadline exceeded").into_http()),
                },
            };
            Ok(answered.unwrap_or_else(|never| match never {}))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use biomatch_proto::v1::DescribeMatcherRequest;
    use biomatch_proto::v1::matcher_service_client::MatcherServiceClient;

    /// A stack that answers every call after `delay`, with `code`.
    fn answering(
        delay: std::time::Duration,
        code: tonic::Code,
    ) -> impl Clone
    + Send
    + Sync
    + 'static
    + Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = Infallible,
        Future: Send + 'static,
    > {
        tower::service_fn(move |_: http::Request<Body>| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, Infallible>(tonic::Status::new(code, "from the stack").into_http())
        })
    }

    fn describe(timeout: Option<std::time::Duration>) -> tonic::Request<DescribeMatcherRequest> {
        let mut request = tonic::Request::new(DescribeMatcherRequest {});
        if let Some(t) = timeout {
            request.set_timeout(t);
        }
        request
    }

    #[tokio::test]
    async fn a_call_before_the_stack_is_served_is_unavailable_and_after_reaches_it() {
        let local = LocalServer::default();
        let mut client = MatcherServiceClient::new(local.transport());
        let early = client.describe(describe(None)).await.expect_err("nothing served yet");
        assert_eq!(early.code(), tonic::Code::Unavailable);
        local.serve(answering(std::time::Duration::ZERO, tonic::Code::PermissionDenied));
        let answered = client.describe(describe(None)).await.expect_err("the stack refuses");
        assert_eq!((answered.code(), answered.message()), (tonic::Code::PermissionDenied, "from the stack"));
    }

    #[tokio::test]
    async fn the_callers_deadline_ends_a_call_the_stack_has_not_answered() {
        let local = LocalServer::default();
        local.serve(answering(std::time::Duration::from_millis(300), tonic::Code::PermissionDenied));
        let mut client = MatcherServiceClient::new(local.transport());
        let late = client
            .describe(describe(Some(std::time::Duration::from_millis(20))))
            .await
            .expect_err("past the deadline");
        assert_eq!(late.code(), tonic::Code::DeadlineExceeded);
        let slow = client.describe(describe(None)).await.expect_err("no deadline: the stack's own answer");
        assert_eq!(slow.code(), tonic::Code::PermissionDenied, "{slow:?}");
    }
}
