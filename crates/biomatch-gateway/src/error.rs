//! Every error of the REST API has one shape, `{"error": {"code", "message", "request_id"}}`,
//! whichever layer produced it: a gRPC status from a service ([`ApiError`]), or axum itself (an
//! unknown route, a wrong method, a body over its limit, a malformed path), which
//! [`request_ids`] rewrites into the same shape. Each request has an id (the caller's
//! `x-request-id` when it is short and plain, a fresh UUID otherwise), answered in the
//! `x-request-id` header and forwarded to the gRPC services, so a complaint can be traced.

use axum::body::Body;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, http};
use biomatch_domain::{ErrorClass, Principal};
use serde::Serialize;
use utoipa::ToSchema;

pub const REQUEST_ID: &str = "x-request-id";

/// An error answer: a gRPC status (from a service, or of the same class), or an HTTP status
/// that has no gRPC class (a body over its limit: 413).
#[derive(Debug)]
pub enum ApiError {
    Status(tonic::Status),
    Http(StatusCode, String),
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        Self::Status(status)
    }
}

/// A 400 with `message`.
pub fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::Status(biomatch_proto::status_with(ErrorClass::InvalidArgument, message))
}

/// A rejected body: 413 when over its limit, else 400.
pub fn bad_body(rejection: axum::extract::rejection::JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::Http(StatusCode::PAYLOAD_TOO_LARGE, rejection.body_text())
    } else {
        bad_request(rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            ApiError::Status(status) => status,
            // `request_ids` gives it the error shape and a code name.
            ApiError::Http(status, text) => return (status, text).into_response(),
        };
        let http = biomatch_proto::http_status(status.code());
        let http = StatusCode::from_u16(http.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            error: ErrorDetail {
                code: biomatch_proto::code_name(status.code()),
                message: status.message().to_owned(),
                // Filled in by `request_ids`, which knows the request.
                request_id: String::new(),
            },
        };
        (http, Json(body)).into_response()
    }
}

/// What every error answers.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// The gRPC status name of the error class, e.g. `INVALID_ARGUMENT`, `PERMISSION_DENIED`.
    pub code: String,
    /// What went wrong, for a person; never a template, an image or a secret.
    pub message: String,
    /// The request's id (also the `x-request-id` response header).
    pub request_id: String,
}

/// The id of the request being answered.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// A caller-chosen id is kept when it is at most 64 plain characters.
fn acceptable(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// The code name an HTTP status stands for, for errors axum answers itself.
fn code_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => "UNAUTHENTICATED",
        StatusCode::FORBIDDEN => "PERMISSION_DENIED",
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::METHOD_NOT_ALLOWED => "UNIMPLEMENTED",
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => "RESOURCE_EXHAUSTED",
        StatusCode::SERVICE_UNAVAILABLE => "UNAVAILABLE",
        s if s.is_client_error() => "INVALID_ARGUMENT",
        _ => "INTERNAL",
    }
}

/// Gives every request an id and every error the one JSON shape carrying it.
pub async fn request_ids(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| acceptable(id))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    request.extensions_mut().insert(RequestId(id.clone()));
    let response = next.run(request).await;
    let (mut parts, body) = response.into_parts();
    if let Ok(value) = HeaderValue::from_str(&id) {
        parts.headers.insert(REQUEST_ID, value);
    }
    if !(parts.status.is_client_error() || parts.status.is_server_error()) {
        return Response::from_parts(parts, body);
    }
    // Error bodies are small: ours, or axum's one-line rejections.
    let bytes = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let mut error = match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(ours) => ours,
        Err(_) => {
            let text = String::from_utf8_lossy(&bytes).trim().to_owned();
            let message = if text.is_empty() {
                parts.status.canonical_reason().unwrap_or("error").to_owned()
            } else {
                text
            };
            let code = code_of(parts.status).to_owned();
            ErrorBody { error: ErrorDetail { code, message, request_id: String::new() } }
        }
    };
    error.error.request_id = id;
    let body = serde_json::to_vec(&error).unwrap_or_default();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// The authenticated caller of a REST request: who they are, and the bearer token the gateway
/// forwards (each service checks it again, and spends it if it is single-use).
pub struct Caller {
    pub principal: Principal,
    token: String,
    request_id: String,
}

impl Caller {
    /// A gRPC request carrying the caller's token and the REST request's id.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = biomatch_client::request(message, &self.token);
        if let Ok(value) = self.request_id.parse() {
            request.metadata_mut().insert(REQUEST_ID, value);
        }
        request
    }
}

impl FromRequestParts<crate::Gateway> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gateway: &crate::Gateway) -> Result<Self, ApiError> {
        let headers: &http::HeaderMap = &parts.headers;
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let principal = gateway.auth.authenticate_forwarded(get)?;
        let header = get(biomatch_auth::AUTHORIZATION).unwrap_or_default();
        let token =
            header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer ")).unwrap_or_default();
        let request_id = parts.extensions.get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
        Ok(Self { principal, token: token.to_owned(), request_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_ids_are_kept_only_when_plain_and_short() {
        assert!(acceptable("req-1.a:b_c"));
        assert!(!acceptable(""));
        assert!(!acceptable(&"a".repeat(65)));
        assert!(!acceptable("a b"));
        assert!(!acceptable("<script>"));
    }

    #[test]
    fn axum_statuses_get_code_names() {
        assert_eq!(code_of(StatusCode::PAYLOAD_TOO_LARGE), "RESOURCE_EXHAUSTED");
        assert_eq!(code_of(StatusCode::UNSUPPORTED_MEDIA_TYPE), "INVALID_ARGUMENT");
        assert_eq!(code_of(StatusCode::METHOD_NOT_ALLOWED), "UNIMPLEMENTED");
    }
}
