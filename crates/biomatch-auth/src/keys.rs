//! Ed25519 keys for tokens: trusted public keys by `kid` (PEM files or a JWKS file), and signers.

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use jsonwebtoken::{DecodingKey, EncodingKey};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("key file {0} is not an Ed25519 key in PEM form")]
    Format(PathBuf),
    #[error("JWKS file {0}: {1}")]
    Jwks(PathBuf, String),
    #[error("key {0:?} is a demo key and is refused outside --role all demo mode")]
    DemoKey(String),
}

/// The key id of a key file: its name without `.pub.pem` / `.key.pem` / `.pem`.
pub fn kid_of(path: &Path) -> String {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    ["pub.pem", "key.pem", "pem"]
        .iter()
        .find_map(|ext| name.strip_suffix(&format!(".{ext}")))
        .unwrap_or(name)
        .to_owned()
}

/// Trusted public keys by key id.
#[derive(Default, Clone)]
pub struct KeySet {
    keys: HashMap<String, DecodingKey>,
}

impl KeySet {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn get(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys.get(kid)
    }

    /// Adds an Ed25519 public key in PEM form (SubjectPublicKeyInfo).
    pub fn add_pem_file(&mut self, path: &Path) -> Result<(), KeyError> {
        let pem = std::fs::read(path).map_err(|e| KeyError::Io(path.to_path_buf(), e))?;
        let key = DecodingKey::from_ed_pem(&pem).map_err(|_| KeyError::Format(path.to_path_buf()))?;
        self.keys.insert(kid_of(path), key);
        Ok(())
    }

    /// Adds every OKP/Ed25519 key of a JWKS file, by its `kid`.
    pub fn add_jwks_file(&mut self, path: &Path) -> Result<(), KeyError> {
        let text = std::fs::read_to_string(path).map_err(|e| KeyError::Io(path.to_path_buf(), e))?;
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_str(&text).map_err(|e| KeyError::Jwks(path.to_path_buf(), e.to_string()))?;
        for jwk in &set.keys {
            let kid = jwk
                .common
                .key_id
                .clone()
                .ok_or_else(|| KeyError::Jwks(path.to_path_buf(), "a key has no kid".into()))?;
            let key =
                DecodingKey::from_jwk(jwk).map_err(|e| KeyError::Jwks(path.to_path_buf(), e.to_string()))?;
            self.keys.insert(kid, key);
        }
        Ok(())
    }

    /// Refuses demo keys (key ids starting with `demo`), for clusters outside demo mode.
    pub fn refuse_demo_keys(&self) -> Result<(), KeyError> {
        match self.keys.keys().find(|k| k.starts_with("demo")) {
            Some(kid) => Err(KeyError::DemoKey(kid.clone())),
            None => Ok(()),
        }
    }
}

/// Signs tokens with one private key.
#[derive(Clone)]
pub struct TokenSigner {
    pub kid: String,
    key: EncodingKey,
    pub issuer: String,
    pub audience: String,
}

impl TokenSigner {
    /// Loads a PKCS#8 PEM private key; the key id is the file's name without `.key.pem`.
    pub fn from_file(path: &Path, issuer: &str, audience: &str) -> Result<Self, KeyError> {
        let pem = std::fs::read(path).map_err(|e| KeyError::Io(path.to_path_buf(), e))?;
        let key = EncodingKey::from_ed_pem(&pem).map_err(|_| KeyError::Format(path.to_path_buf()))?;
        Ok(Self { kid: kid_of(path), key, issuer: issuer.to_owned(), audience: audience.to_owned() })
    }

    pub(crate) fn key(&self) -> &EncodingKey {
        &self.key
    }
}

/// Writes a new key pair `DIR/KID.key.pem` (private, mode 0600) and `DIR/KID.pub.pem`, unless the
/// private key exists already. Returns the two paths.
pub fn generate(dir: &Path, kid: &str) -> Result<(PathBuf, PathBuf), KeyError> {
    let private = dir.join(format!("{kid}.key.pem"));
    let public = dir.join(format!("{kid}.pub.pem"));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| KeyError::Io(p, e)
    };
    if private.exists() && public.exists() {
        return Ok((private, public));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let key = SigningKey::from_bytes(&rand::random());
    let private_pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|_| KeyError::Format(private.clone()))?;
    let public_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|_| KeyError::Format(public.clone()))?;
    biomatch_crypto::write_private(&private, private_pem.as_bytes()).map_err(io(&private))?;
    std::fs::write(&public, public_pem).map_err(io(&public))?;
    Ok((private, public))
}
