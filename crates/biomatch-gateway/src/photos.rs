//! Multipart forms carrying photos (identify, verify, enrol): the photos in `image` parts, the
//! other parameters as text parts. A photo is held in memory only on its way to the embed role.

use crate::error::{ApiError, bad_request};
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{HeaderMap, StatusCode, header};
use utoipa::ToSchema;

/// The most photos one form may carry (several photos of one traveler at enrolment).
const MAX_IMAGES: usize = 8;
/// The most text fields one form may carry.
const MAX_FIELDS: usize = 16;

pub fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"))
}

/// A form's photos and text fields, in order.
pub struct Form {
    pub images: Vec<Vec<u8>>,
    pub fields: Vec<(String, String)>,
}

/// A form that cannot be read: 413 when it is over the body limit, else 400.
fn unreadable(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE { ApiError::Http(status, text) } else { bad_request(text) }
}

pub async fn read_form(request: Request) -> Result<Form, ApiError> {
    let mut multipart =
        Multipart::from_request(request, &()).await.map_err(|e| unreadable(e.status(), e.body_text()))?;
    let mut form = Form { images: Vec::new(), fields: Vec::new() };
    let broken = |e: axum::extract::multipart::MultipartError| unreadable(e.status(), e.body_text());
    while let Some(field) = multipart.next_field().await.map_err(broken)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "image" {
            if form.images.len() == MAX_IMAGES {
                return Err(bad_request(format!("at most {MAX_IMAGES} images per request")));
            }
            form.images.push(field.bytes().await.map_err(broken)?.to_vec());
            continue;
        }
        if form.fields.len() == MAX_FIELDS {
            return Err(bad_request("too many form fields"));
        }
        let text = field.text().await.map_err(broken)?;
        form.fields.push((name, text));
    }
    Ok(form)
}

/// Parses a number from a form field, naming the field when it is not one.
pub fn number<T: std::str::FromStr>(field: &str, text: &str) -> Result<T, ApiError> {
    text.trim().parse().map_err(|_| bad_request(format!("form field {field} must be a number")))
}

/// A search by photo: `image` and the search's parameters as text parts.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SearchForm {
    #[schema(format = Binary, content_media_type = "application/octet-stream")]
    image: String,
    purpose: String,
    case_ref: Option<String>,
    k: Option<u32>,
    threshold: Option<f32>,
    allow_partial: Option<bool>,
    min_change_seq: Option<u64>,
}

/// An enrolment by photos: one or more `image` parts (JPEG, PNG or WebP).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EnrolForm {
    subject_id: String,
    #[schema(format = Binary, content_media_type = "application/octet-stream")]
    image: String,
    mode: Option<String>,
    idempotency_key: Option<String>,
}
