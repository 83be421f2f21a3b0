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
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl Classified for StoreError {
    fn class(&self) -> ErrorClass {
        match self {
            StoreError::GalleryNotFound(_) | StoreError::SubjectNotFound(_) => ErrorClass::NotFound,
            StoreError::GalleryExists(_) => ErrorClass::AlreadyExists,
            // A key reused with another body is a client error: nothing was done for it.
            StoreError::IdempotencyConflict(_) => ErrorClass::InvalidArgument,
            StoreError::ModelMismatch { .. } => ErrorClass::FailedPrecondition,
            StoreError::Database(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) => ErrorClass::Unavailable,
            StoreError::Corrupt(_) | StoreError::Database(_) | StoreError::Migrate(_) => ErrorClass::Internal,
        }
    }
}
