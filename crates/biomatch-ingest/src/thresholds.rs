//! A gallery's decision threshold: set by an administrator (`SetThreshold`), or derived from a
//! target FPIR and the gallery's size ([`biomatch_domain::ThresholdPolicy`]) and derived again,
//! by this role on a schedule, whenever the gallery has doubled. Every change is audited before
//! it takes effect (an intent leaf naming the old and new threshold and the evidence, then the
//! outcome) and reaches searches through the change log.
//!
//! A scheduled re-derivation never undoes a change made while it was deriving, by an
//! administrator or by another ingest replica's re-derivation: the store applies it only while
//! the gallery's policy is still the one it derived from (`only_if`), and it leaves a gallery
//! whose policy changed meanwhile alone (its intent leaf is followed by a refused outcome).

use crate::custody::Custody;
use crate::{IngestServer, events, validate};
use biomatch_domain::limits::{MAX_REASON_BYTES, bounded};
use biomatch_domain::{ErrorClass, Gallery, ImpostorTail, Principal, ThresholdPolicy};
use biomatch_proto::v1::{self, Operation, SetThresholdRequest};
use biomatch_proto::{status_from, status_with};
use biomatch_store::GalleryRecord;
use std::sync::Arc;
use tonic::Status;

/// A request's policy as a target and the impostor distribution to read it from: the request's
/// own, or the one shipped for the gallery's model. Either must be of the gallery's model.
pub(crate) fn requested_policy(
    gallery: &Gallery,
    policy: v1::ThresholdPolicy,
) -> Result<(f64, ImpostorTail), Status> {
    let invalid = |what: String| status_with(ErrorClass::InvalidArgument, what);
    let impostor = match policy.impostor {
        Some(tail) => biomatch_proto::impostor_tail_from_proto(tail),
        None => biomatch_domain::builtin_impostor_tail(&gallery.model_id, &gallery.model_version)
            .ok_or_else(|| {
                invalid(format!(
                    "no impostor distribution is known for model {} version {}: pass one measured \
                     by `biomatch eval --impostor-tail-out`",
                    gallery.model_id, gallery.model_version
                ))
            })?,
    };
    // A gallery that names no model version holds whichever version of its model is in use.
    let version_fits = gallery.model_version.is_empty() || impostor.model_version == gallery.model_version;
    if impostor.model_id != gallery.model_id || !version_fits {
        return Err(invalid(format!(
            "the impostor distribution is of model {} version {}, the gallery's is {} version {}",
            impostor.model_id, impostor.model_version, gallery.model_id, gallery.model_version
        )));
    }
    impostor.check().map_err(|e| status_from(&e))?;
    Ok((policy.target_fpir, impostor))
}

/// The threshold for `target_fpir` at `templates`, and the policy with its evidence.
pub(crate) fn derive(
    target_fpir: f64,
    impostor: ImpostorTail,
    templates: u64,
    now_ms: i64,
) -> Result<(f32, ThresholdPolicy), Status> {
    ThresholdPolicy::derive(target_fpir, impostor, templates, now_ms).map_err(|e| status_from(&e))
}

impl IngestServer {
    pub(crate) async fn set_threshold_request(
        &self,
        principal: &Principal,
        request: SetThresholdRequest,
    ) -> Result<v1::Gallery, Status> {
        let SetThresholdRequest { gallery, threshold, reason, policy } = request;
        bounded("reason", &reason, MAX_REASON_BYTES).map_err(|e| status_from(&e))?;
        let before = self.gallery(principal, &gallery).await?;
        let (threshold, policy) = match policy {
            Some(_) if threshold != 0.0 => {
                return Err(status_with(
                    ErrorClass::InvalidArgument,
                    "give a threshold or a policy to derive it from, not both",
                ));
            }
            Some(policy) => {
                let (target, impostor) = requested_policy(&before.settings, policy)?;
                let counts = self.store.gallery_counts(before.id).await.map_err(|e| status_from(&e))?;
                let (threshold, policy) = derive(target, impostor, counts.templates, (self.clock)())?;
                (threshold, Some(policy))
            }
            None => (validate::threshold(threshold)?, None),
        };
        let after = self.change_threshold(principal, &before, threshold, policy, None, &reason).await?;
        let mut gallery = self.counted(&after).await?;
        // A search that passes this as `min_change_seq` is answered under the new threshold.
        gallery.settings_seq = self.store.head_seq().await.map_err(|e| status_from(&e))?;
        Ok(gallery)
    }

