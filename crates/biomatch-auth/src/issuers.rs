//! Which tokens a key may sign, and how long a token of each role may live.
//!
//! A key's `kid` says whose it is. `service-ROLES` (e.g. `service-search`, `service-ingest+matcher`)
//! is a process's own key: it signs only `service` tokens whose subject is `biomatch-R` for roles
//! `R` among `ROLES` (`all` covers every role), so a compromised gateway or embed pod can mint
//! neither an administrator nor another role's identity. Any other key is an operator's issuer:
//! it signs people's roles only, never `service`, and `auth.key_roles` may narrow it further (a
//! kiosk-provisioning issuer that signs kiosk tokens and nothing else). `demo` (refused outside
//! `--role all` demo mode) signs anything.

use crate::token::{Claims, TokenError};
use biomatch_domain::Role;
use std::time::Duration;

/// Prefix of a process's own service key id.
pub const SERVICE_KID_PREFIX: &str = "service-";
/// Prefix of a service token's subject; the rest names the caller's roles joined by `+`.
pub const SERVICE_SUBJECT_PREFIX: &str = "biomatch-";
/// The role name that covers every role (one process running the whole cluster).
pub const ALL_ROLES: &str = "all";

/// The key id a process running `roles` (joined by `+`) signs its calls with.
pub fn service_kid(roles: &str) -> String {
    format!("{SERVICE_KID_PREFIX}{roles}")
}

/// The process roles a service subject names (`biomatch-search` -> `["search"]`).
pub fn service_roles(subject: &str) -> Option<Vec<&str>> {
    let roles = subject.strip_prefix(SERVICE_SUBJECT_PREFIX)?;
    (!roles.is_empty()).then(|| roles.split('+').collect())
}

/// The longest a token of `role` may be valid (`exp - iat`).
pub fn max_lifetime(role: Role) -> Duration {
    match role {
        // Re-minted every few minutes by the process itself.
        Role::Service => Duration::from_secs(15 * 60),
        // One lane shift.
        Role::Kiosk => Duration::from_secs(8 * 3600),
        Role::Analyst | Role::Enroller | Role::Auditor | Role::Admin => Duration::from_secs(12 * 3600),
    }
}

/// Refuses a token that key `kid` may not sign, or that lives longer than its role allows.
/// `narrowed` lists the roles an operator's issuer is limited to, when configured.
pub fn check(kid: &str, claims: &Claims, narrowed: Option<&[Role]>) -> Result<(), TokenError> {
    let role: Role = claims.role.parse()?;
    if claims.iat == 0 || claims.exp < claims.iat {
        return Err(TokenError::Invalid("token must carry iat, before exp".into()));
    }
    if Duration::from_secs(claims.exp - claims.iat) > max_lifetime(role) {
        return Err(TokenError::Invalid(format!(
            "a {role} token may be valid for at most {} s",
            max_lifetime(role).as_secs()
        )));
    }
    let refused =
        || TokenError::Issuer(format!("key {kid} may not sign a {role} token for {:?}", claims.sub));
    if kid == "demo" {
        return Ok(());
    }
    match kid.strip_prefix(SERVICE_KID_PREFIX) {
        Some(key_roles) => {
            let key_roles: Vec<&str> = key_roles.split('+').collect();
            let subject_roles = service_roles(&claims.sub).ok_or_else(refused)?;
            let covered = key_roles.contains(&ALL_ROLES)
                || subject_roles.iter().all(|r| *r != ALL_ROLES && key_roles.contains(r));
            if role != Role::Service || !covered {
                return Err(refused());
            }
        }
        None if role == Role::Service => return Err(refused()),
        None => {
            if narrowed.is_some_and(|roles| !roles.contains(&role)) {
                return Err(refused());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, role: &str, ttl: u64) -> Claims {
        Claims {
            sub: sub.into(),
            iss: "i".into(),
            aud: "a".into(),
            exp: 1_000 + ttl,
            iat: 1_000,
            role: role.into(),
            device: String::new(),
            galleries: None,
            purposes: None,
            jti: None,
            single_use: false,
            scope: String::new(),
        }
    }

    #[test]
    fn a_service_key_signs_only_its_own_service_identity() {
        let own = claims("biomatch-gateway", "service", 300);
        assert!(check("service-gateway", &own, None).is_ok());
        for (sub, role) in [
            ("admin-1", "admin"),
            ("loader", "enroller"),
            ("auditor", "auditor"),
            ("biomatch-search", "service"),
            ("biomatch-all", "service"),
            ("biomatch-gateway+search", "service"),
        ] {
            let forged = claims(sub, role, 300);
            assert!(check("service-gateway", &forged, None).is_err(), "{sub} as {role}");
        }
        assert!(check("service-ingest+matcher", &claims("biomatch-matcher", "service", 300), None).is_ok());
        assert!(check("service-all", &claims("biomatch-search", "service", 300), None).is_ok());
    }

    #[test]
    fn an_operators_issuer_signs_people_only_and_as_narrowed() {
        assert!(check("ops-2026", &claims("a", "admin", 600), None).is_ok());
        assert!(check("ops-2026", &claims("biomatch-search", "service", 300), None).is_err());
        let kiosks = [Role::Kiosk];
        assert!(check("lanes", &claims("k", "kiosk", 600), Some(&kiosks)).is_ok());
        assert!(check("lanes", &claims("k", "analyst", 600), Some(&kiosks)).is_err());
    }

    #[test]
    fn lifetimes_are_bounded_per_role() {
        assert!(check("ops", &claims("k", "kiosk", 8 * 3600), None).is_ok());
        assert!(check("ops", &claims("k", "kiosk", 8 * 3600 + 1), None).is_err());
        assert!(check("service-search", &claims("biomatch-search", "service", 3600), None).is_err());
        let mut no_iat = claims("a", "admin", 60);
        no_iat.iat = 0;
        assert!(check("ops", &no_iat, None).is_err());
    }
}
