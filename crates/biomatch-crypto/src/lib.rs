//! Templates encrypted at rest, by envelope encryption.
//!
//! Every gallery has its own 256-bit data key; templates are sealed with AES-256-GCM under it,
//! with associated data naming the gallery and subject, so a ciphertext moved to another row does
//! not open. Data keys are stored only wrapped (AES-256-GCM under the master key) by a
//! [`KeyStore`], outside the gallery store: a stolen database or backup holds ciphertext only, and
//! destroying a gallery's data key (crypto-shredding) makes every copy of its templates, backups
//! included, unreadable; the key store keeps a record of each destruction, so a key brought back
//! by restoring an older copy of the key store is destroyed again, never used. [`FileKeyStore`]
//! keeps wrapped keys as files under a directory, wrapped by a [`MasterKey`] from a file or the
//! environment; a KMS implements the same trait. Large plaintexts (shard snapshots) are sealed in
//! authenticated chunks ([`SealedChunks`], [`OpenChunks`]) so they can be read back as a stream.
//! AES-GCM is `ring`'s.
#![forbid(unsafe_code)]

pub mod files;
mod keystore;
mod stream;

pub use files::{create_private, write_private, write_private_parts};
pub use keystore::{FileKeyStore, KeyStore, Rewrapped};
pub use stream::{OpenChunks, SealedChunks};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

const NONCE: usize = NONCE_LEN;
const TAG: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("ciphertext does not open with this key and context (wrong key, wrong row, or tampered)")]
    Open,
    #[error(
        "no data key for gallery key {0}: the gallery was deleted (crypto-shredded) or its key is missing"
    )]
    NoKey(String),
    /// The key store holds a record that this key was destroyed: the gallery was deleted, and no
    /// copy of the key (a restored backup of the key store included) opens anything again.
    #[error("no data key for gallery key {0}: destroyed when its gallery was deleted (crypto-shredded)")]
    Destroyed(String),
    #[error("master key: {0}")]
    MasterKey(String),
    #[error("key store: {0}")]
    Io(#[from] std::io::Error),
}

impl biomatch_domain::Classified for CryptoError {
    fn class(&self) -> biomatch_domain::ErrorClass {
        use biomatch_domain::ErrorClass;
        match self {
            // Stored bytes that do not open: corrupt or tampered data, not the caller's doing.
            CryptoError::Open => ErrorClass::Internal,
            // A key store with no space left: nothing was written, and a retry succeeds once
            // space is freed.
            CryptoError::Io(e) if files::is_full(e) => ErrorClass::ResourceExhausted,
            // A key store that is unreachable or not mounted, or a master key not configured:
            // the same answer wherever a key is needed (ingest and matcher alike).
            CryptoError::NoKey(_) | CryptoError::MasterKey(_) | CryptoError::Io(_) => ErrorClass::Unavailable,
            // For good: the gallery was deleted, and retrying elsewhere finds no key either.
            CryptoError::Destroyed(_) => ErrorClass::FailedPrecondition,
        }
    }
}

/// A 256-bit AES key that is wiped from memory when dropped and never printed.
#[derive(Clone)]
pub struct DataKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    pub fn generate() -> Self {
        Self(Zeroizing::new(rand::random()))
    }

    fn cipher(&self) -> LessSafeKey {
        // A 32-byte key is always a valid AES-256 key.
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, self.0.as_ref()).expect("32-byte AES-256 key"))
    }

    /// `nonce || ciphertext+tag`, bound to `context`.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE] = rand::random();
        let mut out = Vec::with_capacity(NONCE + plaintext.len() + TAG);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self.seal_detached(nonce, context, &mut out[NONCE..]);
        out.extend_from_slice(&tag);
        out
    }

    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if sealed.len() < NONCE + TAG {
            return Err(CryptoError::Open);
        }
        let (nonce, body) = sealed.split_at(NONCE);
        let mut plain = Zeroizing::new(body.to_vec());
        let len =
            self.open_detached(nonce.try_into().map_err(|_| CryptoError::Open)?, context, &mut plain)?;
        plain.truncate(len);
        Ok(plain)
    }

    /// Encrypts `buffer` where it lies; returns the tag.
    fn seal_detached(&self, nonce: [u8; NONCE], context: &[u8], buffer: &mut [u8]) -> [u8; TAG] {
        let tag = self
            .cipher()
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context), buffer)
            // Refused only beyond AES-GCM's input limit (64 GiB).
            .expect("AES-GCM input within its length limit");
        let mut out = [0u8; TAG];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Authenticates and decrypts `ciphertext || tag` where it lies; returns the plaintext length.
    fn open_detached(
        &self,
        nonce: [u8; NONCE],
        context: &[u8],
        buffer: &mut [u8],
    ) -> Result<usize, CryptoError> {
        self.cipher()
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(context), buffer)
            .map(|plain| plain.len())
            .map_err(|_| CryptoError::Open)
    }
}

