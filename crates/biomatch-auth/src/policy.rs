//! One authorization table for every RPC of every role: which people's roles and which service
//! identities may call it. The [`AuthLayer`](crate::AuthLayer) applies it to every gRPC call
//! before a handler runs, so no handler carries its own role list; scope rules that need the
//! request's body (a token's galleries and purposes) are checked by the handlers with
//! [`Principal`]'s scope helpers.
//!
//! A service identity is the roles its process runs (`biomatch-search`, `biomatch-ingest+embed`,
//! `biomatch-all`); its key can sign nothing else ([`crate::issuers`]). A call is allowed to a
//! service when any of its roles is listed, or it runs `all` (one process, demo or tests).

use crate::issuers::{ALL_ROLES, service_roles};
use biomatch_domain::{Principal, Role};

/// Why a caller may not make a call: what it is told, and what the refusal's leaf records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

/// Who may call one RPC.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub people: &'static [Role],
    pub services: &'static [&'static str],
}

use Role::{Admin, Analyst, Auditor, Enroller, Kiosk};

const NOBODY: &[&str] = &[];
const STAFF: &[Role] = &[Enroller, Admin, Analyst, Auditor];
const EVERYONE: &[Role] = &[Kiosk, Analyst, Enroller, Auditor, Admin];
const EVERY_SERVICE: &[&str] = &["audit", "embed", "gateway", "ingest", "matcher", "search"];

/// The table: `Service/Method` -> rule. An RPC missing here is refused to everyone.
pub const RULES: &[(&str, Rule)] = &[
    ("IngestService/CreateGallery", Rule { people: &[Admin], services: NOBODY }),
    // Search reads a gallery's settings on every search.
    ("IngestService/GetGallery", Rule { people: STAFF, services: &["search"] }),
    ("IngestService/ListGalleries", Rule { people: STAFF, services: NOBODY }),
    ("IngestService/DeleteGallery", Rule { people: &[Admin], services: NOBODY }),
    ("IngestService/SetThreshold", Rule { people: &[Admin], services: NOBODY }),
    ("IngestService/Enroll", Rule { people: &[Enroller], services: NOBODY }),
    ("IngestService/BatchEnroll", Rule { people: &[Enroller], services: NOBODY }),
    ("IngestService/DeleteSubject", Rule { people: &[Enroller], services: NOBODY }),
    ("IngestService/GetSubject", Rule { people: &[Enroller, Analyst], services: NOBODY }),
    ("IngestService/PurgeExpired", Rule { people: &[Admin], services: NOBODY }),
    ("IngestService/SetSearchTuning", Rule { people: &[Admin], services: NOBODY }),
    ("SearchService/Identify", Rule { people: &[Kiosk, Analyst], services: NOBODY }),
    ("SearchService/Verify", Rule { people: &[Kiosk, Analyst], services: NOBODY }),
    ("SearchService/ReviewCandidate", Rule { people: &[Analyst], services: NOBODY }),
    ("SearchService/ListPendingReviews", Rule { people: &[Analyst], services: NOBODY }),
    ("SearchService/GetSearch", Rule { people: &[Analyst, Auditor], services: NOBODY }),
    ("SearchService/ListCaseSearches", Rule { people: &[Analyst, Auditor], services: NOBODY }),
    ("SearchService/TuneGallery", Rule { people: &[Admin], services: NOBODY }),
    // Every role that answers or refuses anything records it; the gateway only forwards, so it
    // appends nothing.
    (
        "AuditService/Append",
        Rule { people: &[], services: &["audit", "embed", "ingest", "matcher", "search"] },
    ),
    ("AuditService/Query", Rule { people: &[Auditor], services: NOBODY }),
    ("AuditService/ListLeaves", Rule { people: &[Auditor], services: NOBODY }),
    ("AuditService/GetCheckpoint", Rule { people: EVERYONE, services: EVERY_SERVICE }),
    ("AuditService/ListCheckpoints", Rule { people: EVERYONE, services: EVERY_SERVICE }),
    ("AuditService/GetInclusionProof", Rule { people: EVERYONE, services: EVERY_SERVICE }),
    ("AuditService/GetConsistencyProof", Rule { people: EVERYONE, services: EVERY_SERVICE }),
    ("AuditService/GetPublicKey", Rule { people: EVERYONE, services: EVERY_SERVICE }),
    ("AuditService/GetSearchRecord", Rule { people: &[], services: &["search"] }),
    // A review's state comes from the reviews on record; auditors read them with Query.
    ("AuditService/ListReviews", Rule { people: &[], services: &["search"] }),
    ("AuditService/ListCaseRecords", Rule { people: &[], services: &["search"] }),
    // A matcher holds decrypted templates: only the search role asks it anything.
    ("MatcherService/Search", Rule { people: &[], services: &["search"] }),
    ("MatcherService/Score", Rule { people: &[], services: &["search"] }),
    ("MatcherService/Describe", Rule { people: &[], services: &["search"] }),
    ("MatcherService/Tune", Rule { people: &[], services: &["search"] }),
    ("EmbedService/Embed", Rule { people: &[], services: &["search", "ingest"] }),
    ("EmbedService/DescribeModel", Rule { people: &[], services: &["search", "ingest"] }),
];

