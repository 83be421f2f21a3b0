//! `TuneGallery`: measures every shard of a gallery on its own data (`MatcherService/Tune` on one
//! replica each) and proposes the settings that meet the target recall on all of them. It
//! proposes only; an administrator records the proposal with `IngestService/SetSearchTuning`.
//! The measurement is audited (who measured which gallery, and what it found); no template or
//! probe leaves the matchers. An operator's labelled probes go to the shard of each probe's
//! subject only; they are never logged. A labelled measurement compares probes with named
//! subjects, so it is a search of those subjects: its probes must name at least
//! [`MIN_LABELLED_SUBJECTS`] distinct subjects, at most
//! [`MAX_PROBES_PER_SUBJECT`](biomatch_domain::MAX_PROBES_PER_SUBJECT) of each, at
//! least that many of them enrolled, and its audit leaf names every subject the probes claim, as
//! a verify's leaf would. It remains a measurement an administrator could misuse to learn whether
//! one probe matches one subject (by comparing two sets that differ in that probe); the leaves
//! name that subject each time, which is what makes such use visible to an auditor. A proposal
//! of nprobe 0 and re-rank depth 0 says exact search is the choice (no shard trained yet, or exact
//! search as fast everywhere).

use crate::SearchServer;
use biomatch_client::actor;
use biomatch_domain::{
    ErrorClass, MIN_LABELLED_SUBJECTS, Principal, SearchTuning, SubjectId, check_labelled_subjects,
    check_tune_request, shard_of,
};
use biomatch_proto::v1::{
    AuditEvent, LabelledProbe, Operation, ShardRef, TuneGalleryRequest, TuneShardRequest, TuneShardResponse,
};
use biomatch_proto::{status_from, status_with};
use std::time::Duration;
use tonic::Status;

/// A shard's measurement may take a while at gallery scale (exact search of every probe, then
/// each candidate setting).
const SHARD_TUNE_TIMEOUT: Duration = Duration::from_secs(300);
const DEFAULT_TARGET_RECALL: f64 = 0.995;
const DEFAULT_GENUINE_SCORE: f32 = 0.66;
const DEFAULT_PROBES: u32 = 200;
/// The most probe values in all: with room to spare, a shard's request stays under the 4 MiB a
/// gRPC server decodes by default.
pub const MAX_LABELLED_VALUES: usize = 900_000;

/// The request with its defaults filled in, checked (the labelled probes are left out: see
/// [`labelled_by_shard`]).
fn resolved(request: &TuneGalleryRequest) -> Result<TuneShardRequest, Status> {
    let target_recall =
        if request.target_recall == 0.0 { DEFAULT_TARGET_RECALL } else { request.target_recall };
    let genuine_score =
        if request.genuine_score == 0.0 { DEFAULT_GENUINE_SCORE } else { request.genuine_score };
    let probes = if request.probes == 0 { DEFAULT_PROBES } else { request.probes };
    check_tune_request(target_recall, genuine_score, probes).map_err(|e| status_from(&e))?;
    Ok(TuneShardRequest {
        shard: None,
        target_recall,
        genuine_score,
        probes,
        seed: request.seed,
        labelled_probes: Vec::new(),
    })
}

/// The labelled probes of each shard (by the shard of their subject), checked: by their subjects
/// ([`check_labelled_subjects`]), at most [`MAX_LABELLED_VALUES`] values, each naming a valid
/// subject and of the gallery's dimension with finite values; with the distinct subjects named.
/// Refusals give the probe's position only.
fn labelled_by_shard(
    probes: Vec<LabelledProbe>,
    dimension: usize,
    shard_count: u32,
) -> Result<(Vec<Vec<LabelledProbe>>, Vec<String>), Status> {
    let invalid = |message: String| status_with(ErrorClass::InvalidArgument, message);
    if probes.is_empty() {
        return Ok((vec![Vec::new(); shard_count as usize], Vec::new()));
    }
    let named =
        check_labelled_subjects(probes.iter().map(|p| p.subject_id.as_str())).map_err(|e| status_from(&e))?;
    if probes.len().saturating_mul(dimension) > MAX_LABELLED_VALUES {
        return Err(invalid(format!(
            "at most {MAX_LABELLED_VALUES} labelled probe values in all ({} probes of {dimension})",
            probes.len()
        )));
    }
    let mut by_shard = vec![Vec::new(); shard_count as usize];
    for (i, probe) in probes.into_iter().enumerate() {
        let subject = SubjectId::parse(&probe.subject_id)
            .map_err(|_| invalid(format!("labelled probe {i}: not a valid subject id")))?;
        if probe.values.len() != dimension {
            let got = probe.values.len();
            return Err(invalid(format!(
                "labelled probe {i} has {got} values, the gallery's dimension is {dimension}"
            )));
        }
        if probe.values.iter().any(|v| !v.is_finite()) {
            return Err(invalid(format!("labelled probe {i} holds a value that is not finite")));
        }
        by_shard[shard_of(&subject, shard_count) as usize].push(probe);
    }
    Ok((by_shard, named))
}

