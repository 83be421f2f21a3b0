//! The vertical slice on every backend: enroll thousands, identify mated and unmated probes, and
//! find exactly one audit leaf per identify.

use biomatch_proto::v1::{Decision, ListLeavesRequest, Operation};
use biomatch_tests::{TestCluster, backends, enrolled_gallery, identify, subject_id};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_finds_mates_and_audits_every_query() {
    let dir = tempfile::tempdir().expect("tempdir");
    for backend in backends(dir.path()).await {
        let cluster = TestCluster::all(&backend, dir.path()).await;
        let (mut synthetic, centres, seq) = enrolled_gallery(&cluster, "travelers", 128, 3, 3000, 11).await;

        let mut search_ids = Vec::new();
        for i in (0..centres.len()).step_by(60) {
            let probe = synthetic.sample(&centres[i]);
            let r = identify(&cluster, "travelers", probe, seq).await.expect("identify");
            assert_eq!(r.candidates[0].subject_id, subject_id(i), "{backend:?}: mate at rank 1");
            assert_eq!(r.decision(), Decision::Mate);
            assert_eq!(r.candidates.len(), 5);
            assert!(r.candidates.windows(2).all(|w| w[0].score >= w[1].score), "sorted by score");
            assert_eq!(r.candidates.iter().map(|c| c.rank).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
            search_ids.push(r.search_id);
        }
        for _ in 0..20 {
            let stranger = synthetic.identity();
            let probe = synthetic.sample(&stranger);
            let r = identify(&cluster, "travelers", probe, seq).await.expect("identify");
            assert_eq!(
                r.decision(),
                Decision::NoMate,
                "{backend:?}: unenrolled probe, best {}",
                r.candidates[0].score
            );
            search_ids.push(r.search_id);
        }

        // Exactly one identify leaf per search, carrying its candidates.
        let leaves = cluster
            .audit()
            .list_leaves(ListLeavesRequest { start: 0, count: 1000 })
            .await
            .expect("leaves")
            .into_inner()
            .leaves;
        let identifies: Vec<_> = leaves
            .iter()
            .filter_map(|l| l.event.as_ref())
            .filter(|e| e.operation() == Operation::Identify)
            .collect();
        assert_eq!(identifies.len(), search_ids.len());
        for id in &search_ids {
            let matching: Vec<_> = identifies.iter().filter(|e| &e.request_id == id).collect();
            assert_eq!(matching.len(), 1, "one leaf for search {id}");
            assert_eq!(matching[0].candidates.len(), 5);
            assert_eq!(
                matching[0].actor.as_ref().map(|a| (a.subject.as_str(), a.device_id.as_str())),
                Some(("kiosk-1", "lane-1"))
            );
        }
        cluster.running.shutdown().await;
    }
}
