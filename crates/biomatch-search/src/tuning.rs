//! `TuneGallery`: measures every shard of a gallery on its own data (`MatcherService/Tune` on one
//! replica each) and proposes the settings that meet the target recall on all of them. It
//! proposes only; an administrator records the proposal with `IngestService/SetSearchTuning`.
//! The measurement is audited (who measured which gallery, and what it found); no template or
//! probe leaves the matchers.

use crate::SearchServer;
use biomatch_client::actor;
use biomatch_domain::{Principal, SearchTuning, check_tune_request};
use biomatch_proto::status_from;
use biomatch_proto::v1::{
    AuditEvent, Operation, ShardRef, TuneGalleryRequest, TuneShardRequest, TuneShardResponse,
};
use std::time::Duration;
use tonic::Status;

/// A shard's measurement may take a while at gallery scale (exact search of every probe, then
/// each candidate setting).
const SHARD_TUNE_TIMEOUT: Duration = Duration::from_secs(300);
const DEFAULT_TARGET_RECALL: f64 = 0.995;
const DEFAULT_GENUINE_SCORE: f32 = 0.66;
const DEFAULT_PROBES: u32 = 200;

/// The request with its defaults filled in, checked.
fn resolved(request: &TuneGalleryRequest) -> Result<TuneShardRequest, Status> {
    let target_recall =
        if request.target_recall == 0.0 { DEFAULT_TARGET_RECALL } else { request.target_recall };
    let genuine_score =
        if request.genuine_score == 0.0 { DEFAULT_GENUINE_SCORE } else { request.genuine_score };
    let probes = if request.probes == 0 { DEFAULT_PROBES } else { request.probes };
    check_tune_request(target_recall, genuine_score, probes).map_err(|e| status_from(&e))?;
    Ok(TuneShardRequest { shard: None, target_recall, genuine_score, probes, seed: request.seed })
}

/// The settings every shard needs, with the worst recall and the slowest speed among them.
pub(crate) fn combine(target_recall: f64, shards: &[TuneShardResponse]) -> SearchTuning {
    let tunable: Vec<&TuneShardResponse> = shards.iter().filter(|s| s.tunable).collect();
    let min = |f: fn(&TuneShardResponse) -> f64| tunable.iter().map(|s| f(s)).fold(f64::INFINITY, f64::min);
    SearchTuning {
        nprobe: tunable.iter().map(|s| s.nprobe).max().unwrap_or(0),
        rerank_depth: tunable.iter().map(|s| s.rerank_depth).max().unwrap_or(0),
        pinned: false,
        target_recall,
        recall: if tunable.is_empty() { 1.0 } else { min(|s| s.recall) },
        met_target: tunable.iter().all(|s| s.met_target),
        queries_per_second: if tunable.is_empty() { 0.0 } else { min(|s| s.queries_per_second) },
        exact_queries_per_second: if tunable.is_empty() { 0.0 } else { min(|s| s.exact_queries_per_second) },
        probes: tunable.iter().map(|s| s.probes).min().unwrap_or(0),
        templates: shards.iter().map(|s| s.templates).max().unwrap_or(0),
        tuned_at_ms: 0,
        version: 0,
    }
}

impl SearchServer {
    pub(crate) async fn tune_gallery_request(
        &self,
        principal: &Principal,
        request: TuneGalleryRequest,
    ) -> Result<SearchTuning, Status> {
        let message = resolved(&request)?;
        if !principal.may_use_gallery(&request.gallery) {
            let what = format!("this token does not cover gallery {}", request.gallery);
            return Err(
                biomatch_client::deny(&self.audit, &self.creds, principal, &request.gallery, what).await
            );
        }
        // Fresh settings: the shard count must be today's.
        self.settings_cache.forget(&request.gallery);
        let gallery = self.settings(&request.gallery).await?.gallery;
        let token = self.creds.token();
        let mut measured = Vec::with_capacity(gallery.shard_count as usize);
        for shard in 0..gallery.shard_count {
            let mut message = message.clone();
            message.shard = Some(ShardRef { gallery: gallery.name.to_string(), shard });
            let answer = self
                .router
                .ask(gallery.name.as_str(), shard, &token, |mut matcher| {
                    let mut call = biomatch_client::request(message.clone(), &token);
                    call.set_timeout(SHARD_TUNE_TIMEOUT);
                    async move { matcher.tune(call).await }
                })
                .await?;
            measured.push(answer);
        }
        let mut tuning = combine(message.target_recall, &measured);
        tuning.tuned_at_ms = (self.clock)();
        let event = AuditEvent {
            actor: Some(actor(principal)),
            operation: Operation::SearchTuning.into(),
            gallery: gallery.name.to_string(),
            outcome: "OK".into(),
            detail: format!(
                "measured (not applied): nprobe {} rerank_depth {}: recall {:.4} (target {:.4}) at {:.0} queries/s \
                 (exact {:.0}) on {} shards",
                tuning.nprobe,
                tuning.rerank_depth,
                tuning.recall,
                tuning.target_recall,
                tuning.queries_per_second,
                tuning.exact_queries_per_second,
                measured.len()
            ),
            ..Default::default()
        };
        let key = format!("tune:{}", uuid::Uuid::new_v4());
        self.audit(event, key).await?;
        Ok(tuning)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(nprobe: u32, recall: f64, qps: f64, met: bool) -> TuneShardResponse {
        TuneShardResponse {
            nprobe,
            rerank_depth: 64,
            recall,
            exact_recall: 1.0,
            queries_per_second: qps,
            exact_queries_per_second: 100.0,
            probes: 200,
            templates: 1000,
            met_target: met,
            tunable: true,
        }
    }

    #[test]
    fn the_proposal_is_what_the_worst_shard_needs() {
        let t = combine(0.99, &[shard(16, 0.995, 900.0, true), shard(64, 0.991, 400.0, true)]);
        assert_eq!((t.nprobe, t.rerank_depth), (64, 64));
        assert_eq!((t.recall, t.queries_per_second), (0.991, 400.0));
        assert!(t.met_target);
        let missed = combine(0.99, &[shard(16, 0.995, 900.0, true), shard(128, 0.97, 100.0, false)]);
        assert!(!missed.met_target);
        let exact = combine(0.99, &[TuneShardResponse { templates: 5, ..Default::default() }]);
        assert_eq!((exact.nprobe, exact.recall, exact.templates), (0, 1.0, 5), "nothing to tune");
    }

    #[test]
    fn bad_targets_are_refused() {
        let bad = |target_recall, genuine_score, probes| TuneGalleryRequest {
            gallery: "g".into(),
            target_recall,
            genuine_score,
            probes,
            seed: 0,
        };
        for request in [
            bad(1.5, 0.0, 0),
            bad(f64::NAN, 0.0, 0),
            bad(0.0, 1.0, 0),
            bad(0.0, f32::NAN, 0),
            bad(0.0, 0.0, 5000),
        ] {
            assert_eq!(resolved(&request).expect_err("refused").code(), tonic::Code::InvalidArgument);
        }
        let defaults = resolved(&bad(0.0, 0.0, 0)).expect("defaults");
        assert_eq!((defaults.target_recall, defaults.genuine_score, defaults.probes), (0.995, 0.66, 200));
    }
}
