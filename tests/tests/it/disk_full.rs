//! Disk full: the gallery store and the audit store each run out of space on their own (SQLite
//! on a small tmpfs of its own, PostgreSQL through a trigger raising `disk_full`, SQLSTATE 53100,
//! as the server does when it cannot extend a file). What cannot be written is refused with
//! `RESOURCE_EXHAUSTED` "storage is full", nothing answers without its audit leaf, no refused
//! request leaves half a record, the processes keep serving, and once space returns everything
//! acknowledged before is still there and the cluster carries on without a restart.

mod disk;
mod stall;

use biomatch::synthetic::Synthetic;
use biomatch_config::{ProcessRole, ServeConfig};
use biomatch_domain::Role;
use biomatch_proto::v1::matcher_service_client::MatcherServiceClient;
use biomatch_proto::v1::{
    AuditEvent, CreateGalleryRequest, DeleteSubjectRequest, DescribeMatcherRequest, EnrollMode,
    EnrollRequest, GetGalleryRequest, ListGalleriesRequest, ListLeavesRequest, VerifyRequest,
};
use biomatch_tests::{PURPOSE, RETENTION_SECS, TestCluster, config, embedding, enrolled_gallery, identify};
use disk::{Disk, Setup};
use std::collections::HashMap;
use std::path::Path;
use tonic::Code;

/// Wide enough that every synthetic identity is found first among the others.
pub(crate) const DIMENSION: u32 = 128;

/// The audit role alone, and every other role in a second process that appends to it.
async fn split_cluster(setup: &Setup, base: &Path) -> (TestCluster, TestCluster) {
    let audit = TestCluster::start(config(&setup.audit, base, &[ProcessRole::Audit])).await;
    let rest = TestCluster::start(rest_config(setup, base, &audit)).await;
    (audit, rest)
}

fn rest_config(setup: &Setup, base: &Path, audit: &TestCluster) -> ServeConfig {
    let roles = [ProcessRole::Embed, ProcessRole::Ingest, ProcessRole::Matcher, ProcessRole::Search];
    let mut c = config(&setup.rest, base, &roles);
    c.endpoints.audit = Some(format!("http://{}", audit.running.grpc_addr));
    // Snapshots at shutdown only, so which one exists is certain.
    c.matcher.snapshot_interval_ms = 3_600_000;
    c
}

pub(crate) fn enrol_request(subject: &str, probe: Vec<f32>, key: &str) -> EnrollRequest {
    EnrollRequest {
        gallery: "g".into(),
        subject_id: subject.into(),
        samples: vec![embedding(probe).expect("probe")],
        mode: EnrollMode::Add.into(),
        idempotency_key: key.into(),
    }
}

fn gallery_request(name: &str) -> CreateGalleryRequest {
    CreateGalleryRequest {
        name: name.into(),
        dimension: DIMENSION,
        shard_count: 2,
        threshold: Some(0.45),
        allowed_purposes: vec![PURPOSE.into()],
        retention: Some(prost_types::Duration { seconds: RETENTION_SECS, nanos: 0 }),
        ..Default::default()
    }
}

fn verify_request(subject: &str, probe: Vec<f32>, min_change_seq: u64) -> VerifyRequest {
    VerifyRequest {
        gallery: "g".into(),
        subject_id: subject.into(),
        probe: embedding(probe),
        purpose: PURPOSE.into(),
        min_change_seq,
        ..Default::default()
    }
}

/// The refusal of a request for want of space: `RESOURCE_EXHAUSTED`, saying so.
#[track_caller]
fn assert_full<T: std::fmt::Debug>(result: Result<T, tonic::Status>, what: &str, says: &str) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), Code::ResourceExhausted, "{what}: {status:?}");
    assert!(status.message().contains(says), "{what}: {:?} should say {says:?}", status.message());
}

/// Every acknowledged subject is found first by a fresh sample of its face.
async fn assert_all_found(
    rest: &TestCluster,
    synthetic: &mut Synthetic,
    known: &[(String, Vec<f32>)],
    seq: u64,
) {
    for (subject, centre) in known {
        let found = identify(rest, "g", synthetic.sample(centre), seq).await.expect("identify");
        let first = found.candidates.first().map(|c| c.subject_id.as_str());
        assert_eq!(first, Some(subject.as_str()), "{subject} is still enrolled and found");
    }
}

async fn subject_count(rest: &TestCluster) -> u64 {
    let request = GetGalleryRequest { name: "g".into(), settings_only: false };
    rest.galleries().get_gallery(request).await.expect("gallery").into_inner().subject_count
}

async fn gallery_names(rest: &TestCluster) -> Vec<String> {
    let listed = rest.galleries().list_galleries(ListGalleriesRequest {}).await.expect("galleries");
    let mut names: Vec<String> = listed.into_inner().galleries.into_iter().map(|g| g.name).collect();
    names.sort();
    names
}

