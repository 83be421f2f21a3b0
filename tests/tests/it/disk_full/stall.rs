//! A stalled store: the database's write lock held by another connection (as a stalled disk
//! holds a commit) for longer than a request may wait. The change is refused with `UNAVAILABLE`
//! "storage is busy" (SQLite hands a transaction that has already read `SQLITE_BUSY` at once
//! rather than waiting for the lock; a plain wait is bounded by the busy timeout, 10 s), its
//! intent concluded as refused, and the same request succeeds after the stall; searches, which
//! only read the gallery store, go on meanwhile. A stalled audit store refuses searches the same
//! way: nothing is answered unaudited, and nothing hangs. An audit store that stops answering
//! altogether (a hung disk) is timed out by the audit role itself.

use super::{DIMENSION, enrol_request, leaves, strictly_verified, verify_strict};
use biomatch_auditlog::intents::INDETERMINATE;
use biomatch_config::ProcessRole;
use biomatch_proto::v1::Operation;
use biomatch_tests::{Backend, TestCluster, config, enrolled_gallery, identify};
use sqlx::{AnyConnection, Connection};
use std::path::Path;
use std::time::Duration;
use tonic::Code;

/// The busy timeout, plus room for a slow machine: a request still waiting after this hung.
const BOUND: Duration = Duration::from_secs(30);

/// Another connection holding the database's write lock.
async fn hold_write_lock(db: &Path) -> AnyConnection {
    // Waits, should a commit of the service be under way.
    let mut conn = super::disk::sqlite(db).await;
    sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await.expect("write lock");
    conn
}

async fn release(mut conn: AnyConnection) {
    sqlx::query("ROLLBACK").execute(&mut conn).await.expect("released");
    conn.close().await.expect("closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_store_refuses_within_a_bounded_time_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let cluster = TestCluster::all(&Backend::Sqlite(data.clone()), dir.path()).await;
    let (mut synthetic, centres, seq) = enrolled_gallery(&cluster, "g", DIMENSION, 1, 10, 29).await;

    // The gallery store stalls: the change is refused in bounded time; searches go on.
    let held = hold_write_lock(&data.join("gallery.db")).await;
    let late = synthetic.identity();
    let request = enrol_request("late", synthetic.sample(&late), "late");
    let mut ingest = cluster.ingest();
    let stalled = tokio::spawn({
        let request = request.clone();
        async move { ingest.enroll(request).await }
    });
    let found = identify(&cluster, "g", synthetic.sample(&centres[3]), seq).await.expect("searches go on");
    assert_eq!(found.candidates.first().map(|c| c.subject_id.as_str()), Some("s00003"));
    let answered = tokio::time::timeout(BOUND, stalled).await.expect("refused in bounded time, not hung");
    let status = answered.expect("task").expect_err("refused while stalled");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().starts_with("storage is busy"), "{:?}", status.message());
    release(held).await;
    let enrolled = cluster.ingest().enroll(request).await.expect("enrolled after the stall").into_inner();
    assert!(!enrolled.replayed, "the refused enrolment was not made while stalled");
    let found =
        identify(&cluster, "g", synthetic.sample(&late), enrolled.change_seq).await.expect("identify");
    assert_eq!(found.candidates.first().map(|c| c.subject_id.as_str()), Some("late"));

    // The audit store stalls: searches are refused in bounded time, never answered unaudited.
    let held = hold_write_lock(&data.join("audit.db")).await;
    let probe = synthetic.sample(&centres[4]);
    let answered = tokio::time::timeout(BOUND, identify(&cluster, "g", probe, seq)).await;
    let status = answered.expect("refused in bounded time, not hung").expect_err("no unaudited answer");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("audit"), "{:?}", status.message());
    release(held).await;
    identify(&cluster, "g", synthetic.sample(&centres[4]), seq).await.expect("searches after the stall");

    verify_strict(&cluster).await;
    cluster.running.shutdown().await;
}

/// Every PostgreSQL backend of one database, stopped with SIGSTOP until dropped: to the role using
/// that database, storage that stops answering in the middle of its work, connections open.
struct StoppedDatabase(Vec<String>);

