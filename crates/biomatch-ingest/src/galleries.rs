//! Store records to wire messages.

use biomatch_proto::timestamp_from_millis as timestamp;
use biomatch_proto::v1::{Gallery, Subject};
use biomatch_store::{GalleryCounts, GalleryRecord, SubjectRecord};

pub(crate) fn to_proto(g: &GalleryRecord, counts: GalleryCounts) -> Gallery {
    let mut gallery = biomatch_proto::gallery_to_proto(&g.settings, counts.subjects, counts.templates);
    gallery.tuning = g.tuning.as_ref().map(biomatch_proto::search_tuning_to_proto);
    gallery.threshold_policy = g.threshold_policy.as_ref().map(biomatch_proto::threshold_policy_to_proto);
    gallery
}

pub(crate) fn subject_to_proto(g: &GalleryRecord, s: &SubjectRecord) -> Subject {
    Subject {
        gallery: g.settings.name.to_string(),
        subject_id: s.subject_id.clone(),
        template_count: s.template_count,
        shard: s.shard,
        enrolled_at: Some(timestamp(s.created_at_ms)),
        updated_at: Some(timestamp(s.updated_at_ms)),
        expires_at: s.expires_at_ms.map(timestamp),
        model_id: s.model_id.clone(),
    }
}

impl crate::IngestServer {
    /// Makes a data key, then the gallery under it (no gallery is ever without its key). A
    /// failure at either step is recorded as the refusal of the intended creation, so its intent
    /// leaf is concluded.
    pub(crate) async fn create_new_gallery(
        &self,
        principal: &biomatch_domain::Principal,
        spec: &biomatch_domain::Gallery,
        policy: Option<&biomatch_domain::ThresholdPolicy>,
        custody: &crate::custody::Custody,
        idempotency: Option<&biomatch_store::Idempotency>,
    ) -> Result<GalleryRecord, tonic::Status> {
        let key_ref = uuid::Uuid::new_v4().simple().to_string();
        if let Err(e) = self.keys.create(&key_ref) {
            tracing::error!(error = %e, "cannot create a gallery data key");
            let status = match biomatch_domain::Classified::class(&e) {
                class @ biomatch_domain::ErrorClass::ResourceExhausted => biomatch_proto::status_with(
                    class,
                    "storage is full: the gallery's data key could not be written; nothing was created",
                ),
                _ => biomatch_proto::status_with(
                    biomatch_domain::ErrorClass::Unavailable,
                    "cannot create the gallery's data key",
                ),
            };
            return Err(self
                .refused(custody, crate::events::create_intent(principal, spec, policy), status)
                .await);
        }
        let created = self.store.create_gallery(spec, policy, &key_ref, idempotency, (self.clock)());
        match custody.attempt(created).await {
            Ok(written) if !written.replayed => Ok(written.value),
            // A concurrent attempt with the same key made the gallery: this key is not needed.
            Ok(written) => {
                self.discard_key(&key_ref);
                Ok(written.value)
            }
            Err(e) => {
                let status = biomatch_proto::status_from(&e);
                if status.code() == tonic::Code::Unavailable {
                    // The store may have committed though its answer was lost: a retry would
                    // then find its gallery's key shredded for good. Kept, unused; an orphan
                    // key opens nothing.
                    tracing::warn!("gallery creation's outcome unknown; its new data key is kept");
                } else {
                    self.discard_key(&key_ref);
                }
                Err(self
                    .refused(custody, crate::events::create_intent(principal, spec, policy), status)
                    .await)
            }
        }
    }

    fn discard_key(&self, key_ref: &str) {
        if let Err(e) = self.keys.destroy(key_ref) {
            tracing::warn!(error = %e, "an unused gallery data key could not be destroyed");
        }
    }
}
