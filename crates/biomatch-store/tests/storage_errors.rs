//! A database out of space, or locked by another writer, is classified as such and told to the
//! client without the database's own words: `RESOURCE_EXHAUSTED` "storage is full" for SQLite's
//! `SQLITE_FULL` and PostgreSQL's `disk_full` (53100), `UNAVAILABLE` "storage is busy" for
//! SQLite's `SQLITE_BUSY`. The errors are real ones from each driver, through the `Any` driver
//! the store uses. And a store whose disk fills acknowledges no write it did not commit.

use biomatch_domain::{Classified, ErrorClass, Gallery, GalleryName, IndexSpec, SubjectId, Template};
use biomatch_store::{EnrollWrite, GalleryStore, SqlStore, StoreError};
use sqlx::{AnyConnection, Connection};
use std::io::Write;
use std::path::Path;

fn assert_full(e: sqlx::Error) {
    let e = StoreError::Database(e);
    assert!(e.is_storage_full(), "{e}");
    assert_eq!(e.class(), ErrorClass::ResourceExhausted, "{e}");
    assert!(e.public_message().starts_with("storage is full"), "{}", e.public_message());
}

#[tokio::test]
async fn sqlite_full_is_resource_exhausted() {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("full.db").display());
    let mut conn = AnyConnection::connect(&url).await.expect("connect");
    sqlx::query("CREATE TABLE t (v BLOB)").execute(&mut conn).await.expect("table");
    // The database may not grow past the pages it has: the next page is "database or disk is full".
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(&mut conn).await.expect("pages");
    sqlx::query(&format!("PRAGMA max_page_count = {pages}")).execute(&mut conn).await.expect("limit");
    let full = sqlx::query("INSERT INTO t VALUES (zeroblob(65536))").execute(&mut conn).await;
    let e = full.expect_err("no room");
    assert!(e.to_string().contains("full"), "{e}");
    assert_full(e);
}

#[tokio::test]
async fn sqlite_locked_by_another_writer_is_unavailable() {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("busy.db").display());
    let mut holder = AnyConnection::connect(&url).await.expect("connect");
    sqlx::query("CREATE TABLE t (v INTEGER)").execute(&mut holder).await.expect("table");
    sqlx::query("BEGIN IMMEDIATE").execute(&mut holder).await.expect("write lock");
    let mut other = AnyConnection::connect(&url).await.expect("connect");
    sqlx::query("PRAGMA busy_timeout = 0").execute(&mut other).await.expect("no wait");
    let e = sqlx::query("INSERT INTO t VALUES (1)").execute(&mut other).await.expect_err("locked");
    let e = StoreError::Database(e);
    assert!(!e.is_storage_full());
    assert_eq!(e.class(), ErrorClass::Unavailable, "{e}");
    assert!(e.public_message().starts_with("storage is busy"), "{}", e.public_message());
    sqlx::query("ROLLBACK").execute(&mut holder).await.expect("released");
}

#[tokio::test]
async fn postgres_disk_full_is_resource_exhausted() {
    let Some(url) = biomatch_store::testing::fresh_postgres_url().await else { return };
    let mut conn = AnyConnection::connect(&url).await.expect("connect");
    // The server's own error, SQLSTATE 53100, as it raises it when it cannot extend a file.
    let raise = "DO $$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' \
                 USING ERRCODE = 'disk_full'; END $$";
    let e = sqlx::query(raise).execute(&mut conn).await.expect_err("disk full");
    assert!(!StoreError::Database(sqlx::Error::PoolTimedOut).is_storage_full());
    assert_full(e);
    // Other server errors stay internal, and their text stays on the server.
    let e = sqlx::query("SELECT * FROM no_such_table").execute(&mut conn).await.expect_err("no table");
    let e = StoreError::Database(e);
    assert_eq!(e.class(), ErrorClass::Internal);
    assert_eq!(e.public_message(), "internal error");
}

fn spec() -> Gallery {
    Gallery {
        name: GalleryName::parse("g").expect("valid"),
        dimension: 4,
        shard_count: 1,
        index: IndexSpec::flat(),
        model_id: "external".into(),
        model_version: "1".into(),
        threshold: 0.5,
        threshold_version: 1,
        allowed_purposes: vec!["border".into()],
        retention_seconds: 3600,
        default_k: 10,
        created_at_ms: 0,
    }
}

fn write(subject: &str) -> EnrollWrite {
    EnrollWrite {
        subject: SubjectId::parse(subject).expect("valid"),
        shard: 0,
        model_id: "external".into(),
        sealed_templates: vec![Template::new(vec![1.0, 0.0, 0.0, 0.0], 4).expect("template").to_le_bytes()],
        replace: false,
        idempotency: None,
    }
}

/// A tmpfs, unmounted when dropped (a panicking test included).
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Mounts a small tmpfs at `dir` (root only: skipped without it, a failure under `CI=true`).
fn mount_tmpfs(dir: &Path) -> Option<Tmpfs> {
    std::fs::create_dir_all(dir).expect("mount point");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(dir)
        .output()
        .map_err(|e| e.to_string())
        .and_then(|o| {
            o.status.success().then_some(()).ok_or_else(|| String::from_utf8_lossy(&o.stderr).into())
        });
    if let Err(why) = mounted {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true: cannot mount a tmpfs ({why})");
        eprintln!("skipping: cannot mount a tmpfs ({why}); this test needs root");
        return None;
    }
    Some(Tmpfs(dir.to_path_buf()))
}

/// SQLite rolls a transaction back itself when its commit finds the disk full. The store's writer
/// connection must not carry on as if the transaction were open: later writes would become
/// savepoints of a transaction that never commits, acknowledged and lost.
#[tokio::test]
async fn a_full_disk_refuses_every_write_and_loses_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = dir.path().join("disk");
    let Some(_mounted) = mount_tmpfs(&disk) else { return };
    let url = format!("sqlite://{}", disk.join("store.db").display());
    let store = SqlStore::connect(&url).await.expect("connect");
    let g = store.create_gallery(&spec(), None, "k", None, 0).await.expect("gallery").value;
    store.enroll(&g, &[write("before")], 1).await.expect("enrolled");
    let head = store.head_seq().await.expect("head");
    let filler = disk.join("filler");
    let mut file = std::fs::File::create(&filler).expect("filler");
    while file.write_all(&[0x5a; 65536]).is_ok() {}
    drop(file);
    for i in 0..4 {
        let refused = store.enroll(&g, &[write(&format!("full{i}"))], 2).await.expect_err("no space");
        assert!(refused.is_storage_full(), "{refused}");
    }
    let deleted = store.delete_subject(&g, &SubjectId::parse("before").expect("valid"), None, 3).await;
    assert!(deleted.expect_err("no space").is_storage_full());
    assert_eq!(store.head_seq().await.expect("head"), head, "nothing was written");

    std::fs::remove_file(&filler).expect("space freed");
    let after = store.enroll(&g, &[write("after")], 4).await.expect("enrolled");
    let seq = after[0].as_ref().expect("enrolled").value.change_seq;
    store.close().await;
    let reopened = SqlStore::connect(&url).await.expect("reopen");
    assert_eq!(reopened.head_seq().await.expect("head"), seq, "the acknowledged write was committed");
    assert_eq!(reopened.gallery_counts(g.id).await.expect("counts").subjects, 2, "before and after");
    reopened.close().await;
}
