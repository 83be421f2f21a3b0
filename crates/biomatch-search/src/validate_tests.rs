//! Fuzzing the search role's request validation: any identify or verify request, from any caller,
//! comes through the checks that need no other role as a bounded search (k, threshold, template of
//! the gallery's dimension) or as INVALID_ARGUMENT, PERMISSION_DENIED or FAILED_PRECONDITION,
//! never a panic. The checks are run in the handlers' order; the budget and the gallery's lookup,
//! which come between the first two, need other roles and are left out, as are photos (the embed
//! role's, fuzzed with the face pipeline's decoder).

use super::*;
use biomatch_client::resolve_embedding;
use biomatch_domain::limits::{MAX_CASE_REF_BYTES, MAX_GALLERY_NAME_BYTES, MAX_K, MAX_PURPOSE_BYTES};
use biomatch_domain::{GalleryName, IndexSpec, Role, SubjectId};
use biomatch_proto::v1::{Embedding, Probe, probe};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// A search that passed validation.
#[derive(Debug)]
struct Checked {
    k: u32,
    threshold: f32,
    probe: Option<ResolvedProbe>,
}

fn deny(what: String) -> Status {
    status_with(ErrorClass::PermissionDenied, what)
}

/// The checks before a search's own fields: bounded fields, the gallery named, the purpose, and
/// the kind of probe this caller may send.
fn admitted(
    principal: &Principal,
    gallery: &Gallery,
    name: &str,
    purpose: &str,
    case_ref: &str,
    probe: Option<&Probe>,
) -> Result<(), Status> {
    bounded_fields(name, purpose, case_ref)?;
    if name.is_empty() {
        return Err(status_with(ErrorClass::InvalidArgument, "gallery name must not be empty"));
    }
    if let Some(what) = disclosure::purpose_refusal(principal, gallery, purpose) {
        return Err(deny(what));
    }
    disclosure::probe_refusal(principal, probe).map_or(Ok(()), |what| Err(deny(what)))
}

/// The threshold and the probe, as identify and verify check them last.
fn threshold_and_probe(
    principal: &Principal,
    gallery: &Gallery,
    threshold: Option<f32>,
    probe: Option<Probe>,
) -> Result<(f32, Option<ResolvedProbe>), Status> {
    let floor = DisclosurePolicy::default().floor(gallery);
    let threshold = disclosure::threshold(principal, gallery, threshold, floor)?;
    let probe = match probe.and_then(|p| p.kind) {
        Some(probe::Kind::Embedding(e)) => Some(resolve_embedding(e, &GalleryModel::from(gallery))?),
        Some(probe::Kind::Image(image)) if image.is_empty() => {
            return Err(status_with(ErrorClass::InvalidArgument, "probe image is empty"));
        }
        Some(probe::Kind::Image(_)) => None,
        None => return Err(status_with(ErrorClass::InvalidArgument, "probe is required")),
    };
    Ok((threshold, probe))
}

fn identify(principal: &Principal, gallery: &Gallery, request: IdentifyRequest) -> Result<Checked, Status> {
    let IdentifyRequest {
        gallery: name,
        probe,
        k,
        threshold,
        purpose,
        case_ref,
        allow_partial: _,
        min_change_seq: _,
    } = request;
    admitted(principal, gallery, &name, &purpose, &case_ref, probe.as_ref())?;
    let k = search_k(k, gallery)?;
    let (threshold, probe) = threshold_and_probe(principal, gallery, threshold, probe)?;
    Ok(Checked { k, threshold, probe })
}

fn verify(principal: &Principal, gallery: &Gallery, request: VerifyRequest) -> Result<Checked, Status> {
    let VerifyRequest { gallery: name, subject_id, probe, threshold, purpose, case_ref, min_change_seq: _ } =
        request;
    admitted(principal, gallery, &name, &purpose, &case_ref, probe.as_ref())?;
    SubjectId::parse(&subject_id).map_err(|e| biomatch_proto::status_from(&e))?;
    let (threshold, probe) = threshold_and_probe(principal, gallery, threshold, probe)?;
    Ok(Checked { k: 1, threshold, probe })
}

