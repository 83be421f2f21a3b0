//! Connecting to other biomatch roles: lazily connected channels, requests that carry a bearer
//! token, the fail-closed audit append every writing or searching role uses before it answers, and
//! the audited refusal of a request.

pub mod budget;
mod probe;
mod refusals;
mod tls;

pub use probe::{FaceRule, GalleryModel, ResolvedProbe, resolve_embedding, resolve_probe};
pub use refusals::AuditRefusals;
pub use tls::{MutualTls, TlsFileError};

use biomatch_auth::ServiceCredentials;
use biomatch_domain::{ErrorClass, Principal, Role};
use biomatch_proto::status_with;
use biomatch_proto::v1::audit_service_client::AuditServiceClient;
use biomatch_proto::v1::{Actor, AppendRequest, AppendResponse, AuditEvent, Operation};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// A channel to `url` (e.g. `http://127.0.0.1:50051`) that connects on first use and reconnects
/// after failures, so roles can start in any order.
pub fn channel(url: &str) -> Result<Channel, String> {
    channel_with(url, None)
}

/// As [`channel`], over mutual TLS when `tls` is given (an `http://` URL becomes `https://`).
pub fn channel_with(url: &str, tls: Option<&MutualTls>) -> Result<Channel, String> {
    let url = match (tls, url.strip_prefix("http://")) {
        (Some(_), Some(rest)) => format!("https://{rest}"),
        _ => url.to_owned(),
    };
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| format!("invalid endpoint {url:?}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls.client()).map_err(|e| format!("TLS for {url:?}: {e}"))?;
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

/// Appends an audit event and waits for the commit. Any failure is `UNAVAILABLE`: the caller must
/// then answer its own client with that error and no result.
pub async fn append_audit(
    client: &AuditServiceClient<Channel>,
    service: &ServiceCredentials,
    mut event: AuditEvent,
    idempotency_key: String,
) -> Result<AppendResponse, tonic::Status> {
    let mut client = client.clone();
    if event.trace_id.is_empty() {
        event.trace_id = biomatch_telemetry::current_trace_id();
    }
    match client
        .append(request(AppendRequest { event: Some(event), idempotency_key }, &service.token()))
        .await
    {
        Ok(response) => Ok(response.into_inner()),
        Err(status) => {
            tracing::warn!(code = ?status.code(), "audit append failed, refusing to answer");
            Err(status_with(
                ErrorClass::Unavailable,
                "audit log unavailable: no unaudited result is returned",
            ))
        }
    }
}

/// Refuses a request with `PERMISSION_DENIED` after recording the refusal in the audit log
/// (best effort: the refusal stands even when the log cannot be reached).
pub async fn deny(
    audit: &AuditServiceClient<Channel>,
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
    if append_audit(audit, service, event, key).await.is_err() {
        tracing::warn!("a refusal could not be audited");
    }
    status_with(ErrorClass::PermissionDenied, what)
}

/// Checks the caller's role; a refusal is audited.
pub async fn require(
    audit: &AuditServiceClient<Channel>,
    service: &ServiceCredentials,
    principal: &Principal,
    allowed: &[Role],
    rpc: &str,
) -> Result<(), tonic::Status> {
    if allowed.contains(&principal.role) {
        return Ok(());
    }
    Err(deny(audit, service, principal, "", format!("role {} may not call {rpc}", principal.role)).await)
}

/// The audited role check for roles that otherwise never talk to the audit log.
#[derive(Clone)]
pub struct Guard {
    pub audit: AuditServiceClient<Channel>,
    pub creds: std::sync::Arc<ServiceCredentials>,
}

impl Guard {
    pub async fn require(
        &self,
        principal: &Principal,
        allowed: &[Role],
        rpc: &str,
    ) -> Result<(), tonic::Status> {
        require(&self.audit, &self.creds, principal, allowed, rpc).await
    }
}
