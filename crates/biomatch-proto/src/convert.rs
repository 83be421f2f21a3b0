//! Conversions between the wire types and the domain types. Every proto field is destructured, so
//! a field added to the contract does not compile until it is handled here.

use crate::v1;
use biomatch_domain::{Decision, Gallery, GalleryName, IndexKind, IndexSpec};

pub fn decision_to_proto(decision: Decision) -> v1::Decision {
    match decision {
        Decision::Mate => v1::Decision::Mate,
        Decision::NoMate => v1::Decision::NoMate,
    }
}

/// An unspecified decision (an old or empty answer) is no mate: never a match by default.
pub fn decision_from_proto(decision: v1::Decision) -> Decision {
    match decision {
        v1::Decision::Mate => Decision::Mate,
        v1::Decision::NoMate | v1::Decision::Unspecified => Decision::NoMate,
    }
}

pub fn index_kind_from_proto(kind: v1::IndexKind) -> IndexKind {
    match kind {
        v1::IndexKind::Unspecified | v1::IndexKind::Flat => IndexKind::Flat,
        v1::IndexKind::Hnsw => IndexKind::Hnsw,
        v1::IndexKind::IvfFlat => IndexKind::IvfFlat,
        v1::IndexKind::IvfSq8 => IndexKind::IvfSq8,
        v1::IndexKind::IvfPq => IndexKind::IvfPq,
        v1::IndexKind::PqRerank => IndexKind::PqRerank,
        v1::IndexKind::IvfRerank => IndexKind::IvfRerank,
    }
}

pub fn index_kind_to_proto(kind: IndexKind) -> v1::IndexKind {
    match kind {
        IndexKind::Flat => v1::IndexKind::Flat,
        IndexKind::Hnsw => v1::IndexKind::Hnsw,
        IndexKind::IvfFlat => v1::IndexKind::IvfFlat,
        IndexKind::IvfSq8 => v1::IndexKind::IvfSq8,
        IndexKind::IvfPq => v1::IndexKind::IvfPq,
        IndexKind::PqRerank => v1::IndexKind::PqRerank,
        IndexKind::IvfRerank => v1::IndexKind::IvfRerank,
    }
}

/// An absent spec means exact search.
pub fn index_spec_from_proto(spec: Option<v1::IndexSpec>) -> IndexSpec {
    let Some(v1::IndexSpec {
        kind,
        hnsw_m,
        hnsw_ef_construction,
        hnsw_ef_search,
        ivf_nlist,
        ivf_nprobe,
        pq_m,
        train_threshold,
        rerank_depth,
    }) = spec
    else {
        return IndexSpec::flat();
    };
    IndexSpec {
        kind: index_kind_from_proto(v1::IndexKind::try_from(kind).unwrap_or_default()),
        hnsw_m,
        hnsw_ef_construction,
        hnsw_ef_search,
        ivf_nlist,
        ivf_nprobe,
        pq_m,
        train_threshold,
        rerank_depth,
    }
}

pub fn index_spec_to_proto(spec: &IndexSpec) -> v1::IndexSpec {
    let IndexSpec {
        kind,
        hnsw_m,
        hnsw_ef_construction,
        hnsw_ef_search,
        ivf_nlist,
        ivf_nprobe,
        pq_m,
        train_threshold,
        rerank_depth,
    } = spec.clone();
    v1::IndexSpec {
        kind: index_kind_to_proto(kind).into(),
        hnsw_m,
        hnsw_ef_construction,
        hnsw_ef_search,
        ivf_nlist,
        ivf_nprobe,
        pq_m,
        train_threshold,
        rerank_depth,
    }
}

