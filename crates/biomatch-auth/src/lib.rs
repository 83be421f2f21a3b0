//! Who is asking: the one place in the request pipeline where a request's [`Principal`] is
//! established, for gRPC (the tower layer [`AuthLayer`]) and REST (the gateway calls
//! [`Authenticator::authenticate`] with its headers). Handlers only read the principal from the
//! request's extensions and check it with [`require_role`].
//!
//! Every call carries `authorization: Bearer <JWT>`. One algorithm is pinned (EdDSA / Ed25519);
//! the key is chosen by the token's `kid` among the trusted public keys; `exp`, `iss`, `aud` and
//! `sub` are required, with at most 30 s of leeway; a token marked `single_use` is refused the second
//! time its `jti` is seen ([`ReplayStore`]: in process, or Redis shared by replicas). Services call each other with short-lived service tokens minted by
//! [`ServiceCredentials`]. Keys: [`keys`]; tokens: [`token`].
#![forbid(unsafe_code)]

pub mod device;
pub mod issuers;
pub mod keys;
mod layer;
pub mod policy;
mod replay;
pub mod token;
mod verified;

pub use keys::{KeyError, KeySet, TokenSigner};
pub use layer::{AuthLayer, AuthService, RefusalLog};
pub use replay::{REDIS_DEADLINE, ReplayStore, ReplayUnavailable, redis_connection, within_deadline};
pub use token::{Claims, ServiceCredentials, TokenSpec};

use biomatch_domain::{ErrorClass, Principal, Role};
use std::sync::Arc;

pub const AUTHORIZATION: &str = "authorization";

/// Validates bearer tokens against a set of trusted keys.
#[derive(Clone)]
pub struct Authenticator {
    keys: Arc<KeySet>,
    issuer: String,
    audience: String,
    leeway_secs: u64,
    replay: Arc<ReplayStore>,
    verified: Arc<verified::VerifiedTokens>,
    key_roles: Arc<std::collections::HashMap<String, Vec<Role>>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

fn unauthenticated(message: impl Into<String>) -> tonic::Status {
    biomatch_proto::status_with(ErrorClass::Unauthenticated, message)
}

impl Authenticator {
    pub fn new(keys: KeySet, issuer: &str, audience: &str, leeway_secs: u64) -> Self {
        Self {
            keys: Arc::new(keys),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            leeway_secs: leeway_secs.min(30),
            replay: Arc::new(ReplayStore::default()),
            verified: Arc::default(),
            key_roles: Arc::default(),
        }
    }

    /// Limits the operators' issuers named here (by kid) to the roles listed for them.
    pub fn with_key_roles(mut self, key_roles: std::collections::HashMap<String, Vec<Role>>) -> Self {
        self.key_roles = Arc::new(key_roles);
        self
    }

    /// Remembers spent single-use tokens in `store` (Redis, shared by replicas) instead of this
    /// process.
    pub fn with_replay_store(mut self, store: ReplayStore) -> Self {
        self.replay = Arc::new(store);
        self
    }

    /// Validates the bearer token in the headers (`get` looks one up by lower-case name) and
    /// spends it if it is single-use.
    pub async fn authenticate<'a>(
        &self,
        get: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Principal, tonic::Status> {
        let (principal, single_use) = self.validate(get)?;
        if let Some((jti, exp)) = single_use {
            let first = self
                .replay
                .first_use(&jti, exp)
                .await
                .map_err(|e| biomatch_proto::status_with(ErrorClass::Unavailable, e.to_string()))?;
            if !first {
                return Err(unauthenticated("token was already used"));
            }
        }
        Ok(principal)
    }

    /// As [`Self::authenticate`], without spending a single-use token: for a front (the gateway)
    /// that forwards the token to the service that spends it.
    pub fn authenticate_forwarded<'a>(
        &self,
        get: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Principal, tonic::Status> {
        self.validate(get).map(|(principal, _)| principal)
    }

    /// The principal, and the `(jti, exp)` to spend when the token is single-use.
    fn validate<'a>(
        &self,
        get: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<(Principal, Option<(String, u64)>), tonic::Status> {
        let header = get(AUTHORIZATION).ok_or_else(|| unauthenticated("a bearer token is required"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| unauthenticated("authorization must be a bearer token"))?;
        let now = token::now_secs();
        let claims = match self.verified.get(token, now, self.leeway_secs) {
            Some(claims) => claims,
            None => {
                let claims = token::validate(
                    token,
                    &self.keys,
                    &self.issuer,
                    &self.audience,
                    self.leeway_secs,
                    &self.key_roles,
                )
                .map_err(|e| unauthenticated(e.to_string()))?;
                self.verified.insert(token, &claims, now, self.leeway_secs);
                claims
            }
        };
        let single_use = if claims.single_use {
            let jti = claims.jti.clone().filter(|j| !j.is_empty());
            let jti = jti.ok_or_else(|| unauthenticated("a single-use token needs a jti"))?;
            Some((jti, claims.exp))
        } else {
            None
        };
        let principal = claims.principal().map_err(|e| unauthenticated(e.to_string()))?;
        Ok((principal, single_use))
    }
}

/// The principal the pipeline established for this request.
pub fn principal<T>(request: &tonic::Request<T>) -> Result<Principal, tonic::Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| unauthenticated("request was not authenticated"))
}

/// Refuses a principal whose role is not among `allowed`.
pub fn require_role(principal: &Principal, allowed: &[Role]) -> Result<(), tonic::Status> {
    if allowed.contains(&principal.role) {
        Ok(())
    } else {
        Err(biomatch_proto::status_with(
            ErrorClass::PermissionDenied,
            format!("role {} may not do this", principal.role),
        ))
    }
}

/// A request carrying a bearer token, and the current span's trace context so that the callee's
/// spans join the caller's trace.
pub fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert(AUTHORIZATION, value);
    }
    biomatch_telemetry::inject(request.metadata_mut());
    request
}

#[cfg(test)]
mod tests;
