//! The search role: [`SearchServer`] implements `SearchService` for kiosks and analysts.
//!
//! Identify resolves the probe into a template, fans out to one matcher replica of every shard of
//! the gallery, merges the per-shard top-k exactly, decides mate / no mate from the threshold,
//! appends the audit leaf and only then answers: when the audit log cannot commit, the caller gets
//! `UNAVAILABLE` and no candidates. Verify scores the probe against the one shard that holds the
//! subject. What an answer discloses depends on the caller ([`disclosure`]). The search role keeps
//! no state. Which roles may call each RPC is the authorization table's rule
//! ([`biomatch_auth::policy`]), applied before a handler runs; handlers check the token's scopes.
#![forbid(unsafe_code)]

pub mod disclosure;
mod merge;
mod records;
mod review;
mod router;
#[cfg(test)]
mod validate_tests;

pub use biomatch_client::budget::{BudgetPolicy, Budgets, Exceeded, Limits, Refusal};
pub use disclosure::DisclosurePolicy;
pub use merge::merge_top_k;
pub use router::Router;

use biomatch_auth::ServiceCredentials;
use biomatch_client::{
    AuditUnavailable, FaceRule, GalleryModel, ResolvedProbe, actor, request, resolve_probe,
};
use biomatch_domain::{Clock, Decision, ErrorClass, Gallery, Principal, SubjectId, shard_of};
use biomatch_proto::status_with;
use biomatch_proto::v1::audit_service_client::AuditServiceClient;
use biomatch_proto::v1::embed_service_client::EmbedServiceClient;
use biomatch_proto::v1::ingest_service_client::IngestServiceClient;
use biomatch_proto::v1::search_service_server::SearchService;
use biomatch_proto::v1::{
    AuditEvent, Candidate, GetGalleryRequest, GetSearchRequest, IdentifyRequest, IdentifyResponse,
    ListCaseSearchesRequest, ListCaseSearchesResponse, ListPendingReviewsRequest, ListPendingReviewsResponse,
    Operation, QueryVector, ReviewCandidateRequest, ReviewCandidateResponse, ScoredSubject, SearchRecord,
    ShardRef, ShardScoreRequest, ShardSearchRequest, VerifyRequest, VerifyResponse,
};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

pub struct SearchServer {
    ingest: IngestServiceClient<Channel>,
    audit: AuditServiceClient<Channel>,
    embed: EmbedServiceClient<Channel>,
    router: Router,
    shard_timeout: Duration,
    creds: Arc<ServiceCredentials>,
    budgets: Arc<Budgets>,
    disclosure: DisclosurePolicy,
    clock: Clock,
}

/// The roles a search role talks to, and how.
pub struct Peers {
    pub ingest: IngestServiceClient<Channel>,
    pub audit: AuditServiceClient<Channel>,
    pub embed: EmbedServiceClient<Channel>,
    pub matchers: Router,
    /// Deadline of one shard's answer before another replica is tried.
    pub shard_timeout: Duration,
    pub creds: Arc<ServiceCredentials>,
}

impl SearchServer {
    pub fn new(peers: Peers, budgets: Arc<Budgets>, clock: Clock) -> Self {
        let Peers { ingest, audit, embed, matchers, shard_timeout, creds } = peers;
        let disclosure = DisclosurePolicy::default();
        Self { ingest, audit, embed, router: matchers, shard_timeout, creds, budgets, disclosure, clock }
    }

    /// Answers disclose what `policy` allows (default: [`DisclosurePolicy::default`]).
    pub fn with_disclosure(mut self, policy: DisclosurePolicy) -> Self {
        self.disclosure = policy;
        self
    }

    /// Refuses, with an audited refusal, a probe kind the caller may not send.
    async fn check_probe_kind(
        &self,
        principal: &Principal,
        gallery: &Gallery,
        probe: Option<&biomatch_proto::v1::Probe>,
    ) -> Result<(), Status> {
        match disclosure::probe_refusal(principal, probe) {
            None => Ok(()),
            Some(what) => {
                Err(biomatch_client::deny(&self.audit, &self.creds, principal, gallery.name.as_str(), what)
                    .await)
            }
        }
    }