/// The rule for `rpc` (`Service/Method`, without the package).
pub fn rule(rpc: &str) -> Option<Rule> {
    RULES.iter().find(|(name, _)| *name == rpc).map(|(_, rule)| *rule)
}

/// `Service/Method` of a gRPC path (`/biomatch.v1.Service/Method`).
pub fn rpc_of_path(path: &str) -> &str {
    let path = path.trim_start_matches('/');
    path.rsplit_once('.').map_or(path, |(_, rpc)| rpc)
}

/// Whether `principal` may call `rpc`; the refusal says why.
pub fn authorize(rpc: &str, principal: &Principal) -> Result<(), Denied> {
    let Some(rule) = rule(rpc) else {
        return Err(Denied(format!("{rpc} is not an RPC of this cluster")));
    };
    let allowed = match principal.role {
        Role::Service => service_roles(&principal.subject).is_some_and(|roles| {
            roles.iter().any(|r| (*r == ALL_ROLES && !rule.services.is_empty()) || rule.services.contains(r))
        }),
        role => rule.people.contains(&role),
    };
    if allowed {
        Ok(())
    } else if principal.role == Role::Service {
        Err(Denied(format!("service {} may not call {rpc}", principal.subject)))
    } else {
        Err(Denied(format!("role {} may not call {rpc}", principal.role)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_call_only_what_their_role_needs() {
        let gateway = Principal::service("biomatch-gateway");
        assert!(authorize("AuditService/Append", &gateway).is_err(), "the gateway forges no leaves");
        assert!(authorize("MatcherService/Search", &gateway).is_err());
        assert!(authorize("IngestService/DeleteGallery", &gateway).is_err());
        let embed = Principal::service("biomatch-embed");
        assert!(authorize("MatcherService/Score", &embed).is_err());
        assert!(authorize("IngestService/Enroll", &embed).is_err());
        let search = Principal::service("biomatch-search");
        assert!(authorize("MatcherService/Search", &search).is_ok());
        assert!(authorize("AuditService/Append", &search).is_ok());
        assert!(authorize("IngestService/GetGallery", &search).is_ok());
        assert!(authorize("IngestService/CreateGallery", &search).is_err());
        let all = Principal::service("biomatch-all");
        assert!(authorize("EmbedService/Embed", &all).is_ok());
        assert!(authorize("IngestService/CreateGallery", &all).is_err(), "no service manages galleries");
        assert!(authorize("AuditService/Append", &Principal::service("someone")).is_err());
    }

    #[test]
    fn people_call_their_rpcs_and_unknown_rpcs_are_refused() {
        assert!(authorize("IngestService/CreateGallery", &Principal::new("a", Admin)).is_ok());
        assert!(authorize("IngestService/CreateGallery", &Principal::new("a", Enroller)).is_err());
        assert!(authorize("AuditService/Append", &Principal::new("a", Auditor)).is_err());
        assert!(authorize("SearchService/Export", &Principal::new("a", Admin)).is_err());
        assert_eq!(rpc_of_path("/biomatch.v1.SearchService/Identify"), "SearchService/Identify");
    }
}
