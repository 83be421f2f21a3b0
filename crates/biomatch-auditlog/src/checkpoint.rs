//! Signed checkpoints in the C2SP tlog-checkpoint format: a signed note whose body is
//! `origin\nsize\nbase64(root)\n`, signed with Ed25519.
//!
//! The signature line is `— NAME base64(key_id || signature)` where `key_id` is the first four
//! bytes of `SHA-256(NAME || "\n" || 0x01 || public_key)` (0x01 names Ed25519), so any witness or
//! monitor that speaks signed notes can check it.

use crate::merkle::Hash;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint note is malformed: {0}")]
    Malformed(&'static str),
    #[error("checkpoint is not signed by the expected key")]
    UnknownKey,
    #[error("checkpoint signature does not verify")]
    BadSignature,
}

impl Checkpoint {
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, B64.encode(self.root))
    }
}

/// The 4-byte key id of a signed-note Ed25519 key.
pub fn key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n\x01");
    h.update(key.as_bytes());
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// The signed note of a checkpoint; the key is named after the log's origin.
pub fn sign(checkpoint: &Checkpoint, key: &SigningKey) -> String {
    let body = checkpoint.body();
    let signature = key.sign(body.as_bytes());
    let mut blob = key_id(&checkpoint.origin, &key.verifying_key()).to_vec();
    blob.extend_from_slice(&signature.to_bytes());
    format!("{body}\n\u{2014} {} {}\n", checkpoint.origin, B64.encode(blob))
}

/// Parses a signed note and checks its signature by `key`.
pub fn open(note: &str, key: &VerifyingKey) -> Result<Checkpoint, CheckpointError> {
    let (body, signatures) =
        note.split_once("\n\n").ok_or(CheckpointError::Malformed("no signature block"))?;
    let body = format!("{body}\n");
    let mut lines = body.lines();
    let origin = lines.next().filter(|l| !l.is_empty()).ok_or(CheckpointError::Malformed("no origin"))?;
    let size = lines.next().and_then(|l| l.parse().ok()).ok_or(CheckpointError::Malformed("bad size"))?;
    let root: Hash = lines
        .next()
        .and_then(|l| B64.decode(l).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or(CheckpointError::Malformed("bad root hash"))?;
    let checkpoint = Checkpoint { origin: origin.to_owned(), size, root };
    if checkpoint.body() != body {
        return Err(CheckpointError::Malformed("unexpected body lines"));
    }
    let want = key_id(origin, key);
    for line in signatures.lines() {
        let Some(rest) = line.strip_prefix("\u{2014} ") else { continue };
        let Some((name, blob)) = rest.split_once(' ') else { continue };
        let Ok(blob) = B64.decode(blob) else { continue };
        if name != origin || blob.len() != 68 || blob[..4] != want {
            continue;
        }
        let signature = Signature::from_slice(&blob[4..]).map_err(|_| CheckpointError::BadSignature)?;
        return key
            .verify(body.as_bytes(), &signature)
            .map(|()| checkpoint)
            .map_err(|_| CheckpointError::BadSignature);
    }
    Err(CheckpointError::UnknownKey)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn signed_checkpoints_open_only_with_their_key_and_body() {
        let cp = Checkpoint { origin: "biomatch.example/audit".into(), size: 42, root: [7; 32] };
        let note = sign(&cp, &key(1));
        assert!(note.starts_with("biomatch.example/audit\n42\nBwcH"), "{note}");
        assert!(note.contains("\n\n\u{2014} biomatch.example/audit "));
        assert_eq!(open(&note, &key(1).verifying_key()), Ok(cp));
        assert_eq!(open(&note, &key(2).verifying_key()), Err(CheckpointError::UnknownKey));
        let forged = note.replacen("\n42\n", "\n43\n", 1);
        assert_eq!(open(&forged, &key(1).verifying_key()), Err(CheckpointError::BadSignature));
        assert!(open("garbage", &key(1).verifying_key()).is_err());
    }

    // Fuzzing the checkpoint parser: arbitrary notes are refused, never panicked on, and no
    // change to a signed note opens as something else.
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 1024, ..Default::default() })]

        #[test]
        fn arbitrary_notes_are_refused(note in "(?s).{0,400}") {
            proptest::prop_assert!(open(&note, &key(1).verifying_key()).is_err());
        }

        #[test]
        fn a_changed_note_does_not_open(at in 0usize..1000, byte in proptest::prelude::any::<u8>(), size in 0u64..1 << 40) {
            let cp = Checkpoint { origin: "biomatch.example/audit".into(), size, root: [9; 32] };
            let mut bytes = sign(&cp, &key(1)).into_bytes();
            let at = at % bytes.len();
            proptest::prop_assume!(bytes[at] != byte);
            bytes[at] = byte;
            if let Ok(changed) = String::from_utf8(bytes) {
                // Only a change the base64 decoding ignores can leave the same checkpoint.
                let opened = open(&changed, &key(1).verifying_key());
                proptest::prop_assert!(opened.as_ref().map_or(true, |c| *c == cp), "{opened:?}");
            }
        }
    }
}
