//! Bounds on every client-supplied string that can reach an audit leaf.
//!
//! A request whose field is over its bound is refused at the edge with `INVALID_ARGUMENT`, before
//! anything is appended to the audit log or changed in a store: an over-long field must neither
//! make an audit append fail after a change (a live change with no record) nor bloat the log. The
//! constants are public so every role that accepts such a field (ingest, search) applies the same
//! bounds.

/// Gallery names (also enforced, with the allowed characters, by [`crate::GalleryName`]).
pub const MAX_GALLERY_NAME_BYTES: usize = 64;
/// Subject ids (also at most 128 characters, see [`crate::SubjectId`]).
pub const MAX_SUBJECT_ID_BYTES: usize = 256;
/// Model ids and model versions of a gallery.
pub const MAX_MODEL_BYTES: usize = 256;
/// Idempotency keys chosen by clients.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;
/// Case references of searches and reviews.
pub const MAX_CASE_REF_BYTES: usize = 256;
/// Purpose codes (a gallery's allowed purposes, a search's purpose).
pub const MAX_PURPOSE_BYTES: usize = 64;
/// How many purpose codes a gallery may allow.
pub const MAX_PURPOSES: usize = 64;
/// Free-text reasons (e.g. of a threshold change).
pub const MAX_REASON_BYTES: usize = 1024;
/// Candidates one search may ask for (a gallery's default `k` included).
pub const MAX_K: u32 = 1000;

/// A field over its bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be at most {max} bytes (got {got})")]
pub struct TooLong {
    pub field: &'static str,
    pub max: usize,
    pub got: usize,
}

impl crate::Classified for TooLong {
    fn class(&self) -> crate::ErrorClass {
        crate::ErrorClass::InvalidArgument
    }
}

/// `value` if it is at most `max` bytes long.
pub fn bounded<'a>(field: &'static str, value: &'a str, max: usize) -> Result<&'a str, TooLong> {
    if value.len() > max {
        return Err(TooLong { field, max, got: value.len() });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_in_bytes() {
        assert_eq!(bounded("reason", "ok", 2), Ok("ok"));
        let err = bounded("reason", "é", 1).expect_err("two bytes");
        assert_eq!(err, TooLong { field: "reason", max: 1, got: 2 });
        assert!(err.to_string().contains("reason must be at most 1 bytes"));
    }
}
