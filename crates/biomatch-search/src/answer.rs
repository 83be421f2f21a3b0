//! Identify and verify: admit the request against the gallery's settings, resolve the probe, ask
//! the shards, record the answer in the audit log, and only then answer.
//!
//! Settings come from the cache ([`crate::settings`]); when a matcher's answer shows they changed
//! after they were read, the settings are read again and the steps that depend on them (purpose,
//! probe kind, k, threshold, the shards asked) are repeated once with the fresh ones. The probe is
//! resolved once: a gallery's model cannot change under its name without the gallery being
//! deleted and created again, which the repeat refuses as a change during the search.

use crate::settings::{Settings, changed_meanwhile};
use crate::{SearchServer, base_event, disclosure, merge_top_k, router, search_k};
use biomatch_client::{GalleryModel, ResolvedProbe};
use biomatch_domain::{Decision, ErrorClass, Gallery, Principal, SubjectId, shard_of};
use biomatch_proto::status_with;
use biomatch_proto::v1::{
    Candidate, IdentifyRequest, IdentifyResponse, Operation, QueryVector, ScoredSubject, ShardRef,
    ShardScoreRequest, ShardScoreResponse, ShardSearchRequest, VerifyRequest, VerifyResponse,
};
use tonic::Status;

/// A new search or verification id. Time-ordered (UUIDv7: milliseconds, then 74 random bits), so
/// the audit log's indexes on the request id and on `identify:{id}` grow at their end, one page
/// per commit, instead of taking a write to a random page for every answer. The time it shows is
/// the caller's own, and its leaf records it anyway.
fn answer_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// What the gallery's settings allow this request: its k, the candidate floor and the threshold.
struct Admitted {
    k: u32,
    floor: f32,
    threshold: f32,
}

/// Every shard's answer to one identify.
struct FanOut {
    lists: Vec<Vec<Candidate>>,
    missing_shards: Vec<u32>,
    /// The latest settings change any answering matcher applied.
    settings_seq: u64,
}

impl FanOut {
    /// Whether the settings used may be out of date: a matcher saw a later settings change, or,
    /// with cached settings, a shard did not answer (the gallery may be gone or re-created).
    fn outdates(&self, settings: &Settings) -> bool {
        settings.outdated_by(self.settings_seq) || (settings.cached && !self.missing_shards.is_empty())
    }
}

impl SearchServer {
    /// Checks the request against the gallery's settings; every refusal is audited.
    async fn admit(
        &self,
        principal: &Principal,
        gallery: &Gallery,
        purpose: &str,
        (k, requested): (u32, Option<f32>),
    ) -> Result<Admitted, Status> {
        self.check_purpose(principal, gallery, purpose).await?;
        let k = search_k(k, gallery)?;
        let floor = self.disclosure.floor(gallery);
        let threshold = disclosure::threshold(principal, gallery, requested, floor)?;
        Ok(Admitted { k, floor, threshold })
    }

    /// The settings read again after a matcher showed them out of date; refused when the
    /// gallery's model changed meanwhile (it was deleted and created again).
    async fn reread(&self, name: &str, probe: &ResolvedProbe) -> Result<Settings, Status> {
        self.settings_cache.forget(name);
        let settings = self.settings(name).await?;
        let model = GalleryModel::from(&settings.gallery);
        let same = model.model_id == probe.model_id
            && model.model_version == probe.model_version
            && model.dimension == probe.template.values().len();
        if !same {
            return Err(changed_meanwhile(name));
        }
        Ok(settings)
    }

