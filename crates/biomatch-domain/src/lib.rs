//! Domain types of biomatch, free of transport and storage concerns.
//!
//! Everything that crosses a service boundary is validated into one of these types first:
//! [`GalleryName`], [`SubjectId`], [`Template`] (a finite, L2-normalised vector), [`Principal`].
//! Errors are classified once with [`ErrorClass`]; the proto crate maps a class to gRPC and HTTP
//! codes, so no other crate decides what a client sees.
#![forbid(unsafe_code)]

mod clock;
mod error;
mod gallery;
mod ids;
pub mod limits;
mod principal;
mod threshold_policy;
mod tuning;
mod vector;

pub use clock::{Clock, system_clock, unix_ms};
pub use error::{Classified, ErrorClass};
pub use gallery::{Decision, Gallery, IndexKind, IndexSpec, IndexSpecError, shard_of};
pub use ids::{GalleryName, IdError, SubjectId};
pub use limits::TooLong;
pub use principal::{Principal, Role, UnknownRole, VECTOR_PROBES_SCOPE};
pub use threshold_policy::{
    FmrPoint, ImpostorTail, MIN_POLICY_TEMPLATES, ThresholdPolicy, builtin_impostor_tail,
};
pub use tuning::{
    MAX_LABELLED_PROBES, MAX_PROBES_PER_SUBJECT, MAX_TUNE_PROBES, MIN_LABELLED_SUBJECTS, SearchTuning,
    check_labelled_subjects, check_tune_request,
};
pub use vector::{Template, VectorError, check_query};
