//! Past searches read back: one search by its id ([`SearchServer::get_search`]) and the searches
//! of a case ([`SearchServer::list_case_searches`]), both from the audit log, the only record of
//! what a search answered. Who may read what:
//! - an auditor reads any search;
//! - an analyst reads a search of a gallery and purpose their token covers when they ran it, or
//!   when another analyst has reviewed one of its candidates (the case's reviewers need it to
//!   review; one's own review, which any analyst in scope may attempt, opens nothing);
//! - a kiosk, an enroller or an admin reads none (the authorization table).
//!
//! Each read is a `search_read` leaf naming what was read, appended before the answer, and spends
//! the reader's query budget like a search: reading back is how candidate lists would be
//! harvested otherwise.

use crate::SearchServer;
use crate::review::{Said, audit_unreadable, state};
use biomatch_client::{actor, request};
use biomatch_domain::limits::{MAX_CASE_REF_BYTES, bounded};
use biomatch_domain::{ErrorClass, Principal, Role};
use biomatch_proto::status_with;
use biomatch_proto::v1::{
    AuditEvent, AuditLeaf, Decision, GetSearchRequest, ListCaseRecordsRequest, ListCaseSearchesRequest,
    ListCaseSearchesResponse, ListReviewsRequest, Operation, ReviewEntry, ReviewOutcome, ReviewedCandidate,
    SearchRecord, SearchSummary,
};
use tonic::Status;

/// The largest page of a case's searches.
const MAX_PAGE: u32 = 100;

/// What kind of search a leaf records, if it records one.
fn kind(event: &AuditEvent) -> Option<&'static str> {
    match event.operation() {
        Operation::Identify => Some("identify"),
        Operation::Verify => Some("verify"),
        _ => None,
    }
}

fn decision(event: &AuditEvent) -> Decision {
    if event.decision == "mate" { Decision::Mate } else { Decision::NoMate }
}

fn outcome(said: Said) -> ReviewOutcome {
    match said {
        Said::Confirmed => ReviewOutcome::Confirmed,
        Said::Rejected => ReviewOutcome::Rejected,
        Said::Inconclusive => ReviewOutcome::Inconclusive,
    }
}

impl SearchServer {
    pub(crate) async fn get_search(
        &self,
        principal: &Principal,
        asked: GetSearchRequest,
    ) -> Result<SearchRecord, Status> {
        let GetSearchRequest { search_id } = asked;
        if search_id.is_empty() || search_id.len() > 64 {
            return Err(status_with(ErrorClass::InvalidArgument, "search_id is required (at most 64 bytes)"));
        }
        let Some(leaf) = self.search_leaf(&search_id).await? else {
            return Err(status_with(ErrorClass::NotFound, format!("no search {search_id} is on record")));
        };
        let AuditLeaf { index, appended_at, event, .. } = leaf;
        let event = event.unwrap_or_default();
        let searcher = event.actor.clone().unwrap_or_default();
        let reviews = self.search_reviews(&search_id, &event.gallery).await?;
        // In review by someone else: the reader's own review (which any analyst in scope may
        // attempt) does not open another analyst's search to them.
        let reviewed_by_another = reviews.iter().any(|(_, _, entry)| entry.reviewer != principal.subject);
        let may_read = match principal.role {
            Role::Auditor => true,
            _ => {
                principal.may_search(&event.gallery, &event.purpose)
                    && (searcher.subject == principal.subject || reviewed_by_another)
            }
        };
        if !may_read {
            let what = format!(
                "search {search_id} may be read by the analyst who ran it, its reviewers and auditors"
            );
            return Err(
                biomatch_client::deny(&self.audit, &self.creds, principal, &event.gallery, what).await
            );
        }
        self.spend_budget(principal, &event.gallery).await?;
        let candidates = event
            .candidates
            .iter()
            .enumerate()
            .map(|(rank, c)| {
                let of_this: Vec<&(String, Said, ReviewEntry)> =
                    reviews.iter().filter(|(subject, _, _)| *subject == c.subject_id).collect();
                let said: Vec<(String, Said)> =
                    of_this.iter().map(|(_, said, entry)| (entry.reviewer.clone(), *said)).collect();
                ReviewedCandidate {
                    subject_id: c.subject_id.clone(),
                    score: c.score,
                    rank: rank as u32 + 1,
                    state: state(&searcher.subject, &said).into(),
                    reviews: of_this.into_iter().map(|(_, _, entry)| entry.clone()).collect(),
                }
            })
            .collect();
        self.record_read(principal, &event.gallery, &event.case_ref, format!("search {search_id}")).await?;
        Ok(SearchRecord {
            search_id,
            kind: kind(&event).unwrap_or_default().to_owned(),
            decision: decision(&event).into(),
            threshold: event.threshold.unwrap_or_default(),
            threshold_version: event.threshold_version,
            model_id: event.model_id,
            model_version: event.model_version,
            searcher: searcher.subject,
            searcher_role: searcher.role,
            searched_at: appended_at,
            candidates,
            partial: event.partial,
            audit_leaf_index: index,
            gallery: event.gallery,
            purpose: event.purpose,
            case_ref: event.case_ref,
        })
    }

