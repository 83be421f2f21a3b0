//! The gateway role: a REST/JSON API (axum) over the gRPC services, for analysts, auditors and
//! admins: `GET /healthz`, `GET /readyz` and `POST /v1/galleries/{gallery}/identify` with an
//! embedding (JSON) or a photo (multipart form). `/metrics` is not on this public port: every
//! process, the gateway included, serves it with the health endpoints on its operator port
//! ([`ops_router`] at `metrics_addr`), which only the monitoring network reaches.
//!
//! The caller's bearer token is validated by [`biomatch_auth::Authenticator`] and forwarded to the
//! gRPC service, which establishes the principal; errors come back as `{"error": {"code", "message"}}` with the HTTP
//! status that [`biomatch_proto::http_status`] assigns.
#![forbid(unsafe_code)]

use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use biomatch_auth::Authenticator;
use biomatch_proto::v1::search_service_client::SearchServiceClient;
use biomatch_proto::v1::{Embedding, IdentifyRequest, Probe, probe};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tonic::transport::Channel;

mod json;

pub use json::{CandidateJson, IdentifyJson, QualityJson};

#[derive(Clone)]
pub struct Gateway {
    search: SearchServiceClient<Channel>,
    auth: Authenticator,
    ready: Arc<AtomicBool>,
    body_limit: usize,
}

impl Gateway {
    /// `ready` is what `/readyz` reports (the process's readiness flag).
    pub fn new(search: SearchServiceClient<Channel>, auth: Authenticator, ready: Arc<AtomicBool>) -> Self {
        Self { search, auth, ready, body_limit: 11 * 1024 * 1024 }
    }

    /// The largest request body accepted (a photo plus its form); larger ones get 413.
    pub fn with_body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// The public REST API with `/healthz` and `/readyz` (for load balancers); no `/metrics`.
    pub fn router(self) -> Router {
        let health = health_router(self.ready.clone());
        Router::new()
            .route("/v1/galleries/{gallery}/identify", post(identify))
            .route_layer(biomatch_telemetry::RpcTelemetryLayer::http())
            .layer(DefaultBodyLimit::max(self.body_limit))
            .with_state(self)
            .merge(health)
    }

    /// Validates the caller's bearer token and returns it for forwarding: the service behind
    /// the gateway checks it again and spends it if it is single-use.
    fn caller<'h>(&self, headers: &'h HeaderMap) -> Result<&'h str, ApiError> {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        self.auth.authenticate_forwarded(get).map_err(ApiError)?;
        let header = get(biomatch_auth::AUTHORIZATION).unwrap_or_default();
        Ok(header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer ")).unwrap_or_default())
    }
}

/// `/healthz` (the process is up) and `/readyz` (it takes traffic).
pub fn health_router(ready: Arc<AtomicBool>) -> Router {
    Router::new().route("/healthz", get(|| async { "ok" })).route(
        "/readyz",
        get(move || {
            let ready = ready.load(Ordering::SeqCst);
            async move {
                if ready { (StatusCode::OK, "ready") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready") }
            }
        }),
    )
}

/// What every process serves to its operators on `metrics_addr`: `/healthz`, `/readyz` and
/// `/metrics` (Prometheus text of the process's counters; no label carries a subject id).
pub fn ops_router(ops: Ops) -> Router {
    let Ops { metrics, ready } = ops;
    health_router(ready).route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move { metrics.map(|m| m.render()).unwrap_or_default() }
        }),
    )
}

/// What the operator endpoints report: the process's metrics, and whether it takes traffic
/// (false until every role is up, and again once shutdown begins).
#[derive(Clone, Default)]
pub struct Ops {
    pub metrics: Option<PrometheusHandle>,
    pub ready: Arc<AtomicBool>,
}

/// A gRPC status as a JSON error response.
#[derive(Debug)]
pub struct ApiError(tonic::Status);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = biomatch_proto::http_status(self.0.code());
        let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({
            "error": { "code": biomatch_proto::code_name(self.0.code()), "message": self.0.message() }
        });
        (status, Json(body)).into_response()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentifyBody {
    pub embedding: Vec<f32>,
    #[serde(default)]
    pub model_id: String,
    #[serde(default)]
    pub k: u32,
    pub threshold: Option<f32>,
    #[serde(default)]
    pub purpose: String,
    #[serde(default)]
    pub case_ref: String,
    #[serde(default)]
    pub allow_partial: bool,
    #[serde(default)]
    pub min_change_seq: u64,
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(biomatch_proto::status_with(biomatch_domain::ErrorClass::InvalidArgument, message))
}

