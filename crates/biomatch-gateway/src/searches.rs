//! Searches (identify and verify, by photo or vector), past searches read back, a case's
//! searches, and reviews of candidates under the two-person rule, with the review queue.

use crate::error::{ApiError, ErrorBody, bad_request};
use crate::json::{IdentifyJson, QualityJson};
use crate::photos::{self, number};
use crate::{Caller, Gateway, PageQuery};
use axum::Json;
use axum::extract::{Path, Query, Request, State};
use biomatch_proto::v1::{
    self, GetSearchRequest, IdentifyRequest, ListCaseSearchesRequest, ListPendingReviewsRequest, Probe,
    ReviewCandidateRequest, ReviewOutcome, ReviewState, VerifyRequest, probe,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentifyBody {
    pub embedding: Vec<f32>,
    #[serde(default)]
    pub model_id: String,
    /// Candidates wanted; 0 or absent: the gallery's default.
    #[serde(default)]
    pub k: u32,
    /// Overrides the gallery threshold (analysts; never below the candidate floor).
    pub threshold: Option<f32>,
    pub purpose: String,
    #[serde(default)]
    pub case_ref: String,
    #[serde(default)]
    pub allow_partial: bool,
    #[serde(default)]
    pub min_change_seq: u64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    pub embedding: Vec<f32>,
    #[serde(default)]
    pub model_id: String,
    pub threshold: Option<f32>,
    pub purpose: String,
    #[serde(default)]
    pub case_ref: String,
    #[serde(default)]
    pub min_change_seq: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VerifyJson {
    pub verification_id: String,
    /// `mate` when the probe matches the subject, else `no_mate`.
    pub decision: String,
    /// Only at or above the gallery's candidate floor.
    pub score: Option<f32>,
    pub threshold: f32,
    pub model_id: String,
    pub model_version: String,
    pub audit_leaf_index: u64,
    pub probe_quality: Option<QualityJson>,
}

/// The one photo of a search form, and its text fields.
async fn photo_form(request: Request) -> Result<(Probe, Vec<(String, String)>), ApiError> {
    let form = photos::read_form(request).await?;
    let mut images = form.images.into_iter();
    let image = images.next().ok_or_else(|| bad_request("the form has no image part"))?;
    if images.next().is_some() {
        return Err(bad_request("a search takes one image"));
    }
    Ok((Probe { kind: Some(probe::Kind::Image(image)) }, form.fields))
}

/// Identifies a face in a gallery (1:N): a JSON body with an embedding, or a multipart form with
/// a photo. Kiosks are told the decision (and the mate's id); analysts see the candidates at or
/// above the candidate floor.
#[utoipa::path(post, path = "/v1/galleries/{gallery}/identify", tag = "searches",
    params(("gallery" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")),
    request_body(content((IdentifyBody = "application/json"), (crate::photos::SearchForm = "multipart/form-data"))),
    responses((status = 200, body = IdentifyJson), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn identify(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(gallery): Path<String>,
    request: Request,
) -> Result<Json<IdentifyJson>, ApiError> {
    let message = if photos::is_multipart(request.headers()) {
        let (probe, fields) = photo_form(request).await?;
        let mut message = IdentifyRequest { gallery, probe: Some(probe), ..Default::default() };
        for (name, text) in fields {
            match name.as_str() {
                "k" => message.k = number("k", &text)?,
                "threshold" => message.threshold = Some(number("threshold", &text)?),
                "purpose" => message.purpose = text,
                "case_ref" => message.case_ref = text,
                "allow_partial" => message.allow_partial = matches!(text.trim(), "true" | "1"),
                "min_change_seq" => message.min_change_seq = number("min_change_seq", &text)?,
                other => return Err(bad_request(format!("unknown form field {other:?}"))),
            }
        }
        message
    } else {
        let IdentifyBody {
            embedding: values,
            model_id,
            k,
            threshold,
            purpose,
            case_ref,
            allow_partial,
            min_change_seq,
        } = crate::JsonBody::read(request).await?;
        let probe = Some(crate::embedding(values, model_id));
        IdentifyRequest { gallery, probe, k, threshold, purpose, case_ref, allow_partial, min_change_seq }
    };
    let mut search = gateway.search.clone();
    let response = search.identify(caller.request(message)).await?;
    Ok(Json(IdentifyJson::from(response.into_inner())))
}

/// Verifies a face against one enrolled subject (1:1): JSON with an embedding, or a photo form.
#[utoipa::path(post, path = "/v1/galleries/{gallery}/subjects/{subject_id}/verify", tag = "searches",
    params(("gallery" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"), ("subject_id" = String, Path)),
    request_body(content((VerifyBody = "application/json"), (crate::photos::SearchForm = "multipart/form-data"))),
    responses((status = 200, body = VerifyJson), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn verify(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path((gallery, subject_id)): Path<(String, String)>,
    request: Request,
) -> Result<Json<VerifyJson>, ApiError> {
    let message = if photos::is_multipart(request.headers()) {
        let (probe, fields) = photo_form(request).await?;
        let mut message = VerifyRequest { gallery, subject_id, probe: Some(probe), ..Default::default() };
        for (name, text) in fields {
            match name.as_str() {
                "threshold" => message.threshold = Some(number("threshold", &text)?),
                "purpose" => message.purpose = text,
                "case_ref" => message.case_ref = text,
                "min_change_seq" => message.min_change_seq = number("min_change_seq", &text)?,
                other => return Err(bad_request(format!("unknown form field {other:?}"))),
            }
        }
        message
    } else {
        let VerifyBody { embedding: values, model_id, threshold, purpose, case_ref, min_change_seq } =
            crate::JsonBody::read(request).await?;
        let probe = Some(crate::embedding(values, model_id));
        VerifyRequest { gallery, subject_id, probe, threshold, purpose, case_ref, min_change_seq }
    };
    let mut search = gateway.search.clone();
    let answer = search.verify(caller.request(message)).await?.into_inner();
    let decision = biomatch_proto::decision_from_proto(answer.decision()).as_str().to_owned();
    let v1::VerifyResponse {
        verification_id,
        decision: _,
        score,
        threshold,
        model_id,
        model_version,
        audit_leaf_index,
        probe_quality,
    } = answer;
    Ok(Json(VerifyJson {
        verification_id,
        decision,
        score,
        threshold,
        model_id,
        model_version,
        audit_leaf_index,
        probe_quality: probe_quality.map(QualityJson::from),
    }))
}

/// A review state's name, e.g. `awaiting_second`, `confirmed`, `disputed`.
fn state_name(state: ReviewState) -> String {
    crate::enum_name(state.as_str_name(), "REVIEW_STATE_")
}

fn outcome_name(outcome: ReviewOutcome) -> String {
    crate::enum_name(outcome.as_str_name(), "REVIEW_OUTCOME_")
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReviewEntryJson {
    pub reviewer: String,
    /// `confirmed`, `rejected` or `inconclusive`.
    pub outcome: String,
    pub reviewed_at: Option<String>,
    pub audit_leaf_index: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReviewedCandidateJson {
    pub subject_id: String,
    pub score: f32,
    pub rank: u32,
    /// `unspecified` (not reviewed), `awaiting_second`, `confirmed`, `rejected`, `disputed` or
    /// `inconclusive`.
    pub state: String,
    pub reviews: Vec<ReviewEntryJson>,
}

/// A past search, from its audit leaf, with the reviews of its candidates.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SearchRecordJson {
    pub search_id: String,
    /// `identify` or `verify`.
    pub kind: String,
    pub gallery: String,
    pub purpose: String,
    pub case_ref: String,
    pub decision: String,
    pub threshold: f32,
    pub threshold_version: u32,
    pub model_id: String,
    pub model_version: String,
    pub searcher: String,
    pub searcher_role: String,
    pub searched_at: Option<String>,
    pub candidates: Vec<ReviewedCandidateJson>,
    pub partial: bool,
    pub audit_leaf_index: u64,
}

fn decision_name(decision: v1::Decision) -> String {
    biomatch_proto::decision_from_proto(decision).as_str().to_owned()
}

/// One past search: for the analyst who ran it, its reviewers, and auditors. Audited.
#[utoipa::path(get, path = "/v1/searches/{search_id}", tag = "searches", params(("search_id" = String, Path)),
    responses((status = 200, body = SearchRecordJson), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn get_search(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(search_id): Path<String>,
) -> Result<Json<SearchRecordJson>, ApiError> {
    let mut search = gateway.search.clone();
    let record = search.get_search(caller.request(GetSearchRequest { search_id })).await?.into_inner();
    let decision = decision_name(record.decision());
    let v1::SearchRecord {
        search_id,
        kind,
        gallery,
        purpose,
        case_ref,
        decision: _,
        threshold,
        threshold_version,
        model_id,
        model_version,
        searcher,
        searcher_role,
        searched_at,
        candidates,
        partial,
        audit_leaf_index,
    } = record;
    let candidates = candidates
        .into_iter()
        .map(|c| ReviewedCandidateJson {
            state: state_name(c.state()),
            subject_id: c.subject_id,
            score: c.score,
            rank: c.rank,
            reviews: c
                .reviews
                .into_iter()
                .map(|r| ReviewEntryJson {
                    outcome: outcome_name(r.outcome()),
                    reviewer: r.reviewer,
                    reviewed_at: r.reviewed_at.as_ref().map(crate::rfc3339),
                    audit_leaf_index: r.audit_leaf_index,
                })
                .collect(),
        })
        .collect();
    Ok(Json(SearchRecordJson {
        search_id,
        kind,
        gallery,
        purpose,
        case_ref,
        decision,
        threshold,
        threshold_version,
        model_id,
        model_version,
        searcher,
        searcher_role,
        searched_at: searched_at.as_ref().map(crate::rfc3339),
        candidates,
        partial,
        audit_leaf_index,
    }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SearchSummaryJson {
    pub search_id: String,
    pub kind: String,
    pub gallery: String,
    pub purpose: String,
    pub decision: String,
    pub searcher: String,
    pub searched_at: Option<String>,
    pub candidate_count: u32,
    pub audit_leaf_index: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CaseSearchPage {
    pub items: Vec<SearchSummaryJson>,
    pub next_cursor: Option<String>,
}

/// The searches filed under a case reference, oldest first, that the caller may see.
#[utoipa::path(get, path = "/v1/cases/{case_ref}/searches", tag = "searches",
    params(("case_ref" = String, Path), PageQuery),
    responses((status = 200, body = CaseSearchPage), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn list_case_searches(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(case_ref): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Json<CaseSearchPage>, ApiError> {
    let message =
        ListCaseSearchesRequest { case_ref, page_size: page.limit()?, page_token: page.numeric_cursor()? };
    let mut search = gateway.search.clone();
    let answer = search.list_case_searches(caller.request(message)).await?.into_inner();
    let items = answer
        .searches
        .into_iter()
        .map(|s| SearchSummaryJson {
            decision: decision_name(s.decision()),
            search_id: s.search_id,
            kind: s.kind,
            gallery: s.gallery,
            purpose: s.purpose,
            searcher: s.searcher,
            searched_at: s.searched_at.as_ref().map(crate::rfc3339),
            candidate_count: s.candidate_count,
            audit_leaf_index: s.audit_leaf_index,
        })
        .collect();
    Ok(Json(CaseSearchPage { items, next_cursor: crate::next_cursor(answer.next_page_token) }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewBody {
    pub subject_id: String,
    /// `confirmed`, `rejected` or `inconclusive`.
    pub outcome: String,
    /// Files the review under a case (default: the search's).
    #[serde(default)]
    pub case_ref: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReviewJson {
    pub audit_leaf_index: u64,
    /// The candidate's state after this review.
    pub state: String,
}

/// Reviews one candidate of a search. A candidate is `confirmed` only when two different
/// analysts confirmed it; the analyst who ran the search may give the first, never the second.
#[utoipa::path(post, path = "/v1/searches/{search_id}/reviews", tag = "reviews",
    params(("search_id" = String, Path)), request_body = ReviewBody,
    responses((status = 200, body = ReviewJson), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn review(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(search_id): Path<String>,
    body: crate::JsonBody<ReviewBody>,
) -> Result<Json<ReviewJson>, ApiError> {
    let ReviewBody { subject_id, outcome, case_ref } = body.0;
    let outcome = match outcome.as_str() {
        "confirmed" => ReviewOutcome::Confirmed,
        "rejected" => ReviewOutcome::Rejected,
        "inconclusive" => ReviewOutcome::Inconclusive,
        other => {
            return Err(bad_request(format!(
                "outcome must be confirmed, rejected or inconclusive, not {other:?}"
            )));
        }
    };
    let message = ReviewCandidateRequest {
        search_id,
        gallery: String::new(),
        subject_id,
        outcome: outcome.into(),
        case_ref,
    };
    let mut search = gateway.search.clone();
    let answer = search.review_candidate(caller.request(message)).await?.into_inner();
    Ok(Json(ReviewJson { audit_leaf_index: answer.audit_leaf_index, state: state_name(answer.state()) }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PendingReviewJson {
    pub search_id: String,
    pub gallery: String,
    pub subject_id: String,
    /// Who gave the first confirmation (and so may not give the second).
    pub first_reviewer: String,
    pub case_ref: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PendingPage {
    pub items: Vec<PendingReviewJson>,
    pub next_cursor: Option<String>,
}

/// The review queue of a gallery: candidates awaiting their second confirmation.
#[utoipa::path(get, path = "/v1/galleries/{gallery}/reviews/pending", tag = "reviews",
    params(("gallery" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"), PageQuery),
    responses((status = 200, body = PendingPage), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn pending_reviews(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(gallery): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Json<PendingPage>, ApiError> {
    let message =
        ListPendingReviewsRequest { gallery, page_size: page.limit()?, page_token: page.numeric_cursor()? };
    let mut search = gateway.search.clone();
    let answer = search.list_pending_reviews(caller.request(message)).await?.into_inner();
    let items = answer
        .pending
        .into_iter()
        .map(|p| PendingReviewJson {
            search_id: p.search_id,
            gallery: p.gallery,
            subject_id: p.subject_id,
            first_reviewer: p.first_reviewer,
            case_ref: p.case_ref,
        })
        .collect();
    Ok(Json(PendingPage { items, next_cursor: crate::next_cursor(answer.next_page_token) }))
}