    pub(crate) async fn list_case_searches(
        &self,
        principal: &Principal,
        asked: ListCaseSearchesRequest,
    ) -> Result<ListCaseSearchesResponse, Status> {
        let ListCaseSearchesRequest { case_ref, page_size, page_token } = asked;
        bounded("case_ref", &case_ref, MAX_CASE_REF_BYTES).map_err(|e| biomatch_proto::status_from(&e))?;
        if case_ref.is_empty() {
            return Err(status_with(ErrorClass::InvalidArgument, "case_ref is required"));
        }
        self.spend_budget(principal, "").await?;
        let page_size = if page_size == 0 { MAX_PAGE } else { page_size.min(MAX_PAGE) };
        let mut audit = self.audit.clone();
        let message = ListCaseRecordsRequest { case_ref: case_ref.clone(), page_size, page_token };
        let page = audit
            .list_case_records(request(message, &self.creds.token()))
            .await
            .map_err(|_| audit_unreadable())?
            .into_inner();
        let searches: Vec<SearchSummary> = page
            .leaves
            .into_iter()
            .filter_map(|leaf| {
                let event = leaf.event?;
                let kind = kind(&event)?;
                let visible =
                    principal.role == Role::Auditor || principal.may_search(&event.gallery, &event.purpose);
                visible.then(|| SearchSummary {
                    search_id: event.request_id.clone(),
                    kind: kind.to_owned(),
                    decision: decision(&event).into(),
                    searcher: event.actor.map(|a| a.subject).unwrap_or_default(),
                    searched_at: leaf.appended_at,
                    candidate_count: event.candidates.len() as u32,
                    audit_leaf_index: leaf.index,
                    gallery: event.gallery,
                    purpose: event.purpose,
                })
            })
            .collect();
        let what = format!("case {case_ref}: {} searches listed", searches.len());
        self.record_read(principal, "", &case_ref, what).await?;
        Ok(ListCaseSearchesResponse { searches, next_page_token: page.next_page_token })
    }

    /// Every review of search `search_id`: (subject, what was said, the entry), in log order.
    async fn search_reviews(
        &self,
        search_id: &str,
        gallery: &str,
    ) -> Result<Vec<(String, Said, ReviewEntry)>, Status> {
        let message = ListReviewsRequest {
            search_id: search_id.to_owned(),
            gallery: gallery.to_owned(),
            ..Default::default()
        };
        Ok(self
            .review_leaves(message)
            .await?
            .into_iter()
            .filter_map(|leaf| {
                let event = leaf.event?;
                let said = Said::parse(&event.decision)?;
                let reviewer = event.actor?.subject;
                let subject = event.subject_ids.into_iter().next()?;
                let entry = ReviewEntry {
                    reviewer,
                    outcome: outcome(said).into(),
                    reviewed_at: leaf.appended_at,
                    audit_leaf_index: leaf.index,
                };
                Some((subject, said, entry))
            })
            .collect())
    }

    /// Appends the `search_read` leaf of a read, before its answer leaves.
    async fn record_read(
        &self,
        principal: &Principal,
        gallery: &str,
        case_ref: &str,
        what: String,
    ) -> Result<u64, Status> {
        let event = AuditEvent {
            actor: Some(actor(principal)),
            operation: Operation::SearchRead.into(),
            gallery: gallery.to_owned(),
            case_ref: case_ref.to_owned(),
            outcome: "OK".into(),
            detail: what,
            ..Default::default()
        };
        Ok(self.audit(event, format!("search-read:{}", uuid::Uuid::new_v4())).await?)
    }
}
