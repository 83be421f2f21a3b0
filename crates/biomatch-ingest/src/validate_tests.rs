//! Fuzzing the ingest role's requests from the wire: arbitrary and damaged bytes decoded as its
//! requests, and arbitrary enrolments, come through validation as bounded values or as
//! INVALID_ARGUMENT (FAILED_PRECONDITION for an enrolment into a gallery kept without a retention
//! policy, or a vector of another model), never a panic.

use super::*;
use biomatch_client::{GalleryModel, resolve_embedding};
use biomatch_domain::limits::{MAX_REASON_BYTES, bounded};
use biomatch_proto::v1::{
    DeleteGalleryRequest, DeleteSubjectRequest, EnrollRequest, GetSubjectRequest, IndexSpec, Probe,
    SetThresholdRequest, probe,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use prost::Message;

fn gallery(retention_seconds: i64) -> Gallery {
    let request = CreateGalleryRequest {
        name: "g".into(),
        dimension: 4,
        allowed_purposes: vec!["border".into()],
        ..Default::default()
    };
    Gallery { retention_seconds, ..gallery_spec(request).expect("valid") }
}

fn refused(status: &Status, also: &[tonic::Code]) -> Result<(), TestCaseError> {
    let code = status.code();
    prop_assert!(code == tonic::Code::InvalidArgument || also.contains(&code), "{:?}", code);
    Ok(())
}

fn enrol(request: EnrollRequest, g: &Gallery) -> Result<(), TestCaseError> {
    let EnrollRequest { gallery: _, subject_id, samples, mode, idempotency_key } = request;
    match enrolment(g, &subject_id, mode, samples.len()) {
        Ok((subject, replace)) => {
            prop_assert_eq!(subject.as_str(), subject_id.as_str());
            prop_assert!((1..=MAX_SAMPLES).contains(&samples.len()) && g.retention_seconds > 0);
            prop_assert_eq!(replace, mode == i32::from(EnrollMode::Replace));
        }
        Err(status) => {
            let precondition = [tonic::Code::FailedPrecondition];
            refused(&status, if g.retention_seconds <= 0 { &precondition } else { &[] })?;
        }
    }
    let _ = bounded("idempotency_key", &idempotency_key, biomatch_domain::limits::MAX_IDEMPOTENCY_KEY_BYTES);
    let model = GalleryModel::from(g);
    for sample in samples {
        if let Some(probe::Kind::Embedding(e)) = sample.kind {
            match resolve_embedding(e, &model) {
                Ok(p) => prop_assert_eq!(p.template.dimension(), model.dimension),
                Err(status) => refused(&status, &[tonic::Code::FailedPrecondition])?,
            }
        }
    }
    Ok(())
}

/// Decodes `bytes` as each request the ingest role validates without the store, and validates.
fn validate_wire(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(request) = EnrollRequest::decode(bytes) {
        enrol(request.clone(), &gallery(3600))?;
        enrol(request, &gallery(0))?;
    }
    if let Ok(request) = CreateGalleryRequest::decode(bytes) {
        match gallery_spec(request) {
            Ok(g) => {
                prop_assert!((1..=MAX_DIMENSION).contains(&g.dimension));
                prop_assert!(g.index.resolved(g.dimension as usize).is_ok());
            }
            Err(status) => refused(&status, &[])?,
        }
    }
    if let Ok(SetThresholdRequest { gallery, threshold, reason, .. }) = SetThresholdRequest::decode(bytes) {
        let checked = bounded("reason", &reason, MAX_REASON_BYTES)
            .map_err(|e| status_from(&e))
            .and_then(|_| self::threshold(threshold))
            .and_then(|t| gallery_name(&gallery).map(|_| t));
        match checked {
            Ok(t) => prop_assert!(t.is_finite() && (-1.0..=1.0).contains(&t)),
            Err(status) => refused(&status, &[])?,
        }
    }
    if let Ok(DeleteGalleryRequest { name, .. }) = DeleteGalleryRequest::decode(bytes)
        && let Err(status) = gallery_name(&name)
    {
        refused(&status, &[])?;
    }
    for subject_id in [
        DeleteSubjectRequest::decode(bytes).map(|r| r.subject_id),
        GetSubjectRequest::decode(bytes).map(|r| r.subject_id),
    ]
    .into_iter()
    .flatten()
    {
        if let Err(e) = SubjectId::parse(&subject_id) {
            refused(&status_from(&e), &[])?;
        }
    }
    Ok(())
}

fn seeds() -> Vec<Vec<u8>> {
    let embedding = biomatch_proto::embedding_probe(vec![0.5, -0.5, 0.25, f32::NAN]);
    let image = Probe { kind: Some(probe::Kind::Image(vec![0x89, b'P', b'N', b'G'])) };
    vec![
        EnrollRequest {
            gallery: "g".into(),
            subject_id: "P-0001".into(),
            samples: vec![embedding, image],
            mode: EnrollMode::Replace.into(),
            idempotency_key: "key".into(),
        }
        .encode_to_vec(),
        CreateGalleryRequest {
            name: "g".into(),
            dimension: 128,
            index: Some(IndexSpec { kind: 4, pq_m: 16, ivf_nlist: 64, ..Default::default() }),
            allowed_purposes: vec!["border".into(), "visa".into()],
            threshold: Some(0.4),
            retention: Some(prost_types::Duration { seconds: 86_400, nanos: 0 }),
            default_k: 20,
            ..Default::default()
        }
        .encode_to_vec(),
        SetThresholdRequest { gallery: "g".into(), threshold: 0.45, reason: "tuned".into(), policy: None }
            .encode_to_vec(),
    ]
}

fn sample() -> impl Strategy<Value = Probe> {
    prop_oneof![
        4 => prop::collection::vec(-1.0f32..1.0, 4),
        1 => prop::collection::vec(prop_oneof![any::<f32>(), -1.0f32..1.0], 0..6),
    ]
    .prop_map(biomatch_proto::embedding_probe)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_are_valid_requests_or_refused(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        validate_wire(&bytes)?;
    }

    #[test]
    fn damaged_requests_are_valid_or_refused(
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
        validate_wire(&bytes)?;
    }

    #[test]
    fn any_enrolment_is_bounded_or_refused(
        subject_id in prop_oneof![4 => Just("P-1".to_owned()), 2 => "\\PC{1,130}", 1 => ".{0,300}"],
        mode in prop_oneof![0i32..4, any::<i32>()],
        samples in prop_oneof![
            8 => prop::collection::vec(sample(), 0..4),
            1 => prop::collection::vec(sample(), 60..70),
        ],
        retention in prop_oneof![4 => 1i64..1_000_000_000, 1 => Just(0i64), 1 => any::<i64>()],
    ) {
        let request =
            EnrollRequest { gallery: "g".into(), subject_id, samples, mode, idempotency_key: String::new() };
        enrol(request, &gallery(retention))?;
    }
}
