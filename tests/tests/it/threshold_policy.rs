//! A threshold kept at a target FPIR: derived at creation from the model's impostor distribution,
//! derived again (audited, as the ingest role) once the gallery has doubled, set on demand at the
//! gallery's current size, ended by a fixed threshold; bad targets and distributions refused.

use biomatch::synthetic::Synthetic;
use biomatch_config::ProcessRole;
use biomatch_domain::{ImpostorTail, MIN_POLICY_TEMPLATES, ThresholdPolicy};
use biomatch_proto::v1::{
    CreateGalleryRequest, EnrollMode, EnrollRequest, GetGalleryRequest, Operation, QueryAuditRequest,
    SetThresholdRequest,
};
use biomatch_tests::{PURPOSE, RETENTION_SECS, TestCluster, backends, config, embedding};
use std::time::{Duration, Instant};
use tonic::Code;

const DIM: usize = 64;

/// The impostor distribution of the synthetic "model": cosines between distinct identities.
fn impostor_tail(synthetic: &mut Synthetic) -> ImpostorTail {
    let identities: Vec<Vec<f32>> = (0..160).map(|_| synthetic.identity()).collect();
    let mut scores = Vec::new();
    for (i, a) in identities.iter().enumerate() {
        for b in &identities[i + 1..] {
            scores.push(a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>());
        }
    }
    ImpostorTail::fit(&scores, "external", "", "synthetic identities in the test").expect("fits")
}

fn policy(target_fpir: f64, tail: &ImpostorTail) -> biomatch_proto::v1::ThresholdPolicy {
    biomatch_proto::v1::ThresholdPolicy {
        target_fpir,
        impostor: Some(biomatch_proto::impostor_tail_to_proto(tail)),
        ..Default::default()
    }
}

