//! One classification of every error, mapped to wire codes in exactly one place (the proto crate).

/// What kind of failure an error is, from the caller's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    PermissionDenied,
    Unauthenticated,
    ResourceExhausted,
    Unavailable,
    DeadlineExceeded,
    Unimplemented,
    Internal,
}

/// An error that knows its class and what may be shown to a client.
pub trait Classified: std::error::Error {
    fn class(&self) -> ErrorClass;

    /// The message a client may see: never internal text, paths, SQL or biometric data.
    /// Internal errors show a generic message; the details are logged where handled.
    fn public_message(&self) -> String {
        match self.class() {
            ErrorClass::Internal => "internal error".to_owned(),
            _ => self.to_string(),
        }
    }
}
