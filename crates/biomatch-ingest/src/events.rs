//! Audit events of the ingest role.

use biomatch_client::actor;
use biomatch_domain::{Gallery, Principal};
use biomatch_proto::v1::{AuditEvent, Operation};
use biomatch_store::GalleryRecord;

pub(crate) fn gallery_event(
    principal: &Principal,
    operation: Operation,
    gallery: &GalleryRecord,
) -> AuditEvent {
    AuditEvent {
        actor: Some(actor(principal)),
        operation: operation.into(),
        gallery: gallery.settings.name.to_string(),
        model_id: gallery.settings.model_id.clone(),
        model_version: gallery.settings.model_version.clone(),
        threshold: Some(gallery.settings.threshold),
        threshold_version: gallery.settings.threshold_version,
        outcome: "OK".into(),
        ..Default::default()
    }
}

/// The intent to create a gallery with `spec`.
pub(crate) fn create_intent(
    principal: &Principal,
    spec: &Gallery,
    policy: Option<&biomatch_domain::ThresholdPolicy>,
) -> AuditEvent {
    AuditEvent {
        actor: Some(actor(principal)),
        operation: Operation::CreateGallery.into(),
        gallery: spec.name.to_string(),
        model_id: spec.model_id.clone(),
        model_version: spec.model_version.clone(),
        threshold: Some(spec.threshold),
        threshold_version: 1,
        detail: format!(
            "create: dimension {}, {} shard(s), purposes [{}], retention {} s, threshold {}",
            spec.dimension,
            spec.shard_count,
            spec.allowed_purposes.join(","),
            spec.retention_seconds,
            policy.map_or_else(|| format!("{} (fixed)", spec.threshold), |p| p.describe(spec.threshold)),
        ),
        ..Default::default()
    }
}

/// A change of gallery `name` known only by its name (a replayed deletion: the row is gone).
pub(crate) fn named_gallery_event(principal: &Principal, operation: Operation, name: &str) -> AuditEvent {
    AuditEvent {
        actor: Some(actor(principal)),
        operation: operation.into(),
        gallery: name.to_owned(),
        outcome: "OK".into(),
        ..Default::default()
    }
}

pub(crate) fn purge_event(principal: &Principal, gallery: &str, subject_ids: Vec<String>) -> AuditEvent {
    AuditEvent {
        actor: Some(actor(principal)),
        operation: Operation::Purge.into(),
        gallery: gallery.to_owned(),
        subject_ids,
        detail: "retention ended".into(),
        outcome: "OK".into(),
        ..Default::default()
    }
}

pub(crate) fn enroll_event(
    principal: &Principal,
    gallery: &GalleryRecord,
    subject_ids: Vec<String>,
) -> AuditEvent {
    AuditEvent {
        actor: Some(actor(principal)),
        operation: Operation::Enroll.into(),
        gallery: gallery.settings.name.to_string(),
        model_id: gallery.settings.model_id.clone(),
        model_version: gallery.settings.model_version.clone(),
        subject_ids,
        outcome: "OK".into(),
        ..Default::default()
    }
}