impl StoppedDatabase {
    /// `None` (outside CI) when this user may not signal the server's processes.
    async fn stop(url: &str) -> Option<Self> {
        let (_, name) = url.rsplit_once('/').expect("database URL has a path");
        let base = std::env::var("BIOMATCH_TEST_DATABASE_URL").expect("the test server");
        sqlx::any::install_default_drivers();
        let mut admin = AnyConnection::connect(&base).await.expect("connect");
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'",
        )
        .bind(name)
        .fetch_all(&mut admin)
        .await
        .expect("backends");
        admin.close().await.expect("closed");
        assert!(!pids.is_empty(), "the audit role holds connections to {name}");
        let stopped = Self(pids.iter().map(i32::to_string).collect());
        if !stopped.signal("-0") {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must be able to stop PostgreSQL backends"
            );
            eprintln!("skipped: this user may not signal PostgreSQL's processes");
            return None;
        }
        assert!(stopped.signal("-STOP"), "kill -STOP {:?}", stopped.0);
        Some(stopped)
    }

    fn signal(&self, which: &str) -> bool {
        let status = std::process::Command::new("kill").arg(which).args(&self.0).status();
        status.is_ok_and(|s| s.success())
    }
}

impl Drop for StoppedDatabase {
    fn drop(&mut self) {
        if !self.signal("-CONT") {
            eprintln!("kill -CONT {:?} failed: resume them by hand", self.0);
        }
    }
}

/// The audit store stops answering (every backend of its PostgreSQL database stopped, as a hung
/// disk stops a commit): the audit role gives up on the commit after `audit.commit_timeout_ms`,
/// so a search is refused `UNAVAILABLE` in bounded time although its caller set no deadline, and
/// nothing is answered unaudited. Once the store answers again, searches are served and the log
/// verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_audit_store_is_timed_out_by_the_audit_role() {
    let Some(url) = biomatch_store::testing::fresh_postgres_url().await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path();
    let mut audit_config = config(&Backend::Postgres(url.clone()), base, &[ProcessRole::Audit]);
    audit_config.audit.commit_timeout_ms = 1_000;
    // No checkpoint is being signed when the backends stop, so the search's commit meets one of
    // the stopped connections rather than a fresh one.
    audit_config.audit.checkpoint_interval_ms = 3_600_000;
    let audit = TestCluster::start(audit_config).await;
    let roles = [ProcessRole::Embed, ProcessRole::Ingest, ProcessRole::Matcher, ProcessRole::Search];
    let mut rest_config = config(&Backend::Sqlite(base.join("data")), base, &roles);
    rest_config.endpoints.audit = Some(format!("http://{}", audit.running.grpc_addr));
    let rest = TestCluster::start(rest_config).await;
    let (mut synthetic, centres, seq) = enrolled_gallery(&rest, "g", DIMENSION, 1, 10, 31).await;
    identify(&rest, "g", synthetic.sample(&centres[1]), seq).await.expect("served before");

    let Some(stopped) = StoppedDatabase::stop(&url).await else { return };
    let probe = synthetic.sample(&centres[2]);
    let answered = tokio::time::timeout(BOUND, identify(&rest, "g", probe, seq)).await;
    drop(stopped);
    let status = answered.expect("refused in bounded time, not hung").expect_err("no unaudited answer");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("audit"), "{:?}", status.message());

    let found = identify(&rest, "g", synthetic.sample(&centres[2]), seq).await.expect("served after");
    assert_eq!(found.candidates.first().map(|c| c.subject_id.as_str()), Some("s00002"));
    // The commit given up on may have landed after all: the tree holds whatever the store does,
    // so the next checkpoint covers every stored leaf.
    let mut db = AnyConnection::connect(&url).await.expect("connect");
    let stored: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_leaves").fetch_one(&mut db).await.expect("count");
    db.close().await.expect("closed");
    let checkpoint = audit
        .audit()
        .get_checkpoint(biomatch_proto::v1::GetCheckpointRequest { sign_now: true })
        .await
        .expect("checkpoint")
        .into_inner();
    assert_eq!(checkpoint.tree_size, stored as u64, "the tree caught up with the store");
    verify_strict(&audit).await;
    rest.running.shutdown().await;
    audit.running.shutdown().await;
}