/// What any answer of the checks must be.
fn holds(
    result: Result<Checked, Status>,
    principal: &Principal,
    gallery: &Gallery,
    requested: Option<f32>,
) -> Result<(), TestCaseError> {
    match result {
        Ok(checked) => {
            prop_assert!((1..=MAX_K).contains(&checked.k));
            prop_assert!(checked.threshold.is_finite() && (-1.0..=1.0).contains(&checked.threshold));
            if requested.is_some() {
                prop_assert_eq!(principal.role, Role::Analyst);
                prop_assert!(checked.threshold >= DisclosurePolicy::default().floor(gallery));
            }
            if let Some(probe) = checked.probe {
                prop_assert!(principal.vector_probes);
                prop_assert_eq!(probe.template.dimension(), gallery.dimension as usize);
                prop_assert!(probe.template.values().iter().all(|v| v.is_finite()));
                prop_assert_eq!(probe.model_id, gallery.model_id.clone());
            }
        }
        Err(status) => {
            let code = status.code();
            prop_assert!(
                matches!(
                    code,
                    tonic::Code::InvalidArgument
                        | tonic::Code::PermissionDenied
                        | tonic::Code::FailedPrecondition
                ),
                "{:?}: {}",
                code,
                status.message()
            );
            // Refusals quote only bounded fields.
            prop_assert!(status.message().len() < 2048, "{} bytes", status.message().len());
        }
    }
    Ok(())
}

fn gallery(threshold: f32, default_k: u32, dimension: u32) -> Gallery {
    Gallery {
        name: GalleryName::parse("g").expect("name"),
        dimension,
        shard_count: 1,
        index: IndexSpec::flat(),
        model_id: "m".into(),
        model_version: "1".into(),
        threshold,
        threshold_version: 1,
        allowed_purposes: vec!["border".into(), "visa".into()],
        retention_seconds: 3600,
        default_k,
        created_at_ms: 0,
    }
}

/// The gallery's dimension in these tests.
const DIMENSION: usize = 4;

/// Mostly one of `valid`, sometimes anything, empty or one byte over `bound`.
fn field(valid: &'static [&'static str], bound: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        16 => prop::sample::select(valid).prop_map(str::to_owned),
        1 => ".{0,24}",
        1 => Just(String::new()),
        1 => ".{0,3}".prop_map(move |s| format!("{s}{}", "x".repeat(bound + 1))),
    ]
}

fn principals() -> impl Strategy<Value = Principal> {
    let scope = || {
        prop_oneof![
            4 => Just(None),
            2 => Just(Some(vec!["g".to_owned(), "border".to_owned(), "visa".to_owned()])),
            1 => proptest::option::of(prop::collection::vec(".{0,8}", 0..3)),
        ]
    };
    let role = prop_oneof![
        3 => Just(Role::Analyst),
        1 => Just(Role::Kiosk),
        1 => prop::sample::select(Role::ALL.to_vec()),
    ];
    (role, scope(), scope(), prop::bool::weighted(0.8)).prop_map(
        |(role, galleries, purposes, vector_probes)| Principal {
            galleries,
            purposes,
            vector_probes,
            ..Principal::new("caller", role)
        },
    )
}

fn floats() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => -1.5f32..1.5,
        1 => any::<f32>(),
        1 => prop::sample::select(vec![f32::NAN, f32::INFINITY, -1.0, 1.0, 0.0, f32::MAX, f32::MIN_POSITIVE]),
    ]
}

