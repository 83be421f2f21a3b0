//! Gallery lifecycle, purposes, verify and reviews end to end.

use biomatch_proto::v1::{
    CreateGalleryRequest, Decision, DeleteGalleryRequest, GetGalleryRequest, ListLeavesRequest, Operation,
    QueryAuditRequest, ReviewCandidateRequest, ReviewOutcome, SetThresholdRequest, VerifyRequest,
};
use biomatch_tests::{PURPOSE, TestCluster, backends, embedding, enrolled_gallery, identify};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_purposes_reviews_and_gallery_deletion() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = backends(dir.path()).await.remove(0);
    let cluster = TestCluster::all(&backend, dir.path()).await;
    let (mut synthetic, centres, seq) = enrolled_gallery(&cluster, "g", 128, 2, 300, 4).await;
    let mut search = cluster.search();

    // Verify: the enrolled subject matches, another does not.
    let verify = |subject: &str, probe: Vec<f32>| VerifyRequest {
        gallery: "g".into(),
        subject_id: subject.into(),
        probe: embedding(probe),
        min_change_seq: seq,
        purpose: PURPOSE.into(),
        ..Default::default()
    };
    let genuine =
        search.verify(verify("s00010", synthetic.sample(&centres[10]))).await.expect("verify").into_inner();
    assert_eq!(genuine.decision(), Decision::Mate);
    assert!(genuine.score.is_some_and(|s| s > 0.45), "{genuine:?}");
    let impostor =
        search.verify(verify("s00011", synthetic.sample(&centres[10]))).await.expect("verify").into_inner();
    assert_eq!(impostor.decision(), Decision::NoMate);

    // An analyst's review is audited against its search.
    let found = identify(&cluster, "g", synthetic.sample(&centres[5]), seq).await.expect("identify");
    let review = ReviewCandidateRequest {
        search_id: found.search_id.clone(),
        gallery: "g".into(),
        subject_id: "s00005".into(),
        outcome: ReviewOutcome::Confirmed.into(),
        case_ref: "case-1".into(),
    };
    let receipt = search.review_candidate(review.clone()).await.expect("review").into_inner();
    let leaves = cluster
        .audit()
        .list_leaves(ListLeavesRequest { start: receipt.audit_leaf_index, count: 1 })
        .await
        .expect("leaves")
        .into_inner()
        .leaves;
    let event = leaves[0].event.as_ref().expect("event");
    assert_eq!(event.operation(), Operation::Review);
    assert_eq!(event.request_id, found.search_id);
    assert_eq!(event.decision, "confirmed");
    // Auditors query the log by subject, paginated; the read itself becomes a leaf.
    let mut audit = cluster.audit();
    let query = QueryAuditRequest { subject_id: "s00005".into(), page_size: 1, ..Default::default() };
    let page = audit.query(query.clone()).await.expect("query").into_inner();
    assert_eq!(page.leaves.len(), 1);
    assert!(page.has_more, "enrolment, identify and review name s00005");
    let next =
        audit.query(QueryAuditRequest { page_token: page.next_page_token, ..query }).await.expect("page 2");
    assert!(next.into_inner().leaves[0].index > page.leaves[0].index);
    let reads = QueryAuditRequest { operation: Operation::AuditRead.into(), ..Default::default() };
    let reads = audit.query(reads).await.expect("query").into_inner().leaves;
    assert!(reads.len() >= 2, "both earlier reads were audited");
    let unspecified = ReviewCandidateRequest { outcome: 0, ..review.clone() };
    assert_eq!(
        search.review_candidate(unspecified).await.expect_err("refused").code(),
        Code::InvalidArgument
    );
    // Only real reviews: a search that never ran, a subject that was not its candidate, a
    // gallery outside the reviewer's token are refused, and each refusal is on the record.
    let unknown = ReviewCandidateRequest { search_id: "no-such-search".into(), ..review.clone() };
    assert_eq!(search.review_candidate(unknown).await.expect_err("unknown").code(), Code::NotFound);
    let stranger = ReviewCandidateRequest { subject_id: "s00299".into(), ..review.clone() };
    assert_eq!(
        search.review_candidate(stranger).await.expect_err("not a candidate").code(),
        Code::FailedPrecondition
    );
    let mut scoped = biomatch_auth::TokenSpec::new(
        "analyst-2",
        biomatch_domain::Role::Analyst,
        std::time::Duration::from_secs(60),
    );
    scoped.galleries = Some(vec!["other".into()]);
    let scoped = cluster.signer.issue(&scoped).expect("token");
    let outside = search.review_candidate(biomatch_client::request(review.clone(), &scoped)).await;
    assert_eq!(outside.expect_err("outside the token").code(), Code::PermissionDenied);
    let refused = QueryAuditRequest { operation: Operation::Review.into(), ..Default::default() };
    let refused = audit.query(refused).await.expect("query").into_inner().leaves;
    let outcomes: Vec<&str> =
        refused.iter().filter_map(|l| l.event.as_ref()).map(|e| e.outcome.as_str()).collect();
    assert_eq!(outcomes, ["OK", "NOT_FOUND", "FAILED_PRECONDITION"], "the refusals are on the record");

    // A gallery that lists purposes refuses searches for any other.
    let mut ingest = cluster.galleries();
    let created = ingest
        .create_gallery(CreateGalleryRequest {
            name: "watch".into(),
            dimension: 128,
            allowed_purposes: vec!["border".into()],
            ..Default::default()
        })
        .await
        .expect("created")
        .into_inner();
    assert!(created.settings_seq > 0, "the creation's change-log position");
    let probe = synthetic.sample(&centres[0]);
    let mut request = biomatch_proto::v1::IdentifyRequest {
        gallery: "watch".into(),
        probe: embedding(probe.clone()),
        purpose: "marketing".into(),
        // Answered by matchers that have seen the new gallery.
        min_change_seq: created.settings_seq,
        ..Default::default()
    };
    assert_eq!(search.identify(request.clone()).await.expect_err("refused").code(), Code::PermissionDenied);
    request.purpose = String::new();
    assert_eq!(search.identify(request.clone()).await.expect_err("refused").code(), Code::PermissionDenied);
    request.purpose = "border".into();
    let empty = search.identify(request).await.expect("allowed purpose").into_inner();
    assert!(empty.candidates.is_empty());
    assert_eq!(empty.decision(), Decision::NoMate);

    // Deleting a gallery removes it from search; its name can be reused.
    let deleted = ingest
        .delete_gallery(DeleteGalleryRequest { name: "g".into(), idempotency_key: String::new() })
        .await
        .expect("deleted")
        .into_inner();
    let err = identify(&cluster, "g", probe.clone(), deleted.change_seq).await.expect_err("gone");
    assert_eq!(err.code(), Code::NotFound);
    ingest
        .create_gallery(CreateGalleryRequest {
            name: "g".into(),
            dimension: 128,
            allowed_purposes: vec![PURPOSE.into()],
            ..Default::default()
        })
        .await
        .expect("name reused");
    let fresh = ingest
        .get_gallery(GetGalleryRequest { name: "g".into(), settings_only: false })
        .await
        .expect("gallery")
        .into_inner();
    assert_eq!(fresh.subject_count, 0);
    let r = identify(&cluster, "g", probe, deleted.change_seq + 1).await.expect("identify");
    assert!(r.candidates.is_empty(), "nothing of the deleted gallery comes back");
    cluster.running.shutdown().await;
}