    /// Spends one search from the caller's budget; an exhausted budget is refused and audited.
    async fn spend_budget(&self, principal: &Principal, gallery: &str) -> Result<(), Status> {
        let now = (self.clock)();
        biomatch_client::budget::spend(&self.budgets, &self.audit, &self.creds, principal, gallery, now).await
    }

    /// Purpose binding: a search names a purpose the gallery allows and the caller's token covers.
    /// A refusal is audited.
    async fn check_purpose(
        &self,
        principal: &Principal,
        gallery: &Gallery,
        purpose: &str,
    ) -> Result<(), Status> {
        match disclosure::purpose_refusal(principal, gallery, purpose) {
            None => Ok(()),
            Some(what) => {
                Err(biomatch_client::deny(&self.audit, &self.creds, principal, gallery.name.as_str(), what)
                    .await)
            }
        }
    }

    #[tracing::instrument(name = "search.gallery", skip_all)]
    async fn gallery(&self, name: &str) -> Result<Gallery, Status> {
        if name.is_empty() {
            return Err(status_with(ErrorClass::InvalidArgument, "gallery name must not be empty"));
        }
        let mut ingest = self.ingest.clone();
        let gallery = ingest
            .get_gallery(request(
                GetGalleryRequest { name: name.to_owned(), settings_only: true },
                &self.creds.token(),
            ))
            .await?;
        biomatch_proto::gallery_from_proto(gallery.into_inner()).map_err(|e| {
            tracing::error!(error = %e, "the ingest role sent an invalid gallery");
            status_with(ErrorClass::Internal, "invalid gallery settings")
        })
    }

    #[tracing::instrument(name = "search.probe", skip_all)]
    async fn probe(
        &self,
        gallery: &Gallery,
        probe: Option<biomatch_proto::v1::Probe>,
    ) -> Result<ResolvedProbe, Status> {
        let model = GalleryModel::from(gallery);
        resolve_probe(&self.embed, &self.creds, probe, &model, FaceRule::Largest).await
    }

    /// Asks the matchers holding one shard, in turn, until one answers within the deadline.
    #[tracing::instrument(name = "search.shard", skip_all, fields(shard))]
    async fn search_shard(
        &self,
        gallery: &str,
        shard: u32,
        query: &[f32],
        k: u32,
        min_change_seq: u64,
    ) -> Result<Vec<Candidate>, Status> {
        let message = ShardSearchRequest {
            shard: Some(ShardRef { gallery: gallery.to_owned(), shard }),
            queries: vec![QueryVector { values: query.to_vec() }],
            k,
            min_change_seq,
        };
        let token = self.creds.token();
        let response = self
            .router
            .ask(gallery, shard, &token, |mut matcher| {
                let mut call = biomatch_client::request(message.clone(), &token);
                call.set_timeout(self.shard_timeout);
                async move { matcher.search(call).await }
            })
            .await?;
        Ok(response.results.into_iter().next().unwrap_or_default().candidates)
    }

    #[tracing::instrument(name = "search.audit", skip_all)]
    async fn audit(&self, event: AuditEvent, key: String) -> Result<u64, AuditUnavailable> {
        biomatch_client::append_audit(&self.audit, &self.creds, event, key).await.map(|r| r.leaf_index)
    }
}

/// Refuses, before anything is spent or recorded, a field longer than a leaf may hold.
fn bounded_fields(gallery: &str, purpose: &str, case_ref: &str) -> Result<(), Status> {
    use biomatch_domain::limits::{MAX_CASE_REF_BYTES, MAX_GALLERY_NAME_BYTES, MAX_PURPOSE_BYTES, bounded};
    bounded("gallery", gallery, MAX_GALLERY_NAME_BYTES)
        .and_then(|_| bounded("purpose", purpose, MAX_PURPOSE_BYTES))
        .and_then(|_| bounded("case_ref", case_ref, MAX_CASE_REF_BYTES))
        .map(drop)
        .map_err(|e| biomatch_proto::status_from(&e))
}

