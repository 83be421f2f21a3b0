//! The gateway role: the REST/JSON API v1 (axum) over the gRPC services, for analysts,
//! auditors, enrollers and admins, with its OpenAPI 3.1 document at `/v1/openapi.json`, and
//! `GET /healthz` and `GET /readyz` for load balancers. `/metrics` is not on this public port:
//! every process, the gateway included, serves it with the health endpoints on its operator
//! port ([`ops_router`] at `metrics_addr`), which only the monitoring network reaches.
//!
//! Every route is declared once, with its OpenAPI description (`utoipa`), so the document cannot
//! miss a route. The caller's bearer token is validated here and forwarded to the gRPC service,
//! which establishes the principal again and applies the same authorization table, scopes,
//! budgets and audit leaves as for a gRPC caller. Errors are `{"error": {"code", "message",
//! "request_id"}}` with the HTTP status [`biomatch_proto::http_status`] assigns ([`error`]).
//! Lists are paginated by an opaque cursor with a bounded page size; every body has a limit.
#![forbid(unsafe_code)]

use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use biomatch_auth::Authenticator;
use biomatch_client::Transport;
use biomatch_proto::v1::audit_service_client::AuditServiceClient;
use biomatch_proto::v1::ingest_service_client::IngestServiceClient;
use biomatch_proto::v1::search_service_client::SearchServiceClient;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub mod audit;
mod console;
pub mod error;
pub mod galleries;
mod gallery_json;
mod json;
mod photos;
pub mod searches;

pub use console::CONTENT_SECURITY_POLICY;
pub use error::{ApiError, Caller, ErrorBody};
pub use json::{CandidateJson, IdentifyJson, QualityJson};

/// The largest JSON body (vectors, settings); photo routes take [`Gateway::with_body_limit`].
const JSON_BODY_LIMIT: usize = 1024 * 1024;
/// The largest page of any list.
pub const MAX_PAGE: u32 = 100;

/// The gRPC services the gateway speaks to.
#[derive(Clone)]
pub struct Services {
    pub search: SearchServiceClient<Transport>,
    pub ingest: IngestServiceClient<Transport>,
    pub audit: AuditServiceClient<Transport>,
}

impl Services {
    /// Every service through one transport (a process running every role, or a single front
    /// address).
    pub fn at(transport: impl Into<Transport>) -> Self {
        let transport = transport.into();
        Self {
            search: SearchServiceClient::new(transport.clone()),
            ingest: IngestServiceClient::new(transport.clone()),
            audit: AuditServiceClient::new(transport),
        }
    }
}

#[derive(Clone)]
pub struct Gateway {
    search: SearchServiceClient<Transport>,
    ingest: IngestServiceClient<Transport>,
    audit: AuditServiceClient<Transport>,
    auth: Authenticator,
    ready: Arc<AtomicBool>,
    body_limit: usize,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "biomatch", description = "Face matching for border control: galleries, subjects, \
        searches, two-person review and the audit log. Every call needs a bearer token; what it may \
        do is its role's (docs/security.md)."),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

impl Gateway {
    /// `ready` is what `/readyz` reports (the process's readiness flag).
    pub fn new(services: Services, auth: Authenticator, ready: Arc<AtomicBool>) -> Self {
        let Services { search, ingest, audit } = services;
        Self { search, ingest, audit, auth, ready, body_limit: 11 * 1024 * 1024 }
    }

    /// The largest request body a photo route accepts (photos plus their form); larger get 413.
    pub fn with_body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Every route of the API with its OpenAPI description.
    fn api(&self) -> OpenApiRouter<Gateway> {
        let photos = OpenApiRouter::new()
            .routes(routes!(searches::identify))
            .routes(routes!(searches::verify))
            .routes(routes!(galleries::enrol))
            .layer(DefaultBodyLimit::max(self.body_limit));
        let json = OpenApiRouter::new()
            .routes(routes!(session))
            .routes(routes!(galleries::list_galleries, galleries::create_gallery))
            .routes(routes!(galleries::get_gallery, galleries::delete_gallery))
            .routes(routes!(galleries::set_threshold))
            .routes(routes!(galleries::get_subject, galleries::delete_subject))
            .routes(routes!(searches::get_search))
            .routes(routes!(searches::list_case_searches))
            .routes(routes!(searches::review))
            .routes(routes!(searches::pending_reviews))
            .routes(routes!(audit::query_leaves))
            .routes(routes!(audit::get_leaf))
            .routes(routes!(audit::checkpoint))
            .routes(routes!(audit::consistency))
            .routes(routes!(audit::public_key))
            .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT));
        OpenApiRouter::with_openapi(ApiDoc::openapi()).merge(photos).merge(json)
    }

    /// The OpenAPI document of every route.
    pub fn openapi(&self) -> utoipa::openapi::OpenApi {
        self.api().into_openapi()
    }

    /// The public REST API with `/healthz` and `/readyz` (for load balancers); no `/metrics`.
    pub fn router(self) -> Router {
        let health = health_router(self.ready.clone());
        let (api, doc) = self.api().split_for_parts();
        let doc = Arc::new(doc);
        api.route("/v1/openapi.json", get(move || async move { Json(doc.as_ref().clone()) }))
            .route_layer(biomatch_telemetry::RpcTelemetryLayer::http())
            .fallback(|| async { StatusCode::NOT_FOUND })
            .layer(axum::middleware::from_fn(error::request_ids))
            .with_state(self)
            .merge(health)
            .merge(console::router())
    }
}

/// A JSON body whose rejection is a 400 in the API's error shape.
pub struct JsonBody<T>(pub T);

