//! The vertical slice on every backend: enroll thousands, identify mated and unmated probes, and
//! find exactly one audit leaf per identify.

use biomatch_proto::v1::{Decision, ListLeavesRequest, Operation};
use biomatch_tests::{Backend, TestCluster, backends, config, enrolled_gallery, identify, subject_id};

/// A cluster that discloses every candidate (candidate margin 1): these tests check the matching
/// itself, whole top-k lists included, not what a caller may be shown.
async fn disclosing_cluster(backend: &Backend, dir: &std::path::Path) -> TestCluster {
    let mut c = config(backend, dir, &[biomatch_config::ProcessRole::All]);
    c.search.candidate_margin = 1.0;
    TestCluster::start(c).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_finds_mates_and_audits_every_query() {
    let dir = tempfile::tempdir().expect("tempdir");
    for backend in backends(dir.path()).await {
        let cluster = disclosing_cluster(&backend, dir.path()).await;
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
                Some(("integration-1", "lane-1"))
            );
        }
        cluster.running.shutdown().await;
    }
}

/// With exact shards, the merged top-k of a sharded gallery is the top-k of one index holding the
/// whole gallery: same subjects, same order, same scores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_answers_equal_one_index_over_the_whole_gallery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = backends(dir.path()).await.remove(0);
    let cluster = disclosing_cluster(&backend, dir.path()).await;
    // The same seed gives the same identities and samples in both galleries.
    let (mut synthetic, centres, _) = enrolled_gallery(&cluster, "one", 64, 1, 1_500, 9).await;
    let (_, _, seq) = enrolled_gallery(&cluster, "four", 64, 4, 1_500, 9).await;
    let mut search = cluster.search();
    for i in 0..40 {
        let probe = synthetic.sample(&centres[i * 37]);
        let ask = |gallery: &str| biomatch_proto::v1::IdentifyRequest {
            gallery: gallery.into(),
            probe: biomatch_tests::embedding(probe.clone()),
            k: 25,
            min_change_seq: seq,
            purpose: biomatch_tests::PURPOSE.into(),
            ..Default::default()
        };
        let one = search.identify(ask("one")).await.expect("one").into_inner().candidates;
        let four = search.identify(ask("four")).await.expect("four").into_inner().candidates;
        assert_eq!(one.len(), 25);
        let view = |c: &[biomatch_proto::v1::Candidate]| -> Vec<(String, u32)> {
            c.iter().map(|c| (c.subject_id.clone(), c.rank)).collect()
        };
        assert_eq!(view(&one), view(&four), "probe {i}");
        assert!(one.iter().zip(&four).all(|(a, b)| (a.score - b.score).abs() < 1e-5), "probe {i}");
        assert!(four.iter().map(|c| c.shard).collect::<std::collections::HashSet<_>>().len() > 1);
    }
    cluster.running.shutdown().await;
}
