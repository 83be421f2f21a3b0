//! Store records to wire messages.

use biomatch_proto::timestamp_from_millis as timestamp;
use biomatch_proto::v1::{Gallery, Subject};
use biomatch_store::{GalleryCounts, GalleryRecord, SubjectRecord};

pub(crate) fn to_proto(g: &GalleryRecord, counts: GalleryCounts) -> Gallery {
    biomatch_proto::gallery_to_proto(&g.settings, counts.subjects, counts.templates)
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
