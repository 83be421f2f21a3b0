//! The matcher role: holds one FAISS index per (gallery, shard) it is assigned, keeps them current
//! by applying the gallery store's change log in sequence order, and answers `MatcherService`.
//!
//! On start it loads every assigned shard from the store at a known change-log position, then
//! tails the log from there, woken by in-process notifications or by polling. A change-log entry
//! names a subject, not a template: applying it reads the subject's current templates, so applying
//! an entry twice, or an old entry after a newer state, converges to the store's state. A search
//! that carries `min_change_seq` first catches up to it (read-your-writes).
#![forbid(unsafe_code)]

mod batch;
mod shards;
mod snapshot;
mod sync;
mod tuning;
mod validate;

pub use batch::Batching;
pub use shards::{Assignment, Shards};
pub use snapshot::SnapshotStore;
pub use sync::{MatcherOptions, SyncError, Syncer};
pub use tuning::{AUTOMATIC_TARGET_RECALL, SettingsSource, automatic_request};

use biomatch_domain::check_query;
use biomatch_domain::{ErrorClass, IndexKind};
use biomatch_proto::v1::matcher_service_server::MatcherService;
use biomatch_proto::v1::{
    Candidate, DescribeMatcherRequest, DescribeMatcherResponse, QueryResult, ShardRef, ShardScoreRequest,
    ShardScoreResponse, ShardSearchRequest, ShardSearchResponse, ShardStatus, TuneShardRequest,
    TuneShardResponse,
};
use biomatch_proto::{index_kind_to_proto, status_from, status_with};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct MatcherServer {
    syncer: Arc<Syncer>,
}

impl MatcherServer {
    /// Only the search role may call (the authorization table's rule, applied before a handler
    /// runs); handlers still refuse a request that did not pass through it.
    pub fn new(syncer: Arc<Syncer>) -> Self {
        Self { syncer }
    }

    async fn shard_for(
        &self,
        shard: Option<ShardRef>,
        min_change_seq: u64,
    ) -> Result<(Arc<shards::Shard>, u64), Status> {
        let ShardRef { gallery, shard } =
            shard.ok_or_else(|| status_with(ErrorClass::InvalidArgument, "shard is required"))?;
        let applied = self.syncer.catch_up_to(min_change_seq).await?;
        let Some(found) = self.syncer.shards().get(&gallery, shard) else {
            // Every replica shares the key store: no other one can answer for a shredded gallery.
            return Err(match self.syncer.is_shredded(&gallery) {
                true => status_with(
                    ErrorClass::FailedPrecondition,
                    format!(
                        "gallery {gallery} cannot be searched: its data key was destroyed (it was deleted)"
                    ),
                ),
                false => status_with(
                    ErrorClass::NotFound,
                    format!("this matcher holds no shard {shard} of gallery {gallery}"),
                ),
            });
        };
        Ok((found, applied))
    }
}

