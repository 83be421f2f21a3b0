//! Validation of gallery requests.

use biomatch_domain::limits::{MAX_MODEL_BYTES, MAX_PURPOSE_BYTES, MAX_PURPOSES, bounded};
use biomatch_domain::{ErrorClass, Gallery, GalleryName, SubjectId};
use biomatch_proto::v1::{CreateGalleryRequest, EnrollMode};
use biomatch_proto::{index_spec_from_proto, status_from, status_with};
use tonic::Status;

pub(crate) const MAX_DIMENSION: u32 = 4096;
pub(crate) const MAX_SHARDS: u32 = 1024;
pub(crate) const MAX_SAMPLES: usize = 64;

pub(crate) fn gallery_name(name: &str) -> Result<GalleryName, Status> {
    GalleryName::parse(name).map_err(|e| status_from(&e))
}

fn invalid(message: impl Into<String>) -> Status {
    status_with(ErrorClass::InvalidArgument, message)
}

/// A gallery's decision threshold: a finite cosine similarity.
pub(crate) fn threshold(threshold: f32) -> Result<f32, Status> {
    if !threshold.is_finite() || !(-1.0..=1.0).contains(&threshold) {
        return Err(invalid("threshold must be a cosine similarity between -1 and 1"));
    }
    Ok(threshold)
}

/// The checks of an enrolment made before anything is looked up or embedded: a valid subject id,
/// a gallery with a retention policy, and 1 to [`MAX_SAMPLES`] samples. The subject, and whether
/// the samples replace its templates.
pub(crate) fn enrolment(
    gallery: &Gallery,
    subject_id: &str,
    mode: i32,
    samples: usize,
) -> Result<(SubjectId, bool), Status> {
    let subject = SubjectId::parse(subject_id).map_err(|e| status_from(&e))?;
    let replace = EnrollMode::try_from(mode).unwrap_or_default() == EnrollMode::Replace;
    if gallery.retention_seconds <= 0 {
        return Err(status_with(
            ErrorClass::FailedPrecondition,
            format!("gallery {} has no retention policy; enrolment is refused", gallery.name),
        ));
    }
    if samples == 0 {
        return Err(invalid("at least one sample is required"));
    }
    if samples > MAX_SAMPLES {
        return Err(invalid(format!("at most {MAX_SAMPLES} samples per enrolment")));
    }
    Ok((subject, replace))
}

