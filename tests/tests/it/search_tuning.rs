//! Gallery settings end to end: the search role's cached settings follow the change log (a
//! threshold change, a gallery deleted and created again), and a gallery's search settings are
//! measured on its own data, recorded, audited and applied by its matchers.

use biomatch::synthetic::Synthetic;
use biomatch_domain::Role;
use biomatch_proto::v1::matcher_service_client::MatcherServiceClient;
use biomatch_proto::v1::search_service_client::SearchServiceClient;
use biomatch_proto::v1::{
    CreateGalleryRequest, DeleteGalleryRequest, DescribeMatcherRequest, EnrollMode, EnrollRequest, IndexKind,
    IndexSpec, Operation, QueryAuditRequest, SearchTuning, SetSearchTuningRequest, TuneGalleryRequest,
};
use biomatch_tests::{PURPOSE, RETENTION_SECS, TestCluster, backends, embedding, identify, subject_id};
use tonic::Code;

fn create(name: &str, dimension: u32, shards: u32, index: Option<IndexSpec>) -> CreateGalleryRequest {
    CreateGalleryRequest {
        name: name.into(),
        dimension,
        shard_count: shards,
        index,
        threshold: Some(0.45),
        allowed_purposes: vec![PURPOSE.into()],
        retention: Some(prost_types::Duration { seconds: RETENTION_SECS, nanos: 0 }),
        ..Default::default()
    }
}

