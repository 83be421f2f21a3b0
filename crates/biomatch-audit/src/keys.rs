//! The audit log's Ed25519 signing key, kept as a hex seed in a file readable by its owner only.

use ed25519_dalek::SigningKey;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or create the audit signing key {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("audit signing key {0} must hold 64 hex characters")]
    Format(String),
}

/// Loads the key at `path`, or creates one there (mode 0600) if the file does not exist.
pub fn load_or_create(path: &Path) -> Result<SigningKey, KeyError> {
    let io = |source| KeyError::Io { path: path.display().to_string(), source };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let bytes = hex::decode(text.trim()).map_err(|_| KeyError::Format(path.display().to_string()))?;
            let seed: [u8; 32] =
                bytes.try_into().map_err(|_| KeyError::Format(path.display().to_string()))?;
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let seed: [u8; 32] = rand::random();
            // Created once: a second creator finds the first one's key and fails, never replacing it.
            biomatch_crypto::create_private(path, hex::encode(seed).as_bytes()).map_err(io)?;
            tracing::info!(path = %path.display(), "created a new audit signing key");
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_then_loads_the_same_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k/audit.key");
        let a = load_or_create(&path).expect("created");
        let b = load_or_create(&path).expect("loaded");
        assert_eq!(a.to_bytes(), b.to_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "nothex").expect("write");
        assert!(matches!(load_or_create(&path), Err(KeyError::Format(_))));
    }
}