/// Every leaf of the log with its event, by index.
async fn leaves(audit: &TestCluster) -> Vec<(u64, AuditEvent)> {
    let mut all = Vec::new();
    loop {
        let request = ListLeavesRequest { start: all.len() as u64, count: 1000 };
        let page = audit.audit().list_leaves(request).await.expect("leaves").into_inner();
        // Each page read is itself a leaf: stop at the size the page was read at.
        let at_end = page.leaves.is_empty() || all.len() + page.leaves.len() >= page.tree_size as usize;
        all.extend(page.leaves.into_iter().map(|l| (l.index, l.event.expect("decodable event"))));
        if at_end {
            return all;
        }
    }
}

/// `biomatch audit verify --strict`, as an operator runs it: the log is intact (every leaf, hash,
/// chain link and signed checkpoint) and every announced change has its outcome.
pub(crate) async fn verify_strict(audit: &TestCluster) {
    strictly_verified(audit).await.expect("the audit log verifies with no change left unconcluded");
}

/// `audit verify --strict`'s result, its error in words.
async fn strictly_verified(audit: &TestCluster) -> Result<(), String> {
    let endpoint = format!("http://{}", audit.running.grpc_addr);
    let token = audit.token(Role::Auditor, "auditor-1");
    let args = ["biomatch", "audit", "verify", "--strict", "--endpoint", &endpoint, "--token", &token];
    let cli = <biomatch::cli::Cli as clap::Parser>::try_parse_from(args).expect("arguments");
    biomatch::cli::run(cli).await.map_err(|e| format!("{e:#}"))
}