/// The gallery store stops answering (every backend of the rest's PostgreSQL database stopped):
/// the ingest role gives up on the store after `ingest.store_timeout_ms`, so an enrolment is
/// refused `UNAVAILABLE` in bounded time although its caller set no deadline; once the store
/// answers again the same request (same idempotency key) enrols the subject. Then a stall inside
/// the write itself (the change log locked against writers, reads still answered) of an
/// enrolment without an idempotency key: the caller is refused the same way, but the write may
/// yet land, so the log says `INDETERMINATE`; the ingest role then settles the attempt with the
/// store (fenced off: not made, for good) and concludes the intent `ABORTED` on its own, while
/// the lock is still held; the same enrolment sent again is made. The log verifies strictly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_gallery_store_is_timed_out_by_the_ingest_role() {
    let Some(url) = biomatch_store::testing::fresh_postgres_url().await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path();
    let audit =
        TestCluster::start(config(&Backend::Sqlite(base.join("audit")), base, &[ProcessRole::Audit])).await;
    let roles = [ProcessRole::Embed, ProcessRole::Ingest, ProcessRole::Matcher, ProcessRole::Search];
    let mut rest_config = config(&Backend::Postgres(url.clone()), base, &roles);
    rest_config.endpoints.audit = Some(format!("http://{}", audit.running.grpc_addr));
    rest_config.ingest.store_timeout_ms = 1_000;
    let rest = TestCluster::start(rest_config).await;
    let (mut synthetic, _, _) = enrolled_gallery(&rest, "g", DIMENSION, 1, 10, 37).await;

    for (subject, stall) in [("late", Stall::Stopped), ("later", Stall::WriteLocked)] {
        let centre = synthetic.identity();
        let key = if let Stall::Stopped = stall { subject } else { "" };
        let request = enrol_request(subject, synthetic.sample(&centre), key);
        let stalled = match stall {
            Stall::Stopped => {
                let Some(stopped) = StoppedDatabase::stop(&url).await else { return };
                Held::Stopped(stopped)
            }
            Stall::WriteLocked => Held::Locked(lock_changes(&url).await),
        };
        let answered = tokio::time::timeout(BOUND, rest.ingest().enroll(request.clone())).await;
        let status = answered.expect("refused in bounded time, not hung").expect_err("refused while hung");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().starts_with("storage is not answering"), "{:?}", status.message());
        if let Stall::WriteLocked = stall {
            // The write may still land: the log says so; then the role settles it without a retry.
            let log = leaves(&audit).await;
            let unknown =
                log.iter().rev().find(|(_, e)| e.outcome == INDETERMINATE).expect("of unknown fate");
            assert_eq!(unknown.1.operation(), Operation::Enroll);
            let request_id = unknown.1.request_id.clone();
            let settled = tokio::time::timeout(BOUND, async {
                loop {
                    let log = leaves(&audit).await;
                    if let Some((_, e)) =
                        log.into_iter().find(|(_, e)| e.request_id == request_id && e.outcome == "ABORTED")
                    {
                        return e;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
            .await
            .expect("settled while the lock is still held");
            assert!(settled.detail.contains("the change was not made"), "{}", settled.detail);
            strictly_verified(&audit).await.expect("no change left open, though nobody retried");
        }
        stalled.release().await;

        // The retry (under the same key, when there is one) finds the write if it landed, or makes it.
        let enrolled = rest.ingest().enroll(request).await.expect("enrolled once the store answers");
        let seq = enrolled.into_inner().change_seq;
        let found = identify(&rest, "g", synthetic.sample(&centre), seq).await.expect("identify");
        assert_eq!(found.candidates.first().map(|c| c.subject_id.as_str()), Some(subject));
    }
    verify_strict(&audit).await;
    rest.running.shutdown().await;
    audit.running.shutdown().await;
}

enum Stall {
    /// Every backend stopped: the first read of the enrolment hangs.
    Stopped,
    /// The change log locked against writers: the reads are answered, the write hangs.
    WriteLocked,
}

enum Held {
    Stopped(StoppedDatabase),
    Locked(AnyConnection),
}

impl Held {
    async fn release(self) {
        match self {
            Held::Stopped(stopped) => drop(stopped),
            Held::Locked(conn) => release(conn).await,
        }
    }
}

/// A connection holding the gallery store's change log in `EXCLUSIVE` mode: every write of a
/// change waits for it, reads do not.
async fn lock_changes(url: &str) -> AnyConnection {
    sqlx::any::install_default_drivers();
    let mut conn = AnyConnection::connect(url).await.expect("connect");
    sqlx::query("BEGIN").execute(&mut conn).await.expect("begin");
    sqlx::query("LOCK TABLE changes IN EXCLUSIVE MODE").execute(&mut conn).await.expect("lock");
    conn
}
