//! Audit events of the ingest role.

use biomatch_client::actor;
use biomatch_domain::Principal;
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
        gallery: gallery.name.clone(),
        model_id: gallery.model_id.clone(),
        model_version: gallery.model_version.clone(),
        threshold: Some(gallery.threshold),
        threshold_version: gallery.threshold_version,
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
        gallery: gallery.name.clone(),
        model_id: gallery.model_id.clone(),
        model_version: gallery.model_version.clone(),
        subject_ids,
        outcome: "OK".into(),
        ..Default::default()
    }
}