/// The key that wraps data keys. From a file or `BIOMATCH_MASTER_KEY` (64 hex characters).
#[derive(Clone)]
pub struct MasterKey(DataKey);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    pub fn from_hex(hex_key: &str) -> Result<Self, CryptoError> {
        let bytes = Zeroizing::new(
            hex::decode(hex_key.trim())
                .map_err(|_| CryptoError::MasterKey("must be 64 hex characters".into()))?,
        );
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::MasterKey("must be 64 hex characters".into()))?;
        Ok(Self(DataKey(Zeroizing::new(key))))
    }

    pub fn from_file(path: &std::path::Path) -> Result<Self, CryptoError> {
        let text = Zeroizing::new(std::fs::read_to_string(path)?);
        Self::from_hex(&text)
    }

    /// Loads the key at `path`, creating a random one (mode 0600) when the file does not exist.
    pub fn load_or_create(path: &std::path::Path) -> Result<Self, CryptoError> {
        if path.exists() {
            return Self::from_file(path);
        }
        let key = DataKey::generate();
        files::write_private(path, hex::encode(key.0.as_ref()).as_bytes())?;
        tracing::info!(path = %path.display(), "created a new master key");
        Ok(Self(key))
    }

    fn wrap(&self, key: &DataKey, key_ref: &str) -> Vec<u8> {
        self.0.seal(key.0.as_ref(), &wrap_context(key_ref))
    }

    fn unwrap(&self, wrapped: &[u8], key_ref: &str) -> Result<DataKey, CryptoError> {
        let bytes = self.0.open(wrapped, &wrap_context(key_ref))?;
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| CryptoError::Open)?;
        Ok(DataKey(Zeroizing::new(key)))
    }
}

fn wrap_context(key_ref: &str) -> Vec<u8> {
    format!("biomatch-data-key:v1:{key_ref}").into_bytes()
}

/// The associated data of one subject's templates in one gallery.
pub fn template_context(gallery_key_ref: &str, subject_id: &str) -> Vec<u8> {
    format!("biomatch-template:v1:{gallery_key_ref}:{subject_id}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_with_its_key_and_context() {
        let key = DataKey::generate();
        let sealed = key.seal(b"template bytes", b"g1:s1");
        assert_eq!(key.open(&sealed, b"g1:s1").expect("opens").as_slice(), b"template bytes");
        assert!(matches!(key.open(&sealed, b"g1:s2"), Err(CryptoError::Open)), "moved to another subject");
        assert!(DataKey::generate().open(&sealed, b"g1:s1").is_err(), "another gallery's key");
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(key.open(&tampered, b"g1:s1").is_err());
        assert!(key.open(&sealed[..10], b"g1:s1").is_err(), "truncated");
        assert_ne!(key.seal(b"x", b"c"), key.seal(b"x", b"c"), "fresh nonce each time");
        assert_eq!(format!("{key:?}"), "DataKey(..)");
    }

    #[test]
    fn master_keys_parse_strictly() {
        assert!(MasterKey::from_hex(&"ab".repeat(32)).is_ok());
        assert!(MasterKey::from_hex("abcd").is_err());
        assert!(MasterKey::from_hex(&"zz".repeat(32)).is_err());
    }
}