/// (shard, change position of the snapshot it was restored from) of every shard of gallery g.
async fn restored_from(rest: &TestCluster) -> Vec<(u32, u64)> {
    let token = rest.token(Role::Service, "biomatch-search");
    let request = biomatch_client::request(DescribeMatcherRequest {}, &token);
    let described =
        MatcherServiceClient::new(rest.channel.clone()).describe(request).await.expect("describe");
    let mut out: Vec<(u32, u64)> = described
        .into_inner()
        .shards
        .iter()
        .filter_map(|s| Some((s.shard.as_ref().filter(|r| r.gallery == "g")?.shard, s.snapshot_change_seq)))
        .collect();
    out.sort_unstable();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_gallery_store_refuses_changes_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    for setup in disk::setups(dir.path()).await {
        let base = dir.path();
        let (audit, mut rest) = split_cluster(&setup, base).await;
        let (mut synthetic, centres, first_seq) = enrolled_gallery(&rest, "g", DIMENSION, 2, 40, 19).await;
        let mut known: Vec<(String, Vec<f32>)> =
            centres.iter().enumerate().map(|(i, c)| (biomatch_tests::subject_id(i), c.clone())).collect();
        // A restart writes each shard's snapshot, the one a later restart must still find usable.
        rest.running.shutdown().await;
        rest = TestCluster::start(rest_config(&setup, base, &audit)).await;
        let mut seq = first_seq;
        for i in 0..5 {
            let (subject, centre) = (format!("late{i}"), synthetic.identity());
            let request = enrol_request(&subject, synthetic.sample(&centre), &subject);
            seq = rest.ingest().enroll(request).await.expect("enrolled").into_inner().change_seq;
            known.push((subject, centre));
        }

        setup.gallery_disk.fill().await;
        let full = "storage is full";
        let refused = synthetic.identity();
        let refused_request = enrol_request("refused", synthetic.sample(&refused), "refused");
        assert_full(rest.ingest().enroll(refused_request.clone()).await, "an enrolment", full);
        let batch: Vec<(String, Vec<f32>)> =
            (0..3).map(|i| (format!("batch{i}"), synthetic.identity())).collect();
        let batch_requests: Vec<EnrollRequest> =
            batch.iter().map(|(s, c)| enrol_request(s, synthetic.sample(c), s)).collect();
        let streamed = rest.ingest().batch_enroll(tokio_stream::iter(batch_requests.clone())).await;
        assert_full(streamed, "a batch enrolment", full);
        assert_full(rest.galleries().create_gallery(gallery_request("h")).await, "a new gallery", full);
        let delete =
            DeleteSubjectRequest { gallery: "g".into(), subject_id: "s00001".into(), ..Default::default() };
        assert_full(rest.ingest().delete_subject(delete.clone()).await, "a deletion", full);
        // Reads need no space: searches are answered, each with its committed leaf.
        let (subject, centre) = &known[2];
        let found = identify(&rest, "g", synthetic.sample(centre), seq).await.expect("searches go on");
        assert_eq!(found.candidates.first().map(|c| &c.subject_id), Some(subject));
        assert_eq!(subject_count(&rest).await, 45, "nothing refused was written");
        assert_eq!(gallery_names(&rest).await, ["g"], "no half-made gallery");

        // Space returns: the same requests succeed, without a restart.
        setup.gallery_disk.free().await;
        let enrolled = rest.ingest().enroll(refused_request).await.expect("enrolled now").into_inner();
        assert!(!enrolled.replayed, "the refused enrolment was not made before");
        let streamed = rest.ingest().batch_enroll(tokio_stream::iter(batch_requests)).await;
        assert_eq!(streamed.expect("batch enrolled now").into_inner().accepted, 3);
        rest.galleries().create_gallery(gallery_request("h")).await.expect("gallery created now");
        seq = rest.ingest().delete_subject(delete).await.expect("deleted now").into_inner().change_seq;
        known.remove(1);
        known.push(("refused".into(), refused));
        known.extend(batch);
        assert_all_found(&rest, &mut synthetic, &known, seq).await;
        assert_eq!(subject_count(&rest).await, known.len() as u64);

        // A snapshot written on a full disk fails whole: the previous one stays, and is used.
        if let Disk::Tmpfs(disk) = &setup.gallery_disk {
            let before = disk.snapshots();
            assert_eq!(before.len(), 2, "one snapshot per shard: {before:?}");
            setup.gallery_disk.fill().await;
            rest.running.shutdown().await;
            assert_eq!(disk.snapshots(), before, "the failed snapshot left the previous ones as they were");
            setup.gallery_disk.free().await;
            rest = TestCluster::start(rest_config(&setup, base, &audit)).await;
            assert_eq!(restored_from(&rest).await, [(0, first_seq), (1, first_seq)]);
            assert_all_found(&rest, &mut synthetic, &known, seq).await;
        }

        // No gallery without its key, no key without its gallery.
        let mut key_refs = setup.gallery_key_refs().await;
        key_refs.sort();
        assert_eq!(key_refs.len(), 2, "g and h");
        assert_eq!(setup.key_files(), key_refs, "every data key file belongs to a gallery, and back");

        // Every refused change was announced and concluded as refused; the search has its leaf.
        let log = leaves(&audit).await;
        let intents: HashMap<&str, u64> = log
            .iter()
            .filter(|(_, e)| e.outcome == "INTENT")
            .map(|(i, e)| (e.request_id.as_str(), *i))
            .collect();
        let refusals: Vec<&(u64, AuditEvent)> =
            log.iter().filter(|(_, e)| e.outcome == "RESOURCE_EXHAUSTED").collect();
        assert_eq!(refusals.len(), 4, "enrolment, batch, gallery and deletion: {refusals:?}");
        for (index, event) in refusals {
            let intent = intents.get(event.request_id.as_str());
            assert!(intent.is_some_and(|i| i < index), "refusal {index} concludes an intent before it");
        }
        let searched = log.iter().find(|(i, _)| *i == found.audit_leaf_index).map(|(_, e)| &e.request_id);
        assert_eq!(searched, Some(&found.search_id), "the search answered while full has its leaf");
        verify_strict(&audit).await;
        rest.running.shutdown().await;
        audit.running.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_audit_store_fails_everything_closed_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    for setup in disk::setups(dir.path()).await {
        let (audit, rest) = split_cluster(&setup, dir.path()).await;
        let (mut synthetic, centres, seq) = enrolled_gallery(&rest, "g", DIMENSION, 2, 30, 23).await;
        let answered = identify(&rest, "g", synthetic.sample(&centres[0]), seq).await.expect("identify");
        let keys_before = setup.key_files();

        setup.audit_disk.fill().await;
        let full = "audit log storage is full";
        assert_full(identify(&rest, "g", synthetic.sample(&centres[1]), seq).await, "an identify", full);
        let verify = verify_request("s00002", synthetic.sample(&centres[2]), seq);
        assert_full(rest.search().verify(verify.clone()).await, "a verify", full);
        let late = synthetic.identity();
        let request = enrol_request("late", synthetic.sample(&late), "late");
        assert_full(rest.ingest().enroll(request.clone()).await, "an enrolment", full);
        assert_full(rest.galleries().create_gallery(gallery_request("h")).await, "a new gallery", full);
        // Nothing was changed unannounced: no subject, no gallery, no data key.
        assert_eq!(subject_count(&rest).await, 30);
        assert_eq!(gallery_names(&rest).await, ["g"]);
        assert_eq!(setup.key_files(), keys_before, "no data key made for a refused gallery");

        // Space returns: everything works again, and nothing was recorded while it was full.
        setup.audit_disk.free().await;
        let after = identify(&rest, "g", synthetic.sample(&centres[1]), seq).await.expect("identify now");
        assert_eq!(after.candidates.first().map(|c| c.subject_id.as_str()), Some("s00001"));
        assert_eq!(after.audit_leaf_index, answered.audit_leaf_index + 1, "no leaf in between, none lost");
        rest.search().verify(verify).await.expect("verify now");
        let enrolled = rest.ingest().enroll(request).await.expect("enrolled now").into_inner();
        rest.galleries().create_gallery(gallery_request("h")).await.expect("gallery created now");
        let mut known: Vec<(String, Vec<f32>)> =
            centres.iter().enumerate().map(|(i, c)| (biomatch_tests::subject_id(i), c.clone())).collect();
        known.push(("late".into(), late));
        assert_all_found(&rest, &mut synthetic, &known, enrolled.change_seq).await;
        verify_strict(&audit).await;
        rest.running.shutdown().await;
        audit.running.shutdown().await;
    }
}
