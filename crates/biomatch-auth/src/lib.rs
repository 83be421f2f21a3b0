//! Who is asking: the one place in the request pipeline where a request's [`Principal`] is
//! established, for gRPC (a tonic interceptor) and REST (the gateway calls
//! [`Authenticator::authenticate`] with its headers). Handlers only read the principal from the
//! request's extensions and check it with [`require_role`].
//!
//! Every call carries `authorization: Bearer <JWT>`. One algorithm is pinned (EdDSA / Ed25519);
//! the key is chosen by the token's `kid` among the trusted public keys; `exp`, `iss`, `aud` and
//! `sub` are required, with at most 30 s of leeway; a token marked `single_use` is refused the second
//! time its `jti` is seen. Services call each other with short-lived service tokens minted by
//! [`ServiceCredentials`]. Keys: [`keys`]; tokens: [`token`].

pub mod keys;
pub mod token;

pub use keys::{KeyError, KeySet, TokenSigner};
pub use token::{Claims, ReplayGuard, ServiceCredentials, TokenSpec};

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
    replay: Arc<ReplayGuard>,
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
            replay: Arc::new(ReplayGuard::default()),
        }
    }

    /// Validates the bearer token in the headers (`get` looks one up by lower-case name).
    pub fn authenticate<'a>(
        &self,
        get: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Principal, tonic::Status> {
        self.check(get, true)
    }

    /// As [`Self::authenticate`], without spending a single-use token: for a front (the gateway)
    /// that forwards the token to the service that spends it.
    pub fn authenticate_forwarded<'a>(
        &self,
        get: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Principal, tonic::Status> {
        self.check(get, false)
    }

    fn check<'a>(
        &self,
        get: impl Fn(&str) -> Option<&'a str>,
        spend: bool,
    ) -> Result<Principal, tonic::Status> {
        let header = get(AUTHORIZATION).ok_or_else(|| unauthenticated("a bearer token is required"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| unauthenticated("authorization must be a bearer token"))?;
        let claims = token::validate(token, &self.keys, &self.issuer, &self.audience, self.leeway_secs)
            .map_err(|e| unauthenticated(e.to_string()))?;
        if claims.single_use {
            let jti = claims.jti.as_deref().filter(|j| !j.is_empty());
            let jti = jti.ok_or_else(|| unauthenticated("a single-use token needs a jti"))?;
            if spend && !self.replay.first_use(jti, claims.exp) {
                return Err(unauthenticated("token was already used"));
            }
        }
        claims.principal().map_err(unauthenticated)
    }

    /// A tonic interceptor that puts the principal into the request's extensions.
    pub fn interceptor(
        self,
    ) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
        move |mut request: tonic::Request<()>| {
            let principal =
                self.authenticate(|name| request.metadata().get(name).and_then(|v| v.to_str().ok()))?;
            request.extensions_mut().insert(principal);
            Ok(request)
        }
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

/// A request carrying a bearer token.
pub fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert(AUTHORIZATION, value);
    }
    request
}

#[cfg(test)]
mod tests;
