//! A matcher restarts from its encrypted shard snapshots and replays the change log written after
//! them; a corrupt or foreign snapshot is refused and the shard is rebuilt from the store.

use biomatch_config::ProcessRole;
use biomatch_domain::Role;
use biomatch_proto::v1::matcher_service_client::MatcherServiceClient;
use biomatch_proto::v1::{DeleteSubjectRequest, DescribeMatcherRequest, EnrollMode, EnrollRequest};
use biomatch_tests::{
    Backend, TestCluster, backends, config, embedding, enrolled_gallery, identify, subject_id,
};
use std::path::{Path, PathBuf};

/// (shard, change position of the snapshot it was restored from) of every shard held.
async fn restored_from(cluster: &TestCluster) -> Vec<(u32, u64)> {
    let token = cluster.token(Role::Service, "biomatch-search");
    let request = biomatch_client::request(DescribeMatcherRequest {}, &token);
    let described =
        MatcherServiceClient::new(cluster.channel.clone()).describe(request).await.expect("describe");
    let mut out: Vec<(u32, u64)> = described
        .into_inner()
        .shards
        .iter()
        .map(|s| (s.shard.as_ref().map_or(u32::MAX, |r| r.shard), s.snapshot_change_seq))
        .collect();
    out.sort_unstable();
    out
}

fn snapshot_files(data: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data.join("snapshots"))
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

async fn delete(cluster: &TestCluster, subject: &str) -> u64 {
    let request = DeleteSubjectRequest {
        gallery: "g".into(),
        subject_id: subject.into(),
        idempotency_key: String::new(),
    };
    cluster.ingest().delete_subject(request).await.expect("deleted").into_inner().change_seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_snapshots_replays_later_changes_and_refuses_bad_snapshots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = backends(dir.path()).await.remove(0);
    let Backend::Sqlite(data) = &backend else { unreachable!("SQLite comes first") };
    let all = || config(&backend, dir.path(), &[ProcessRole::All]);

    // 1. Enrol, delete one subject, stop: the shutdown writes one snapshot per shard.
    let first = TestCluster::start(all()).await;
    let (mut synthetic, centres, _) = enrolled_gallery(&first, "g", 32, 2, 100, 41).await;
    let at_snapshot = delete(&first, &subject_id(5)).await;
    first.running.shutdown().await;
    assert_eq!(snapshot_files(data).len(), 2, "one snapshot per shard");

    // 2. Without a matcher running, enrol a late subject and delete another.
    let ingest_only = TestCluster::start(config(
        &backend,
        dir.path(),
        &[ProcessRole::Audit, ProcessRole::Embed, ProcessRole::Ingest],
    ))
    .await;
    let late = synthetic.identity();
    let enrol = EnrollRequest {
        gallery: "g".into(),
        subject_id: "late".into(),
        samples: vec![embedding(synthetic.sample(&late)).expect("probe")],
        mode: EnrollMode::Add.into(),
        idempotency_key: "late".into(),
    };
    ingest_only.ingest().enroll(enrol).await.expect("enrolled");
    let head = delete(&ingest_only, &subject_id(6)).await;
    ingest_only.running.shutdown().await;

    // 3. Restart: both shards come from their snapshots, and the later changes are applied.
    let restarted = TestCluster::start(all()).await;
    let restored = restored_from(&restarted).await;
    assert_eq!(restored.len(), 2);
    assert!(restored.iter().all(|(_, seq)| *seq == at_snapshot), "{restored:?} vs {at_snapshot}");
    let hit = identify(&restarted, "g", synthetic.sample(&centres[3]), head).await.expect("identify");
    assert_eq!(hit.candidates[0].subject_id, subject_id(3));
    let hit = identify(&restarted, "g", synthetic.sample(&late), head).await.expect("identify");
    assert_eq!(hit.candidates[0].subject_id, "late", "enrolled after the snapshot");
    for gone in [5, 6] {
        let hits = identify(&restarted, "g", synthetic.sample(&centres[gone]), head).await.expect("identify");
        assert!(hits.candidates.iter().all(|c| c.subject_id != subject_id(gone)), "s{gone} stays deleted");
    }
    restarted.running.shutdown().await;

    // 4. A corrupt snapshot (one byte flipped) and a foreign one (shard 0's under shard 1's name)
    // are refused; both shards are rebuilt from the store and answer the same.
    let files = snapshot_files(data);
    assert_eq!(files.len(), 2);
    std::fs::copy(&files[0], &files[1]).expect("copy");
    let mut bytes = std::fs::read(&files[0]).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&files[0], bytes).expect("write");
    let rebuilt = TestCluster::start(all()).await;
    assert_eq!(restored_from(&rebuilt).await, vec![(0, 0), (1, 0)], "both refused");
    let hit = identify(&rebuilt, "g", synthetic.sample(&centres[3]), head).await.expect("identify");
    assert_eq!(hit.candidates[0].subject_id, subject_id(3));
    let hits = identify(&rebuilt, "g", synthetic.sample(&centres[5]), head).await.expect("identify");
    assert!(hits.candidates.iter().all(|c| c.subject_id != subject_id(5)));
    rebuilt.running.shutdown().await;
}
