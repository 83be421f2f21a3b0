//! Reviewing a candidate of a search, under the two-person rule (the four-eyes rule of the EU AI
//! Act Art. 14(5) for remote biometric identification): a candidate is `CONFIRMED` only when two
//! different analysts confirmed it, and the analyst who ran the search may give the first
//! confirmation, never the second. A rejection stands as `REJECTED`; a confirmation and a
//! rejection by different analysts is `DISPUTED`. Every review is an audit leaf naming the search
//! (its request id), the subject and the outcome; the state is derived from those leaves in log
//! order ([`state`]), so it survives restarts and cannot drift from the record.

use crate::SearchServer;
use biomatch_client::{actor, request};
use biomatch_domain::{ErrorClass, Principal, SubjectId};
use biomatch_proto::status_with;
use biomatch_proto::v1::{
    AuditEvent, AuditLeaf, GetSearchRecordRequest, ListPendingReviewsRequest, ListPendingReviewsResponse,
    ListReviewsRequest, Operation, PendingReview, ReviewCandidateRequest, ReviewCandidateResponse,
    ReviewOutcome, ReviewState,
};
use tonic::{Code, Status};

/// What a review is of.
#[derive(Debug, Clone, Copy)]
struct Target<'a> {
    search_id: &'a str,
    gallery: &'a str,
    subject: &'a str,
}

/// The reviews on record of one candidate of one search, in log order.
struct Reviewed {
    search_id: String,
    subject_id: String,
    purpose: String,
    case_ref: String,
    reviews: Vec<(String, Said)>,
}

/// One review in the log: who gave it and what it said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Said {
    Confirmed,
    Rejected,
    Inconclusive,
}

impl Said {
    pub(crate) fn parse(decision: &str) -> Option<Self> {
        match decision {
            "confirmed" => Some(Said::Confirmed),
            "rejected" => Some(Said::Rejected),
            "inconclusive" => Some(Said::Inconclusive),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Said::Confirmed => "confirmed",
            Said::Rejected => "rejected",
            Said::Inconclusive => "inconclusive",
        }
    }
}

/// The state of a candidate after `reviews` (reviewer, outcome), in log order, of a search run
/// by `searcher`. A confirmation counts once per analyst, and the searcher's only when no other
/// confirmation came before it.
pub(crate) fn state(searcher: &str, reviews: &[(String, Said)]) -> ReviewState {
    let mut confirmers: Vec<&str> = Vec::new();
    let mut rejected = false;
    let mut inconclusive = false;
    for (reviewer, said) in reviews {
        match said {
            Said::Confirmed if confirmers.contains(&reviewer.as_str()) => {}
            Said::Confirmed if reviewer == searcher && !confirmers.is_empty() => {}
            Said::Confirmed => confirmers.push(reviewer),
            Said::Rejected => rejected = true,
            Said::Inconclusive => inconclusive = true,
        }
    }
    match (confirmers.len(), rejected) {
        (1.., true) => ReviewState::Disputed,
        (2.., false) => ReviewState::Confirmed,
        (1, false) => ReviewState::AwaitingSecond,
        (0, true) => ReviewState::Rejected,
        (0, false) if inconclusive => ReviewState::Inconclusive,
        _ => ReviewState::Unspecified,
    }
}

/// Why `reviewer` may not give `said` now, if it may not: the two-person rule, checked before
/// the leaf is appended (the state is derived from the log regardless, so a race cannot make a
/// one-person confirmation).
fn refusal(searcher: &str, reviews: &[(String, Said)], reviewer: &str, said: Said) -> Option<String> {
    if said != Said::Confirmed {
        return None;
    }
    let confirmed_by = |who: &str| reviews.iter().any(|(r, s)| r == who && *s == Said::Confirmed);
    if confirmed_by(reviewer) {
        return Some("this analyst has already confirmed this candidate: a second analyst must".into());
    }
    let others = reviews.iter().any(|(_, s)| *s == Said::Confirmed);
    if reviewer == searcher && others {
        return Some(
            "the analyst who ran the search may give the first confirmation, never the second".into(),
        );
    }
    None
}