/// The settings every shard needs, with the worst recall and the slowest speed among them; no
/// settings (exact search) when no shard is tunable or every one found exact search as fast.
/// `labelled`: recall was measured against the probes' labels (exact search's own may fall short).
pub(crate) fn combine(target_recall: f64, labelled: bool, shards: &[TuneShardResponse]) -> SearchTuning {
    let tunable: Vec<&TuneShardResponse> = shards.iter().filter(|s| s.tunable).collect();
    let min = |f: fn(&TuneShardResponse) -> f64| tunable.iter().map(|s| f(s)).fold(f64::INFINITY, f64::min);
    let templates = shards.iter().map(|s| s.templates).max().unwrap_or(0);
    let probes = tunable.iter().map(|s| s.probes).min().unwrap_or(0);
    if tunable.iter().all(|s| s.exact) {
        let recall = match (tunable.is_empty(), labelled) {
            (true, _) | (false, false) => 1.0,
            (false, true) => min(|s| s.exact_recall),
        };
        let exact_qps = if tunable.is_empty() { 0.0 } else { min(|s| s.exact_queries_per_second) };
        return SearchTuning {
            target_recall,
            recall,
            met_target: recall >= target_recall,
            queries_per_second: exact_qps,
            exact_queries_per_second: exact_qps,
            probes,
            templates,
            ..Default::default()
        };
    }
    SearchTuning {
        nprobe: tunable.iter().map(|s| s.nprobe).max().unwrap_or(0),
        rerank_depth: tunable.iter().map(|s| s.rerank_depth).max().unwrap_or(0),
        pinned: false,
        target_recall,
        recall: min(|s| s.recall),
        met_target: tunable.iter().all(|s| s.met_target),
        queries_per_second: min(|s| s.queries_per_second),
        exact_queries_per_second: min(|s| s.exact_queries_per_second),
        probes,
        templates,
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
        let labelled_count = request.labelled_probes.len();
        let (labelled, named) =
            labelled_by_shard(request.labelled_probes, gallery.dimension as usize, gallery.shard_count)?;
        let token = self.creds.token();
        let mut measured = Vec::with_capacity(gallery.shard_count as usize);
        for (shard, labelled_probes) in (0..gallery.shard_count).zip(labelled) {
            if labelled_count > 0 && labelled_probes.is_empty() {
                // No probe of this shard's subjects: nothing to measure it with.
                continue;
            }
            let mut message = message.clone();
            message.shard = Some(ShardRef { gallery: gallery.name.to_string(), shard });
            message.labelled_probes = labelled_probes;
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
        let mut tuning = combine(message.target_recall, labelled_count > 0, &measured);
        tuning.tuned_at_ms = (self.clock)();
        // Labelled probes of subjects no trained shard holds measure nothing: too few of them
        // left is a refusal, not a proposal (recorded all the same: the probes were compared).
        let of_enrolled: u32 = measured.iter().filter(|s| s.tunable).map(|s| s.probes).sum();
        let refusal = (labelled_count > 0 && (of_enrolled as usize) < MIN_LABELLED_SUBJECTS).then(|| {
            status_with(
                ErrorClass::FailedPrecondition,
                format!(
                    "fewer than {MIN_LABELLED_SUBJECTS} labelled probes are of subjects in a trained shard: \
                     nothing to measure with"
                ),
            )
        });
        let probes = match labelled_count {
            0 => "drawn probes".to_owned(),
            n => format!("{n} labelled probes"),
        };
        let choice = match (tuning.nprobe, tuning.rerank_depth) {
            (0, 0) => "exact search".to_owned(),
            (nprobe, depth) => format!("nprobe {nprobe} rerank_depth {depth}"),
        };
        let event = AuditEvent {
            actor: Some(actor(principal)),
            operation: Operation::SearchTuning.into(),
            gallery: gallery.name.to_string(),
            outcome: refusal.as_ref().map_or("OK".into(), |s| format!("{:?}", s.code())),
            detail: format!(
                "measured (not applied): {choice}: recall {:.4} (target {:.4}) at {:.0} queries/s \
                 (exact {:.0}) on {} shards with {probes}",
                tuning.recall,
                tuning.target_recall,
                tuning.queries_per_second,
                tuning.exact_queries_per_second,
                measured.len()
            ),
            subject_ids: named,
            ..Default::default()
        };
        let key = format!("tune:{}", uuid::Uuid::new_v4());
        self.audit(event, key).await?;
        match refusal {
            Some(status) => Err(status),
            None => Ok(tuning),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use biomatch_domain::MAX_PROBES_PER_SUBJECT;

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
            exact: false,
        }
    }

    #[test]
    fn the_proposal_is_what_the_worst_shard_needs() {
        let t = combine(0.99, false, &[shard(16, 0.995, 900.0, true), shard(64, 0.991, 400.0, true)]);
        assert_eq!((t.nprobe, t.rerank_depth), (64, 64));
        assert_eq!((t.recall, t.queries_per_second), (0.991, 400.0));
        assert!(t.met_target);
        let missed = combine(0.99, false, &[shard(16, 0.995, 900.0, true), shard(128, 0.97, 100.0, false)]);
        assert!(!missed.met_target);
        let exact =
            combine(0.99, false, &[TuneShardResponse { templates: 5, exact: true, ..Default::default() }]);
        assert_eq!((exact.nprobe, exact.recall, exact.templates), (0, 1.0, 5), "nothing to tune");
    }

    #[test]
    fn exact_search_is_proposed_when_every_shard_found_it_as_fast() {
        let fast = |s: TuneShardResponse| TuneShardResponse { exact: true, ..s };
        let both = [fast(shard(4, 0.995, 900.0, true)), fast(shard(8, 0.993, 700.0, true))];
        let t = combine(0.99, false, &both);
        assert_eq!((t.nprobe, t.rerank_depth, t.recall, t.queries_per_second), (0, 0, 1.0, 100.0), "{t:?}");
        assert!(t.met_target && t.probes == 200 && t.templates == 1000);
        let labelled = combine(0.99, true, &both);
        assert_eq!((labelled.nprobe, labelled.recall), (0, 1.0), "exact recall of the labels");
        // One shard still gains from its settings: they are proposed for all.
        let mixed = combine(0.99, false, &[fast(shard(4, 0.995, 900.0, true)), shard(8, 0.993, 700.0, true)]);
        assert_eq!((mixed.nprobe, mixed.rerank_depth), (8, 64));
    }

    #[test]
    fn labelled_probes_go_to_their_subjects_shard_and_are_checked() {
        let probe = |subject: &str, values: Vec<f32>| LabelledProbe { subject_id: subject.into(), values };
        let subjects: Vec<String> = (0..MIN_LABELLED_SUBJECTS).map(|i| format!("subject-{i}")).collect();
        let probes = subjects.iter().chain(&subjects).map(|s| probe(s, vec![0.6, 0.8])).collect();
        let (by_shard, named) = labelled_by_shard(probes, 2, 3).expect("valid");
        assert_eq!(named.len(), MIN_LABELLED_SUBJECTS);
        assert_eq!(by_shard.len(), 3);
        for (shard, probes) in by_shard.iter().enumerate() {
            for p in probes {
                let subject = SubjectId::parse(&p.subject_id).expect("id");
                assert_eq!(shard_of(&subject, 3) as usize, shard);
            }
        }
        assert_eq!(by_shard.iter().map(Vec::len).sum::<usize>(), 2 * MIN_LABELLED_SUBJECTS);
        assert_eq!(labelled_by_shard(Vec::new(), 2, 3).expect("none").0.len(), 3);

        // A valid set with one probe spoilt, or a set that says too much about one subject.
        let set = |d: usize, spoil: fn(&mut LabelledProbe)| {
            let mut probes: Vec<LabelledProbe> = subjects.iter().map(|s| probe(s, vec![0.5; d])).collect();
            spoil(&mut probes[3]);
            probes
        };
        let one_subject = vec![probe("alice", vec![0.5, 0.5]); MAX_PROBES_PER_SUBJECT + 1];
        let mut padded = set(2, |_| {});
        padded.extend(vec![probe("alice", vec![0.5, 0.5]); MAX_PROBES_PER_SUBJECT + 1]);
        let too_big: Vec<LabelledProbe> = (0..MAX_LABELLED_VALUES / 512 + 1)
            .map(|i| probe(&format!("subject-{}", i % 1000), vec![0.5; 512]))
            .collect();
        for (bad, d) in [
            (set(2, |p| p.values[1] = f32::NAN), 2),
            (set(2, |p| p.values.truncate(1)), 2),
            (set(2, |p| p.subject_id.clear()), 2),
            (subjects[1..].iter().map(|s| probe(s, vec![0.5, 0.5])).collect(), 2),
            (one_subject, 2),
            (padded, 2),
            (too_big, 512),
        ] {
            let status = labelled_by_shard(bad, d, 2).expect_err("refused");
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(!status.message().contains("alice") && !status.message().contains("0.5"), "{status:?}");
        }
    }

    #[test]
    fn bad_targets_are_refused() {
        let bad = |target_recall, genuine_score, probes| TuneGalleryRequest {
            gallery: "g".into(),
            target_recall,
            genuine_score,
            probes,
            seed: 0,
            labelled_probes: Vec::new(),
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