fn create(name: &str, policy: biomatch_proto::v1::ThresholdPolicy) -> CreateGalleryRequest {
    CreateGalleryRequest {
        name: name.into(),
        dimension: DIM as u32,
        allowed_purposes: vec![PURPOSE.into()],
        threshold_policy: Some(policy),
        retention: Some(prost_types::Duration { seconds: RETENTION_SECS, nanos: 0 }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_follow_a_target_fpir_as_the_gallery_grows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = backends(dir.path()).await.remove(0);
    let mut c = config(&backend, dir.path(), &[ProcessRole::All]);
    c.ingest.threshold_review_interval_ms = 100;
    let cluster = TestCluster::start(c).await;
    let mut admin = cluster.galleries();
    let mut synthetic = Synthetic::new(DIM, 21);
    let tail = impostor_tail(&mut synthetic);

    // Refused: a threshold and a policy at once, targets outside (0, 0.5], a broken distribution,
    // one of another model, and a model the cluster has no distribution for.
    let both = CreateGalleryRequest { threshold: Some(0.5), ..create("bad", policy(1e-3, &tail)) };
    let mut nan = tail.clone();
    nan.tail_scale = f64::NAN;
    let other_model = ImpostorTail { model_id: "sface".into(), ..tail.clone() };
    let unknown_model = biomatch_proto::v1::ThresholdPolicy { target_fpir: 1e-3, ..Default::default() };
    for (why, request) in [
        ("both", both),
        ("zero", create("bad", policy(0.0, &tail))),
        ("too high", create("bad", policy(0.7, &tail))),
        ("NaN", create("bad", policy(1e-3, &nan))),
        ("other model", create("bad", policy(1e-3, &other_model))),
        ("no distribution", create("bad", unknown_model)),
    ] {
        let err = admin.create_gallery(request).await.expect_err(why);
        assert_eq!(err.code(), Code::InvalidArgument, "{why}: {}", err.message());
    }

    // Created: the threshold is derived for the smallest size a policy considers.
    let made = admin.create_gallery(create("p", policy(1e-2, &tail))).await.expect("created").into_inner();
    let (expected, _) = ThresholdPolicy::derive(1e-2, tail.clone(), 0, 0).expect("derives");
    let shown = made.threshold_policy.clone().expect("the policy is shown");
    assert_eq!((made.threshold, made.threshold_version), (expected, 1));
    assert_eq!(shown.templates, MIN_POLICY_TEMPLATES);
    assert!(shown.required_fmr > 0.0 && shown.required_fmr < 1e-2 / 1000.0, "{shown:?}");

    // The gallery doubles: the ingest role derives the threshold again, a stricter one.
    let subjects = 2 * MIN_POLICY_TEMPLATES as usize + 10;
    let requests: Vec<EnrollRequest> = (0..subjects)
        .map(|i| EnrollRequest {
            gallery: "p".into(),
            subject_id: format!("s{i:05}"),
            samples: vec![embedding(synthetic.identity()).expect("probe")],
            mode: EnrollMode::Add.into(),
            idempotency_key: String::new(),
        })
        .collect();
    let enrolled = cluster.ingest().batch_enroll(tokio_stream::iter(requests)).await.expect("enrolled");
    let enrolled = enrolled.into_inner();
    assert_eq!(enrolled.accepted as usize, subjects, "{:?}", enrolled.failures.first());
    let get = || GetGalleryRequest { name: "p".into(), settings_only: false };
    let deadline = Instant::now() + Duration::from_secs(60);
    let grown = loop {
        let g = admin.get_gallery(get()).await.expect("gallery").into_inner();
        if g.threshold_version > 1 {
            break g;
        }
        assert!(Instant::now() < deadline, "the threshold was not derived again: {g:?}");
        // Polls the state the review loop changes; the loop runs every 100 ms.
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let evidence = grown.threshold_policy.clone().expect("still a policy");
    // The loop may run while the batch is still being stored: derived at the size it counted,
    // once that was at least double.
    let counted = evidence.templates;
    assert!((2 * MIN_POLICY_TEMPLATES..=subjects as u64).contains(&counted), "{evidence:?}");
    let (rederived, _) = ThresholdPolicy::derive(1e-2, tail.clone(), counted, 0).expect("derives");
    assert_eq!((grown.threshold, grown.threshold_version), (rederived, 2));
    assert!(grown.threshold > made.threshold, "a larger gallery needs a stricter threshold");
    let mut audit = cluster.audit();
    let query = QueryAuditRequest { operation: Operation::SetThreshold.into(), ..Default::default() };
    let leaves = audit.query(query).await.expect("query").into_inner().leaves;
    let done = leaves
        .iter()
        .filter_map(|l| l.event.as_ref())
        .find(|e| e.outcome == "OK" && e.threshold_version == 2)
        .expect("the re-derivation is audited");
    assert!(done.detail.contains("doubled to") && done.detail.contains("FPIR"), "{}", done.detail);
    assert_eq!(done.actor.as_ref().expect("actor").role, "service", "done by the ingest role itself");

    // Set on demand at the current size; a fixed threshold ends the policy.
    let set = |threshold: f32, policy| SetThresholdRequest {
        gallery: "p".into(),
        threshold,
        reason: "test".into(),
        policy,
    };
    let err = admin.set_threshold(set(0.5, Some(policy(1e-3, &tail)))).await.expect_err("both");
    assert_eq!(err.code(), Code::InvalidArgument);
    let stricter = admin.set_threshold(set(0.0, Some(policy(1e-4, &tail)))).await.expect("set").into_inner();
    assert!(stricter.threshold > grown.threshold && stricter.threshold_version == 3);
    assert_eq!(stricter.threshold_policy.map(|p| p.target_fpir), Some(1e-4));
    let fixed = admin.set_threshold(set(0.6, None)).await.expect("fixed").into_inner();
    assert_eq!((fixed.threshold, fixed.threshold_version, fixed.threshold_policy), (0.6, 4, None));
    cluster.running.shutdown().await;
}