    async fn fan_out(
        &self,
        gallery: &Gallery,
        query: &[f32],
        k: u32,
        min_change_seq: u64,
    ) -> Result<FanOut, Status> {
        let message = ShardSearchRequest {
            shard: None,
            queries: vec![QueryVector { values: query.to_vec() }],
            k,
            min_change_seq,
        };
        let answers = futures::future::join_all(
            (0..gallery.shard_count).map(|shard| self.search_shard(gallery.name.as_str(), shard, &message)),
        )
        .await;
        let mut fan =
            FanOut { lists: Vec::with_capacity(answers.len()), missing_shards: Vec::new(), settings_seq: 0 };
        for (shard, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok(response) => {
                    fan.settings_seq = fan.settings_seq.max(response.settings_seq);
                    fan.lists.push(response.results.into_iter().next().unwrap_or_default().candidates);
                }
                Err(status) if router::retryable(&status) => fan.missing_shards.push(shard as u32),
                Err(status) => return Err(status),
            }
        }
        Ok(fan)
    }

    pub(crate) async fn identify_request(
        &self,
        principal: &Principal,
        request: IdentifyRequest,
    ) -> Result<IdentifyResponse, Status> {
        let IdentifyRequest {
            gallery: name,
            probe,
            k,
            threshold: requested,
            purpose,
            case_ref,
            allow_partial,
            min_change_seq,
        } = request;
        crate::bounded_fields(&name, &purpose, &case_ref)?;
        self.spend_budget(principal, &name).await?;
        let mut settings = self.settings(&name).await?;
        let mut admitted = self.admit(principal, &settings.gallery, &purpose, (k, requested)).await?;
        self.check_probe_kind(principal, &settings.gallery, probe.as_ref()).await?;
        let probe = self.probe(&settings.gallery, probe).await?;
        let query = probe.template.values();
        let mut fan = self.fan_out(&settings.gallery, query, admitted.k, min_change_seq).await?;
        if fan.outdates(&settings) {
            settings = self.reread(&name, &probe).await?;
            admitted = self.admit(principal, &settings.gallery, &purpose, (k, requested)).await?;
            fan = self.fan_out(&settings.gallery, query, admitted.k, min_change_seq).await?;
        }
        let gallery = &settings.gallery;
        let Admitted { k, floor, threshold } = admitted;
        let FanOut { lists, missing_shards, .. } = fan;
        if !missing_shards.is_empty() && !allow_partial {
            return Err(status_with(
                ErrorClass::Unavailable,
                format!("shards {missing_shards:?} of gallery {} did not answer", gallery.name),
            ));
        }
        let merged = merge_top_k(lists, k as usize);
        let decision = Decision::from_score(merged.first().map(|c| c.score), threshold);
        let sees = disclosure::Sees::of(principal);
        let (candidates, mate) = disclosure::identify_answer(sees, merged, floor, threshold);
        // The leaf records what the caller was told: the listed candidates, or the mate alone.
        let told = if sees == disclosure::Sees::Candidates { &candidates[..] } else { mate.as_slice() };
        let recorded =
            told.iter().map(|c| ScoredSubject { subject_id: c.subject_id.clone(), score: c.score }).collect();
        let search_id = answer_id();

        let mut event = base_event(principal, Operation::Identify, gallery, &probe);
        event.purpose = purpose;
        event.case_ref = case_ref;
        event.threshold = Some(threshold);
        event.candidates = recorded;
        event.decision = decision.as_str().to_owned();
        event.partial = !missing_shards.is_empty();
        event.missing_shards = missing_shards.clone();
        event.request_id = search_id.clone();
        let audit_leaf_index = self.audit(event, format!("identify:{search_id}")).await?;

        Ok(IdentifyResponse {
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
        })
    }

    /// The subject's score on the shard that holds it under `gallery`'s settings.
    async fn score_on_shard(
        &self,
        gallery: &Gallery,
        subject: &SubjectId,
        probe: &[f32],
        min_change_seq: u64,
    ) -> Result<ShardScoreResponse, Status> {
        let shard = shard_of(subject, gallery.shard_count);
        let message = ShardScoreRequest {
            shard: Some(ShardRef { gallery: gallery.name.to_string(), shard }),
            subject_id: subject.to_string(),
            probe: Some(QueryVector { values: probe.to_vec() }),
            min_change_seq,
        };
        let token = self.creds.token();
        self.router
            .ask(gallery.name.as_str(), shard, &token, |mut matcher| {
                let mut call = biomatch_client::request(message.clone(), &token);
                call.set_timeout(self.shard_timeout);
                async move { matcher.score(call).await }
            })
            .await
    }

    pub(crate) async fn verify_request(
        &self,
        principal: &Principal,
        request: VerifyRequest,
    ) -> Result<VerifyResponse, Status> {
        let VerifyRequest {
            gallery: name,
            subject_id,
            probe,
            threshold: requested,
            purpose,
            case_ref,
            min_change_seq,
        } = request;
        crate::bounded_fields(&name, &purpose, &case_ref)?;
        self.spend_budget(principal, &name).await?;
        let mut settings = self.settings(&name).await?;
        let mut admitted = self.admit(principal, &settings.gallery, &purpose, (1, requested)).await?;
        self.check_probe_kind(principal, &settings.gallery, probe.as_ref()).await?;
        let subject = SubjectId::parse(&subject_id).map_err(|e| biomatch_proto::status_from(&e))?;
        let probe = self.probe(&settings.gallery, probe).await?;
        let mut scored =
            self.score_on_shard(&settings.gallery, &subject, probe.template.values(), min_change_seq).await;
        let outdated = match &scored {
            Ok(answer) => settings.outdated_by(answer.settings_seq),
            Err(status) => settings.cached && router::retryable(status),
        };
        if outdated {
            settings = self.reread(&name, &probe).await?;
            admitted = self.admit(principal, &settings.gallery, &purpose, (1, requested)).await?;
            scored = self
                .score_on_shard(&settings.gallery, &subject, probe.template.values(), min_change_seq)
                .await;
        }
        let scored = scored?;
        let gallery = &settings.gallery;
        let Admitted { floor, threshold, .. } = admitted;
        let verification_id = answer_id();
        let mut event = base_event(principal, Operation::Verify, gallery, &probe);
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
        let score = disclosure::verify_score(disclosure::Sees::of(principal), scored.score, floor);
        event.candidates = vec![ScoredSubject { subject_id: subject_id.clone(), score: scored.score }];
        event.decision = decision.as_str().to_owned();
        let audit_leaf_index = self.audit(event, format!("verify:{verification_id}")).await?;

        Ok(VerifyResponse {
            verification_id,
            decision: biomatch_proto::decision_to_proto(decision).into(),
            score,
            threshold,
            model_id: probe.model_id,
            model_version: probe.model_version,
            audit_leaf_index,
            probe_quality: probe.quality,
        })
    }
}
