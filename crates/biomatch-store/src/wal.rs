//! SQLite write-ahead log checkpoints, off the commit path.
//!
//! SQLite's default is for the connection whose commit takes the log past 1,000 pages to copy
//! the log back into the database file and sync it, inside that commit. The audit store commits
//! a leaf before every answer, and an identify's leaf (its candidates and their subjects, with
//! their indexes) dirties several pages, so about one identify in a hundred paid for a
//! checkpoint: a lone identify's p99 was four times its p50 (docs/benchmarks.md). A task per
//! store now checkpoints passively every [`EVERY`] on a reading connection, beside the writer
//! and without waiting for it; the committing connection checkpoints itself only past
//! [`BACKSTOP_PAGES`], should the task fall that far behind.

use sqlx::AnyPool;
use std::time::Duration;

/// How often the task checkpoints.
pub(crate) const EVERY: Duration = Duration::from_millis(200);
/// The log size (pages of 4 KiB) past which a commit checkpoints itself.
pub(crate) const BACKSTOP_PAGES: u32 = 16_384;

/// The checkpointing task of one store, stopped when the last clone of the store is dropped.
#[derive(Debug)]
pub(crate) struct Checkpointer(tokio::task::JoinHandle<()>);

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Checkpointer {
    /// Starts checkpointing `pool`'s database (needs a Tokio runtime).
    pub(crate) fn start(pool: AnyPool) -> Self {
        Self(tokio::spawn(async move {
            let mut tick = tokio::time::interval(EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if pool.is_closed() {
                    return;
                }
                // PASSIVE copies what no reader still needs and waits for nobody. A failure
                // (a full disk, say) loses nothing: the frames stay in the log for the next try,
                // and the backstop still bounds the log.
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
                    tracing::debug!(error = %e, "background checkpoint of the write-ahead log failed");
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::SqlStore;
    use std::time::Instant;

    #[tokio::test]
    async fn the_log_is_checkpointed_without_a_commit_doing_it() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("store.db");
        let store = SqlStore::connect(&format!("sqlite://{}", path.display())).await.expect("store");
        sqlx::query("CREATE TABLE filler (b BLOB NOT NULL)").execute(&store.write).await.expect("table");
        // 100 commits of 16 KB: about 400 pages, under both the backstop and SQLite's default
        // of 1,000, so no commit checkpoints; only the task can bring them into the file.
        for _ in 0..100 {
            sqlx::query("INSERT INTO filler (b) VALUES (randomblob(16000))")
                .execute(&store.write)
                .await
                .expect("insert");
        }
        let written = 100 * 16_000;
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        while std::fs::metadata(&path).expect("file").len() < written {
            assert!(Instant::now() < deadline, "the write-ahead log was never checkpointed into the file");
            tokio::time::sleep(super::EVERY).await;
        }
    }
}
