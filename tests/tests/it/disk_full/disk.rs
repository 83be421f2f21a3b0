//! Where a store's space runs out: for SQLite, a small tmpfs of its own, filled with a file until
//! the kernel answers ENOSPC; for PostgreSQL (whose disk the test cannot fill), a trigger raising
//! `disk_full` (SQLSTATE 53100) on every write to the store's tables, as the server does when it
//! cannot extend a file.

use biomatch_tests::Backend;
use sqlx::{AnyConnection, Connection, Executor};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

const GALLERY_TABLES: &[&str] = &["galleries", "subjects", "templates", "changes", "idempotency"];
const AUDIT_TABLES: &[&str] = &["audit_leaves", "audit_leaf_subjects", "audit_checkpoints"];
const FILLER: &str = "filler";

/// The audit store and the gallery store (with the gallery data keys and the matcher snapshots)
/// on separate disks.
pub(crate) struct Setup {
    pub audit: Backend,
    pub rest: Backend,
    pub audit_disk: Disk,
    pub gallery_disk: Disk,
    gallery_db: String,
    keys: PathBuf,
}

/// SQLite on two tmpfs mounts (when they can be made), and PostgreSQL when configured.
pub(crate) async fn setups(base: &Path) -> Vec<Setup> {
    let mut all = Vec::new();
    if let (Some(audit), Some(gallery)) =
        (Tmpfs::mount(&base.join("audit-disk")), Tmpfs::mount(&base.join("gallery-disk")))
    {
        all.push(Setup {
            audit: Backend::Sqlite(audit.path.clone()),
            rest: Backend::Sqlite(gallery.path.clone()),
            gallery_db: format!("sqlite://{}?mode=ro", gallery.path.join("gallery.db").display()),
            keys: gallery.path.join("keys"),
            audit_disk: Disk::Tmpfs(audit),
            gallery_disk: Disk::Tmpfs(gallery),
        });
    }
    if let Some(url) = biomatch_store::testing::fresh_postgres_url().await {
        all.push(Setup {
            audit: Backend::Postgres(url.clone()),
            rest: Backend::Postgres(url.clone()),
            gallery_db: url.clone(),
            // The test configuration's data directory: the gallery data keys beside the test keys.
            keys: base.join("keys"),
            audit_disk: Disk::Postgres { url: url.clone(), tables: AUDIT_TABLES },
            gallery_disk: Disk::Postgres { url, tables: GALLERY_TABLES },
        });
    }
    all
}

impl Setup {
    /// The key references of the galleries in the gallery store.
    pub async fn gallery_key_refs(&self) -> Vec<String> {
        sqlx::any::install_default_drivers();
        let mut conn = AnyConnection::connect(&self.gallery_db).await.expect("gallery store");
        let refs = sqlx::query_scalar("SELECT key_ref FROM galleries").fetch_all(&mut conn).await;
        let _ = conn.close().await;
        refs.expect("key references")
    }

    /// The key references of the data key files in the key store, sorted.
    pub fn key_files(&self) -> Vec<String> {
        let mut refs: Vec<String> = std::fs::read_dir(&self.keys)
            .expect("key store")
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".dek").map(str::to_owned))
            .collect();
        refs.sort();
        refs
    }
}

pub(crate) enum Disk {
    Tmpfs(Tmpfs),
    Postgres { url: String, tables: &'static [&'static str] },
}

impl Disk {
    /// Takes the last free byte.
    pub async fn fill(&self) {
        match self {
            Disk::Tmpfs(disk) => disk.fill().await,
            Disk::Postgres { url, tables } => {
                let mut sql =
                    "CREATE OR REPLACE FUNCTION test_disk_full() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' \
                     USING ERRCODE = 'disk_full'; END $$;"
                        .to_owned();
                for table in *tables {
                    sql.push_str(&format!(
                        "CREATE TRIGGER test_disk_full BEFORE INSERT OR UPDATE OR DELETE ON {table} \
                         FOR EACH STATEMENT EXECUTE FUNCTION test_disk_full();"
                    ));
                }
                postgres(url, &sql).await;
            }
        }
    }

    /// Gives the space back.
    pub async fn free(&self) {
        match self {
            Disk::Tmpfs(disk) => disk.free().await,
            Disk::Postgres { url, tables } => {
                let sql: String =
                    tables.iter().map(|t| format!("DROP TRIGGER test_disk_full ON {t};")).collect();
                postgres(url, &sql).await;
            }
        }
    }
}

