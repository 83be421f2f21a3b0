//! The ingest role: [`IngestServer`] implements `IngestService`, the only writer of the gallery
//! store. Which roles may call each RPC is the authorization table's rule
//! ([`biomatch_auth::policy`]), applied before a handler runs; handlers check the token's scopes.
//!
//! Every change is audited before it takes effect (see [`custody`]): an enrolment is validated
//! (field lengths, gallery, subject id, dimension, finite values, one model per gallery), named in
//! an intent leaf committed to the audit log, written with its change-log entry in one transaction,
//! recorded in an outcome leaf, and only then acknowledged. Idempotency keys make retries safe: the
//! stored record binds the key to a digest of the request, so the same key with the same body
//! returns the first answer (and re-appends its leaves under the same audit keys, which the audit
//! log de-duplicates), and the same key with another body is `INVALID_ARGUMENT` with nothing
//! changed and nothing appended.
#![forbid(unsafe_code)]

mod batch;
mod custody;
mod enrolment;
mod events;
mod galleries;
mod purge;
mod settle;
mod thresholds;
mod tuning;
mod validate;

use biomatch_auth::ServiceCredentials;
use biomatch_client::Transport;
use biomatch_client::budget::Budgets;
use biomatch_client::{AuditUnavailable, FaceRule};
use biomatch_crypto::KeyStore;
use biomatch_domain::{Clock, ErrorClass, Principal, SubjectId};
use biomatch_proto::v1::audit_service_client::AuditServiceClient;
use biomatch_proto::v1::embed_service_client::EmbedServiceClient;
use biomatch_proto::v1::ingest_service_server::IngestService;
use biomatch_proto::v1::{
    AuditEvent, BatchEnrollResponse, CreateGalleryRequest, DeleteGalleryRequest, DeleteGalleryResponse,
    DeleteSubjectRequest, DeleteSubjectResponse, EnrollFailure, EnrollRequest, EnrollResponse, Gallery,
    GetGalleryRequest, GetSubjectRequest, ListGalleriesRequest, ListGalleriesResponse, Operation,
    PurgeExpiredRequest, PurgeExpiredResponse, SetSearchTuningRequest, SetThresholdRequest, Subject,
};
use biomatch_proto::{status_from, status_with};
use biomatch_store::{GalleryCounts, GalleryRecord, GalleryStore, Idempotency, StoreError};
use custody::{Custody, digest};
use enrolment::{KeyCheck, bind_key};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// Items of a batch stream written per transaction (and named per audit leaf pair): a group's
/// fixed cost, two durable audit appends and a commit, is paid once per this many enrolments;
/// 2048 sealed 512-d templates are about 4 MiB held in memory.
const BATCH_CHUNK: usize = 2048;

pub struct IngestServer {
    store: Arc<dyn GalleryStore>,
    audit: AuditServiceClient<Transport>,
    embed: EmbedServiceClient<Transport>,
    /// Wakes in-process matchers after a commit; others poll or listen elsewhere.
    changed: Arc<Notify>,
    clock: Clock,
    creds: Arc<ServiceCredentials>,
    keys: Arc<dyn KeyStore>,
    /// Enrolment photos need exactly one face of at least this quality.
    face_rule: FaceRule,
    subject_reads: Option<Arc<Budgets>>,
    /// Changes refused while their fate was unknown, to settle once the store answers.
    unsettled: settle::UnsettledChanges,
}

impl IngestServer {
    pub fn new(
        store: Arc<dyn GalleryStore>,
        audit: AuditServiceClient<Transport>,
        embed: EmbedServiceClient<Transport>,
        changed: Arc<Notify>,
        clock: Clock,
        creds: Arc<ServiceCredentials>,
        keys: Arc<dyn KeyStore>,
    ) -> Self {
        let face_rule = FaceRule::Single { min_quality: 0.5 };
        let unsettled = settle::UnsettledChanges::default();
        Self { store, audit, embed, changed, clock, creds, keys, face_rule, subject_reads: None, unsettled }
    }

    /// Spends a query of the caller's budget on every subject read (`GetSubject` tells whether
    /// someone is enrolled, as a verify does).
    pub fn with_subject_read_budget(mut self, budgets: Arc<Budgets>) -> Self {
        self.subject_reads = Some(budgets);
        self
    }

