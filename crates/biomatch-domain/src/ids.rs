//! Validated identifiers.

use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("gallery name must not be empty")]
    EmptyGallery,
    #[error("gallery name must be at most 64 characters of [A-Za-z0-9_.-], starting with a letter or digit")]
    BadGallery,
    #[error("subject id must not be empty")]
    EmptySubject,
    #[error("subject id must be at most 128 printable characters (256 bytes) without whitespace")]
    BadSubject,
}

impl crate::Classified for IdError {
    fn class(&self) -> crate::ErrorClass {
        crate::ErrorClass::InvalidArgument
    }
}

/// A gallery's name: 1 to 64 characters of `[A-Za-z0-9_.-]`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GalleryName(String);

impl GalleryName {
    pub fn parse(name: &str) -> Result<Self, IdError> {
        if name.is_empty() {
            return Err(IdError::EmptyGallery);
        }
        let ok_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        let ok_start = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        if name.len() > crate::limits::MAX_GALLERY_NAME_BYTES || !ok_chars || !ok_start {
            return Err(IdError::BadGallery);
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GalleryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A subject's identifier inside a gallery: 1 to 128 printable characters, no whitespace.
/// It is an opaque reference chosen by the enrolling system, never a name or a document number
/// by requirement (that is the customer's policy to set).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubjectId(String);

impl SubjectId {
    pub fn parse(id: &str) -> Result<Self, IdError> {
        if id.is_empty() {
            return Err(IdError::EmptySubject);
        }
        if id.chars().count() > 128
            || id.len() > crate::limits::MAX_SUBJECT_ID_BYTES
            || id.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(IdError::BadSubject);
        }
        Ok(Self(id.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for SubjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gallery_names() {
        assert!(GalleryName::parse("travelers-2026.11").is_ok());
        assert_eq!(GalleryName::parse(""), Err(IdError::EmptyGallery));
        assert_eq!(GalleryName::parse("-x"), Err(IdError::BadGallery));
        assert_eq!(GalleryName::parse("a b"), Err(IdError::BadGallery));
        assert_eq!(GalleryName::parse(&"a".repeat(65)), Err(IdError::BadGallery));
    }

    #[test]
    fn subject_ids() {
        assert!(SubjectId::parse("P-0001").is_ok());
        assert_eq!(SubjectId::parse(""), Err(IdError::EmptySubject));
        assert_eq!(SubjectId::parse("a\nb"), Err(IdError::BadSubject));
        assert_eq!(SubjectId::parse(&"x".repeat(129)), Err(IdError::BadSubject));
    }
}