/// Enrols one template of each centre under idempotency keys starting `keys`; returns the last
/// change position.
async fn enrol(
    cluster: &TestCluster,
    (gallery, keys): (&str, &str),
    synthetic: &mut Synthetic,
    centres: &[Vec<f32>],
) -> u64 {
    let requests: Vec<EnrollRequest> = centres
        .iter()
        .enumerate()
        .map(|(i, c)| EnrollRequest {
            gallery: gallery.into(),
            subject_id: subject_id(i),
            samples: vec![embedding(synthetic.sample(c)).expect("probe")],
            mode: EnrollMode::Add.into(),
            idempotency_key: format!("{keys}-{i}"),
        })
        .collect();
    let response = cluster.ingest().batch_enroll(tokio_stream::iter(requests)).await.expect("enrolled");
    response.into_inner().last_change_seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_settings_follow_a_gallery_deleted_and_created_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = backends(dir.path()).await.remove(0);
    // A clock that stands still: cached settings never expire, so only the matchers' answers
    // can show the search role that they changed.
    let config = biomatch_tests::config(&backend, dir.path(), &[biomatch_config::ProcessRole::All]);
    let cluster = TestCluster::start_with_clock(config, std::sync::Arc::new(|| 1_800_000_000_000)).await;
    let mut synthetic = Synthetic::new(32, 3);
    let centres: Vec<Vec<f32>> = (0..20).map(|_| synthetic.identity()).collect();
    let mut admin = cluster.galleries();
    admin.create_gallery(create("re", 32, 2, None)).await.expect("created");
    let seq = enrol(&cluster, ("re", "first"), &mut synthetic, &centres).await;
    let found = identify(&cluster, "re", synthetic.sample(&centres[3]), seq).await.expect("identify");
    assert_eq!(found.candidates[0].subject_id, subject_id(3));

    // The search role now holds the settings of a gallery of two shards. The gallery goes, and
    // one of one shard with other subjects takes its name.
    admin
        .delete_gallery(DeleteGalleryRequest { name: "re".into(), ..Default::default() })
        .await
        .expect("deleted");
    let centres: Vec<Vec<f32>> = (0..5).map(|_| synthetic.identity()).collect();
    admin.create_gallery(create("re", 32, 1, None)).await.expect("created again");
    let seq = enrol(&cluster, ("re", "second"), &mut synthetic, &centres).await;
    let found =
        identify(&cluster, "re", synthetic.sample(&centres[2]), seq).await.expect("identify the new one");
    assert_eq!(found.candidates[0].subject_id, subject_id(2));
    assert!(!found.partial && found.missing_shards.is_empty(), "{found:?}");
    let leaf = cluster
        .audit()
        .list_leaves(biomatch_proto::v1::ListLeavesRequest { start: found.audit_leaf_index, count: 1 })
        .await
        .expect("leaf")
        .into_inner()
        .leaves;
    assert!(!leaf[0].event.as_ref().expect("event").partial, "recorded as a whole answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_settings_are_measured_recorded_audited_and_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = backends(dir.path()).await.remove(0);
    let cluster = TestCluster::all(&backend, dir.path()).await;
    let spec = IndexSpec { kind: IndexKind::IvfRerank.into(), train_threshold: 1500, ..Default::default() };
    let mut admin = cluster.galleries();
    admin.create_gallery(create("tuned", 128, 1, Some(spec))).await.expect("created");
    // 128 dimensions: exact search itself ranks the mate first (at 32 it often does not).
    let mut synthetic = Synthetic::new(128, 5);
    let centres: Vec<Vec<f32>> = (0..2000).map(|_| synthetic.identity()).collect();
    let seq = enrol(&cluster, ("tuned", "tuned"), &mut synthetic, &centres).await;
    identify(&cluster, "tuned", synthetic.sample(&centres[7]), seq).await.expect("the trained shard answers");

    // Only administrators measure, and they name the gallery.
    let tune = TuneGalleryRequest {
        gallery: "tuned".into(),
        target_recall: 0.95,
        probes: 100,
        seed: 1,
        ..Default::default()
    };
    let denied = cluster.search().tune_gallery(tune.clone()).await.expect_err("an analyst");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let admin_token = cluster.token(Role::Admin, "ops-1");
    let mut search = SearchServiceClient::new(cluster.channel.clone());
    let unknown = TuneGalleryRequest { gallery: "nope".into(), ..tune.clone() };
    let err =
        search.tune_gallery(biomatch_client::request(unknown, &admin_token)).await.expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound);
    let bad = TuneGalleryRequest { target_recall: 1.5, ..tune.clone() };
    let err = search.tune_gallery(biomatch_client::request(bad, &admin_token)).await.expect_err("bad target");
    assert_eq!(err.code(), Code::InvalidArgument);

    let proposal = search
        .tune_gallery(biomatch_client::request(tune, &admin_token))
        .await
        .expect("measured")
        .into_inner();
    assert!(proposal.met_target && proposal.recall >= 0.95, "{proposal:?}");
    assert!(proposal.nprobe >= 1 && proposal.rerank_depth >= 64, "{proposal:?}");
    assert_eq!((proposal.probes, proposal.templates), (100, 2000));
    assert!(proposal.queries_per_second > 0.0 && proposal.exact_queries_per_second > 0.0);

    // Recorded, it is versioned, shown with the gallery and audited; the matcher searches with it.
    let record = |tuning: SearchTuning| SetSearchTuningRequest {
        gallery: "tuned".into(),
        tuning: Some(tuning),
        reason: "tuned on the gallery's own data".into(),
    };
    let g = admin.set_search_tuning(record(proposal)).await.expect("recorded").into_inner();
    let recorded = g.tuning.expect("tuning");
    assert_eq!((recorded.version, recorded.nprobe, recorded.pinned), (1, proposal.nprobe, false));
    // Searching with the recorded settings finds mates about as often as measured.
    let mut found = 0;
    for (i, centre) in centres.iter().enumerate().take(40) {
        let answer = identify(&cluster, "tuned", synthetic.sample(centre), g.settings_seq).await;
        found += usize::from(
            answer.expect("identify").candidates.first().is_some_and(|c| c.subject_id == subject_id(i)),
        );
    }
    assert!(found >= 34, "{found} of 40 mates ranked first with {recorded:?}");
    let pinned = SearchTuning { nprobe: 1, pinned: true, ..proposal };
    let g = admin.set_search_tuning(record(pinned)).await.expect("pinned").into_inner();
    assert_eq!(g.tuning.as_ref().map(|t| (t.version, t.nprobe, t.pinned)), Some((2, 1, true)));
    let too_deep = SearchTuning { rerank_depth: 100_000, ..proposal };
    let err = admin.set_search_tuning(record(too_deep)).await.expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument);

    // The matcher applied version 2 from the change log once it reached the change.
    let service = cluster.token(Role::Service, "biomatch-search");
    let mut matcher = MatcherServiceClient::new(cluster.channel.clone());
    identify(&cluster, "tuned", synthetic.sample(&centres[9]), g.settings_seq).await.expect("caught up");
    let shards = matcher
        .describe(biomatch_client::request(DescribeMatcherRequest {}, &service))
        .await
        .expect("describe")
        .into_inner()
        .shards;
    let shard = shards.iter().find(|s| s.shard.as_ref().is_some_and(|r| r.gallery == "tuned")).expect("held");
    assert_eq!((shard.nprobe, shard.settings_source.as_str()), (1, "gallery"));

    let query = QueryAuditRequest { operation: Operation::SearchTuning.into(), ..Default::default() };
    let leaves = cluster.audit().query(query).await.expect("query").into_inner().leaves;
    let details: Vec<String> = leaves
        .iter()
        .filter_map(|l| l.event.as_ref())
        .map(|e| format!("{} {}", e.outcome, e.detail))
        .collect();
    assert!(details.iter().any(|d| d.contains("measured (not applied)")), "{details:?}");
    assert!(
        details.iter().any(|d| d.contains("search settings version 2") && d.contains("pinned")),
        "{details:?}"
    );
    assert!(details.iter().filter(|d| d.starts_with("INTENT")).count() >= 2, "{details:?}");
}