async fn postgres(url: &str, sql: &str) {
    sqlx::any::install_default_drivers();
    let mut conn = AnyConnection::connect(url).await.expect("PostgreSQL");
    conn.execute(sql).await.expect("triggers");
    let _ = conn.close().await;
}

/// A connection to the SQLite store at `database` that waits up to 10 s for another's write lock.
pub(crate) async fn sqlite(database: &Path) -> AnyConnection {
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}", database.display());
    let mut conn = AnyConnection::connect(&url).await.expect("SQLite store");
    conn.execute("PRAGMA busy_timeout = 10000").await.expect("busy timeout");
    conn
}

/// The test's own table in a store, made while the disk has room (and kept after).
async fn log_room_table(database: &Path) {
    let mut conn = sqlite(database).await;
    conn.execute("CREATE TABLE IF NOT EXISTS test_log_room (b BLOB NOT NULL)").await.expect("test table");
    let _ = conn.close().await;
}

/// Takes the room a full disk still leaves a SQLite database: the pages its write-ahead log
/// already holds, which a log emptied by a checkpoint reuses without asking the disk for space.
/// Until that room is used, a store on a full disk still commits what fits, rightly; the test
/// wants the moment after, when a write needs space the disk no longer has. So: fill the log
/// with rows of a table of the test's own until the disk says it is full, let a checkpoint empty
/// the log if it can (it cannot once it would have to grow the database file), and again.
async fn take_log_room(database: &Path) {
    let mut conn = sqlite(database).await;
    let full = |e: &sqlx::Error| e.to_string().contains("full");
    for round in 0.. {
        assert!(round < 1_000, "the log of {} never stopped being emptied", database.display());
        let mut size = 1 << 16;
        while size > 0 {
            let insert = format!("INSERT INTO test_log_room (b) VALUES (randomblob({size}))");
            match conn.execute(insert.as_str()).await {
                Ok(_) => {}
                Err(e) if full(&e) => size /= 2,
                Err(e) => panic!("taking the log's room: {e}"),
            }
        }
        // Emptied (busy 0) or kept by a reader for now (busy 1, try again); failing, it is full.
        let emptied: Result<(i64, i64, i64), _> =
            sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)").fetch_one(&mut conn).await;
        match emptied {
            Ok(_) => {}
            Err(e) if full(&e) => break,
            Err(e) => panic!("checkpoint: {e}"),
        }
    }
    let _ = conn.close().await;
}

/// A tmpfs mounted for the test, unmounted when dropped (a panicking test included).
pub(crate) struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a 16 MiB tmpfs at `path`. Mounting needs root: without it the SQLite half of a test
    /// is skipped, with the reason printed, except under `CI=true`, where it is a failure.
    fn mount(path: &Path) -> Option<Self> {
        std::fs::create_dir_all(path).expect("mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs"])
            .arg(path)
            .output();
        let why = match mounted {
            Ok(out) if out.status.success() => return Some(Self { path: path.to_path_buf() }),
            Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            Err(e) => e.to_string(),
        };
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: cannot mount a tmpfs at {} ({why}); the disk-full scenarios run as root in CI",
            path.display()
        );
        eprintln!("skipping the SQLite half of this test: cannot mount a tmpfs ({why}); it needs root");
        None
    }

    async fn fill(&self) {
        let databases = self.databases();
        for database in &databases {
            log_room_table(database).await;
        }
        let path = self.path.join(FILLER);
        tokio::task::spawn_blocking(move || {
            let mut file = std::fs::File::create(&path).expect("filler");
            let chunk = vec![0x5a_u8; 1 << 20];
            loop {
                match file.write_all(&chunk) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::StorageFull => return,
                    Err(e) => panic!("filling the disk: {e}"),
                }
            }
        })
        .await
        .expect("filled");
        for database in &databases {
            take_log_room(database).await;
        }
    }

    /// The SQLite databases on this disk.
    fn databases(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.path)
            .expect("disk")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "db"))
            .collect()
    }

    async fn free(&self) {
        std::fs::remove_file(self.path.join(FILLER)).expect("filler removed");
    }

    /// The matcher snapshots on this disk (every file in their directory), by name.
    pub fn snapshots(&self) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(self.path.join("snapshots"))
            .expect("snapshots")
            .flatten()
            .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).expect("read")))
            .collect();
        files.sort();
        files
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a process of a failed test may still hold files open on it.
        match Command::new("umount").arg("-l").arg(&self.path).status() {
            Ok(status) if status.success() => {}
            other => eprintln!("cannot unmount the tmpfs at {}: {other:?}", self.path.display()),
        }
    }
}