/// A calibrated threshold reaches a live gallery: admins only, range-checked, versioned, audited,
/// and the next search decides and is audited with it. On every backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_are_set_by_admins_versioned_and_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (n, backend) in backends(dir.path()).await.into_iter().enumerate() {
        let cluster = TestCluster::all(&backend, &dir.path().join(format!("node-{n}"))).await;
        let (mut synthetic, centres, seq) = enrolled_gallery(&cluster, "t", 128, 1, 50, 9).await;
        let probe = synthetic.sample(&centres[3]);
        let before = identify(&cluster, "t", probe.clone(), seq).await.expect("identify");
        assert_eq!(before.decision(), Decision::Mate, "threshold 0.45 lets the mate through");
        let mate_score = before.candidates[0].score;

        let set = |threshold: f32| SetThresholdRequest {
            gallery: "t".into(),
            threshold,
            reason: "calibrated at FMR 1e-4".into(),
            policy: None,
        };
        let mut admin = cluster.galleries();
        // Only administrators; a threshold is a finite similarity; the gallery must exist.
        let denied = cluster.ingest().set_threshold(set(0.9)).await.expect_err("an enroller");
        assert_eq!(denied.code(), Code::PermissionDenied);
        for bad in [f32::NAN, 1.5, -2.0] {
            let err = admin.set_threshold(set(bad)).await.expect_err("out of range");
            assert_eq!(err.code(), Code::InvalidArgument, "{bad}");
        }
        let unknown = SetThresholdRequest { gallery: "nope".into(), ..set(0.5) };
        assert_eq!(admin.set_threshold(unknown).await.expect_err("unknown").code(), Code::NotFound);

        let raised = mate_score + 0.01;
        let g = admin.set_threshold(set(raised)).await.expect("set").into_inner();
        assert_eq!((g.threshold, g.threshold_version), (raised, 2));
        let again = admin.set_threshold(set(raised)).await.expect("same value").into_inner();
        assert_eq!(again.threshold_version, 2, "an unchanged threshold keeps its version");
        let stored = admin
            .get_gallery(GetGalleryRequest { name: "t".into(), settings_only: false })
            .await
            .expect("get");
        assert_eq!(stored.into_inner().threshold, raised);

        // The change is in force for searches that wait for its position (matchers apply it
        // from the change log; the search role caches settings until they report it).
        assert!(g.settings_seq > seq, "the change has a later position than the enrolment");
        let after = identify(&cluster, "t", probe, g.settings_seq).await.expect("identify");
        assert_eq!(after.threshold, raised);
        assert_eq!(after.decision(), Decision::NoMate, "the mate's score is now below the threshold");
        let mut audit = cluster.audit();
        let leaf = |index| ListLeavesRequest { start: index, count: 1 };
        let leaves = audit.list_leaves(leaf(after.audit_leaf_index)).await.expect("leaf").into_inner().leaves;
        let event = leaves[0].event.as_ref().expect("event");
        assert_eq!((event.threshold, event.threshold_version), (Some(raised), 2));
        let query = QueryAuditRequest { operation: Operation::SetThreshold.into(), ..Default::default() };
        let leaves = audit.query(query).await.expect("query").into_inner().leaves;
        let (changes, intents): (Vec<_>, Vec<_>) =
            leaves.into_iter().partition(|l| l.event.as_ref().is_some_and(|e| e.outcome == "OK"));
        assert_eq!(changes.len(), 1, "one outcome record per threshold version");
        assert_eq!(intents.len(), 2, "every call was announced by an intent leaf first");
        let change = changes[0].event.as_ref().expect("event");
        assert_eq!(change.actor.as_ref().expect("actor").subject, "ops-1");
        assert!(
            change.detail.contains("(version 1) ->") && change.detail.contains("FMR 1e-4"),
            "{}",
            change.detail
        );
        cluster.running.shutdown().await;
    }
}
