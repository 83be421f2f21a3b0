//! Audit before effect, for every change (issue 16, item 3): no state-changing RPC of the ingest
//! role takes effect unless its intent leaf is committed. With the audit role cut every change
//! fails `UNAVAILABLE` and nothing changed; an over-long field is `INVALID_ARGUMENT` with nothing
//! changed and no leaf; an idempotency key reused with another body is refused and its second
//! target untouched; a successful change leaves an intent leaf and an outcome leaf that repeats
//! the intent's request id.

use biomatch_config::ProcessRole;
use biomatch_proto::v1::ingest_service_client::IngestServiceClient;
use biomatch_proto::v1::{
    AuditEvent, CreateGalleryRequest, DeleteGalleryRequest, DeleteSubjectRequest, EnrollRequest,
    GetGalleryRequest, GetSubjectRequest, ListLeavesRequest, Operation, PurgeExpiredRequest,
    SetThresholdRequest,
};
use biomatch_tests::{Authed, PURPOSE, RETENTION_SECS, TestCluster, backends, config, embedding};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tonic::Code;

const DIM: u32 = 16;

fn create(name: &str) -> CreateGalleryRequest {
    CreateGalleryRequest {
        name: name.into(),
        dimension: DIM,
        allowed_purposes: vec![PURPOSE.into()],
        retention: Some(prost_types::Duration { seconds: RETENTION_SECS, nanos: 0 }),
        ..Default::default()
    }
}

fn vector(seed: usize) -> Vec<f32> {
    (0..DIM as usize).map(|i| if i == seed % DIM as usize { 1.0 } else { 0.1 }).collect()
}

fn enroll(gallery: &str, subject: &str, seed: usize, key: &str) -> EnrollRequest {
    EnrollRequest {
        gallery: gallery.into(),
        subject_id: subject.into(),
        samples: vec![embedding(vector(seed)).expect("probe")],
        idempotency_key: key.into(),
        ..Default::default()
    }
}

fn delete_subject(gallery: &str, subject: &str, key: &str) -> DeleteSubjectRequest {
    DeleteSubjectRequest { gallery: gallery.into(), subject_id: subject.into(), idempotency_key: key.into() }
}

fn delete_gallery(name: &str, key: &str) -> DeleteGalleryRequest {
    DeleteGalleryRequest { name: name.into(), idempotency_key: key.into() }
}

fn set_threshold(gallery: &str, threshold: f32, reason: String) -> SetThresholdRequest {
    SetThresholdRequest { gallery: gallery.into(), threshold, reason, policy: None }
}

fn code<T>(result: Result<T, tonic::Status>) -> Code {
    result.err().map_or(Code::Ok, |s| s.code())
}

async fn gallery_exists(admin: &mut IngestServiceClient<Authed>, name: &str) -> bool {
    match admin.get_gallery(GetGalleryRequest { name: name.into(), settings_only: false }).await {
        Ok(_) => true,
        Err(status) if status.code() == Code::NotFound => false,
        Err(status) => panic!("get gallery {name}: {status:?}"),
    }
}

async fn threshold(admin: &mut IngestServiceClient<Authed>, name: &str) -> (f32, u32) {
    let g = admin
        .get_gallery(GetGalleryRequest { name: name.into(), settings_only: true })
        .await
        .expect("gallery")
        .into_inner();
    (g.threshold, g.threshold_version)
}

async fn subject_exists(ingest: &mut IngestServiceClient<Authed>, gallery: &str, subject: &str) -> bool {
    let request = GetSubjectRequest { gallery: gallery.into(), subject_id: subject.into() };
    match ingest.get_subject(request).await {
        Ok(_) => true,
        Err(status) if status.code() == Code::NotFound => false,
        Err(status) => panic!("get subject {gallery}/{subject}: {status:?}"),
    }
}

/// Every leaf of the log up to its size when the read began, in index order, without the reads
/// (each read of the log and each subject read is itself a leaf).
async fn leaves(audit: &TestCluster) -> Vec<(u64, AuditEvent)> {
    let (mut all, mut next) = (Vec::new(), 0);
    loop {
        let request = ListLeavesRequest { start: next, count: 1000 };
        let page = audit.audit().list_leaves(request).await.expect("leaves").into_inner();
        next += page.leaves.len() as u64;
        let reads = [Operation::AuditRead, Operation::SubjectRead];
        let events = page.leaves.into_iter().map(|l| (l.index, l.event.expect("event")));
        all.extend(events.filter(|(_, e)| !reads.contains(&e.operation())));
        if next >= page.tree_size {
            return all;
        }
    }
}

