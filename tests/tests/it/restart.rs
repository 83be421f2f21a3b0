//! A matcher that restarts answers exactly as before, deletions included.

use biomatch_proto::v1::{Decision, DeleteSubjectRequest};
use biomatch_tests::{TestCluster, backends, enrolled_gallery, identify};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_cluster_gives_the_same_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    for backend in backends(dir.path()).await {
        let cluster = TestCluster::all(&backend, dir.path()).await;
        let (mut synthetic, centres, _) = enrolled_gallery(&cluster, "g", 96, 4, 1500, 5).await;
        let deleted = cluster
            .ingest()
            .delete_subject(DeleteSubjectRequest {
                gallery: "g".into(),
                subject_id: "s00007".into(),
                idempotency_key: String::new(),
            })
            .await
            .expect("deleted")
            .into_inner();
        let probes: Vec<Vec<f32>> = (0..40).map(|i| synthetic.sample(&centres[i * 7])).collect();
        let mut before = Vec::new();
        for p in &probes {
            before.push(
                identify(&cluster, "g", p.clone(), deleted.change_seq).await.expect("identify").candidates,
            );
        }
        assert!(before[1].iter().all(|c| c.subject_id != "s00007"), "deleted subject is not returned");
        cluster.running.shutdown().await;

        let cluster = TestCluster::all(&backend, dir.path()).await;
        for (p, expected) in probes.iter().zip(&before) {
            let r = identify(&cluster, "g", p.clone(), 0).await.expect("identify after restart");
            assert_eq!(&r.candidates, expected, "{backend:?}: same answer after restart");
        }
        let r = identify(&cluster, "g", probes[1].clone(), 0).await.expect("identify");
        assert_eq!(r.decision(), Decision::NoMate, "the deleted subject stays deleted");
        cluster.running.shutdown().await;
    }
}
