//! Who is asking: the principal every handler receives from the request pipeline.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Kiosk,
    Analyst,
    Enroller,
    Auditor,
    Admin,
    /// Another biomatch role calling on a caller's behalf (search -> matcher, ingest -> audit).
    Service,
}

impl Role {
    pub const ALL: [Role; 6] =
        [Role::Kiosk, Role::Analyst, Role::Enroller, Role::Auditor, Role::Admin, Role::Service];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Kiosk => "kiosk",
            Role::Analyst => "analyst",
            Role::Enroller => "enroller",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
            Role::Service => "service",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of [`Role::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// The token scope that lets a searching caller send a raw embedding as its probe: for trusted
/// integrations that compute templates themselves. Kiosks and analysts send photos: a caller who
/// may choose the probe vector freely can walk a template coordinate by coordinate.
pub const VECTOR_PROBES_SCOPE: &str = "vector-probes";

/// The authenticated caller: token subject, role, the device it runs on (kiosks), the galleries
/// and purposes its token is limited to (`None`: not limited by the token), and whether its token
/// carries the [`VECTOR_PROBES_SCOPE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub role: Role,
    pub device: String,
    pub galleries: Option<Vec<String>>,
    pub purposes: Option<Vec<String>>,
    pub vector_probes: bool,
}

impl Principal {
    pub fn new(subject: &str, role: Role) -> Self {
        Self {
            subject: subject.to_owned(),
            role,
            device: String::new(),
            galleries: None,
            purposes: None,
            vector_probes: false,
        }
    }

    /// Another biomatch role.
    pub fn service(subject: &str) -> Self {
        Self::new(subject, Role::Service)
    }

    /// Whether the token lets this caller search `gallery` for `purpose`. Kiosk tokens must name
    /// both their galleries and their purposes.
    pub fn may_search(&self, gallery: &str, purpose: &str) -> bool {
        self.may_use_gallery(gallery) && self.listed(&self.purposes, purpose)
    }

    /// Whether the token lets this caller act on `gallery` at all, in any role: a token that
    /// names galleries is limited to them (an enroller scoped to A does not enrol into B).
    pub fn may_use_gallery(&self, gallery: &str) -> bool {
        self.listed(&self.galleries, gallery)
    }

    fn listed(&self, scope: &Option<Vec<String>>, value: &str) -> bool {
        match scope {
            Some(list) => list.iter().any(|v| v == value),
            None => self.role != Role::Kiosk,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kiosks_search_only_what_their_token_names() {
        let mut kiosk = Principal::new("k", Role::Kiosk);
        assert!(!kiosk.may_search("g", "border"), "a kiosk token without scopes may search nothing");
        kiosk.galleries = Some(vec!["g".into()]);
        kiosk.purposes = Some(vec!["border".into()]);
        assert!(kiosk.may_search("g", "border"));
        assert!(!kiosk.may_search("other", "border"));
        assert!(!kiosk.may_search("g", "marketing"));
        assert!(Principal::new("a", Role::Analyst).may_search("g", "border"));
        let mut enroller = Principal::new("e", Role::Enroller);
        assert!(enroller.may_use_gallery("b"), "no scope: not limited");
        enroller.galleries = Some(vec!["a".into()]);
        assert!(enroller.may_use_gallery("a") && !enroller.may_use_gallery("b"));
    }
}