impl<T: serde::de::DeserializeOwned> JsonBody<T> {
    async fn read(request: Request) -> Result<T, ApiError> {
        let Json(body) = Json::<T>::from_request(request, &()).await.map_err(error::bad_body)?;
        Ok(body)
    }
}

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _: &S) -> Result<Self, ApiError> {
        Self::read(request).await.map(JsonBody)
    }
}

/// A page of a list: `limit` (1 to 100, default 50) and the `cursor` a previous page answered.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// At most this many items (1 to 100; default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(50),
            Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            Some(n) => Err(error::bad_request(format!("limit must be 1 to {MAX_PAGE}, not {n}"))),
        }
    }

    /// A cursor that is a position in the log or a queue.
    fn numeric_cursor(&self) -> Result<u64, ApiError> {
        match self.cursor.as_deref() {
            None | Some("") => Ok(0),
            Some(text) => text.parse().map_err(|_| error::bad_request("cursor is not one this API gave")),
        }
    }
}

/// A page cut from a sorted list, its cursor the key of its last item.
struct Page<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

impl<T> Page<T> {
    fn of(mut rest: Vec<T>, limit: u32, key: impl Fn(&T) -> String) -> Self {
        let more = rest.len() > limit as usize;
        rest.truncate(limit as usize);
        let next_cursor = if more { rest.last().map(key) } else { None };
        Self { items: rest, next_cursor }
    }
}

/// A probe of a template the caller sends, made by `model_id` (empty: the gallery's).
fn embedding(values: Vec<f32>, model_id: String) -> biomatch_proto::v1::Probe {
    use biomatch_proto::v1::{Embedding, Probe, probe};
    let embedding = Embedding { values, model_id, model_version: String::new() };
    Probe { kind: Some(probe::Kind::Embedding(embedding)) }
}

/// A proto enum value's name as the API spells it: `REVIEW_STATE_AWAITING_SECOND` with prefix
/// `REVIEW_STATE_` is `awaiting_second`.
fn enum_name(proto_name: &str, prefix: &str) -> String {
    proto_name.trim_start_matches(prefix).to_ascii_lowercase()
}

fn next_cursor(token: u64) -> Option<String> {
    (token > 0).then(|| token.to_string())
}

/// A protobuf timestamp as RFC 3339 (UTC).
fn rfc3339(t: &prost_types::Timestamp) -> String {
    let nanos = i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// Who the token is, as the console needs it to choose its views.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionJson {
    pub subject: String,
    /// `analyst`, `auditor`, `admin`, `enroller` or `kiosk`.
    pub role: String,
    /// The galleries the token is limited to; absent: not limited.
    pub galleries: Option<Vec<String>>,
    /// The purposes the token is limited to; absent: not limited.
    pub purposes: Option<Vec<String>>,
}

/// The caller as its token says (checked here; nothing is called or recorded).
#[utoipa::path(get, path = "/v1/session", tag = "session",
    responses((status = 200, body = SessionJson), (status = "4XX", body = ErrorBody)))]
async fn session(caller: Caller) -> Json<SessionJson> {
    let p = caller.principal;
    Json(SessionJson {
        subject: p.subject,
        role: p.role.to_string(),
        galleries: p.galleries,
        purposes: p.purposes,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    async fn status(app: Router, path: &str) -> StatusCode {
        let request = axum::http::Request::get(path).body(Body::empty()).expect("request");
        app.oneshot(request).await.expect("response").status()
    }

    fn refs<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v.as_str()) {
                        ("$ref", Some(target)) => out.push(target),
                        _ => refs(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    /// The document is OpenAPI 3.1, every reference resolves, every operation answers its
    /// success and error shapes and needs the bearer token; operation ids are unique.
    #[tokio::test]
    async fn the_document_is_whole() {
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        let auth = Authenticator::new(biomatch_auth::KeySet::default(), "biomatch", "biomatch", 30);
        let gateway = Gateway::new(Services::at(channel), auth, Arc::new(AtomicBool::new(true)));
        let doc = serde_json::to_value(gateway.openapi()).expect("json");
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        let mut targets = Vec::new();
        refs(&doc, &mut targets);
        assert!(!targets.is_empty());
        for target in targets {
            let name = target.strip_prefix("#/components/schemas/").expect("a schema reference");
            assert!(doc["components"]["schemas"][name].is_object(), "{target} does not resolve");
        }
        let mut ids = Vec::new();
        let paths = doc["paths"].as_object().expect("paths");
        for (path, item) in paths {
            for (method, operation) in item.as_object().expect("path item") {
                let responses = operation["responses"].as_object().expect("responses");
                let success = responses.keys().any(|code| code.starts_with('2'));
                assert!(success && responses.contains_key("4XX"), "{method} {path}: {responses:?}");
                ids.push(operation["operationId"].as_str().expect("operation id").to_owned());
            }
        }
        let count = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!((ids.len(), count), (20, 20), "20 operations, each id once");
    }

    #[tokio::test]
    async fn the_public_router_has_no_metrics_and_the_operator_router_has() {
        let ready = Arc::new(AtomicBool::new(true));
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        let auth = Authenticator::new(biomatch_auth::KeySet::default(), "biomatch", "biomatch", 30);
        let public = Gateway::new(Services::at(channel), auth, ready.clone()).router();
        assert_eq!(status(public.clone(), "/metrics").await, StatusCode::NOT_FOUND);
        assert_eq!(status(public.clone(), "/healthz").await, StatusCode::OK);
        assert_eq!(status(public, "/readyz").await, StatusCode::OK);
        let ops = ops_router(Ops { metrics: None, ready: ready.clone() });
        assert_eq!(status(ops.clone(), "/metrics").await, StatusCode::OK);
        ready.store(false, Ordering::SeqCst);
        assert_eq!(status(ops, "/readyz").await, StatusCode::SERVICE_UNAVAILABLE);
    }
}