/// The number of candidates a search asks for: the gallery's default for 0, at most `MAX_K`.
fn search_k(requested: u32, gallery: &Gallery) -> Result<u32, Status> {
    let k = if requested == 0 { gallery.default_k } else { requested };
    if k > biomatch_domain::limits::MAX_K {
        let what = format!("k must be at most {}", biomatch_domain::limits::MAX_K);
        return Err(status_with(ErrorClass::InvalidArgument, what));
    }
    Ok(k)
}

fn base_event(
    principal: &Principal,
    operation: Operation,
    gallery: &Gallery,
    model: &ResolvedProbe,
) -> AuditEvent {
    AuditEvent {
        actor: Some(actor(principal)),
        operation: operation.into(),
        gallery: gallery.name.to_string(),
        model_id: model.model_id.clone(),
        model_version: model.model_version.clone(),
        threshold_version: gallery.threshold_version,
        outcome: "OK".into(),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl SearchService for SearchServer {
    async fn identify(
        &self,
        request: Request<IdentifyRequest>,
    ) -> Result<Response<IdentifyResponse>, Status> {
        let principal = biomatch_auth::principal(&request)?;
        let IdentifyRequest {
            gallery,
            probe,
            k,
            threshold: requested,
            purpose,
            case_ref,
            allow_partial,
            min_change_seq,
        } = request.into_inner();
        bounded_fields(&gallery, &purpose, &case_ref)?;
        self.spend_budget(&principal, &gallery).await?;
        let gallery = self.gallery(&gallery).await?;
        self.check_purpose(&principal, &gallery, &purpose).await?;
        self.check_probe_kind(&principal, &gallery, probe.as_ref()).await?;
        let k = search_k(k, &gallery)?;
        let floor = self.disclosure.floor(&gallery);
        let threshold = disclosure::threshold(&principal, &gallery, requested, floor)?;
        let probe = self.probe(&gallery, probe).await?;

        let query = probe.template.values();
        let answers = futures::future::join_all(
            (0..gallery.shard_count)
                .map(|shard| self.search_shard(gallery.name.as_str(), shard, query, k, min_change_seq)),
        )
        .await;
        let mut lists = Vec::with_capacity(answers.len());
        let mut missing_shards = Vec::new();
        for (shard, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok(list) => lists.push(list),
                Err(status) if router::retryable(&status) => missing_shards.push(shard as u32),
                Err(status) => return Err(status),
            }
        }
        if !missing_shards.is_empty() && !allow_partial {
            return Err(status_with(
                ErrorClass::Unavailable,
                format!("shards {missing_shards:?} of gallery {} did not answer", gallery.name),
            ));
        }
        let merged = merge_top_k(lists, k as usize);
        let decision = Decision::from_score(merged.first().map(|c| c.score), threshold);
        let sees = disclosure::Sees::of(&principal);
        let (candidates, mate) = disclosure::identify_answer(sees, merged, floor, threshold);
        // The leaf records what the caller was told: the listed candidates, or the mate alone.
        let told = if sees == disclosure::Sees::Candidates { &candidates[..] } else { mate.as_slice() };
        let recorded =
            told.iter().map(|c| ScoredSubject { subject_id: c.subject_id.clone(), score: c.score });
        let recorded = recorded.collect();
        let search_id = uuid::Uuid::new_v4().to_string();

        let mut event = base_event(&principal, Operation::Identify, &gallery, &probe);
        event.purpose = purpose;
        event.case_ref = case_ref;
        event.threshold = Some(threshold);
        event.candidates = recorded;
        event.decision = decision.as_str().to_owned();
        event.partial = !missing_shards.is_empty();
        event.missing_shards = missing_shards.clone();
        event.request_id = search_id.clone();
        let audit_leaf_index = self.audit(event, format!("identify:{search_id}")).await?;

        Ok(Response::new(IdentifyResponse {
            search_id,
            decision: biomatch_proto::decision_to_proto(decision).into(),
            candidates,
            threshold,
            model_id: probe.model_id,
            model_version: probe.model_version,
            partial: !missing_shards.is_empty(),
            missing_shards,
            audit_leaf_index,
            probe_quality: probe.quality,
            mate_subject_id: mate.map(|m| m.subject_id).unwrap_or_default(),
            candidate_floor: floor,
        }))
    }

    async fn verify(&self, request: Request<VerifyRequest>) -> Result<Response<VerifyResponse>, Status> {
        let principal = biomatch_auth::principal(&request)?;
        let VerifyRequest {
            gallery,
            subject_id,
            probe,
            threshold: requested,
            purpose,
            case_ref,
            min_change_seq,
        } = request.into_inner();
        bounded_fields(&gallery, &purpose, &case_ref)?;
        self.spend_budget(&principal, &gallery).await?;
        let gallery = self.gallery(&gallery).await?;
        self.check_purpose(&principal, &gallery, &purpose).await?;
        self.check_probe_kind(&principal, &gallery, probe.as_ref()).await?;
        let subject = SubjectId::parse(&subject_id).map_err(|e| biomatch_proto::status_from(&e))?;
        let floor = self.disclosure.floor(&gallery);
        let threshold = disclosure::threshold(&principal, &gallery, requested, floor)?;
        let probe = self.probe(&gallery, probe).await?;
        let shard = shard_of(&subject, gallery.shard_count);

        let message = ShardScoreRequest {
            shard: Some(ShardRef { gallery: gallery.name.to_string(), shard }),
            subject_id: subject_id.clone(),
            probe: Some(QueryVector { values: probe.template.values().to_vec() }),
            min_change_seq,
        };
        let token = self.creds.token();
        let scored = self
            .router
            .ask(gallery.name.as_str(), shard, &token, |mut matcher| {
                let mut call = biomatch_client::request(message.clone(), &token);
                call.set_timeout(self.shard_timeout);
                async move { matcher.score(call).await }
            })
            .await?;
        let verification_id = uuid::Uuid::new_v4().to_string();
        let mut event = base_event(&principal, Operation::Verify, &gallery, &probe);
        event.purpose = purpose;
        event.case_ref = case_ref;
        event.threshold = Some(threshold);
        event.request_id = verification_id.clone();
        if !scored.found {
            // Asking whether someone is enrolled is itself on the record.
            event.subject_ids = vec![subject_id.clone()];
            event.outcome = "NOT_FOUND".into();
            self.audit(event, format!("verify:{verification_id}")).await?;
            return Err(status_with(
                ErrorClass::NotFound,
                format!("subject {subject_id} is not enrolled in gallery {}", gallery.name),
            ));
        }
        let decision = Decision::from_score(Some(scored.score), threshold);
        // The leaf keeps the score for auditors even when the caller is not shown it.
        let score = disclosure::verify_score(disclosure::Sees::of(&principal), scored.score, floor);
        event.candidates = vec![ScoredSubject { subject_id: subject_id.clone(), score: scored.score }];
        event.decision = decision.as_str().to_owned();
        let audit_leaf_index = self.audit(event, format!("verify:{verification_id}")).await?;

        Ok(Response::new(VerifyResponse {
            verification_id,
            decision: biomatch_proto::decision_to_proto(decision).into(),
            score,
            threshold,
            model_id: probe.model_id,
            model_version: probe.model_version,
            audit_leaf_index,
            probe_quality: probe.quality,
        }))
    }

    async fn review_candidate(
        &self,
        request: Request<ReviewCandidateRequest>,
    ) -> Result<Response<ReviewCandidateResponse>, Status> {
        let principal = biomatch_auth::principal(&request)?;
        Ok(Response::new(self.review(&principal, request.into_inner()).await?))
    }

    async fn list_pending_reviews(
        &self,
        request: Request<ListPendingReviewsRequest>,
    ) -> Result<Response<ListPendingReviewsResponse>, Status> {
        let principal = biomatch_auth::principal(&request)?;
        Ok(Response::new(self.pending(&principal, request.into_inner()).await?))
    }

    async fn get_search(&self, request: Request<GetSearchRequest>) -> Result<Response<SearchRecord>, Status> {
        let principal = biomatch_auth::principal(&request)?;
        Ok(Response::new(self.get_search(&principal, request.into_inner()).await?))
    }

    async fn list_case_searches(
        &self,
        request: Request<ListCaseSearchesRequest>,
    ) -> Result<Response<ListCaseSearchesResponse>, Status> {
        let principal = biomatch_auth::principal(&request)?;
        Ok(Response::new(self.list_case_searches(&principal, request.into_inner()).await?))
    }
}