    /// The overall face quality (0..1) below which an enrolment photo is refused (default 0.5).
    pub fn with_min_enroll_quality(mut self, min_quality: f32) -> Self {
        self.face_rule = FaceRule::Single { min_quality };
        self
    }

    /// The gallery `name`, when the caller's token covers it (an enroller scoped to gallery A
    /// does not touch B); a refusal is audited.
    async fn gallery(&self, principal: &Principal, name: &str) -> Result<GalleryRecord, Status> {
        let name = validate::gallery_name(name)?;
        self.in_scope(principal, name.as_str()).await?;
        self.store.gallery(&name).await.map_err(|e| status_from(&e))
    }

    /// Refuses, with an audited refusal, a gallery outside the caller's token.
    async fn in_scope(&self, principal: &Principal, gallery: &str) -> Result<(), Status> {
        if principal.may_use_gallery(gallery) {
            return Ok(());
        }
        let what = format!("this token does not cover gallery {gallery}");
        Err(biomatch_client::deny(&self.audit, &self.creds, principal, gallery, what).await)
    }

    /// The gallery as shown to readers, with its counts.
    async fn counted(&self, record: &GalleryRecord) -> Result<Gallery, Status> {
        let counts = self.store.gallery_counts(record.id).await.map_err(|e| status_from(&e))?;
        Ok(galleries::to_proto(record, counts))
    }

    async fn audit(&self, event: AuditEvent, key: String) -> Result<u64, AuditUnavailable> {
        biomatch_client::append_audit(&self.audit, &self.creds, event, key).await.map(|r| r.leaf_index)
    }

    /// Commits the intent leaf of a change; nothing may change unless this succeeds.
    async fn intent(&self, custody: &Custody, event: AuditEvent) -> Result<u64, Status> {
        let (event, key) = custody.intent(event);
        Ok(self.audit(event, key).await?)
    }

    /// Commits the outcome leaf of a change.
    async fn outcome(&self, custody: &Custody, event: AuditEvent) -> Result<u64, Status> {
        let (event, key) = custody.outcome(event);
        Ok(self.audit(event, key).await?)
    }

    /// Records, best effort, that an intended change was refused; returns the refusal.
    async fn refused(&self, custody: &Custody, event: AuditEvent, status: Status) -> Status {
        if status.code() == tonic::Code::ResourceExhausted {
            // Only the gallery store or the key store refuse a change for want of space.
            metrics::counter!("biomatch_storage_full_total", "store" => "gallery").increment(1);
            tracing::error!("gallery storage is full: changes are refused until space is freed");
        }
        let (refusal, key) = custody.refusal(event.clone(), &status);
        if refusal.outcome == biomatch_auditlog::intents::INDETERMINATE {
            self.unsettled.push(custody.clone(), event);
        }
        if let Err(e) = self.audit(refusal, key).await {
            tracing::warn!(error = %e, "the refusal of an intended change could not be audited");
        }
        status
    }

    /// The idempotency record of a request: its key (bounded) bound to the request's digest, or
    /// `None` without a key; and whether the same request already used it (a replay). A key
    /// already used with another body is `INVALID_ARGUMENT`.
    async fn idempotency(
        &self,
        kind: &str,
        idempotency_key: &str,
        request_digest: impl FnOnce() -> String,
    ) -> Result<(Option<Idempotency>, bool), Status> {
        let Some(idem) = bind_key(kind, idempotency_key, request_digest)? else {
            return Ok((None, false));
        };
        let replay = self.store.idempotent_response(&idem).await.map_err(|e| status_from(&e))?.is_some();
        Ok((Some(idem), replay))
    }
}

