//! Connecting to other biomatch roles: lazily connected channels or calls into this process's own
//! gRPC stack ([`Transport`]), requests that carry a bearer token, the fail-closed audit append
//! every writing or searching role uses before it answers, and the audited refusal of a request.
#![forbid(unsafe_code)]

pub mod budget;
mod probe;
mod refusals;
mod tls;
mod transport;

pub use probe::{FaceRule, GalleryModel, ResolvedProbe, resolve_embedding, resolve_probe};
pub use refusals::AuditRefusals;
pub use tls::{MutualTls, TlsFileError};
pub use transport::{LocalServer, Transport};

use biomatch_auth::ServiceCredentials;
use biomatch_domain::{ErrorClass, Principal};
use biomatch_proto::status_with;
use biomatch_proto::v1::audit_service_client::AuditServiceClient;
use biomatch_proto::v1::{Actor, AppendRequest, AppendResponse, AuditEvent, Operation};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Why a channel could not be set up (nothing is connected yet: channels connect on first use).
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("invalid endpoint {url:?}: {source}")]
    Endpoint { url: String, source: tonic::transport::Error },
    #[error("TLS for {url:?}: {source}")]
    Tls { url: String, source: tonic::transport::Error },
}

/// A channel to `url` (e.g. `http://127.0.0.1:50051`) that connects on first use and reconnects
/// after failures, so roles can start in any order.
pub fn channel(url: &str) -> Result<Channel, ChannelError> {
    channel_with(url, None)
}

/// As [`channel`], over mutual TLS when `tls` is given (an `http://` URL becomes `https://`).
pub fn channel_with(url: &str, tls: Option<&MutualTls>) -> Result<Channel, ChannelError> {
    let url = match (tls, url.strip_prefix("http://")) {
        (Some(_), Some(rest)) => format!("https://{rest}"),
        _ => url.to_owned(),
    };
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|source| ChannelError::Endpoint { url: url.clone(), source })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls.client()).map_err(|source| ChannelError::Tls { url, source })?;
    }
    Ok(endpoint.connect_lazy())
}

/// A request carrying `token` as its bearer token.
pub fn request<T>(message: T, token: &str) -> tonic::Request<T> {
    biomatch_auth::bearer(message, token)
}

/// The audit log's view of a principal.
pub fn actor(principal: &Principal) -> Actor {
    Actor {
        subject: principal.subject.clone(),
        role: principal.role.to_string(),
        device_id: principal.device.clone(),
    }
}

/// The audit log did not commit a leaf.
#[derive(Debug, thiserror::Error)]
#[error("the audit log did not commit the leaf ({code:?}: {message})")]
pub struct AuditUnavailable {
    pub code: tonic::Code,
    message: String,
}

/// What the caller is told when its answer's leaf could not be committed: `UNAVAILABLE` and no
/// result, or `RESOURCE_EXHAUSTED` when the audit log's storage is full. This conversion is where
/// that refusal is handled, so it is logged here, once.
impl From<AuditUnavailable> for tonic::Status {
    fn from(e: AuditUnavailable) -> Self {
        tracing::warn!(error = %e, "refusing to answer without its audit leaf");
        match e.code {
            // RESOURCE_EXHAUSTED also answers an audit role too busy to admit the call.
            tonic::Code::ResourceExhausted if e.message.contains("storage is full") => status_with(
                ErrorClass::ResourceExhausted,
                "audit log storage is full: no unaudited result is returned",
            ),
            _ => {
                status_with(ErrorClass::Unavailable, "audit log unavailable: no unaudited result is returned")
            }
        }
    }
}

/// Appends an audit event and waits for the commit. A caller that may not answer without the
/// leaf turns the failure into `UNAVAILABLE` (`?` on a `Status`); one recording a refusal logs it.
pub async fn append_audit(
    client: &AuditServiceClient<Transport>,
    service: &ServiceCredentials,
    mut event: AuditEvent,
    idempotency_key: String,
) -> Result<AppendResponse, AuditUnavailable> {
    let mut client = client.clone();
    if event.trace_id.is_empty() {
        event.trace_id = biomatch_telemetry::current_trace_id();
    }
    client
        .append(request(AppendRequest { event: Some(event), idempotency_key }, &service.token()))
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| AuditUnavailable { code: status.code(), message: status.message().to_owned() })
}

/// Refuses a request with `PERMISSION_DENIED` after recording the refusal in the audit log
/// (best effort: the refusal stands even when the log cannot be reached).
pub async fn deny(
    audit: &AuditServiceClient<Transport>,
    service: &ServiceCredentials,
    principal: &Principal,
    gallery: &str,
    what: String,
) -> tonic::Status {
    let event = AuditEvent {
        actor: Some(actor(principal)),
        operation: Operation::AccessDenied.into(),
        gallery: gallery.to_owned(),
        outcome: "PERMISSION_DENIED".into(),
        detail: what.clone(),
        ..Default::default()
    };
    let key = format!("denied:{}", uuid::Uuid::new_v4());
    if let Err(e) = append_audit(audit, service, event, key).await {
        tracing::warn!(error = %e, "a refusal could not be audited");
    }
    status_with(ErrorClass::PermissionDenied, what)
}
