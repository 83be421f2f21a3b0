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

mod answer;
pub mod disclosure;
mod merge;
mod records;
mod review;
mod router;
mod settings;
mod tuning;
#[cfg(test)]
mod validate_tests;

pub use biomatch_client::budget::{BudgetPolicy, Budgets, Exceeded, Limits, Refusal};
pub use disclosure::DisclosurePolicy;
pub use merge::merge_top_k;
pub use router::Router;

use biomatch_auth::ServiceCredentials;
use biomatch_client::{
    AuditUnavailable, FaceRule, GalleryModel, ResolvedProbe, Transport, actor, request, resolve_probe,
};
use biomatch_domain::{Clock, ErrorClass, Gallery, Principal};
use biomatch_proto::status_with;
use biomatch_proto::v1::audit_service_client::AuditServiceClient;
use biomatch_proto::v1::embed_service_client::EmbedServiceClient;
use biomatch_proto::v1::ingest_service_client::IngestServiceClient;
use biomatch_proto::v1::search_service_server::SearchService;
use biomatch_proto::v1::{
    AuditEvent, GetGalleryRequest, GetSearchRequest, IdentifyRequest, IdentifyResponse,
    ListCaseSearchesRequest, ListCaseSearchesResponse, ListPendingReviewsRequest, ListPendingReviewsResponse,
    Operation, ReviewCandidateRequest, ReviewCandidateResponse, SearchRecord, ShardRef, ShardSearchRequest,
    ShardSearchResponse, TuneGalleryRequest, VerifyRequest, VerifyResponse,
};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

pub struct SearchServer {
    ingest: IngestServiceClient<Transport>,
    audit: AuditServiceClient<Transport>,
    embed: EmbedServiceClient<Transport>,
    router: Router,
    shard_timeout: Duration,
    creds: Arc<ServiceCredentials>,
    budgets: Arc<Budgets>,
    disclosure: DisclosurePolicy,
    clock: Clock,
    settings_cache: settings::SettingsCache,
}

/// The roles a search role talks to, and how.
pub struct Peers {
    pub ingest: IngestServiceClient<Transport>,
    pub audit: AuditServiceClient<Transport>,
    pub embed: EmbedServiceClient<Transport>,
    pub matchers: Router,
    /// Deadline of one shard's answer before another replica is tried.
    pub shard_timeout: Duration,
    pub creds: Arc<ServiceCredentials>,
}

impl SearchServer {
    pub fn new(peers: Peers, budgets: Arc<Budgets>, clock: Clock) -> Self {
        let Peers { ingest, audit, embed, matchers, shard_timeout, creds } = peers;
        let disclosure = DisclosurePolicy::default();
        let settings_cache = settings::SettingsCache::default();
        Self {
            ingest,
            audit,
            embed,
            router: matchers,
            shard_timeout,
            creds,
            budgets,
            disclosure,
            clock,
            settings_cache,
        }
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

    /// The gallery's settings, from the cache or read from the ingest role ([`settings`]).
    #[tracing::instrument(name = "search.gallery", skip_all)]
    async fn settings(&self, name: &str) -> Result<settings::Settings, Status> {
        if name.is_empty() {
            return Err(status_with(ErrorClass::InvalidArgument, "gallery name must not be empty"));
        }
        if let Some(cached) = self.settings_cache.get(name, (self.clock)()) {
            return Ok(cached);
        }
        let mut ingest = self.ingest.clone();
        let wire = ingest
            .get_gallery(request(
                GetGalleryRequest { name: name.to_owned(), settings_only: true },
                &self.creds.token(),
            ))
            .await?
            .into_inner();
        let as_of = wire.settings_seq;
        let gallery = biomatch_proto::gallery_from_proto(wire).map_err(|e| {
            tracing::error!(error = %e, "the ingest role sent an invalid gallery");
            status_with(ErrorClass::Internal, "invalid gallery settings")
        })?;
        self.settings_cache.put(&gallery, as_of, (self.clock)());
        Ok(settings::Settings { gallery, as_of, cached: false })
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
    /// `message` is the request for every shard; its shard is filled in here.
    #[tracing::instrument(name = "search.shard", skip_all, fields(shard))]
    async fn search_shard(
        &self,
        gallery: &str,
        shard: u32,
        message: &ShardSearchRequest,
    ) -> Result<ShardSearchResponse, Status> {
        let token = self.creds.token();
        self.router
            .ask(gallery, shard, &token, |mut matcher| {
                let mut message = message.clone();
                message.shard = Some(ShardRef { gallery: gallery.to_owned(), shard });
                let mut call = biomatch_client::request(message, &token);
                call.set_timeout(self.shard_timeout);
                async move { matcher.search(call).await }
            })
            .await
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
        Ok(Response::new(self.identify_request(&principal, request.into_inner()).await?))
    }

    async fn verify(&self, request: Request<VerifyRequest>) -> Result<Response<VerifyResponse>, Status> {
        let principal = biomatch_auth::principal(&request)?;
        Ok(Response::new(self.verify_request(&principal, request.into_inner()).await?))
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

    async fn tune_gallery(
        &self,
        request: Request<TuneGalleryRequest>,
    ) -> Result<Response<biomatch_proto::v1::SearchTuning>, Status> {
        let principal = biomatch_auth::principal(&request)?;
        let tuning = self.tune_gallery_request(&principal, request.into_inner()).await?;
        Ok(Response::new(biomatch_proto::search_tuning_to_proto(&tuning)))
    }
}