pub(crate) fn gallery_spec(request: CreateGalleryRequest) -> Result<Gallery, Status> {
    let CreateGalleryRequest {
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
        idempotency_key: _,
        threshold_policy: _,
    } = request;
    let name = gallery_name(&name)?;
    if !(1..=MAX_DIMENSION).contains(&dimension) {
        return Err(invalid(format!("dimension must be between 1 and {MAX_DIMENSION}")));
    }
    let shard_count = if shard_count == 0 { 1 } else { shard_count };
    if shard_count > MAX_SHARDS {
        return Err(invalid(format!("shard_count must be at most {MAX_SHARDS}")));
    }
    let index = index_spec_from_proto(index);
    index.resolved(dimension as usize).map_err(|e| status_from(&e))?;
    let threshold = self::threshold(threshold.unwrap_or(0.5))?;
    let default_k = if default_k == 0 { 10 } else { default_k };
    if default_k > biomatch_domain::limits::MAX_K {
        return Err(invalid(format!("default_k must be at most {}", biomatch_domain::limits::MAX_K)));
    }
    if allowed_purposes.is_empty() {
        return Err(invalid(
            "allowed_purposes is required: the purpose codes this gallery may be searched for",
        ));
    }
    if allowed_purposes.len() > MAX_PURPOSES {
        return Err(invalid(format!("at most {MAX_PURPOSES} allowed purposes")));
    }
    if allowed_purposes
        .iter()
        .any(|p| p.is_empty() || p.len() > MAX_PURPOSE_BYTES || p.chars().any(char::is_whitespace))
    {
        return Err(invalid(format!(
            "purpose codes must be 1 to {MAX_PURPOSE_BYTES} bytes without whitespace"
        )));
    }
    // Everything here reaches the audit log: bounded before anything is appended.
    bounded("model_id", &model_id, MAX_MODEL_BYTES).map_err(|e| status_from(&e))?;
    bounded("model_version", &model_version, MAX_MODEL_BYTES).map_err(|e| status_from(&e))?;
    let retention_seconds = retention.map_or(0, |d| d.seconds);
    if retention_seconds < 0 {
        return Err(invalid("retention must not be negative"));
    }
    let model_id = if model_id.is_empty() { "external".to_owned() } else { model_id };
    Ok(Gallery {
        name,
        dimension,
        shard_count,
        index,
        model_id,
        model_version,
        threshold,
        // The store stamps these when it creates the gallery.
        threshold_version: 1,
        allowed_purposes,
        retention_seconds,
        default_k,
        created_at_ms: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> CreateGalleryRequest {
        CreateGalleryRequest {
            name: "g".into(),
            dimension: 128,
            allowed_purposes: vec!["border".into()],
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_filled_in() {
        let spec = gallery_spec(request()).expect("valid");
        assert_eq!((spec.shard_count, spec.default_k, spec.threshold), (1, 10, 0.5));
        assert_eq!(spec.model_id, "external");
    }

    #[test]
    fn bad_requests_are_refused_precisely() {
        let code = |r: CreateGalleryRequest| gallery_spec(r).expect_err("refused").code();
        assert_eq!(
            code(CreateGalleryRequest { name: String::new(), ..request() }),
            tonic::Code::InvalidArgument
        );
        assert_eq!(code(CreateGalleryRequest { dimension: 0, ..request() }), tonic::Code::InvalidArgument);
        assert_eq!(code(CreateGalleryRequest { dimension: 5000, ..request() }), tonic::Code::InvalidArgument);
        assert_eq!(
            code(CreateGalleryRequest { threshold: Some(f32::NAN), ..request() }),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            code(CreateGalleryRequest { shard_count: 5000, ..request() }),
            tonic::Code::InvalidArgument
        );
        let long = "m".repeat(MAX_MODEL_BYTES + 1);
        assert_eq!(
            code(CreateGalleryRequest { model_version: long.clone(), ..request() }),
            tonic::Code::InvalidArgument
        );
        assert_eq!(code(CreateGalleryRequest { model_id: long, ..request() }), tonic::Code::InvalidArgument);
        let many = (0..=MAX_PURPOSES).map(|i| format!("p{i}")).collect();
        assert_eq!(
            code(CreateGalleryRequest { allowed_purposes: many, ..request() }),
            tonic::Code::InvalidArgument
        );
        let pq = biomatch_proto::v1::IndexSpec {
            kind: biomatch_proto::v1::IndexKind::IvfPq.into(),
            pq_m: 7,
            ..Default::default()
        };
        assert_eq!(code(CreateGalleryRequest { index: Some(pq), ..request() }), tonic::Code::InvalidArgument);
    }

    // Fuzzing request validation: any CreateGallery request is either a gallery whose settings
    // hold the documented bounds or INVALID_ARGUMENT, never a panic.
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

        #[test]
        fn any_request_is_a_bounded_gallery_or_invalid(
            name in ".{0,80}",
            dimension in proptest::prelude::any::<u32>(),
            shard_count in proptest::prelude::any::<u32>(),
            kind in proptest::prelude::any::<i32>(),
            pq_m in proptest::prelude::any::<u32>(),
            ivf_nlist in proptest::prelude::any::<u32>(),
            threshold in proptest::option::of(proptest::prelude::any::<f32>()),
            purposes in proptest::collection::vec(".{0,80}", 0..4),
            model_id in ".{0,300}",
            retention in proptest::prelude::any::<i64>(),
            default_k in proptest::prelude::any::<u32>(),
        ) {
            let request = CreateGalleryRequest {
                name,
                dimension,
                shard_count,
                index: Some(biomatch_proto::v1::IndexSpec { kind, pq_m, ivf_nlist, ..Default::default() }),
                model_id,
                threshold,
                allowed_purposes: purposes,
                retention: Some(prost_types::Duration { seconds: retention, nanos: 0 }),
                default_k,
                ..Default::default()
            };
            match gallery_spec(request) {
                Ok(g) => {
                    proptest::prop_assert!((1..=MAX_DIMENSION).contains(&g.dimension));
                    proptest::prop_assert!((1..=MAX_SHARDS).contains(&g.shard_count));
                    proptest::prop_assert!(g.threshold.is_finite() && (-1.0..=1.0).contains(&g.threshold));
                    proptest::prop_assert!(g.default_k >= 1 && g.default_k <= biomatch_domain::limits::MAX_K);
                    proptest::prop_assert!(!g.allowed_purposes.is_empty() && g.retention_seconds >= 0);
                    proptest::prop_assert!(g.index.resolved(g.dimension as usize).is_ok());
                }
                Err(status) => proptest::prop_assert_eq!(status.code(), tonic::Code::InvalidArgument),
            }
        }
    }

    #[test]
    fn enrolments_are_checked_before_anything_is_looked_up() {
        let g = Gallery { retention_seconds: 60, ..gallery_spec(request()).expect("valid") };
        let (subject, replace) = enrolment(&g, "P-1", EnrollMode::Replace.into(), 1).expect("valid");
        assert_eq!((subject.as_str(), replace), ("P-1", true));
        let code = |r: Result<(SubjectId, bool), Status>| r.expect_err("refused").code();
        assert_eq!(code(enrolment(&g, "", 0, 1)), tonic::Code::InvalidArgument);
        assert_eq!(code(enrolment(&g, "P-1", 0, 0)), tonic::Code::InvalidArgument);
        assert_eq!(code(enrolment(&g, "P-1", 0, MAX_SAMPLES + 1)), tonic::Code::InvalidArgument);
        let kept_forever = Gallery { retention_seconds: 0, ..g };
        assert_eq!(code(enrolment(&kept_forever, "P-1", 0, 1)), tonic::Code::FailedPrecondition);
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod fuzz;
