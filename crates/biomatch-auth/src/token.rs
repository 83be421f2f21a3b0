//! Token claims, validation, issuing and service credentials.

use crate::keys::{KeySet, TokenSigner};
use biomatch_domain::{Principal, Role, VECTOR_PROBES_SCOPE};
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The claims biomatch reads. `galleries` and `purposes` scope a token (kiosks must carry both).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iss: String,
    pub aud: String,
    pub exp: u64,
    #[serde(default)]
    pub iat: u64,
    pub role: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub device: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub galleries: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purposes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub single_use: bool,
    /// OAuth-style space-separated scopes; biomatch reads [`VECTOR_PROBES_SCOPE`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
}

impl Claims {
    pub fn principal(&self) -> Result<Principal, TokenError> {
        if self.sub.is_empty() {
            return Err(TokenError::EmptySubject);
        }
        let role: Role = self.role.parse()?;
        Ok(Principal {
            subject: self.sub.clone(),
            role,
            device: self.device.clone(),
            galleries: self.galleries.clone(),
            purposes: self.purposes.clone(),
            vector_probes: self.scope.split(' ').any(|s| s == VECTOR_PROBES_SCOPE),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token has an empty subject")]
    EmptySubject,
    #[error("token role: {0}")]
    UnknownRole(#[from] biomatch_domain::UnknownRole),
    #[error("token must be signed with EdDSA")]
    Algorithm,
    #[error("token names no key id")]
    NoKid,
    #[error("token is signed by an unknown key")]
    UnknownKid,
    #[error("token is invalid: {0}")]
    Invalid(String),
    #[error("token is refused: {0}")]
    Issuer(String),
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Checks signature (EdDSA only, key by kid), expiry and not-before, issuer, audience, the
/// required claims, and that the key may sign this role for this long ([`crate::issuers`];
/// `key_roles` narrows operators' issuers by kid).
pub fn validate(
    token: &str,
    keys: &KeySet,
    issuer: &str,
    audience: &str,
    leeway: u64,
    key_roles: &HashMap<String, Vec<Role>>,
) -> Result<Claims, TokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    if header.alg != Algorithm::EdDSA {
        return Err(TokenError::Algorithm);
    }
    let kid = header.kid.ok_or(TokenError::NoKid)?;
    let key = keys.get(&kid).ok_or(TokenError::UnknownKid)?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.leeway = leeway.min(30);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.validate_nbf = true;
    let data = jsonwebtoken::decode::<Claims>(token, key, &validation)
        .map_err(|e| TokenError::Invalid(e.to_string()))?;
    crate::issuers::check(&kid, &data.claims, key_roles.get(&kid).map(Vec::as_slice))?;
    Ok(data.claims)
}

/// What to put in a token.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub subject: String,
    pub role: Role,
    pub device: String,
    pub galleries: Option<Vec<String>>,
    pub purposes: Option<Vec<String>>,
    pub ttl: Duration,
    pub single_use: bool,
    /// Grants [`VECTOR_PROBES_SCOPE`]: raw embeddings as search probes (trusted integrations).
    pub vector_probes: bool,
}

impl TokenSpec {
    pub fn new(subject: &str, role: Role, ttl: Duration) -> Self {
        Self {
            subject: subject.to_owned(),
            role,
            device: String::new(),
            galleries: None,
            purposes: None,
            ttl,
            single_use: false,
            vector_probes: false,
        }
    }
}

impl TokenSigner {
    pub fn issue(&self, spec: &TokenSpec) -> Result<String, jsonwebtoken::errors::Error> {
        let now = now_secs();
        let claims = Claims {
            sub: spec.subject.clone(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp: now + spec.ttl.as_secs(),
            iat: now,
            role: spec.role.to_string(),
            device: spec.device.clone(),
            galleries: spec.galleries.clone(),
            purposes: spec.purposes.clone(),
            jti: Some(format!("{:032x}", rand::random::<u128>())),
            single_use: spec.single_use,
            scope: if spec.vector_probes { VECTOR_PROBES_SCOPE.to_owned() } else { String::new() },
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, self.key())
    }
}

/// A role's own identity when it calls another role: short-lived service tokens, re-minted
/// before they expire.
pub struct ServiceCredentials {
    signer: TokenSigner,
    subject: String,
    cached: Mutex<(String, u64)>,
}

const SERVICE_TTL: Duration = Duration::from_secs(300);

impl ServiceCredentials {
    pub fn new(signer: TokenSigner, role_name: &str) -> Self {
        Self { signer, subject: format!("biomatch-{role_name}"), cached: Mutex::new((String::new(), 0)) }
    }

    /// A valid service token (at least a minute left).
    pub fn token(&self) -> String {
        let mut cached = self.cached.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cached.1 <= now_secs() + 60 {
            let spec = TokenSpec::new(&self.subject, Role::Service, SERVICE_TTL);
            match self.signer.issue(&spec) {
                Ok(token) => *cached = (token, now_secs() + SERVICE_TTL.as_secs()),
                Err(e) => tracing::error!(error = %e, "cannot mint a service token"),
            }
        }
        cached.0.clone()
    }

    pub fn principal(&self) -> Principal {
        Principal::service(&self.subject)
    }
}
