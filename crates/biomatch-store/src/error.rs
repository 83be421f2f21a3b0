//! Store errors and their classes.

use biomatch_domain::{Classified, ErrorClass};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("gallery {0} not found")]
    GalleryNotFound(String),
    #[error("gallery {0} already exists")]
    GalleryExists(String),
    #[error("subject {0} not found")]
    SubjectNotFound(String),
    #[error("idempotency key {0:?} was already used with a different request")]
    IdempotencyConflict(String),
    #[error("subject {subject} was enrolled with model {enrolled:?}, not {given:?}")]
    ModelMismatch { subject: String, enrolled: String, given: String },
    #[error("gallery {0}'s threshold was changed meanwhile: nothing was done")]
    ThresholdChanged(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A write did not finish in time: the store stopped answering (a hung disk, a stopped
    /// database). It may still complete later; a retry under the same idempotency key finds it.
    #[error("the store did not finish a write within {after_ms} ms")]
    Stalled { after_ms: u64 },
    /// A commit whose answer never came: the connection (or the disk) failed after `COMMIT` was
    /// sent, so the change may or may not have been made. A retry under the same idempotency key
    /// finds it if it was.
    #[error("the store's answer to a commit was lost: {0}")]
    CommitUnknown(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// What a client is told when the database has no space left: nothing was written.
const STORAGE_FULL: &str = "storage is full: the request was not carried out";
/// What a client is told when the database did not answer in time (locked by another writer,
/// or a stalled disk): nothing was written, and a retry may succeed.
const STORAGE_BUSY: &str = "storage is busy: the request was not carried out; retry later";
/// What a client is told when a write did not finish in time: it may still be made.
const STORAGE_STALLED: &str = "storage is not answering: the request may still be carried out; \
     retry later with the same idempotency key, which finds it if it was";
/// What a client is told when a commit's answer was lost: it may have been made.
const STORAGE_COMMIT_UNKNOWN: &str = "storage stopped answering during the commit: the request may have \
     been carried out; retry with the same idempotency key, which finds it if it was";
/// What a client is told when the database cannot be reached.
const STORAGE_UNAVAILABLE: &str = "storage is unavailable: the request was not carried out; retry later";

/// Whether a refusal (a status's message) leaves the change's fate unknown: the store stopped
/// answering inside the write, which may still land, or the answer to its commit was lost.
pub fn fate_unknown(message: &str) -> bool {
    message == STORAGE_STALLED || message == STORAGE_COMMIT_UNKNOWN
}

/// Commits `tx`. A database's refusal of the commit (a full disk, a conflict) means nothing was
/// made; a commit whose answer was lost (the connection broke, or SQLite met an I/O error while
/// writing it) may have been: [`StoreError::CommitUnknown`]. Inside
/// [`as_attempt`](crate::as_attempt) the attempt is recorded in the same commit.
pub(crate) async fn commit(mut tx: sqlx::Transaction<'_, sqlx::Any>) -> Result<(), StoreError> {
    crate::attempts::record(&mut tx).await?;
    tx.commit().await.map_err(after_commit)
}

fn after_commit(e: sqlx::Error) -> StoreError {
    let lost = match &e {
        sqlx::Error::Io(io) => !is_full(io),
        sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => sqlite_primary_code(db.as_ref()) == Some(SQLITE_IOERR),
        _ => false,
    };
    if lost { StoreError::CommitUnknown(e) } else { StoreError::Database(e) }
}

/// Why the database refused, when the refusal is about its storage rather than the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Storage {
    Full,
    Busy,
}

/// SQLite's primary result codes.
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_IOERR: i32 = 10;
const SQLITE_FULL: i32 = 13;
/// PostgreSQL's SQLSTATE `disk_full`.
const PG_DISK_FULL: &str = "53100";

fn storage(e: &sqlx::Error) -> Option<Storage> {
    match e {
        sqlx::Error::Database(db) => {
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                return match sqlite_primary_code(db.as_ref())? {
                    SQLITE_FULL => Some(Storage::Full),
                    SQLITE_BUSY | SQLITE_LOCKED => Some(Storage::Busy),
                    _ => None,
                };
            }
            let postgres = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()?;
            (postgres.code() == PG_DISK_FULL).then_some(Storage::Full)
        }
        sqlx::Error::Io(io) if is_full(io) => Some(Storage::Full),
        _ => None,
    }
}

/// A SQLite error's primary result code: the low byte of the extended code it carries. `None`
/// for another database's error.
fn sqlite_primary_code(db: &dyn sqlx::error::DatabaseError) -> Option<i32> {
    db.try_downcast_ref::<sqlx::sqlite::SqliteError>()?;
    db.code().and_then(|c| c.parse::<i32>().ok()).map(|code| code & 0xff)
}

/// Whether an I/O error says the filesystem (or the user's quota on it) is full.
fn is_full(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
}

impl StoreError {
    /// The database ran out of space (SQLite `SQLITE_FULL`, PostgreSQL `disk_full`): nothing
    /// was written, and writes succeed again once space is freed.
    pub fn is_storage_full(&self) -> bool {
        matches!(self, StoreError::Database(e) if storage(e) == Some(Storage::Full))
    }
}

impl Classified for StoreError {
    fn class(&self) -> ErrorClass {
        match self {
            StoreError::GalleryNotFound(_) | StoreError::SubjectNotFound(_) => ErrorClass::NotFound,
            StoreError::GalleryExists(_) => ErrorClass::AlreadyExists,
            // A key reused with another body is a client error: nothing was done for it.
            StoreError::IdempotencyConflict(_) => ErrorClass::InvalidArgument,
            StoreError::ModelMismatch { .. } | StoreError::ThresholdChanged(_) => {
                ErrorClass::FailedPrecondition
            }
            StoreError::Database(e) => match storage(e) {
                Some(Storage::Full) => ErrorClass::ResourceExhausted,
                Some(Storage::Busy) => ErrorClass::Unavailable,
                None if matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) => {
                    ErrorClass::Unavailable
                }
                None => ErrorClass::Internal,
            },
            StoreError::Stalled { .. } | StoreError::CommitUnknown(_) => ErrorClass::Unavailable,
            StoreError::Corrupt(_) | StoreError::Migrate(_) => ErrorClass::Internal,
        }
    }

    /// A database's own words (SQL, file names, driver text) never reach a client.
    fn public_message(&self) -> String {
        match self {
            StoreError::Database(e) => match (storage(e), e) {
                (Some(Storage::Full), _) => STORAGE_FULL.to_owned(),
                (Some(Storage::Busy), _) | (None, sqlx::Error::PoolTimedOut) => STORAGE_BUSY.to_owned(),
                (None, sqlx::Error::Io(_)) => STORAGE_UNAVAILABLE.to_owned(),
                (None, _) => "internal error".to_owned(),
            },
            StoreError::Stalled { .. } => STORAGE_STALLED.to_owned(),
            StoreError::CommitUnknown(_) => STORAGE_COMMIT_UNKNOWN.to_owned(),
            StoreError::Corrupt(_) | StoreError::Migrate(_) => "internal error".to_owned(),
            _ => self.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_whose_answer_was_lost_is_of_unknown_fate_and_a_refused_one_is_not() {
        let broken = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let lost = after_commit(sqlx::Error::Io(broken));
        assert!(matches!(lost, StoreError::CommitUnknown(_)), "{lost:?}");
        assert_eq!(lost.class(), ErrorClass::Unavailable);
        assert!(fate_unknown(&lost.public_message()));
        assert!(fate_unknown(&StoreError::Stalled { after_ms: 1 }.public_message()));

        let full = std::io::Error::new(std::io::ErrorKind::StorageFull, "no space");
        let refused = after_commit(sqlx::Error::Io(full));
        assert!(refused.is_storage_full(), "{refused:?}");
        assert!(!fate_unknown(&refused.public_message()));
        let timed_out = after_commit(sqlx::Error::PoolTimedOut);
        assert!(!fate_unknown(&timed_out.public_message()), "no connection, no commit sent");
    }
}
