//! Connecting to other biomatch roles: lazily connected channels, requests that carry a principal,
//! and the fail-closed audit append every writing or searching role uses before it answers.

mod probe;

pub use probe::{GalleryModel, ResolvedProbe, resolve_embedding, resolve_probe};

use biomatch_domain::{ErrorClass, Principal};
use biomatch_proto::status_with;
use biomatch_proto::v1::audit_service_client::AuditServiceClient;
use biomatch_proto::v1::{Actor, AppendRequest, AppendResponse, AuditEvent};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// A channel to `url` (e.g. `http://127.0.0.1:50051`) that connects on first use and reconnects
/// after failures, so roles can start in any order.
pub fn channel(url: &str) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| format!("invalid endpoint {url:?}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    Ok(endpoint.connect_lazy())
}

/// The audit log's view of a principal.
pub fn actor(principal: &Principal) -> Actor {
    Actor {
        subject: principal.subject.clone(),
        role: principal.role.to_string(),
        device_id: principal.device.clone(),
    }
}

/// A request carrying `principal` in its metadata.
pub fn request<T>(message: T, principal: &Principal) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    biomatch_auth::attach(request.metadata_mut(), principal);
    request
}

/// Appends an audit event and waits for the commit. Any failure is `UNAVAILABLE`: the caller must
/// then answer its own client with that error and no result.
pub async fn append_audit(
    client: &AuditServiceClient<Channel>,
    service: &Principal,
    event: AuditEvent,
    idempotency_key: String,
) -> Result<AppendResponse, tonic::Status> {
    let mut client = client.clone();
    match client.append(request(AppendRequest { event: Some(event), idempotency_key }, service)).await {
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
