//! Where wrapped data keys live.

use crate::files::write_private;
use crate::{CryptoError, DataKey, MasterKey};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Per-gallery data keys, by an opaque key reference stored with the gallery.
pub trait KeyStore: Send + Sync + 'static {
    /// Creates and durably stores a new data key.
    fn create(&self, key_ref: &str) -> Result<DataKey, CryptoError>;
    fn get(&self, key_ref: &str) -> Result<DataKey, CryptoError>;
    /// Destroys the key: every template sealed under it becomes unreadable, wherever it is copied.
    fn destroy(&self, key_ref: &str) -> Result<(), CryptoError>;
}

/// Wrapped keys as files `DIR/KEY_REF.dek`, unwrapped keys cached in memory.
///
/// Rotating the master key without downtime: every role runs with the new master key and the
/// old one as `previous` (keys wrapped under either open; new keys are wrapped under the new
/// one), [`FileKeyStore::rewrap_all`] re-wraps the rest, then `previous` is removed and the old
/// master key destroyed.
pub struct FileKeyStore {
    dir: PathBuf,
    master: MasterKey,
    previous: Option<MasterKey>,
    cache: Mutex<HashMap<String, DataKey>>,
}

/// What [`FileKeyStore::rewrap_all`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rewrapped {
    /// Keys that were under the previous master key and are now under the current one.
    pub rewrapped: usize,
    /// Keys already under the current master key.
    pub current: usize,
}

impl FileKeyStore {
    pub fn new(dir: &Path, master: MasterKey) -> Result<Self, CryptoError> {
        std::fs::create_dir_all(dir)?;
        Ok(Self { dir: dir.to_path_buf(), master, previous: None, cache: Mutex::new(HashMap::new()) })
    }

    /// Also opens keys wrapped under `previous`, the master key being rotated out.
    pub fn with_previous(mut self, previous: MasterKey) -> Self {
        self.previous = Some(previous);
        self
    }

    /// Unwraps with the current master key, else with the previous one; says which opened it.
    fn unwrap(&self, wrapped: &[u8], key_ref: &str) -> Result<(DataKey, bool), CryptoError> {
        match (self.master.unwrap(wrapped, key_ref), &self.previous) {
            (Ok(key), _) => Ok((key, true)),
            (Err(CryptoError::Open), Some(previous)) => Ok((previous.unwrap(wrapped, key_ref)?, false)),
            (Err(e), _) => Err(e),
        }
    }

