//! Fuzzing the wire: arbitrary or damaged bytes decode, as every request of the contract (and the
//! gallery the search role converts from the ingest role's answer), to a message or a decode
//! error, never a panic; what decodes re-encodes to the same message; and the conversions the
//! services apply to decoded messages hold for any field values. Each service's own validation
//! of the decoded requests is fuzzed in that service's crate.

use crate::v1;
use crate::{gallery_from_proto, index_spec_from_proto, millis_from_timestamp, timestamp_from_millis};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use prost::Message;

/// Decodes `bytes` as `M`; what decodes must survive an encode/decode round trip (compared as
/// bytes, since a float field may hold NaN).
fn decodes<M: Message + Default>(bytes: &[u8]) -> Result<Option<M>, TestCaseError> {
    let Ok(message) = M::decode(bytes) else { return Ok(None) };
    let encoded = message.encode_to_vec();
    let again = M::decode(encoded.as_slice());
    prop_assert!(again.is_ok_and(|m| m.encode_to_vec() == encoded));
    Ok(Some(message))
}

/// Every request a service decodes from a client or another role.
fn decode_every_request(bytes: &[u8]) -> Result<(), TestCaseError> {
    macro_rules! each {
        ($($t:ty),* $(,)?) => { $( decodes::<$t>(bytes)?; )* };
    }
    each!(
        v1::CreateGalleryRequest,
        v1::GetGalleryRequest,
        v1::DeleteGalleryRequest,
        v1::SetThresholdRequest,
        v1::EnrollRequest,
        v1::DeleteSubjectRequest,
        v1::GetSubjectRequest,
        v1::IdentifyRequest,
        v1::VerifyRequest,
        v1::ReviewCandidateRequest,
        v1::ListPendingReviewsRequest,
        v1::GetSearchRequest,
        v1::ListCaseSearchesRequest,
        v1::ShardSearchRequest,
        v1::ShardScoreRequest,
        v1::AppendRequest,
        v1::QueryAuditRequest,
        v1::ListLeavesRequest,
        v1::ListCheckpointsRequest,
        v1::InclusionProofRequest,
        v1::ConsistencyProofRequest,
        v1::GetSearchRecordRequest,
        v1::ListReviewsRequest,
        v1::ListCaseRecordsRequest,
        v1::EmbedRequest,
    );
    if let Some(gallery) = decodes::<v1::Gallery>(bytes)? {
        check_gallery(gallery)?;
    }
    Ok(())
}

fn check_gallery(gallery: v1::Gallery) -> Result<(), TestCaseError> {
    let name = gallery.name.clone();
    match gallery_from_proto(gallery) {
        Ok(g) => prop_assert_eq!(g.name.as_str(), name.as_str()),
        Err(_) => prop_assert!(biomatch_domain::GalleryName::parse(&name).is_err()),
    }
    Ok(())
}

