//! Which leaves each service identity may append: a role records what it does and the refusals
//! it answers, nothing else, so a compromised embed or matcher pod cannot write identify or
//! enrolment leaves in another role's name.

use biomatch_auth::issuers::{ALL_ROLES, service_roles};
use biomatch_proto::v1::Operation;

/// Leaves any role may write: the refusals its own pipeline answers.
const REFUSALS: &[Operation] = &[Operation::AccessDenied, Operation::AuthFailed];

/// What a process role records besides refusals; `None`: anything (the audit role itself).
fn records(role: &str) -> Option<&'static [Operation]> {
    use Operation::*;
    match role {
        "audit" | ALL_ROLES => None,
        "search" => Some(&[Identify, Verify, Review, BudgetExceeded, SearchRead, SearchTuning]),
        "ingest" => Some(&[
            Enroll,
            DeleteSubject,
            CreateGallery,
            DeleteGallery,
            Purge,
            SetThreshold,
            SearchTuning,
            KeyChange,
            SubjectRead,
        ]),
        _ => Some(&[]),
    }
}

/// Whether the service `subject` (`biomatch-ROLES`) may append a leaf of `operation`.
pub fn may_write(subject: &str, operation: Operation) -> bool {
    let Some(roles) = service_roles(subject) else { return false };
    REFUSALS.contains(&operation)
        || roles.iter().any(|role| records(role).is_none_or(|ops| ops.contains(&operation)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_writes_only_its_own_leaves_and_refusals() {
        assert!(may_write("biomatch-search", Operation::Identify));
        assert!(!may_write("biomatch-search", Operation::Enroll));
        assert!(may_write("biomatch-ingest+embed", Operation::Enroll));
        for op in [Operation::Identify, Operation::Enroll, Operation::AuditRead, Operation::DeleteGallery] {
            assert!(!may_write("biomatch-embed", op), "{op:?}");
            assert!(!may_write("biomatch-matcher", op), "{op:?}");
        }
        assert!(may_write("biomatch-embed", Operation::AccessDenied));
        assert!(may_write("biomatch-all", Operation::AuditRead));
        assert!(!may_write("someone", Operation::AccessDenied));
    }
}