    /// Sets the threshold and its policy: intent leaf, store, outcome leaf. With `only_if`, only
    /// while the stored policy is still that one (FAILED_PRECONDITION otherwise, audited).
    async fn change_threshold(
        &self,
        principal: &Principal,
        before: &GalleryRecord,
        threshold: f32,
        policy: Option<ThresholdPolicy>,
        only_if: Option<&ThresholdPolicy>,
        reason: &str,
    ) -> Result<GalleryRecord, Status> {
        let name = &before.settings.name;
        let how = match &policy {
            Some(p) => p.describe(threshold),
            None => "fixed".into(),
        };
        let mut intent = events::gallery_event(principal, Operation::SetThreshold, before);
        intent.threshold = Some(threshold);
        intent.detail = format!(
            "threshold {} (version {}) -> {threshold} ({how}): {reason}",
            before.settings.threshold, before.settings.threshold_version
        );
        let custody = Custody::fresh("set-threshold");
        self.intent(&custody, intent.clone()).await?;
        let stored = custody
            .attempt(self.store.set_threshold(name, threshold, policy.as_ref(), only_if, (self.clock)()))
            .await;
        let after = match stored {
            Ok(after) => after,
            Err(e) => return Err(self.refused(&custody, intent, status_from(&e)).await),
        };
        let mut event = events::gallery_event(principal, Operation::SetThreshold, &after);
        event.detail = format!(
            "threshold {} (version {}) -> {} (version {}; {how}): {reason}",
            before.settings.threshold,
            before.settings.threshold_version,
            after.settings.threshold,
            after.settings.threshold_version
        );
        // One outcome record per change: a call that changes nothing (the same threshold and
        // policy again) re-appends under the same key. The key names the policy before and
        // after, so ending a policy at an unchanged threshold is a change of its own.
        let derived_at = |p: &Option<ThresholdPolicy>| p.as_ref().map_or(0, |p| p.derived_at_ms);
        let custody = custody.with_outcome_key(format!(
            "set-threshold:{}:{}:{}:{}",
            after.id,
            after.settings.threshold_version,
            derived_at(&before.threshold_policy),
            derived_at(&after.threshold_policy)
        ));
        self.outcome(&custody, event).await?;
        Ok(after)
    }

    /// Derives again the threshold of every gallery with a policy that has doubled since its last
    /// derivation; answers how many were derived again. One gallery's failure does not hold up
    /// the others: the first error is answered after all were tried.
    pub async fn review_thresholds(&self, actor: &Principal) -> Result<u32, Status> {
        let galleries = self.store.galleries().await.map_err(|e| status_from(&e))?;
        let mut derived = 0;
        let mut first_error = None;
        for current in galleries {
            match self.review_threshold(actor, &current).await {
                Ok(true) => derived += 1,
                Ok(false) => {}
                Err(status) => {
                    tracing::warn!(gallery = %current.settings.name, code = ?status.code(), "threshold review failed");
                    first_error.get_or_insert(status);
                }
            }
        }
        first_error.map_or(Ok(derived), Err)
    }

    /// Derives one gallery's threshold again if it has a policy and has doubled; whether it did.
    async fn review_threshold(&self, actor: &Principal, current: &GalleryRecord) -> Result<bool, Status> {
        let Some(policy) = current.threshold_policy.clone() else { return Ok(false) };
        let counts = self.store.gallery_counts(current.id).await.map_err(|e| status_from(&e))?;
        if !policy.needs_rederiving(counts.templates) {
            return Ok(false);
        }
        let (threshold, derived_policy) =
            derive(policy.target_fpir, policy.impostor.clone(), counts.templates, (self.clock)())?;
        if derived_policy.unattainable {
            // Capped at 1.0 the gallery effectively never matches: fail closed, loudly.
            tracing::error!(
                gallery = %current.settings.name,
                templates = counts.templates,
                "the model cannot keep this gallery's target FPIR at its size: threshold capped at 1.0"
            );
            metrics::counter!("biomatch_threshold_unattainable_total").increment(1);
        }
        let reason = format!("the gallery has doubled to {} templates", counts.templates);
        let changed =
            self.change_threshold(actor, current, threshold, Some(derived_policy), Some(&policy), &reason);
        match changed.await {
            Ok(_) => Ok(true),
            // Changed meanwhile: the next review reads the new policy.
            Err(status) if status.code() == tonic::Code::FailedPrecondition => Ok(false),
            Err(status) => Err(status),
        }
    }

    /// Reviews thresholds on a schedule, as this role's own service principal.
    pub async fn threshold_review_loop(self: Arc<Self>, interval: std::time::Duration) {
        let me = self.creds.principal();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.review_thresholds(&me).await {
                Ok(n) if n > 0 => {
                    tracing::info!(galleries = n, "thresholds derived again for grown galleries")
                }
                Ok(_) => {}
                Err(status) => {
                    tracing::warn!(code = ?status.code(), "threshold review failed, retrying later")
                }
            }
        }
    }
}
