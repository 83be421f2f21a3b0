//! Retention: subjects leave every store and index when their time is up, and the purge is
//! audited. Time is an injected clock, not a sleep.

use biomatch_proto::v1::{
    CreateGalleryRequest, Decision, EnrollRequest, ListLeavesRequest, Operation, PurgeExpiredRequest,
};
use biomatch_tests::{PURPOSE, RETENTION_SECS, TestCluster, backends, embedding, enrolled_gallery, identify};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_subjects_are_purged_everywhere_and_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    for backend in backends(dir.path()).await {
        let now = Arc::new(AtomicI64::new(1_800_000_000_000));
        let clock = now.clone();
        let config = biomatch_tests::config(&backend, dir.path(), &[biomatch_config::ProcessRole::All]);
        let cluster =
            TestCluster::start_with_clock(config, Arc::new(move || clock.load(Ordering::SeqCst))).await;
        let (mut synthetic, centres, seq) = enrolled_gallery(&cluster, "flight", 32, 2, 20, 17).await;

        // Half-way through the retention period one more traveler is enrolled.
        now.fetch_add(RETENTION_SECS * 500, Ordering::SeqCst);
        let late = synthetic.identity();
        let enroll = EnrollRequest {
            gallery: "flight".into(),
            subject_id: "late".into(),
            samples: vec![embedding(synthetic.sample(&late)).expect("probe")],
            ..Default::default()
        };
        cluster.ingest().enroll(enroll).await.expect("enrolled");

        // Nothing has expired yet.
        let mut admin = cluster.galleries();
        assert_eq!(admin.purge_expired(PurgeExpiredRequest {}).await.expect("purge").into_inner().purged, 0);
        let found = identify(&cluster, "flight", synthetic.sample(&centres[3]), seq).await.expect("identify");
        assert_eq!(found.candidates[0].subject_id, "s00003");

        // One second after the first twenty expire.
        now.fetch_add(RETENTION_SECS * 500 + 1000, Ordering::SeqCst);
        let purge = admin.purge_expired(PurgeExpiredRequest {}).await.expect("purge").into_inner();
        assert_eq!(purge.purged, 20, "{backend:?}");
        let gone = identify(&cluster, "flight", synthetic.sample(&centres[3]), purge.last_change_seq)
            .await
            .expect("ok");
        assert!(
            gone.candidates.iter().all(|c| c.subject_id.starts_with("late")),
            "only the late traveler is left"
        );
        assert_eq!(gone.decision(), Decision::NoMate);
        let kept =
            identify(&cluster, "flight", synthetic.sample(&late), purge.last_change_seq).await.expect("ok");
        assert_eq!(kept.candidates[0].subject_id, "late");

        // The purge is a receipt in the audit log, naming every purged subject.
        let leaf = cluster
            .audit()
            .list_leaves(ListLeavesRequest { start: purge.audit_leaf_indexes[0], count: 1 })
            .await
            .expect("leaf")
            .into_inner()
            .leaves
            .remove(0)
            .event
            .expect("event");
        assert_eq!(leaf.operation(), Operation::Purge);
        assert_eq!(leaf.subject_ids.len(), 20);

        // A gallery without a retention policy takes no enrolment.
        let forever = CreateGalleryRequest {
            name: "forever".into(),
            dimension: 32,
            allowed_purposes: vec![PURPOSE.into()],
            ..Default::default()
        };
        admin.create_gallery(forever).await.expect("created");
        let refused = cluster
            .ingest()
            .enroll(EnrollRequest {
                gallery: "forever".into(),
                subject_id: "x".into(),
                samples: vec![embedding(synthetic.sample(&late)).expect("probe")],
                ..Default::default()
            })
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), Code::FailedPrecondition);
        cluster.running.shutdown().await;
    }
}