#[tonic::async_trait]
impl IngestService for IngestServer {
    async fn create_gallery(
        &self,
        request: Request<CreateGalleryRequest>,
    ) -> Result<Response<Gallery>, Status> {
        let principal = biomatch_auth::principal(&request)?;
        let mut request = request.into_inner();
        let idempotency_key = std::mem::take(&mut request.idempotency_key);
        // The key is bound to the whole request: reused for another gallery, it creates nothing.
        let request_digest = digest(&[&prost::Message::encode_to_vec(&request)]);
        let policy = request.threshold_policy.take();
        if policy.is_some() && request.threshold.is_some() {
            return Err(status_with(
                ErrorClass::InvalidArgument,
                "give a threshold or a target FPIR to derive it from, not both",
            ));
        }
        let mut spec = validate::gallery_spec(request)?;
        // A new gallery's threshold is derived for the smallest size a policy considers.
        let policy = match policy {
            Some(policy) => {
                let (target, impostor) = thresholds::requested_policy(&spec, policy)?;
                let (threshold, policy) = thresholds::derive(target, impostor, 0, (self.clock)())?;
                spec.threshold = threshold;
                Some(policy)
            }
            None => None,
        };
        self.in_scope(&principal, spec.name.as_str()).await?;
        let (idem, replay) = self.idempotency("create-gallery", &idempotency_key, || request_digest).await?;
        let custody = Custody::of("create-gallery", idem.as_ref());
        self.intent(&custody, events::create_intent(&principal, &spec, policy.as_ref())).await?;
        let record = if replay {
            // The first attempt made the gallery: answer it and record the outcome it may have
            // missed. Deleted since, it is NOT_FOUND, and the creation stays on the record as made.
            let now = (self.clock)();
            let written = self.store.create_gallery(&spec, policy.as_ref(), "", idem.as_ref(), now).await;
            written.map_err(|e| status_from(&e))?.value
        } else {
            self.create_new_gallery(&principal, &spec, policy.as_ref(), &custody, idem.as_ref()).await?
        };
        self.changed.notify_one();
        let event = events::gallery_event(&principal, Operation::CreateGallery, &record);
        self.outcome(&custody, event).await?;
        let mut gallery = galleries::to_proto(&record, GalleryCounts::default());
        // A position at or after the creation: a search passing it as `min_change_seq` waits for
        // matchers that have not yet seen the new gallery.
        gallery.settings_seq = self.store.head_seq().await.map_err(|e| status_from(&e))?;
        Ok(Response::new(gallery))
    }

    async fn get_gallery(&self, request: Request<GetGalleryRequest>) -> Result<Response<Gallery>, Status> {
        let principal = biomatch_auth::principal(&request)?;
        let GetGalleryRequest { name, settings_only } = request.into_inner();
        // Read before the settings: they are current at least as of this position, which the
        // search role's cache compares with what the matchers report.
        let settings_seq = self.store.head_seq().await.map_err(|e| status_from(&e))?;
        let record = self.gallery(&principal, &name).await?;
        let mut gallery = match settings_only {
            true => galleries::to_proto(&record, GalleryCounts::default()),
            false => self.counted(&record).await?,
        };
        gallery.settings_seq = settings_seq;
        Ok(Response::new(gallery))
    }

    async fn list_galleries(
        &self,
        request: Request<ListGalleriesRequest>,
    ) -> Result<Response<ListGalleriesResponse>, Status> {
        let principal = biomatch_auth::principal(&request)?;
        let records = self.store.galleries().await.map_err(|e| status_from(&e))?;
        let mut shown = Vec::with_capacity(records.len());
        for record in records.iter().filter(|r| principal.may_use_gallery(r.settings.name.as_str())) {
            shown.push(self.counted(record).await?);
        }
        Ok(Response::new(ListGalleriesResponse { galleries: shown }))
    }

    async fn set_threshold(
        &self,
        request: Request<SetThresholdRequest>,
    ) -> Result<Response<Gallery>, Status> {
        let principal = biomatch_auth::principal(&request)?;
        Ok(Response::new(self.set_threshold_request(&principal, request.into_inner()).await?))
    }

    async fn set_search_tuning(
        &self,
        request: Request<SetSearchTuningRequest>,
    ) -> Result<Response<Gallery>, Status> {
        let principal = biomatch_auth::principal(&request)?;
        Ok(Response::new(self.set_search_tuning_request(&principal, request.into_inner()).await?))
    }