impl SearchServer {
    pub(crate) async fn review(
        &self,
        principal: &Principal,
        request: ReviewCandidateRequest,
    ) -> Result<ReviewCandidateResponse, Status> {
        let ReviewCandidateRequest { search_id, gallery, subject_id, outcome, case_ref } = request;
        crate::bounded_fields(&gallery, "", &case_ref)?;
        // Each review attempt spends a query: whether a subject was a candidate is what a review
        // (or its refusal) reveals, at no lower price than a search.
        self.spend_budget(principal, &gallery).await?;
        if search_id.is_empty() || search_id.len() > 64 {
            return Err(status_with(ErrorClass::InvalidArgument, "search_id is required (at most 64 bytes)"));
        }
        let subject = SubjectId::parse(&subject_id).map_err(|e| biomatch_proto::status_from(&e))?;
        let said = match ReviewOutcome::try_from(outcome).unwrap_or_default() {
            ReviewOutcome::Unspecified => {
                return Err(status_with(ErrorClass::InvalidArgument, "outcome is required"));
            }
            ReviewOutcome::Confirmed => Said::Confirmed,
            ReviewOutcome::Rejected => Said::Rejected,
            ReviewOutcome::Inconclusive => Said::Inconclusive,
        };
        // Only a real candidate of a real search, in the reviewer's scope, can be reviewed.
        let asked = Target { search_id: &search_id, gallery: &gallery, subject: subject.as_str() };
        let searched = self.search_record(principal, &asked).await?;
        let target = Target { gallery: &searched.gallery, ..asked };
        if !searched.candidates.iter().any(|c| c.subject_id == subject.as_str()) {
            let what = format!("subject {subject_id} was not a candidate of search {search_id}");
            return Err(self.refuse(principal, &target, ErrorClass::FailedPrecondition, what).await);
        }
        if !case_ref.is_empty() && !searched.case_ref.is_empty() && case_ref != searched.case_ref {
            let what = format!("search {search_id} is filed under another case");
            return Err(self.refuse(principal, &target, ErrorClass::InvalidArgument, what).await);
        }
        let searcher = searched.actor.as_ref().map(|a| a.subject.clone()).unwrap_or_default();
        let mut reviews = self.reviews(&search_id, &searched.gallery, subject.as_str()).await?;
        if let Some(what) = refusal(&searcher, &reviews, &principal.subject, said) {
            return Err(self.refuse(principal, &target, ErrorClass::FailedPrecondition, what).await);
        }
        reviews.push((principal.subject.clone(), said));
        let state = state(&searcher, &reviews);
        let event = AuditEvent {
            actor: Some(actor(principal)),
            operation: Operation::Review.into(),
            gallery: searched.gallery,
            purpose: searched.purpose,
            case_ref: if case_ref.is_empty() { searched.case_ref } else { case_ref },
            subject_ids: vec![subject.into_string()],
            decision: said.as_str().to_owned(),
            request_id: search_id,
            outcome: "OK".into(),
            detail: format!("state {}", state.as_str_name()),
            ..Default::default()
        };
        let audit_leaf_index = self.audit(event, format!("review:{}", uuid::Uuid::new_v4())).await?;
        Ok(ReviewCandidateResponse { audit_leaf_index, state: state.into() })
    }

