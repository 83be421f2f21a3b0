//! Tokens whose signature was already checked. A token is presented many times (a kiosk's
//! session token on every search; a role's service token on every hop of every search), so each
//! distinct token costs one Ed25519 verification instead of one per request. An entry is keyed
//! by the whole token, so any change to header, claims or signature misses; it serves only
//! until the token's own expiry (plus the validation leeway); and it belongs to one
//! [`Authenticator`](crate::Authenticator), so it never outlives the keys it was checked with.

use crate::token::Claims;
use std::collections::HashMap;
use std::sync::Mutex;

/// Distinct tokens remembered; beyond this, expired entries are dropped, then all.
const CAPACITY: usize = 10_000;

#[derive(Debug, Default)]
pub(crate) struct VerifiedTokens {
    entries: Mutex<HashMap<String, Claims>>,
}

impl VerifiedTokens {
    /// The claims of `token` if it was verified before and is not expired at `now` (seconds).
    pub(crate) fn get(&self, token: &str, now: u64, leeway: u64) -> Option<Claims> {
        let entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.get(token).filter(|claims| claims.exp.saturating_add(leeway) >= now).cloned()
    }

    /// Remembers a token that passed full validation.
    pub(crate) fn insert(&self, token: &str, claims: &Claims, now: u64, leeway: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= CAPACITY {
            entries.retain(|_, c| c.exp.saturating_add(leeway) >= now);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(token.to_owned(), claims.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "k1".into(),
            iss: "i".into(),
            aud: "a".into(),
            exp,
            iat: 0,
            role: "kiosk".into(),
            device: String::new(),
            galleries: None,
            purposes: None,
            jti: None,
            single_use: false,
            scope: String::new(),
        }
    }

    #[test]
    fn an_entry_serves_until_its_token_expires_and_only_for_the_same_token() {
        let verified = VerifiedTokens::default();
        verified.insert("a.b.c", &claims(100), 50, 30);
        assert_eq!(verified.get("a.b.c", 130, 30).map(|c| c.exp), Some(100), "within the leeway");
        assert!(verified.get("a.b.c", 131, 30).is_none(), "expired");
        assert!(verified.get("a.b.d", 60, 30).is_none(), "another signature");
    }

    #[test]
    fn a_full_cache_drops_expired_entries_first() {
        let verified = VerifiedTokens::default();
        for i in 0..CAPACITY {
            let exp = if i == 0 { 1_000 } else { 10 };
            verified.insert(&format!("t{i}"), &claims(exp), 0, 0);
        }
        verified.insert("new", &claims(1_000), 500, 0);
        assert!(verified.get("t0", 500, 0).is_some(), "a live entry survives");
        assert!(verified.get("new", 500, 0).is_some());
        let len = verified.entries.lock().expect("lock").len();
        assert_eq!(len, 2, "the expired ones went");
    }
}