    async fn delete_gallery(
        &self,
        request: Request<DeleteGalleryRequest>,
    ) -> Result<Response<DeleteGalleryResponse>, Status> {
        let principal = biomatch_auth::principal(&request)?;
        let DeleteGalleryRequest { name, idempotency_key } = request.into_inner();
        let name = validate::gallery_name(&name)?;
        self.in_scope(&principal, name.as_str()).await?;
        // The key is bound to the gallery's name: reused for another gallery, it deletes nothing.
        let (idem, replay) = self
            .idempotency("delete-gallery", &idempotency_key, || digest(&[name.as_str().as_bytes()]))
            .await?;
        // A replay finds the gallery gone; its intent leaf is already in the log (the audit
        // key de-duplicates this one).
        let intent = if replay {
            events::named_gallery_event(&principal, Operation::DeleteGallery, name.as_str())
        } else {
            let record = self.gallery(&principal, name.as_str()).await?;
            events::gallery_event(&principal, Operation::DeleteGallery, &record)
        };
        let custody = Custody::of("delete-gallery", idem.as_ref());
        let mut detail = intent.clone();
        detail.detail = "delete every subject and template; destroy the data key".into();
        self.intent(&custody, detail).await?;
        let deleted =
            match custody.attempt(self.store.delete_gallery(&name, idem.as_ref(), (self.clock)())).await {
                Ok(deleted) => deleted,
                Err(e) => return Err(self.refused(&custody, intent, status_from(&e)).await),
            };
        self.changed.notify_one();
        // Crypto-shredding: without its data key no copy of the gallery's templates opens again.
        // (Destroying is idempotent, so a replay finishes a destruction that failed before.)
        let shredded = self.keys.destroy(&deleted.value.key_ref);
        if let Err(e) = &shredded {
            tracing::error!(error = %e, gallery = %name, "destroying the gallery data key failed");
        }
        let mut event = intent;
        event.detail = match shredded {
            Ok(()) => "rows deleted; data key destroyed".into(),
            Err(_) => "rows deleted; destroying the data key FAILED".into(),
        };
        let audit_leaf_index = self.outcome(&custody, event).await?;
        Ok(Response::new(DeleteGalleryResponse { change_seq: deleted.value.change_seq, audit_leaf_index }))
    }

    async fn enroll(&self, request: Request<EnrollRequest>) -> Result<Response<EnrollResponse>, Status> {
        let principal = biomatch_auth::principal(&request)?;
        let request = request.into_inner();
        let gallery = self.gallery(&principal, &request.gallery).await?;
        let write = self.prepare(&gallery, request, KeyCheck::Now).await?;
        let custody = Custody::of("enroll", write.idempotency.as_ref());
        let subject_ids = vec![write.subject.to_string()];
        let mut intent = events::enroll_event(&principal, &gallery, subject_ids.clone());
        intent.detail = format!(
            "{} {} template(s)",
            if write.replace { "replace with" } else { "add" },
            write.sealed_templates.len()
        );
        self.intent(&custody, intent.clone()).await?;
        let enrolled = self.store.enroll(&gallery, std::slice::from_ref(&write), (self.clock)());
        let written = match custody.attempt(enrolled).await {
            Ok(mut results) => results.pop().unwrap_or(Err(StoreError::Corrupt("no result".into()))),
            Err(e) => Err(e),
        };
        let written = match written {
            Ok(written) => written,
            Err(e) => return Err(self.refused(&custody, intent, status_from(&e)).await),
        };
        self.changed.notify_one();
        let mut event = events::enroll_event(&principal, &gallery, subject_ids);
        event.detail = format!(
            "{} template(s) added, {} held, change {}",
            written.value.templates_added, written.value.template_count, written.value.change_seq
        );
        let audit_leaf_index = self.outcome(&custody, event).await?;
        let v = written.value;
        Ok(Response::new(EnrollResponse {
            subject_id: v.subject_id,
            templates_added: v.templates_added,
            template_count: v.template_count,
            change_seq: v.change_seq,
            audit_leaf_index,
            replayed: written.replayed,
        }))
    }