/// Fully populated messages, so that damaging their encodings reaches nested and packed fields.
fn seeds() -> Vec<Vec<u8>> {
    let embedding = crate::embedding_probe(vec![0.25, -0.5, f32::NAN, 1e30]);
    let event = v1::AuditEvent {
        actor: Some(v1::Actor { subject: "kiosk-1".into(), role: "kiosk".into(), device_id: "lane".into() }),
        operation: v1::Operation::Identify.into(),
        gallery: "g".into(),
        threshold: Some(0.4),
        candidates: vec![v1::ScoredSubject { subject_id: "s".into(), score: 0.9 }],
        subject_ids: vec!["a".into(), "b".into()],
        missing_shards: vec![1, 2, 3],
        detail: "d".into(),
        ..Default::default()
    };
    vec![
        v1::IdentifyRequest {
            gallery: "g".into(),
            probe: Some(embedding.clone()),
            k: 10,
            threshold: Some(0.5),
            purpose: "border".into(),
            case_ref: "c".into(),
            allow_partial: true,
            min_change_seq: 7,
        }
        .encode_to_vec(),
        v1::EnrollRequest {
            gallery: "g".into(),
            subject_id: "P-1".into(),
            samples: vec![
                embedding,
                v1::Probe { kind: Some(v1::probe::Kind::Image(vec![0xff, 0xd8, 0xff])) },
            ],
            mode: v1::EnrollMode::Replace.into(),
            idempotency_key: "k".into(),
        }
        .encode_to_vec(),
        v1::CreateGalleryRequest {
            name: "g".into(),
            dimension: 128,
            index: Some(v1::IndexSpec { kind: v1::IndexKind::IvfPq.into(), pq_m: 8, ..Default::default() }),
            allowed_purposes: vec!["border".into()],
            retention: Some(prost_types::Duration { seconds: 60, nanos: 1 }),
            ..Default::default()
        }
        .encode_to_vec(),
        v1::ShardSearchRequest {
            shard: Some(v1::ShardRef { gallery: "g".into(), shard: 3 }),
            queries: vec![v1::QueryVector { values: vec![1.0, 2.0] }, v1::QueryVector::default()],
            k: 5,
            min_change_seq: 1,
        }
        .encode_to_vec(),
        v1::AppendRequest { event: Some(event), idempotency_key: "x".into() }.encode_to_vec(),
        v1::QueryAuditRequest {
            from: Some(prost_types::Timestamp { seconds: -5, nanos: 999_999_999 }),
            to: Some(prost_types::Timestamp { seconds: i64::MAX, nanos: -1 }),
            page_size: 1000,
            page_token: u64::MAX,
            ..Default::default()
        }
        .encode_to_vec(),
    ]
}

#[test]
fn seeds_decode_as_themselves() {
    let seeds = seeds();
    let identify = v1::IdentifyRequest::decode(seeds[0].as_slice()).expect("decodes");
    assert_eq!((identify.k, identify.purpose.as_str()), (10, "border"));
    for seed in &seeds {
        decode_every_request(seed).expect("no failure");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_decode_or_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_every_request(&bytes)?;
    }

    #[test]
    fn damaged_requests_decode_or_are_refused(
        seed in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        how in 0u8..3,
    ) {
        let seeds = seeds();
        let mut bytes = seeds[seed.index(seeds.len())].clone();
        let i = at.index(bytes.len());
        match how {
            0 => bytes[i] = byte,
            1 => bytes.insert(i, byte),
            _ => bytes.truncate(i),
        }
        decode_every_request(&bytes)?;
    }

    #[test]
    fn any_gallery_converts_or_is_refused_by_name(
        name in ".{0,80}",
        kind in any::<i32>(),
        retention in proptest::option::of(any::<i64>()),
        created in proptest::option::of((any::<i64>(), any::<i32>())),
    ) {
        let gallery = v1::Gallery {
            name,
            index: Some(v1::IndexSpec { kind, ..Default::default() }),
            retention: retention.map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
            created_at: created.map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
            ..Default::default()
        };
        check_gallery(gallery)?;
        // An unknown index kind is exact search, never an error.
        let spec = index_spec_from_proto(Some(v1::IndexSpec { kind, ..Default::default() }));
        if v1::IndexKind::try_from(kind).is_err() {
            prop_assert_eq!(spec.kind, biomatch_domain::IndexKind::Flat);
        }
    }

    #[test]
    fn timestamps_saturate_and_round_trip(
        ms in any::<i64>(), seconds in any::<i64>(), nanos in any::<i32>()
    ) {
        let t = timestamp_from_millis(ms);
        prop_assert!((0..1_000_000_000).contains(&t.nanos));
        // Exact down to the last whole second before i64::MIN, where the seconds saturate.
        if ms >= i64::MIN + 1000 {
            prop_assert_eq!(millis_from_timestamp(&t), ms);
        }
        // Any timestamp a client sends (e.g. a query's time range) is some millisecond.
        let _ = millis_from_timestamp(&prost_types::Timestamp { seconds, nanos });
    }
}