    /// The review queue of a gallery: candidates awaiting their second confirmation, from the
    /// gallery's latest 1,000 reviews, whose purpose the caller's token covers. The listing is
    /// itself a leaf naming what it showed.
    pub(crate) async fn pending(
        &self,
        principal: &Principal,
        asked: ListPendingReviewsRequest,
    ) -> Result<ListPendingReviewsResponse, Status> {
        let ListPendingReviewsRequest { gallery, page_size, page_token } = asked;
        let page_size = if page_size == 0 { 100 } else { page_size.min(100) } as usize;
        let skip = usize::try_from(page_token).unwrap_or(usize::MAX);
        crate::bounded_fields(&gallery, "", "")?;
        if gallery.is_empty() {
            return Err(status_with(ErrorClass::InvalidArgument, "gallery is required"));
        }
        if !principal.may_use_gallery(&gallery) {
            let what = format!("this token does not cover gallery {gallery}");
            return Err(biomatch_client::deny(&self.audit, &self.creds, principal, &gallery, what).await);
        }
        // Each listing asks the log for up to 1,000 reviews and their searches: it spends a query
        // of the caller's budget, like a search.
        self.spend_budget(principal, &gallery).await?;
        let message = ListReviewsRequest { gallery: gallery.clone(), ..Default::default() };
        let mut groups: Vec<Reviewed> = Vec::new();
        for event in self.review_leaves(message).await?.into_iter().filter_map(|leaf| leaf.event) {
            let (Some(subject), Some(said), Some(actor)) =
                (event.subject_ids.first(), Said::parse(&event.decision), event.actor.as_ref())
            else {
                continue;
            };
            let review = (actor.subject.clone(), said);
            match groups.iter_mut().find(|g| g.search_id == event.request_id && g.subject_id == *subject) {
                Some(group) => group.reviews.push(review),
                None => groups.push(Reviewed {
                    search_id: event.request_id.clone(),
                    subject_id: subject.clone(),
                    purpose: event.purpose,
                    case_ref: event.case_ref,
                    reviews: vec![review],
                }),
            }
        }
        let mut pending = Vec::new();
        let mut seen = 0usize;
        let mut more = false;
        for Reviewed { search_id, subject_id, purpose, case_ref, reviews } in groups {
            if !principal.may_search(&gallery, &purpose) {
                continue;
            }
            let Ok(Some(record)) = self.search_leaf(&search_id).await else {
                continue;
            };
            let searcher = record.event.and_then(|e| e.actor).map(|a| a.subject).unwrap_or_default();
            if state(&searcher, &reviews) == ReviewState::AwaitingSecond {
                seen += 1;
                if seen <= skip {
                    continue;
                }
                // One more awaits past this page: there is a next page, and it is not empty.
                if pending.len() == page_size {
                    more = true;
                    break;
                }
                let first_reviewer = reviews
                    .iter()
                    .find(|(_, s)| *s == Said::Confirmed)
                    .map(|(who, _)| who.clone())
                    .unwrap_or_default();
                pending.push(PendingReview {
                    search_id,
                    gallery: gallery.clone(),
                    subject_id,
                    first_reviewer,
                    case_ref,
                });
            }
        }
        let event = AuditEvent {
            actor: Some(actor(principal)),
            operation: Operation::Review.into(),
            gallery: gallery.clone(),
            subject_ids: pending.iter().map(|p| p.subject_id.clone()).collect(),
            outcome: "LISTED".into(),
            detail: format!("review queue: {} awaiting a second review", pending.len()),
            ..Default::default()
        };
        self.audit(event, format!("review-queue:{}", uuid::Uuid::new_v4())).await?;
        let next_page_token = if more { (skip + pending.len()) as u64 } else { 0 };
        Ok(ListPendingReviewsResponse { pending, next_page_token })
    }

    /// The reviews on record of `subject` in search `search_id`, in log order.
    async fn reviews(
        &self,
        search_id: &str,
        gallery: &str,
        subject: &str,
    ) -> Result<Vec<(String, Said)>, Status> {
        let message = ListReviewsRequest {
            search_id: search_id.to_owned(),
            gallery: gallery.to_owned(),
            subject_id: subject.to_owned(),
        };
        let leaves = self.review_leaves(message).await?;
        Ok(leaves
            .into_iter()
            .filter_map(|leaf| leaf.event)
            .filter_map(|e| Some((e.actor?.subject, Said::parse(&e.decision)?)))
            .collect())
    }

    /// The review leaves `message` asks the audit log for, in log order.
    pub(crate) async fn review_leaves(&self, message: ListReviewsRequest) -> Result<Vec<AuditLeaf>, Status> {
        let mut audit = self.audit.clone();
        let answer = audit.list_reviews(request(message, &self.creds.token())).await;
        Ok(answer.map_err(|_| audit_unreadable())?.into_inner().reviews)
    }

    /// The leaf of search `search_id`, if one was answered.
    pub(crate) async fn search_leaf(&self, search_id: &str) -> Result<Option<AuditLeaf>, Status> {
        let mut audit = self.audit.clone();
        let message = GetSearchRecordRequest { search_id: search_id.to_owned() };
        match audit.get_search_record(request(message, &self.creds.token())).await {
            Ok(leaf) => Ok(Some(leaf.into_inner())),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(_) => Err(audit_unreadable()),
        }
    }

