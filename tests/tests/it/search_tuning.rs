//! Gallery settings end to end: the search role's cached settings follow the change log (a
//! threshold change, a gallery deleted and created again), and a gallery's search settings are
//! measured on its own data (or an operator's labelled probes), recorded, audited and applied by
//! its matchers, which keep it through a rebuild.

use biomatch::synthetic::Synthetic;
use biomatch_domain::Role;
use biomatch_proto::v1::matcher_service_client::MatcherServiceClient;
use biomatch_proto::v1::search_service_client::SearchServiceClient;
use biomatch_proto::v1::{
    AuditEvent, CreateGalleryRequest, DeleteGalleryRequest, DescribeMatcherRequest, EnrollMode,
    EnrollRequest, IndexKind, IndexSpec, LabelledProbe, Operation, QueryAuditRequest, SearchTuning,
    SetSearchTuningRequest, ShardStatus, TuneGalleryRequest,
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

/// `TuneGallery`, waiting while a matcher is busy measuring (its automatic tuning after training).
async fn tune_gallery(
    search: &mut SearchServiceClient<tonic::transport::Channel>,
    request: impl Fn() -> tonic::Request<TuneGalleryRequest>,
) -> Result<SearchTuning, tonic::Status> {
    for _ in 0..120 {
        match search.tune_gallery(request()).await {
            Err(e) if e.code() == Code::ResourceExhausted => {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await
            }
            other => return other.map(tonic::Response::into_inner),
        }
    }
    search.tune_gallery(request()).await.map(tonic::Response::into_inner)
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

    let proposal = tune_gallery(&mut search, || biomatch_client::request(tune.clone(), &admin_token))
        .await
        .expect("measured");
    assert!(proposal.met_target && proposal.recall >= 0.95, "{proposal:?}");
    assert_eq!((proposal.probes, proposal.templates), (100, 2000));
    assert!(proposal.queries_per_second > 0.0 && proposal.exact_queries_per_second > 0.0);
    // At 2,000 templates exact search may well be as fast: then it is the proposal, and there is
    // nothing to record; this test records settings of its own choosing instead.
    let proposal = match (proposal.nprobe, proposal.rerank_depth) {
        (0, 0) => SearchTuning { nprobe: 16, rerank_depth: 128, ..proposal },
        (nprobe, depth) => {
            assert!(nprobe >= 1 && depth >= 64, "{proposal:?}");
            proposal
        }
    };

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
    identify(&cluster, "tuned", synthetic.sample(&centres[9]), g.settings_seq).await.expect("caught up");
    let shards = described(&cluster, "tuned").await;
    let shard = shards.first().expect("held");
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

/// The shards of `gallery` a matcher holds, as it describes them.
async fn described(cluster: &TestCluster, gallery: &str) -> Vec<ShardStatus> {
    let service = cluster.token(Role::Service, "biomatch-search");
    let mut matcher = MatcherServiceClient::new(cluster.channel.clone());
    let shards = matcher
        .describe(biomatch_client::request(DescribeMatcherRequest {}, &service))
        .await
        .expect("describe")
        .into_inner()
        .shards;
    shards.into_iter().filter(|s| s.shard.as_ref().is_some_and(|r| r.gallery == gallery)).collect()
}

async fn tuning_details(cluster: &TestCluster) -> Vec<String> {
    tuning_events(cluster).await.into_iter().map(|e| e.detail).collect()
}

async fn tuning_events(cluster: &TestCluster) -> Vec<AuditEvent> {
    let query = QueryAuditRequest { operation: Operation::SearchTuning.into(), ..Default::default() };
    let leaves = cluster.audit().query(query).await.expect("query").into_inner().leaves;
    leaves.into_iter().filter_map(|l| l.event).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_probes_exact_choices_and_a_rebuilt_matcher_keeping_the_recorded_tuning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = backends(dir.path()).await.remove(0);
    let cluster = TestCluster::all(&backend, dir.path()).await;
    let admin_token = cluster.token(Role::Admin, "ops-1");
    let mut search = SearchServiceClient::new(cluster.channel.clone());
    let mut admin = cluster.galleries();
    let mut synthetic = Synthetic::new(128, 9);

    // A shard too small to train searches exactly: that is the choice, not IVF settings.
    let spec = IndexSpec { kind: IndexKind::IvfRerank.into(), train_threshold: 1500, ..Default::default() };
    admin.create_gallery(create("tiny", 128, 1, Some(spec))).await.expect("created");
    let few: Vec<Vec<f32>> = (0..20).map(|_| synthetic.identity()).collect();
    enrol(&cluster, ("tiny", "tiny"), &mut synthetic, &few).await;
    let tune = |gallery: &str| TuneGalleryRequest {
        gallery: gallery.into(),
        target_recall: 0.9,
        probes: 100,
        seed: 1,
        ..Default::default()
    };
    let exact = tune_gallery(&mut search, || biomatch_client::request(tune("tiny"), &admin_token))
        .await
        .expect("measured");
    assert_eq!((exact.nprobe, exact.rerank_depth, exact.recall), (0, 0, 1.0), "{exact:?}");

    // Two shards of about 1,000, trained at 600; the operator's probes are second samples of
    // 100 enrolled subjects, each measured by its subject's shard.
    let spec = IndexSpec { kind: IndexKind::IvfRerank.into(), train_threshold: 600, ..Default::default() };
    admin.create_gallery(create("labelled", 128, 2, Some(spec))).await.expect("created");
    let centres: Vec<Vec<f32>> = (0..2000).map(|_| synthetic.identity()).collect();
    let seq = enrol(&cluster, ("labelled", "labelled"), &mut synthetic, &centres).await;
    identify(&cluster, "labelled", synthetic.sample(&centres[1]), seq).await.expect("caught up");
    let probes: Vec<LabelledProbe> = (0..100)
        .map(|i| LabelledProbe { subject_id: subject_id(i), values: synthetic.sample(&centres[i]) })
        .collect();
    let with = |probes: Vec<LabelledProbe>| {
        biomatch_client::request(
            TuneGalleryRequest { labelled_probes: probes, ..tune("labelled") },
            &admin_token,
        )
    };
    let mut nan = probes.clone();
    nan[5].values[3] = f32::NAN;
    let mut short = probes.clone();
    short[7].values.pop();
    // Too few subjects, or one subject's copies padded with others: a verify, not a measurement.
    let one = probes[..1].to_vec();
    let mut padded = probes.clone();
    padded.extend(vec![probes[0].clone(); 10]);
    for bad in [nan, short, one, padded] {
        let err = search.tune_gallery(with(bad)).await.expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(
            !err.message().contains(&subject_id(5)) && !err.message().contains(&subject_id(7)),
            "{err:?}"
        );
    }
    // Probes of subjects nobody enrolled measure nothing: refused, and recorded.
    let strangers: Vec<LabelledProbe> = probes
        .iter()
        .enumerate()
        .map(|(i, p)| LabelledProbe { subject_id: format!("stranger-{i}"), ..p.clone() })
        .collect();
    let err = tune_gallery(&mut search, || with(strangers.clone())).await.expect_err("nothing measured");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let proposal = tune_gallery(&mut search, || with(probes.clone())).await.expect("measured");
    assert!(proposal.met_target && proposal.recall >= 0.9, "{proposal:?}");
    assert!(proposal.probes > 10 && proposal.probes < 100, "the smaller shard's share: {proposal:?}");
    let details = tuning_details(&cluster).await;
    assert!(details.iter().any(|d| d.contains("exact search") && d.contains("drawn probes")), "{details:?}");
    assert!(details.iter().any(|d| d.contains("100 labelled probes")), "{details:?}");
    assert!(details.iter().all(|d| !d.contains(&subject_id(3))), "never a probe's subject: {details:?}");
    // The leaf names every subject the probes claimed, as a verify's would.
    let events = tuning_events(&cluster).await;
    let named =
        events.iter().find(|e| e.detail.contains("100 labelled probes") && e.outcome == "OK").expect("leaf");
    let refused = events.iter().find(|e| e.outcome == "FailedPrecondition").expect("the strangers' leaf");
    assert!(
        refused.subject_ids.iter().all(|s| s.starts_with("stranger-")) && refused.subject_ids.len() == 100
    );
    let claimed: Vec<String> = (0..100).map(subject_id).collect();
    assert_eq!(named.subject_ids.len(), 100, "{:?}", named.subject_ids);
    assert!(claimed.iter().all(|s| named.subject_ids.contains(s)));

    // Recorded unpinned, the tuning survives a matcher that rebuilds its shards from the store:
    // they count as tuned at the recorded size, so automatic tuning leaves them alone.
    let record = SetSearchTuningRequest {
        gallery: "labelled".into(),
        tuning: Some(SearchTuning { nprobe: 3, ..proposal }),
        reason: "tuned with the operator's probes".into(),
    };
    let g = admin.set_search_tuning(record).await.expect("recorded").into_inner();
    identify(&cluster, "labelled", synthetic.sample(&centres[2]), g.settings_seq).await.expect("caught up");
    cluster.running.shutdown().await;
    let snapshots = biomatch_tests::config(&backend, dir.path(), &[]).data_dir.join("snapshots");
    if snapshots.exists() {
        std::fs::remove_dir_all(&snapshots).expect("snapshots removed");
    }
    let cluster = TestCluster::all(&backend, dir.path()).await;
    identify(&cluster, "labelled", synthetic.sample(&centres[4]), g.settings_seq).await.expect("rebuilt");
    // An automatic tuning would have finished well within this.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let shards = described(&cluster, "labelled").await;
    assert_eq!(shards.len(), 2);
    for shard in &shards {
        assert_eq!(shard.snapshot_change_seq, 0, "rebuilt from the store: {shard:?}");
        assert_eq!((shard.nprobe, shard.settings_source.as_str()), (3, "gallery"), "{shard:?}");
    }
    cluster.running.shutdown().await;
}
