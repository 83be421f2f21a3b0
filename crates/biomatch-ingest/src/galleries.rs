//! Store records to wire messages.

use biomatch_proto::v1::{Gallery, Subject};
use biomatch_proto::{index_spec_to_proto, timestamp_from_millis as timestamp};
use biomatch_store::{GalleryCounts, GalleryRecord, SubjectRecord};

pub(crate) fn to_proto(g: &GalleryRecord, counts: GalleryCounts) -> Gallery {
    Gallery {
        name: g.name.clone(),
        dimension: g.dimension,
        shard_count: g.shard_count,
        index: Some(index_spec_to_proto(&g.index)),
        model_id: g.model_id.clone(),
        model_version: g.model_version.clone(),
        threshold: g.threshold,
        allowed_purposes: g.allowed_purposes.clone(),
        retention: Some(prost_types::Duration { seconds: g.retention_seconds, nanos: 0 }),
        default_k: g.default_k,
        subject_count: counts.subjects,
        template_count: counts.templates,
        created_at: Some(timestamp(g.created_at_ms)),
        threshold_version: g.threshold_version,
    }
}

pub(crate) fn subject_to_proto(g: &GalleryRecord, s: &SubjectRecord) -> Subject {
    Subject {
        gallery: g.name.clone(),
        subject_id: s.subject_id.clone(),
        template_count: s.template_count,
        shard: s.shard,
        enrolled_at: Some(timestamp(s.created_at_ms)),
        updated_at: Some(timestamp(s.updated_at_ms)),
        expires_at: s.expires_at_ms.map(timestamp),
        model_id: s.model_id.clone(),
    }
}