fn probes() -> impl Strategy<Value = Option<Probe>> {
    let values = prop_oneof![
        4 => prop::collection::vec(floats(), DIMENSION),
        1 => prop::collection::vec(floats(), 0..10),
    ];
    let model = prop_oneof![4 => Just(""), 2 => Just("m"), 1 => Just("other")];
    let version = prop_oneof![4 => Just(String::new()), 1 => ".{0,8}", 1 => "x{250,260}"];
    let embedding = (values, model, version).prop_map(|(values, model_id, model_version)| Embedding {
        values,
        model_id: model_id.to_owned(),
        model_version,
    });
    let kind = prop_oneof![
        4 => embedding.prop_map(|e| Some(probe::Kind::Embedding(e))),
        2 => prop::collection::vec(any::<u8>(), 0..4).prop_map(|i| Some(probe::Kind::Image(i))),
        1 => Just(None),
    ];
    proptest::option::weighted(0.95, kind.prop_map(|kind| Probe { kind }))
}

fn thresholds() -> impl Strategy<Value = Option<f32>> {
    prop_oneof![3 => Just(None), 2 => (-1.0f32..=1.0).prop_map(Some), 1 => floats().prop_map(Some)]
}

#[test]
fn k_is_the_default_or_bounded() {
    let g = gallery(0.5, 10, 4);
    assert_eq!(search_k(0, &g).expect("default"), 10);
    assert_eq!(search_k(MAX_K, &g).expect("bound"), MAX_K);
    assert_eq!(search_k(MAX_K + 1, &g).expect_err("over").code(), tonic::Code::InvalidArgument);
    let long = "p".repeat(MAX_PURPOSE_BYTES + 1);
    assert!(bounded_fields("g", &long, "").is_err());
    assert!(bounded_fields(&"g".repeat(MAX_GALLERY_NAME_BYTES + 1), "", "").is_err());
    assert!(bounded_fields("g", "", &"c".repeat(MAX_CASE_REF_BYTES + 1)).is_err());
    let analyst = Principal::new("a", Role::Analyst);
    assert!(disclosure::purpose_refusal(&analyst, &g, "border").is_none());
    assert!(disclosure::purpose_refusal(&analyst, &g, "").is_some());
    assert!(disclosure::purpose_refusal(&analyst, &g, "marketing").is_some());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_identify_request_is_a_bounded_search_or_refused(
        principal in principals(),
        threshold in -1.0f32..1.0,
        default_k in 1..=MAX_K,
        name in field(&["g"], MAX_GALLERY_NAME_BYTES),
        purpose in field(&["border", "visa"], MAX_PURPOSE_BYTES),
        case_ref in field(&["", "case-1"], MAX_CASE_REF_BYTES),
        probe in probes(),
        k in prop_oneof![2 => Just(0u32), 6 => 1..=MAX_K, 1 => MAX_K + 1..=u32::MAX],
        requested in thresholds(),
    ) {
        let g = gallery(threshold, default_k, DIMENSION as u32);
        let request = IdentifyRequest {
            gallery: name,
            probe,
            k,
            threshold: requested,
            purpose,
            case_ref,
            allow_partial: false,
            min_change_seq: 0,
        };
        holds(identify(&principal, &g, request), &principal, &g, requested)?;
    }

    #[test]
    fn any_verify_request_is_a_bounded_search_or_refused(
        principal in principals(),
        threshold in -1.0f32..1.0,
        name in field(&["g"], MAX_GALLERY_NAME_BYTES),
        subject_id in prop_oneof![4 => Just("P-1".to_owned()), 1 => ".{0,140}"],
        purpose in field(&["border", "visa"], MAX_PURPOSE_BYTES),
        case_ref in field(&["", "case-1"], MAX_CASE_REF_BYTES),
        probe in probes(),
        requested in thresholds(),
    ) {
        let g = gallery(threshold, 10, DIMENSION as u32);
        let request = VerifyRequest {
            gallery: name, subject_id, probe, threshold: requested, purpose, case_ref, min_change_seq: 0,
        };
        holds(verify(&principal, &g, request), &principal, &g, requested)?;
    }
}