    /// Re-wraps every key still under the previous master key with the current one, each file
    /// replaced atomically, so an interrupted run is simply run again. A key that opens under
    /// neither master key stops the run with its reference named.
    pub fn rewrap_all(&self) -> Result<Rewrapped, CryptoError> {
        let mut done = Rewrapped::default();
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)?
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter_map(|name| name.strip_suffix(".dek").map(str::to_owned))
            .collect();
        names.sort();
        for key_ref in names {
            let path = self.path(&key_ref)?;
            let wrapped = std::fs::read(&path)?;
            let (key, current) = self.unwrap(&wrapped, &key_ref).map_err(|e| {
                CryptoError::MasterKey(format!("data key {key_ref} opens under neither master key: {e}"))
            })?;
            if current {
                done.current += 1;
            } else {
                write_private(&path, &self.master.wrap(&key, &key_ref))?;
                done.rewrapped += 1;
            }
        }
        Ok(done)
    }

    fn path(&self, key_ref: &str) -> Result<PathBuf, CryptoError> {
        let safe = !key_ref.is_empty() && key_ref.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !safe {
            return Err(CryptoError::NoKey(key_ref.to_owned()));
        }
        Ok(self.dir.join(format!("{key_ref}.dek")))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, DataKey>> {
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl KeyStore for FileKeyStore {
    fn create(&self, key_ref: &str) -> Result<DataKey, CryptoError> {
        let path = self.path(key_ref)?;
        let key = DataKey::generate();
        write_private(&path, &self.master.wrap(&key, key_ref))?;
        self.cache().insert(key_ref.to_owned(), key.clone());
        Ok(key)
    }

    fn get(&self, key_ref: &str) -> Result<DataKey, CryptoError> {
        if let Some(key) = self.cache().get(key_ref) {
            return Ok(key.clone());
        }
        let path = self.path(key_ref)?;
        let wrapped = match std::fs::read(&path) {
            Ok(w) => w,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CryptoError::NoKey(key_ref.to_owned()));
            }
            Err(e) => return Err(e.into()),
        };
        let (key, _) = self.unwrap(&wrapped, key_ref)?;
        self.cache().insert(key_ref.to_owned(), key.clone());
        Ok(key)
    }

    fn destroy(&self, key_ref: &str) -> Result<(), CryptoError> {
        self.cache().remove(key_ref);
        let path = self.path(key_ref)?;
        if let Ok(len) = std::fs::metadata(&path).map(|m| m.len()) {
            // Overwrite before unlinking, so the wrapped key does not linger in the file's blocks.
            write_private(&path, &vec![0u8; usize::try_from(len).unwrap_or(0)])?;
            std::fs::remove_file(&path)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_survive_reopening_and_die_when_destroyed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let master = MasterKey::from_hex(&"11".repeat(32)).expect("master");
        let store = FileKeyStore::new(dir.path(), master.clone()).expect("store");
        let key = store.create("g-1").expect("created");
        let sealed = key.seal(b"t", b"c");
        let reopened = FileKeyStore::new(dir.path(), master).expect("store");
        assert_eq!(reopened.get("g-1").expect("key").open(&sealed, b"c").expect("opens").as_slice(), b"t");
        let other_master =
            FileKeyStore::new(dir.path(), MasterKey::from_hex(&"22".repeat(32)).expect("m")).expect("s");
        assert!(other_master.get("g-1").is_err(), "a wrong master key unwraps nothing");
        reopened.destroy("g-1").expect("destroyed");
        assert!(matches!(reopened.get("g-1"), Err(CryptoError::NoKey(_))));
        assert!(reopened.get("../etc/passwd").is_err());
    }

    #[test]
    fn rotating_the_master_key_keeps_every_data_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = || MasterKey::from_hex(&"11".repeat(32)).expect("old");
        let new = || MasterKey::from_hex(&"22".repeat(32)).expect("new");
        let before = FileKeyStore::new(dir.path(), old()).expect("store");
        let sealed: Vec<(String, Vec<u8>)> = (0..3)
            .map(|i| {
                let key_ref = format!("g-{i}");
                let sealed = before.create(&key_ref).expect("created").seal(b"template", b"ctx");
                (key_ref, sealed)
            })
            .collect();
        let opens = |store: &FileKeyStore, key_ref: &str, sealed: &[u8]| {
            store
                .get(key_ref)
                .is_ok_and(|k| k.open(sealed, b"ctx").is_ok_and(|t| t.as_slice() == b"template"))
        };

        // During the rotation: new master key, old one as previous; both kinds open.
        let during = FileKeyStore::new(dir.path(), new()).expect("store").with_previous(old());
        during.create("g-new").expect("a key made during the rotation");
        for (key_ref, s) in &sealed {
            assert!(opens(&during, key_ref, s), "{key_ref} opens under the previous key");
        }
        assert_eq!(during.rewrap_all().expect("rewrap"), Rewrapped { rewrapped: 3, current: 1 });
        assert_eq!(during.rewrap_all().expect("again"), Rewrapped { rewrapped: 0, current: 4 }, "idempotent");

        // After: the new master key alone opens everything, the old one nothing.
        let after = FileKeyStore::new(dir.path(), new()).expect("store");
        for (key_ref, s) in &sealed {
            assert!(opens(&after, key_ref, s), "{key_ref} opens under the new key alone");
        }
        let old_only = FileKeyStore::new(dir.path(), old()).expect("store");
        assert!(old_only.get("g-0").is_err(), "the old master key is no longer needed");

        // A key under some third master key is named, not skipped.
        let stray =
            FileKeyStore::new(dir.path(), MasterKey::from_hex(&"33".repeat(32)).expect("m")).expect("s");
        stray.create("g-stray").expect("created");
        let err = FileKeyStore::new(dir.path(), new())
            .expect("s")
            .with_previous(old())
            .rewrap_all()
            .expect_err("a stray key");
        assert!(err.to_string().contains("g-stray"), "{err}");
    }
}