/// A gallery on the wire, with how many subjects and templates it holds (0 where not counted).
pub fn gallery_to_proto(gallery: &Gallery, subject_count: u64, template_count: u64) -> v1::Gallery {
    let Gallery {
        name,
        dimension,
        shard_count,
        index,
        model_id,
        model_version,
        threshold,
        threshold_version,
        allowed_purposes,
        retention_seconds,
        default_k,
        created_at_ms,
    } = gallery;
    v1::Gallery {
        name: name.to_string(),
        dimension: *dimension,
        shard_count: *shard_count,
        index: Some(index_spec_to_proto(index)),
        model_id: model_id.clone(),
        model_version: model_version.clone(),
        threshold: *threshold,
        allowed_purposes: allowed_purposes.clone(),
        retention: Some(prost_types::Duration { seconds: *retention_seconds, nanos: 0 }),
        default_k: *default_k,
        subject_count,
        template_count,
        created_at: Some(timestamp_from_millis(*created_at_ms)),
        threshold_version: *threshold_version,
        settings_seq: 0,
        tuning: None,
        threshold_policy: None,
    }
}

/// A gallery from the wire (the counts are left out: they are not settings).
pub fn gallery_from_proto(gallery: v1::Gallery) -> Result<Gallery, biomatch_domain::IdError> {
    let v1::Gallery {
        name,
        dimension,
        shard_count,
        index,
        model_id,
        model_version,
        threshold,
        allowed_purposes,
        retention,
        default_k,
        subject_count: _,
        template_count: _,
        created_at,
        threshold_version,
        settings_seq: _,
        tuning: _,
        threshold_policy: _,
    } = gallery;
    Ok(Gallery {
        name: GalleryName::parse(&name)?,
        dimension,
        shard_count,
        index: index_spec_from_proto(index),
        model_id,
        model_version,
        threshold,
        threshold_version,
        allowed_purposes,
        retention_seconds: retention.map_or(0, |d| d.seconds),
        default_k,
        created_at_ms: created_at.as_ref().map_or(0, millis_from_timestamp),
    })
}

/// Milliseconds since the Unix epoch as a protobuf timestamp.
pub fn timestamp_from_millis(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

pub fn millis_from_timestamp(t: &prost_types::Timestamp) -> i64 {
    t.seconds.saturating_mul(1000).saturating_add(i64::from(t.nanos) / 1_000_000)
}

/// A probe carrying an embedding.
pub fn embedding_probe(values: Vec<f32>) -> v1::Probe {
    v1::Probe { kind: Some(v1::probe::Kind::Embedding(v1::Embedding { values, ..Default::default() })) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_spec_round_trips() {
        let mut spec = IndexSpec::of(IndexKind::Hnsw);
        spec.hnsw_m = 32;
        spec.hnsw_ef_search = 128;
        assert_eq!(index_spec_from_proto(Some(index_spec_to_proto(&spec))), spec);
        let mut spec = IndexSpec::of(IndexKind::IvfRerank);
        spec.rerank_depth = 256;
        assert_eq!(index_spec_from_proto(Some(index_spec_to_proto(&spec))), spec);
        assert_eq!(index_spec_from_proto(None), IndexSpec::flat());
    }

    #[test]
    fn galleries_round_trip() {
        let gallery = Gallery {
            name: GalleryName::parse("travelers").expect("name"),
            dimension: 512,
            shard_count: 4,
            index: IndexSpec::of(IndexKind::PqRerank),
            model_id: "sface".into(),
            model_version: "2021dec".into(),
            threshold: 0.42,
            threshold_version: 3,
            allowed_purposes: vec!["border".into()],
            retention_seconds: 86_400,
            default_k: 20,
            created_at_ms: 1_795_810_491_192,
        };
        let wire = gallery_to_proto(&gallery, 7, 9);
        assert_eq!((wire.subject_count, wire.template_count), (7, 9));
        assert_eq!(gallery_from_proto(wire).expect("valid"), gallery);
        let bad = v1::Gallery { name: "not a name".into(), ..Default::default() };
        assert!(gallery_from_proto(bad).is_err());
    }

    #[test]
    fn timestamps_round_trip_including_before_1970() {
        for ms in [0, 1, 999, 1_795_810_491_192, -1, -1001] {
            assert_eq!(millis_from_timestamp(&timestamp_from_millis(ms)), ms);
        }
    }
}