/// Subjects held by gallery `name` (read without a subject read, so it works while audit is cut).
async fn subjects(admin: &mut IngestServiceClient<Authed>, name: &str) -> u64 {
    let request = GetGalleryRequest { name: name.into(), settings_only: false };
    admin.get_gallery(request).await.expect("gallery").into_inner().subject_count
}

/// The change leaves (intent and outcome) of `operation` on `gallery`.
fn changes(all: &[(u64, AuditEvent)], operation: Operation, gallery: &str) -> Vec<(u64, AuditEvent)> {
    all.iter().filter(|(_, e)| e.operation() == operation && e.gallery == gallery).cloned().collect()
}

/// An intent leaf, then an `OK` outcome leaf with the same request id; returns the outcome.
fn assert_paired(all: &[(u64, AuditEvent)], operation: Operation, gallery: &str, what: &str) -> AuditEvent {
    assert_paired_where(all, operation, gallery, what, |_| true)
}

/// As [`assert_paired`], for the latest `OK` outcome that `pick` accepts (the scheduled purge
/// and the purge RPC may both announce a subject; only one of them removes it).
fn assert_paired_where(
    all: &[(u64, AuditEvent)],
    operation: Operation,
    gallery: &str,
    what: &str,
    pick: impl Fn(&AuditEvent) -> bool,
) -> AuditEvent {
    let leaves = changes(all, operation, gallery);
    let outcome = leaves
        .iter()
        .rev()
        .find(|(_, e)| e.outcome == "OK" && pick(e))
        .unwrap_or_else(|| panic!("{what}: an outcome leaf in {leaves:?}"));
    assert!(!outcome.1.request_id.is_empty(), "{what}: the outcome names its request");
    let intent = leaves
        .iter()
        .find(|(_, e)| e.outcome == "INTENT" && e.request_id == outcome.1.request_id)
        .unwrap_or_else(|| panic!("{what}: an intent leaf for {:?} in {leaves:?}", outcome.1.request_id));
    assert!(intent.0 < outcome.0, "{what}: the intent precedes the outcome");
    outcome.1.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_change_takes_effect_without_its_leaf() {
    let dir = tempfile::tempdir().expect("tempdir");
    for backend in backends(dir.path()).await {
        let now = Arc::new(AtomicI64::new(1_800_000_000_000));
        let clock = now.clone();
        let audit = TestCluster::start(config(&backend, dir.path(), &[ProcessRole::Audit])).await;
        let mut rest = config(
            &backend,
            dir.path(),
            &[ProcessRole::Embed, ProcessRole::Ingest, ProcessRole::Matcher, ProcessRole::Search],
        );
        rest.endpoints.audit = Some(format!("http://{}", audit.running.grpc_addr));
        // The scheduled purge runs often, so it is exercised too.
        rest.ingest.purge_interval_ms = 100;
        let cluster =
            TestCluster::start_with_clock(rest, Arc::new(move || clock.load(Ordering::SeqCst))).await;
        let mut admin = cluster.galleries();
        let mut ingest = cluster.ingest();

        // (d) Every successful change has its intent and outcome leaves.
        for name in ["a", "b", "c", "d", "e"] {
            admin.create_gallery(create(name)).await.expect("created");
        }
        let keyed = || CreateGalleryRequest { idempotency_key: "create-k".into(), ..create("k") };
        let made = admin.create_gallery(keyed()).await.expect("created with a key").into_inner();
        let again = admin.create_gallery(keyed()).await.expect("a retry answers the gallery").into_inner();
        assert_eq!((again.name.as_str(), again.created_at), (made.name.as_str(), made.created_at));
        // Deleted and made again by another request, the gallery is not the one the key made: the
        // retry is NOT_FOUND and records nothing (the first creation stays on the record as made).
        admin.delete_gallery(delete_gallery("k", "drop-k")).await.expect("k dropped");
        admin.create_gallery(create("k")).await.expect("k made again");
        assert_eq!(code(admin.create_gallery(keyed()).await), Code::NotFound);
        // Gallery e's subject expires a minute before the others enrolled below.
        ingest.enroll(enroll("e", "old", 5, "")).await.expect("enrolled");
        now.fetch_add(RETENTION_SECS * 1000 - 60_000, Ordering::SeqCst);
        for (i, subject) in ["x", "y", "z"].into_iter().enumerate() {
            ingest.enroll(enroll("a", subject, i, &format!("key-{subject}"))).await.expect("enrolled");
        }
        let replay = ingest.enroll(enroll("a", "x", 0, "key-x")).await.expect("replayed").into_inner();
        assert!(replay.replayed);
        let batch = vec![enroll("b", "b1", 1, "batch-1"), enroll("b", "b2", 2, "batch-2")];
        let batch = ingest.batch_enroll(tokio_stream::iter(batch)).await.expect("batch").into_inner();
        assert_eq!(batch.accepted, 2, "{:?}", batch.failures);
        let reason = "calibrated at FMR 1e-4".to_owned();
        admin.set_threshold(set_threshold("a", 0.6, reason)).await.expect("threshold set");
        let deleted =
            ingest.delete_subject(delete_subject("a", "z", "del-z")).await.expect("deleted").into_inner();
        let dropped =
            admin.delete_gallery(delete_gallery("c", "drop-c")).await.expect("dropped").into_inner();
        let again = admin.delete_gallery(delete_gallery("c", "drop-c")).await.expect("replayed").into_inner();
        assert_eq!(
            (again.change_seq, again.audit_leaf_index),
            (dropped.change_seq, dropped.audit_leaf_index),
            "{backend:?}: a replayed deletion answers the first receipt"
        );
        // Gallery e's subject expires; the scheduled purge or the RPC removes it.
        now.fetch_add(120_000, Ordering::SeqCst);
        admin.purge_expired(PurgeExpiredRequest {}).await.expect("purged");
        assert!(!subject_exists(&mut ingest, "e", "old").await, "{backend:?}: purged");
        assert!(subject_exists(&mut ingest, "a", "x").await, "{backend:?}: x has not expired");

        let all = leaves(&audit).await;
        for name in ["a", "b", "c", "d", "e", "k"] {
            assert_paired(&all, Operation::CreateGallery, name, "create gallery");
        }
        assert_eq!(
            changes(&all, Operation::CreateGallery, "k").len(),
            4,
            "{backend:?}: two creations of k, two leaves each; the retries appended none"
        );
        let enrolled = assert_paired(&all, Operation::Enroll, "a", "enroll");
        assert_eq!(enrolled.subject_ids.len(), 1);
        let batched = assert_paired(&all, Operation::Enroll, "b", "batch enroll");
        assert_eq!(batched.subject_ids, vec!["b1".to_owned(), "b2".to_owned()]);
        let set = assert_paired(&all, Operation::SetThreshold, "a", "set threshold");
        assert_eq!((set.threshold, set.threshold_version), (Some(0.6), 2));
        assert!(set.detail.contains("FMR 1e-4"), "{}", set.detail);
        let intent = changes(&all, Operation::SetThreshold, "a").remove(0).1;
        assert_eq!(
            (intent.outcome.as_str(), intent.threshold),
            ("INTENT", Some(0.6)),
            "the intent says what"
        );
        let removed = assert_paired(&all, Operation::DeleteSubject, "a", "delete subject");
        assert_eq!(removed.subject_ids, vec!["z".to_owned()]);
        let at = |index: u64| all.iter().find(|(i, _)| *i == index).map(|(_, e)| e.clone());
        assert_eq!(at(deleted.audit_leaf_index), Some(removed), "the answer names the outcome leaf");
        let receipt = assert_paired(&all, Operation::DeleteGallery, "c", "delete gallery");
        assert_eq!(at(dropped.audit_leaf_index), Some(receipt), "the answer names the outcome leaf");
        let purged = assert_paired_where(&all, Operation::Purge, "e", "purge", |e| !e.subject_ids.is_empty());
        assert_eq!(purged.subject_ids, vec!["old".to_owned()]);
        assert_eq!(
            changes(&all, Operation::Enroll, "a").iter().filter(|(_, e)| e.subject_ids == ["x"]).count(),
            2,
            "{backend:?}: the replayed enrolment appended no third leaf"
        );

        // (b) An over-long field is refused at the edge: nothing changes, nothing is appended.
        let count = all.len();
        let long_key = "k".repeat(257);
        let mut huge = create("huge");
        huge.model_version = "v".repeat(1 << 20);
        assert_eq!(code(admin.create_gallery(huge).await), Code::InvalidArgument);
        let mut long_model = create("long-model");
        long_model.model_id = "m".repeat(257);
        assert_eq!(code(admin.create_gallery(long_model).await), Code::InvalidArgument);
        let mut long_purpose = create("long-purpose");
        long_purpose.allowed_purposes = vec!["p".repeat(65)];
        assert_eq!(code(admin.create_gallery(long_purpose).await), Code::InvalidArgument);
        assert_eq!(code(admin.create_gallery(create(&"g".repeat(65))).await), Code::InvalidArgument);
        let long_reason = set_threshold("a", 0.7, "r".repeat(5000));
        assert_eq!(code(admin.set_threshold(long_reason).await), Code::InvalidArgument);
        assert_eq!(code(ingest.enroll(enroll("a", "w", 9, &long_key)).await), Code::InvalidArgument);
        assert_eq!(code(ingest.enroll(enroll("a", &"s".repeat(257), 9, "")).await), Code::InvalidArgument);
        let long_batch = vec![enroll("b", "b3", 3, &long_key), enroll("b", &"s".repeat(257), 4, "")];
        let long_batch =
            ingest.batch_enroll(tokio_stream::iter(long_batch)).await.expect("stream").into_inner();
        assert_eq!((long_batch.accepted, long_batch.rejected), (0, 2));
        assert!(
            long_batch.failures.iter().all(|f| f.code == "INVALID_ARGUMENT"),
            "{:?}",
            long_batch.failures
        );
        assert_eq!(
            code(ingest.delete_subject(delete_subject("a", "y", &long_key)).await),
            Code::InvalidArgument
        );
        assert_eq!(code(admin.delete_gallery(delete_gallery("d", &long_key)).await), Code::InvalidArgument);
        for name in ["huge", "long-model", "long-purpose"] {
            assert!(!gallery_exists(&mut admin, name).await, "{backend:?}: {name} was not created");
        }
        assert_eq!(threshold(&mut admin, "a").await, (0.6, 2), "{backend:?}: threshold unchanged");
        assert!(!subject_exists(&mut ingest, "a", "w").await);
        assert!(!subject_exists(&mut ingest, "b", "b3").await);
        assert!(subject_exists(&mut ingest, "a", "y").await);
        assert!(gallery_exists(&mut admin, "d").await);
        assert_eq!(leaves(&audit).await.len(), count, "{backend:?}: refused at the edge, nothing appended");

        // (c) An idempotency key reused with another body is refused; its second target is
        // untouched.
        assert_eq!(code(ingest.enroll(enroll("a", "w", 9, "key-x")).await), Code::InvalidArgument);
        assert_eq!(code(ingest.enroll(enroll("a", "x", 7, "key-x")).await), Code::InvalidArgument);
        let reused = vec![enroll("b", "b4", 4, "batch-1")];
        let reused = ingest.batch_enroll(tokio_stream::iter(reused)).await.expect("stream").into_inner();
        assert_eq!((reused.accepted, reused.rejected), (0, 1));
        assert_eq!(reused.failures[0].code, "INVALID_ARGUMENT");
        assert_eq!(
            code(ingest.delete_subject(delete_subject("a", "y", "del-z")).await),
            Code::InvalidArgument
        );
        assert_eq!(code(admin.delete_gallery(delete_gallery("d", "drop-c")).await), Code::InvalidArgument);
        let reuse = CreateGalleryRequest { idempotency_key: "create-k".into(), ..create("k2") };
        assert_eq!(code(admin.create_gallery(reuse).await), Code::InvalidArgument);
        assert!(!gallery_exists(&mut admin, "k2").await, "{backend:?}: a reused key creates nothing");
        assert!(!subject_exists(&mut ingest, "a", "w").await);
        assert!(!subject_exists(&mut ingest, "b", "b4").await);
        assert!(subject_exists(&mut ingest, "a", "y").await, "{backend:?}: y kept");
        assert!(gallery_exists(&mut admin, "d").await, "{backend:?}: gallery d kept");
        let x = GetSubjectRequest { gallery: "a".into(), subject_id: "x".into() };
        assert_eq!(ingest.get_subject(x).await.expect("x").into_inner().template_count, 1);
        assert_eq!(leaves(&audit).await.len(), count, "{backend:?}: a refused reuse appends nothing");
        // In a batch a reused key (stored, or earlier in the batch with another body) fails alone,
        // before the group's intent names it.
        let mixed = vec![
            enroll("b", "b4", 4, "batch-1"),
            enroll("b", "b6", 6, "batch-6"),
            enroll("b", "b7", 7, "batch-6"),
        ];
        let mixed = ingest.batch_enroll(tokio_stream::iter(mixed)).await.expect("stream").into_inner();
        assert_eq!((mixed.accepted, mixed.rejected), (1, 2), "{backend:?}: {:?}", mixed.failures);
        let refused: Vec<(u32, &str)> = mixed.failures.iter().map(|f| (f.index, f.code.as_str())).collect();
        assert_eq!(refused, [(0, "INVALID_ARGUMENT"), (2, "INVALID_ARGUMENT")]);
        let appended = leaves(&audit).await.split_off(count);
        assert_eq!(appended.len(), 2, "{backend:?}: one intent and one outcome leaf");
        assert!(
            appended.iter().all(|(_, e)| e.subject_ids == ["b6"]),
            "{backend:?}: the leaves name b6 alone: {appended:?}"
        );
        assert!(!subject_exists(&mut ingest, "b", "b4").await);
        assert!(!subject_exists(&mut ingest, "b", "b7").await);

        // (a) With the audit role cut every change fails UNAVAILABLE and nothing changes.
        ingest.enroll(enroll("d", "expiring", 6, "")).await.expect("enrolled");
        let held = [
            subjects(&mut admin, "a").await,
            subjects(&mut admin, "b").await,
            subjects(&mut admin, "d").await,
        ];
        audit.running.shutdown().await;
        now.fetch_add(RETENTION_SECS * 1000 + 1000, Ordering::SeqCst);
        assert_eq!(code(admin.create_gallery(create("f")).await), Code::Unavailable);
        let set = set_threshold("a", 0.7, "outage".into());
        assert_eq!(code(admin.set_threshold(set).await), Code::Unavailable);
        assert_eq!(code(ingest.enroll(enroll("a", "v", 8, "key-v")).await), Code::Unavailable);
        assert_eq!(code(ingest.enroll(enroll("a", "x", 0, "key-x")).await), Code::Unavailable);
        let stream = vec![enroll("b", "b5", 5, "batch-5")];
        assert_eq!(code(ingest.batch_enroll(tokio_stream::iter(stream)).await), Code::Unavailable);
        assert_eq!(code(ingest.delete_subject(delete_subject("a", "y", "del-y")).await), Code::Unavailable);
        assert_eq!(code(admin.delete_gallery(delete_gallery("d", "drop-d")).await), Code::Unavailable);
        assert_eq!(code(admin.purge_expired(PurgeExpiredRequest {}).await), Code::Unavailable);
        // The scheduled purge (every 100 ms) fails closed too.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!gallery_exists(&mut admin, "f").await, "{backend:?}: f was not created");
        assert_eq!(threshold(&mut admin, "a").await, (0.6, 2), "{backend:?}: threshold unchanged");
        // Subject reads are themselves audited, so with the log cut the galleries' counts tell:
        // v not enrolled and y not deleted (a), b5 not enrolled (b), nothing purged (d).
        assert!(gallery_exists(&mut admin, "d").await, "{backend:?}: d not deleted");
        let after = [
            subjects(&mut admin, "a").await,
            subjects(&mut admin, "b").await,
            subjects(&mut admin, "d").await,
        ];
        assert_eq!(after, held, "{backend:?}: nothing changed");
        cluster.running.shutdown().await;
    }
}
