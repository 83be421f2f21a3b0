//! Galleries (admins create, delete and set thresholds; staff list and read them, within their
//! token's galleries) and subjects (enrollers enrol by vectors or photos and delete; enrollers
//! and analysts read a subject's metadata, never a template).

use crate::error::{ApiError, ErrorBody, bad_request};
pub use crate::gallery_json::{
    CreateGalleryBody, GalleryJson, IndexJson, SearchTuningJson, ThresholdBody, ThresholdPolicyJson,
};
use crate::{Caller, Gateway, Page, PageQuery, photos};
use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use biomatch_proto::v1::{
    self, CreateGalleryRequest, DeleteGalleryRequest, DeleteSubjectRequest, EnrollMode, EnrollRequest,
    GetGalleryRequest, GetSubjectRequest, ListGalleriesRequest, Probe, SetThresholdRequest,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The receipt of a deletion.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeletedJson {
    pub change_seq: u64,
    pub audit_leaf_index: u64,
}

/// A subject's metadata; never a template.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SubjectJson {
    pub gallery: String,
    pub subject_id: String,
    pub template_count: u32,
    pub shard: u32,
    pub model_id: String,
    pub enrolled_at: Option<String>,
    pub updated_at: Option<String>,
    /// When its retention ends; absent without a retention limit.
    pub expires_at: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrolBody {
    pub subject_id: String,
    /// One or more templates, each of the gallery's dimension.
    pub embeddings: Vec<Vec<f32>>,
    #[serde(default)]
    pub model_id: String,
    /// `add` (default) or `replace`.
    #[serde(default)]
    pub mode: String,
    #[serde(default)]
    pub idempotency_key: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnrolledJson {
    pub subject_id: String,
    pub templates_added: u32,
    pub template_count: u32,
    /// Pass as `min_change_seq` to a search to read your write.
    pub change_seq: u64,
    pub audit_leaf_index: u64,
    /// True when this answers an earlier request with the same idempotency key.
    pub replayed: bool,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IdempotencyQuery {
    /// Makes a retried deletion safe.
    #[serde(default)]
    pub idempotency_key: String,
}

/// A page of galleries.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GalleryPage {
    pub items: Vec<GalleryJson>,
    pub next_cursor: Option<String>,
}

/// The galleries the caller's token covers, by name, a page at a time.
#[utoipa::path(get, path = "/v1/galleries", tag = "galleries", params(PageQuery),
    responses((status = 200, body = GalleryPage), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn list_galleries(
    State(gateway): State<Gateway>,
    caller: Caller,
    Query(page): Query<PageQuery>,
) -> Result<Json<GalleryPage>, ApiError> {
    let limit = page.limit()?;
    let mut ingest = gateway.ingest.clone();
    let all = ingest.list_galleries(caller.request(ListGalleriesRequest {})).await?.into_inner().galleries;
    let mut galleries: Vec<v1::Gallery> =
        all.into_iter().filter(|g| caller.principal.may_use_gallery(&g.name)).collect();
    galleries.sort_by(|a, b| a.name.cmp(&b.name));
    let after = page.cursor.unwrap_or_default();
    let rest: Vec<v1::Gallery> = galleries.into_iter().filter(|g| g.name > after).collect();
    let Page { items, next_cursor } = Page::of(rest, limit, |g| g.name.clone());
    Ok(Json(GalleryPage { items: items.into_iter().map(GalleryJson::from).collect(), next_cursor }))
}

#[utoipa::path(post, path = "/v1/galleries", tag = "galleries", request_body = CreateGalleryBody,
    responses((status = 201, body = GalleryJson), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn create_gallery(
    State(gateway): State<Gateway>,
    caller: Caller,
    body: crate::JsonBody<CreateGalleryBody>,
) -> Result<(StatusCode, Json<GalleryJson>), ApiError> {
    let CreateGalleryBody {
        name,
        dimension,
        shard_count,
        index,
        model_id,
        model_version,
        threshold,
        target_fpir,
        allowed_purposes,
        retention_seconds,
        default_k,
        idempotency_key,
    } = body.0;
    let message = CreateGalleryRequest {
        name,
        dimension,
        shard_count,
        index: index.map(IndexJson::into_proto).transpose()?,
        model_id,
        model_version,
        threshold,
        allowed_purposes,
        retention: (retention_seconds > 0)
            .then_some(prost_types::Duration { seconds: i64::from(retention_seconds), nanos: 0 }),
        default_k,
        idempotency_key,
        threshold_policy: target_fpir
            .map(|target_fpir| v1::ThresholdPolicy { target_fpir, ..Default::default() }),
    };
    let mut ingest = gateway.ingest.clone();
    let gallery = ingest.create_gallery(caller.request(message)).await?.into_inner();
    Ok((StatusCode::CREATED, Json(gallery.into())))
}

#[utoipa::path(get, path = "/v1/galleries/{gallery}", tag = "galleries", params(("gallery" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")),
    responses((status = 200, body = GalleryJson), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn get_gallery(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<GalleryJson>, ApiError> {
    let mut ingest = gateway.ingest.clone();
    let message = GetGalleryRequest { name, settings_only: false };
    Ok(Json(ingest.get_gallery(caller.request(message)).await?.into_inner().into()))
}

#[utoipa::path(delete, path = "/v1/galleries/{gallery}", tag = "galleries",
    params(("gallery" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"), IdempotencyQuery),
    responses((status = 200, body = DeletedJson), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn delete_gallery(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(name): Path<String>,
    Query(key): Query<IdempotencyQuery>,
) -> Result<Json<DeletedJson>, ApiError> {
    let mut ingest = gateway.ingest.clone();
    let message = DeleteGalleryRequest { name, idempotency_key: key.idempotency_key };
    let done = ingest.delete_gallery(caller.request(message)).await?.into_inner();
    Ok(Json(DeletedJson { change_seq: done.change_seq, audit_leaf_index: done.audit_leaf_index }))
}

#[utoipa::path(put, path = "/v1/galleries/{gallery}/threshold", tag = "galleries",
    params(("gallery" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")), request_body = ThresholdBody,
    responses((status = 200, body = GalleryJson), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn set_threshold(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(gallery): Path<String>,
    body: crate::JsonBody<ThresholdBody>,
) -> Result<Json<GalleryJson>, ApiError> {
    let ThresholdBody { threshold, target_fpir, reason } = body.0;
    let (threshold, policy) = match (threshold, target_fpir) {
        (Some(threshold), None) => (threshold, None),
        (None, Some(target_fpir)) => (0.0, Some(v1::ThresholdPolicy { target_fpir, ..Default::default() })),
        _ => return Err(bad_request("give a threshold or a target_fpir, not both or neither")),
    };
    let mut ingest = gateway.ingest.clone();
    let message = SetThresholdRequest { gallery, threshold, reason, policy };
    Ok(Json(ingest.set_threshold(caller.request(message)).await?.into_inner().into()))
}

fn enrol_mode(mode: &str) -> Result<EnrollMode, ApiError> {
    match mode {
        "" | "add" => Ok(EnrollMode::Add),
        "replace" => Ok(EnrollMode::Replace),
        other => Err(bad_request(format!("mode must be add or replace, not {other:?}"))),
    }
}

/// Enrols a subject: a JSON body with embeddings, or a multipart form with one or more photos
/// in `image` parts and `subject_id`, `mode`, `idempotency_key` as text parts. Photos are
/// embedded in memory and never stored.
#[utoipa::path(post, path = "/v1/galleries/{gallery}/subjects", tag = "subjects",
    params(("gallery" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")),
    request_body(content((EnrolBody = "application/json"), (crate::photos::EnrolForm = "multipart/form-data"))),
    responses((status = 200, body = EnrolledJson), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn enrol(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(gallery): Path<String>,
    request: Request,
) -> Result<Json<EnrolledJson>, ApiError> {
    let message = if photos::is_multipart(request.headers()) {
        let form = photos::read_form(request).await?;
        let mut message = EnrollRequest { gallery, ..Default::default() };
        for (name, text) in form.fields {
            match name.as_str() {
                "subject_id" => message.subject_id = text,
                "mode" => message.mode = enrol_mode(&text)?.into(),
                "idempotency_key" => message.idempotency_key = text,
                other => return Err(bad_request(format!("unknown form field {other:?}"))),
            }
        }
        if form.images.is_empty() {
            return Err(bad_request("the form has no image part"));
        }
        message.samples = form
            .images
            .into_iter()
            .map(|image| Probe { kind: Some(v1::probe::Kind::Image(image)) })
            .collect();
        message
    } else {
        let EnrolBody { subject_id, embeddings, model_id, mode, idempotency_key } =
            crate::JsonBody::<EnrolBody>::read(request).await?;
        let samples =
            embeddings.into_iter().map(|values| crate::embedding(values, model_id.clone())).collect();
        EnrollRequest { gallery, subject_id, samples, mode: enrol_mode(&mode)?.into(), idempotency_key }
    };
    let mut ingest = gateway.ingest.clone();
    let v1::EnrollResponse {
        subject_id,
        templates_added,
        template_count,
        change_seq,
        audit_leaf_index,
        replayed,
    } = ingest.enroll(caller.request(message)).await?.into_inner();
    Ok(Json(EnrolledJson {
        subject_id,
        templates_added,
        template_count,
        change_seq,
        audit_leaf_index,
        replayed,
    }))
}

#[utoipa::path(get, path = "/v1/galleries/{gallery}/subjects/{subject_id}", tag = "subjects",
    params(("gallery" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"), ("subject_id" = String, Path)),
    responses((status = 200, body = SubjectJson), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn get_subject(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path((gallery, subject_id)): Path<(String, String)>,
) -> Result<Json<SubjectJson>, ApiError> {
    let mut ingest = gateway.ingest.clone();
    let v1::Subject {
        gallery,
        subject_id,
        template_count,
        shard,
        enrolled_at,
        updated_at,
        expires_at,
        model_id,
    } = ingest.get_subject(caller.request(GetSubjectRequest { gallery, subject_id })).await?.into_inner();
    Ok(Json(SubjectJson {
        gallery,
        subject_id,
        template_count,
        shard,
        model_id,
        enrolled_at: enrolled_at.as_ref().map(crate::rfc3339),
        updated_at: updated_at.as_ref().map(crate::rfc3339),
        expires_at: expires_at.as_ref().map(crate::rfc3339),
    }))
}

#[utoipa::path(delete, path = "/v1/galleries/{gallery}/subjects/{subject_id}", tag = "subjects",
    params(("gallery" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"), ("subject_id" = String, Path), IdempotencyQuery),
    responses((status = 200, body = DeletedJson), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn delete_subject(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path((gallery, subject_id)): Path<(String, String)>,
    Query(key): Query<IdempotencyQuery>,
) -> Result<Json<DeletedJson>, ApiError> {
    let mut ingest = gateway.ingest.clone();
    let message = DeleteSubjectRequest { gallery, subject_id, idempotency_key: key.idempotency_key };
    let done = ingest.delete_subject(caller.request(message)).await?.into_inner();
    Ok(Json(DeletedJson { change_seq: done.change_seq, audit_leaf_index: done.audit_leaf_index }))
}