    async fn batch_enroll(
        &self,
        request: Request<Streaming<EnrollRequest>>,
    ) -> Result<Response<BatchEnrollResponse>, Status> {
        let principal = biomatch_auth::principal(&request)?;
        let mut stream = request.into_inner();
        let mut batch = batch::Batch::default();
        // The group's galleries, each looked up once ([`Self::group_gallery`]), not per item: the
        // store's transaction checks again that it still exists.
        let mut galleries: HashMap<String, GalleryRecord> = HashMap::new();
        let mut index = 0u32;
        while let Some(item) = stream.next().await {
            let item = item?;
            let subject_id = item.subject_id.clone();
            match self.group_gallery(&mut galleries, &principal, &item.gallery).await {
                Ok(gallery) => match self.prepare(gallery, item, KeyCheck::ByGroup).await {
                    Ok(write) => batch.push(gallery, index, write),
                    Err(status) => batch.fail(index, subject_id, &status),
                },
                Err(status) => batch.fail(index, subject_id, &status),
            }
            index += 1;
            if batch.pending() >= BATCH_CHUNK || galleries.len() >= BATCH_CHUNK {
                batch.flush(self, &principal).await?;
                galleries.clear();
            }
        }
        batch.flush(self, &principal).await?;
        Ok(Response::new(batch.into_response()))
    }

    async fn delete_subject(
        &self,
        request: Request<DeleteSubjectRequest>,
    ) -> Result<Response<DeleteSubjectResponse>, Status> {
        let principal = biomatch_auth::principal(&request)?;
        let DeleteSubjectRequest { gallery, subject_id, idempotency_key } = request.into_inner();
        let gallery = self.gallery(&principal, &gallery).await?;
        let subject = SubjectId::parse(&subject_id).map_err(|e| status_from(&e))?;
        let (idem, _) = self
            .idempotency("delete", &idempotency_key, || {
                digest(&[gallery.settings.name.as_str().as_bytes(), subject.as_str().as_bytes()])
            })
            .await?;
        let custody = Custody::of("delete", idem.as_ref());
        let mut intent = events::enroll_event(&principal, &gallery, vec![subject.to_string()]);
        intent.operation = Operation::DeleteSubject.into();
        self.intent(&custody, intent.clone()).await?;
        let deleted = self.store.delete_subject(&gallery, &subject, idem.as_ref(), (self.clock)());
        let written = match custody.attempt(deleted).await {
            Ok(written) => written,
            Err(e) => return Err(self.refused(&custody, intent, status_from(&e)).await),
        };
        self.changed.notify_one();
        let mut event = intent;
        event.detail = format!("change {}", written.value);
        let audit_leaf_index = self.outcome(&custody, event).await?;
        Ok(Response::new(DeleteSubjectResponse { change_seq: written.value, audit_leaf_index }))
    }

    async fn get_subject(&self, request: Request<GetSubjectRequest>) -> Result<Response<Subject>, Status> {
        let principal = biomatch_auth::principal(&request)?;
        let GetSubjectRequest { gallery, subject_id } = request.into_inner();
        let gallery = self.gallery(&principal, &gallery).await?;
        let subject = SubjectId::parse(&subject_id).map_err(|e| status_from(&e))?;
        if let Some(budgets) = &self.subject_reads {
            let (name, now) = (gallery.settings.name.as_str(), (self.clock)());
            biomatch_client::budget::spend(budgets, &self.audit, &self.creds, &principal, name, now).await?;
        }
        let found = self.store.subject(&gallery, &subject).await.map_err(|e| status_from(&e));
        // Who looked up whom, and whether they are enrolled, is on the record before the answer.
        let mut event = events::enroll_event(&principal, &gallery, vec![subject.to_string()]);
        event.operation = Operation::SubjectRead.into();
        event.outcome =
            found.as_ref().err().map_or_else(|| "OK".to_owned(), |s| biomatch_proto::code_name(s.code()));
        self.audit(event, format!("subject-read:{}", uuid::Uuid::new_v4())).await?;
        Ok(Response::new(galleries::subject_to_proto(&gallery, &found?)))
    }

    async fn purge_expired(
        &self,
        request: Request<PurgeExpiredRequest>,
    ) -> Result<Response<PurgeExpiredResponse>, Status> {
        let principal = biomatch_auth::principal(&request)?;
        if principal.galleries.is_some() {
            let what = "purging every gallery needs a token not limited to some galleries".to_owned();
            return Err(biomatch_client::deny(&self.audit, &self.creds, &principal, "", what).await);
        }
        Ok(Response::new(IngestServer::purge_expired(self, &principal).await?))
    }
}

pub(crate) fn failure(index: u32, subject_id: String, status: &Status) -> EnrollFailure {
    EnrollFailure {
        index,
        subject_id,
        code: biomatch_proto::code_name(status.code()),
        message: status.message().to_owned(),
    }
}
