//! One enrolment made ready for the store: validated, its idempotency key bound to the request,
//! its samples resolved to templates and sealed under the gallery's data key.

use crate::custody::digest;
use crate::{IngestServer, validate};
use biomatch_client::GalleryModel;
use biomatch_domain::limits::{MAX_IDEMPOTENCY_KEY_BYTES, bounded};
use biomatch_domain::{ErrorClass, Principal, shard_of};
use biomatch_proto::v1::EnrollRequest;
use biomatch_proto::{status_from, status_with};
use biomatch_store::{EnrollWrite, GalleryRecord, Idempotency};
use prost::Message;
use std::collections::HashMap;
use tonic::Status;

impl IngestServer {
    /// The gallery `name` for a stream's group, looked up (and its scope checked) the first time
    /// the group names it. A failed lookup is not remembered, so a passing fault fails only the
    /// items it met.
    pub(crate) async fn group_gallery<'a>(
        &self,
        galleries: &'a mut HashMap<String, GalleryRecord>,
        principal: &Principal,
        name: &str,
    ) -> Result<&'a GalleryRecord, Status> {
        if !galleries.contains_key(name) {
            let gallery = self.gallery(principal, name).await?;
            galleries.insert(name.to_owned(), gallery);
        }
        Ok(&galleries[name])
    }

    /// Validates one enrolment into a write for the store.
    pub(crate) async fn prepare(
        &self,
        gallery: &GalleryRecord,
        request: EnrollRequest,
        key_check: KeyCheck,
    ) -> Result<EnrollWrite, Status> {
        let EnrollRequest { gallery: _, subject_id, samples, mode, idempotency_key } = request;
        let (subject, replace) = validate::enrolment(&gallery.settings, &subject_id, mode, samples.len())?;
        // The key is bound to gallery, subject, mode and the samples; a reuse with another body is
        // refused before any audit leaf (here, or by the batch for its whole group), and again by
        // the store's transaction.
        let request_digest = || {
            let samples: Vec<u8> = samples.iter().flat_map(Message::encode_length_delimited_to_vec).collect();
            let samples = digest(&[&samples]);
            let mode: &[u8] = if replace { b"replace" } else { b"add" };
            digest(&[
                gallery.settings.name.as_str().as_bytes(),
                subject.as_str().as_bytes(),
                mode,
                samples.as_bytes(),
            ])
        };
        let idempotency = match key_check {
            KeyCheck::Now => self.idempotency("enroll", &idempotency_key, request_digest).await?.0,
            KeyCheck::ByGroup => bind_key("enroll", &idempotency_key, request_digest)?,
        };
        let model = GalleryModel::from(&gallery.settings);
        let key = self.keys.get(&gallery.key_ref).map_err(|e| {
            tracing::error!(error = %e, gallery = %gallery.settings.name, "gallery data key unavailable");
            match e {
                // A store restored from before the gallery's deletion: final, not worth a retry.
                biomatch_crypto::CryptoError::Destroyed(_) => status_with(
                    ErrorClass::FailedPrecondition,
                    "the gallery's data key was destroyed (the gallery was deleted)",
                ),
                _ => status_with(ErrorClass::Unavailable, "the gallery's data key is unavailable"),
            }
        })?;
        let context = biomatch_crypto::template_context(&gallery.key_ref, subject.as_str());
        let mut sealed_templates = Vec::with_capacity(samples.len());
        for sample in samples {
            let resolved = biomatch_client::resolve_probe(
                &self.embed,
                &self.creds,
                Some(sample),
                &model,
                self.face_rule,
            )
            .await?;
            sealed_templates.push(key.seal(&resolved.template.to_le_bytes(), &context));
        }
        Ok(EnrollWrite {
            shard: shard_of(&subject, gallery.settings.shard_count),
            subject,
            model_id: gallery.settings.model_id.clone(),
            sealed_templates,
            replace,
            idempotency,
        })
    }
}

/// When an enrolment's idempotency key is checked against the store, before its intent leaf.
#[derive(Clone, Copy)]
pub(crate) enum KeyCheck {
    /// While the enrolment is prepared: one read for one request.
    Now,
    /// By [`crate::batch::Batch::flush`], one read for a whole group of a stream.
    ByGroup,
}

/// A request's idempotency record, its key (bounded) bound to the request's digest; `None`
/// without a key. Nothing is read.
pub(crate) fn bind_key(
    kind: &str,
    idempotency_key: &str,
    request_digest: impl FnOnce() -> String,
) -> Result<Option<Idempotency>, Status> {
    bounded("idempotency_key", idempotency_key, MAX_IDEMPOTENCY_KEY_BYTES).map_err(|e| status_from(&e))?;
    Ok((!idempotency_key.is_empty())
        .then(|| Idempotency { key: format!("{kind}:{idempotency_key}"), request_hash: request_digest() }))
}