    /// The audit record of search `search_id`, which a review must name: refused (and the
    /// refusal recorded) when there is no such search, it was of another gallery than `gallery`
    /// (when given), or its gallery and purpose are outside the reviewer's token.
    async fn search_record(&self, principal: &Principal, target: &Target<'_>) -> Result<AuditEvent, Status> {
        let Target { search_id, gallery, .. } = *target;
        let Some(leaf) = self.search_leaf(search_id).await? else {
            let what = format!("no search {search_id} is on record");
            return Err(self.refuse(principal, target, ErrorClass::NotFound, what).await);
        };
        let record = leaf.event.unwrap_or_default();
        if !gallery.is_empty() && record.gallery != gallery {
            let what = format!("search {search_id} was not of gallery {gallery}");
            return Err(self.refuse(principal, target, ErrorClass::InvalidArgument, what).await);
        }
        if !principal.may_search(&record.gallery, &record.purpose) {
            let what = format!(
                "this token does not cover gallery {} for purpose {:?}",
                record.gallery, record.purpose
            );
            return Err(
                biomatch_client::deny(&self.audit, &self.creds, principal, &record.gallery, what).await
            );
        }
        Ok(record)
    }

    /// Refuses a review of `target` with `class`, recording the refusal (best effort: it stands
    /// regardless). Refusals are not reviews: a review's state comes from `OK` leaves only.
    async fn refuse(
        &self,
        principal: &Principal,
        target: &Target<'_>,
        class: ErrorClass,
        what: String,
    ) -> Status {
        let status = status_with(class, what.clone());
        let event = AuditEvent {
            actor: Some(actor(principal)),
            operation: Operation::Review.into(),
            gallery: target.gallery.to_owned(),
            subject_ids: vec![target.subject.to_owned()],
            request_id: target.search_id.to_owned(),
            outcome: biomatch_proto::code_name(status.code()),
            detail: what,
            ..Default::default()
        };
        if let Err(e) = self.audit(event, format!("review:{}", uuid::Uuid::new_v4())).await {
            tracing::warn!(error = %e, "a refused review could not be audited");
        }
        status
    }
}

/// The answer when the audit log cannot be read: nothing is decided without it.
pub(crate) fn audit_unreadable() -> Status {
    status_with(ErrorClass::Unavailable, "the audit log cannot be read")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(list: &[(&str, Said)]) -> Vec<(String, Said)> {
        list.iter().map(|(who, s)| ((*who).to_owned(), *s)).collect()
    }

    #[test]
    fn two_different_analysts_confirm_and_the_searcher_never_second() {
        use Said::*;
        assert_eq!(state("a", &said(&[])), ReviewState::Unspecified);
        assert_eq!(state("a", &said(&[("a", Confirmed)])), ReviewState::AwaitingSecond);
        assert_eq!(state("a", &said(&[("a", Confirmed), ("b", Confirmed)])), ReviewState::Confirmed);
        assert_eq!(state("a", &said(&[("b", Confirmed), ("a", Confirmed)])), ReviewState::AwaitingSecond);
        assert_eq!(state("a", &said(&[("b", Confirmed), ("b", Confirmed)])), ReviewState::AwaitingSecond);
        assert_eq!(state("a", &said(&[("b", Confirmed), ("c", Confirmed)])), ReviewState::Confirmed);
        assert_eq!(state("a", &said(&[("b", Rejected)])), ReviewState::Rejected);
        assert_eq!(state("a", &said(&[("b", Confirmed), ("c", Rejected)])), ReviewState::Disputed);
        assert_eq!(state("a", &said(&[("b", Inconclusive)])), ReviewState::Inconclusive);
        assert_eq!(state("a", &said(&[("b", Inconclusive), ("c", Confirmed)])), ReviewState::AwaitingSecond);
    }

    #[test]
    fn refusals_name_the_rule() {
        use Said::*;
        let first_by_b = said(&[("b", Confirmed)]);
        assert!(refusal("a", &first_by_b, "a", Confirmed).is_some_and(|w| w.contains("never the second")));
        assert!(refusal("a", &first_by_b, "b", Confirmed).is_some_and(|w| w.contains("already confirmed")));
        assert_eq!(refusal("a", &first_by_b, "c", Confirmed), None);
        assert_eq!(refusal("a", &first_by_b, "a", Rejected), None, "the searcher may still reject");
        assert_eq!(refusal("a", &said(&[]), "a", Confirmed), None, "the searcher may confirm first");
    }
}