#[tonic::async_trait]
impl MatcherService for MatcherServer {
    async fn search(
        &self,
        request: Request<ShardSearchRequest>,
    ) -> Result<Response<ShardSearchResponse>, Status> {
        biomatch_auth::principal(&request)?;
        let ShardSearchRequest { shard, queries, k, min_change_seq } = request.into_inner();
        let (shard, applied) = self.shard_for(shard, min_change_seq).await?;
        let flat = validate::search_queries(&queries, k, shard.dimension())?;
        let shard_no = shard.number();
        let kind = shard.kind();
        let settings_seq = shard.settings_seq();
        let hits = shard.search(flat, k as usize).await?;
        let results = hits
            .into_iter()
            .map(|list| QueryResult {
                candidates: list
                    .into_iter()
                    .enumerate()
                    .map(|(i, s)| Candidate {
                        subject_id: s.subject.to_string(),
                        score: s.score,
                        rank: i as u32 + 1,
                        shard: shard_no,
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(ShardSearchResponse {
            results,
            applied_change_seq: applied,
            index_kind: index_kind_to_proto(kind).into(),
            settings_seq,
        }))
    }

    async fn score(
        &self,
        request: Request<ShardScoreRequest>,
    ) -> Result<Response<ShardScoreResponse>, Status> {
        biomatch_auth::principal(&request)?;
        let ShardScoreRequest { shard, subject_id, probe, min_change_seq } = request.into_inner();
        let (shard, _) = self.shard_for(shard, min_change_seq).await?;
        let probe =
            probe.ok_or_else(|| status_with(ErrorClass::InvalidArgument, "probe is required"))?.values;
        check_query(&probe, shard.dimension()).map_err(|e| status_from(&e))?;
        let scored = self.syncer.score(&shard, &subject_id, &probe).await?;
        let response = match scored {
            Some((score, templates)) => ShardScoreResponse {
                found: true,
                score,
                template_count: u32::try_from(templates).unwrap_or(u32::MAX),
                settings_seq: shard.settings_seq(),
            },
            None => ShardScoreResponse {
                found: false,
                score: 0.0,
                template_count: 0,
                settings_seq: shard.settings_seq(),
            },
        };
        Ok(Response::new(response))
    }

    async fn tune(&self, request: Request<TuneShardRequest>) -> Result<Response<TuneShardResponse>, Status> {
        biomatch_auth::principal(&request)?;
        let TuneShardRequest { shard, target_recall, genuine_score, probes, seed, labelled_probes } =
            request.into_inner();
        biomatch_domain::check_tune_request(target_recall, genuine_score, probes)
            .map_err(|e| status_from(&e))?;
        let (shard, _) = self.shard_for(shard, 0).await?;
        let labelled = validate::labelled_probes(labelled_probes, shard.dimension())?;
        let (tunable, templates, held) = {
            let index = shard.lock();
            let held =
                labelled.as_ref().is_none_or(|l| l.iter().any(|(_, s)| index.templates_of(s).is_some()));
            let tunable =
                index.is_trained() && matches!(index.kind(), IndexKind::IvfRerank | IndexKind::PqRerank);
            (tunable, index.template_count(), held)
        };
        if !held {
            // Nothing of this shard to measure with: the others answer for the gallery.
            return Ok(Response::new(TuneShardResponse {
                templates: templates as u64,
                tunable: false,
                ..Default::default()
            }));
        }
        let request = biomatch_index::TuneRequest {
            target_recall,
            genuine_score,
            probes: probes as usize,
            seed,
            labelled,
        };
        let report = tokio::task::spawn_blocking(move || shard.measure(&request))
            .await
            .map_err(|e| status_with(ErrorClass::Internal, format!("tuning task failed: {e}")))?
            .map_err(|e| status_from(&e))?;
        Ok(Response::new(TuneShardResponse {
            nprobe: report.nprobe,
            rerank_depth: report.rerank_depth,
            recall: report.recall,
            exact_recall: report.exact_recall,
            queries_per_second: report.queries_per_second,
            exact_queries_per_second: report.exact_queries_per_second,
            probes: u32::try_from(report.probes).unwrap_or(u32::MAX),
            templates: report.templates as u64,
            met_target: report.met_target,
            tunable,
            exact: report.exact,
        }))
    }

    async fn describe(
        &self,
        request: Request<DescribeMatcherRequest>,
    ) -> Result<Response<DescribeMatcherResponse>, Status> {
        biomatch_auth::principal(&request)?;
        let applied = self.syncer.applied();
        let shards = self
            .syncer
            .shards()
            .all()
            .into_iter()
            .map(|s| {
                let (templates, subjects) = s.counts();
                let settings = s.search_settings();
                ShardStatus {
                    shard: Some(ShardRef { gallery: s.gallery().to_owned(), shard: s.number() }),
                    index_kind: index_kind_to_proto(s.kind()).into(),
                    template_count: templates as u64,
                    subject_count: subjects as u64,
                    applied_change_seq: applied,
                    ready: self.syncer.is_ready(),
                    snapshot_change_seq: s.restored_from(),
                    nprobe: settings.nprobe,
                    rerank_depth: settings.rerank_depth,
                    settings_source: s.settings_source().as_str().to_owned(),
                    tuning: s.tuning(),
                }
            })
            .collect();
        Ok(Response::new(DescribeMatcherResponse { shards, applied_change_seq: applied }))
    }
}
