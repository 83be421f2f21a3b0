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

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| format!("unknown role {s:?}"))
    }
}

/// The authenticated caller: token subject, role and (for kiosks) the device it runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub role: Role,
    pub device: String,
}

impl Principal {
    /// The principal used in `--role all` demo mode when a request names none.
    pub fn demo() -> Self {
        Self { subject: "demo-admin".to_owned(), role: Role::Admin, device: String::new() }
    }
}