/// An identify request from a JSON body with an embedding.
async fn from_json(gallery: String, request: Request) -> Result<IdentifyRequest, ApiError> {
    let Json(body) =
        Json::<IdentifyBody>::from_request(request, &()).await.map_err(|e| bad_request(e.body_text()))?;
    Ok(IdentifyRequest {
        gallery,
        probe: Some(Probe {
            kind: Some(probe::Kind::Embedding(Embedding {
                values: body.embedding,
                model_id: body.model_id,
                model_version: String::new(),
            })),
        }),
        k: body.k,
        threshold: body.threshold,
        purpose: body.purpose,
        case_ref: body.case_ref,
        allow_partial: body.allow_partial,
        min_change_seq: body.min_change_seq,
    })
}

/// An identify request from a multipart form: the photo in the `image` part, the other
/// parameters (`k`, `threshold`, `purpose`, `case_ref`, `allow_partial`, `min_change_seq`) as text
/// parts. The photo goes to the search role in memory only.
async fn from_form(gallery: String, request: Request) -> Result<IdentifyRequest, ApiError> {
    let mut form = Multipart::from_request(request, &()).await.map_err(|e| bad_request(e.body_text()))?;
    let mut message = IdentifyRequest { gallery, ..Default::default() };
    let mut image = None;
    while let Some(field) = form.next_field().await.map_err(|e| bad_request(e.body_text()))? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "image" {
            image = Some(field.bytes().await.map_err(|e| bad_request(e.body_text()))?.to_vec());
            continue;
        }
        let text = field.text().await.map_err(|e| bad_request(e.body_text()))?;
        let number = |what: &str| bad_request(format!("form field {what} must be a number"));
        match name.as_str() {
            "k" => message.k = text.trim().parse().map_err(|_| number("k"))?,
            "threshold" => message.threshold = Some(text.trim().parse().map_err(|_| number("threshold"))?),
            "purpose" => message.purpose = text,
            "case_ref" => message.case_ref = text,
            "allow_partial" => message.allow_partial = matches!(text.trim(), "true" | "1"),
            "min_change_seq" => {
                message.min_change_seq = text.trim().parse().map_err(|_| number("min_change_seq"))?
            }
            other => return Err(bad_request(format!("unknown form field {other:?}"))),
        }
    }
    let image = image.ok_or_else(|| bad_request("the form has no image part"))?;
    message.probe = Some(Probe { kind: Some(probe::Kind::Image(image)) });
    Ok(message)
}

/// `POST /v1/galleries/{gallery}/identify`: a JSON body with an embedding, or a multipart form
/// with a photo.
async fn identify(
    State(gateway): State<Gateway>,
    Path(gallery): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Result<Json<IdentifyJson>, ApiError> {
    let token = gateway.caller(&headers)?;
    let multipart = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let message =
        if multipart { from_form(gallery, request).await? } else { from_json(gallery, request).await? };
    let mut search = gateway.search.clone();
    let response = search.identify(biomatch_client::request(message, token)).await.map_err(ApiError)?;
    Ok(Json(IdentifyJson::from(response.into_inner())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    async fn status(app: Router, path: &str) -> StatusCode {
        let request = axum::http::Request::get(path).body(Body::empty()).expect("request");
        app.oneshot(request).await.expect("response").status()
    }

    #[tokio::test]
    async fn the_public_router_has_no_metrics_and_the_operator_router_has() {
        let ready = Arc::new(AtomicBool::new(true));
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        let auth = Authenticator::new(biomatch_auth::KeySet::default(), "biomatch", "biomatch", 30);
        let public = Gateway::new(SearchServiceClient::new(channel), auth, ready.clone()).router();
        assert_eq!(status(public.clone(), "/metrics").await, StatusCode::NOT_FOUND);
        assert_eq!(status(public.clone(), "/healthz").await, StatusCode::OK);
        assert_eq!(status(public, "/readyz").await, StatusCode::OK);
        let ops = ops_router(Ops { metrics: None, ready: ready.clone() });
        assert_eq!(status(ops.clone(), "/metrics").await, StatusCode::OK);
        ready.store(false, Ordering::SeqCst);
        assert_eq!(status(ops, "/readyz").await, StatusCode::SERVICE_UNAVAILABLE);
    }
}
