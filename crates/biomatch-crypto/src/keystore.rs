//! Where wrapped data keys live, and the record of those destroyed.

use crate::files::write_private;
use crate::{CryptoError, DataKey, MasterKey};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Per-gallery data keys, by an opaque key reference stored with the gallery.
pub trait KeyStore: Send + Sync + 'static {
    /// Creates and durably stores a new data key.
    fn create(&self, key_ref: &str) -> Result<DataKey, CryptoError>;
    /// The key; [`CryptoError::Destroyed`] for a key this store destroyed, whatever copy of it
    /// turns up later, and [`CryptoError::NoKey`] for one it does not hold.
    fn get(&self, key_ref: &str) -> Result<DataKey, CryptoError>;
    /// Destroys the key: every template sealed under it becomes unreadable, wherever it is copied.
    /// The store remembers the destruction, so a restored older copy of the key is not used.
    fn destroy(&self, key_ref: &str) -> Result<(), CryptoError>;
}

/// A wrapped key's file extension.
const KEY: &str = "dek";
/// A destroyed key's tombstone: kept for good, it outlives every copy of the key.
const TOMBSTONE: &str = "destroyed";
const TOMBSTONE_TEXT: &[u8] =
    b"data key destroyed (crypto-shredded): keep this file, it stops any older copy \
of the key from being used again\n";

/// Wrapped keys as files `DIR/KEY_REF.dek`, unwrapped keys cached in memory; a destroyed key
/// leaves a tombstone `DIR/KEY_REF.destroyed` (no secret in it) that is never removed.
///
/// The tombstones are what makes crypto-shredding survive a restore of the key store: copying
/// an older backup into the directory brings destroyed keys back as files, but `get` refuses a
/// key with a tombstone and opening the store destroys such a key again (docs/operations.md,
/// "Backup and restore").
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
    /// Opens the key directory, destroying again every key that has a tombstone.
    pub fn new(dir: &Path, master: MasterKey) -> Result<Self, CryptoError> {
        std::fs::create_dir_all(dir)?;
        let store =
            Self { dir: dir.to_path_buf(), master, previous: None, cache: Mutex::new(HashMap::new()) };
        store.destroy_again()?;
        Ok(store)
    }

    /// Also opens keys wrapped under `previous`, the master key being rotated out.
    pub fn with_previous(mut self, previous: MasterKey) -> Self {
        self.previous = Some(previous);
        self
    }

    /// Shreds every wrapped key that has a tombstone: a key brought back by copying an older
    /// backup of the key store into the directory. Returns how many there were.
    pub fn destroy_again(&self) -> Result<usize, CryptoError> {
        let mut again = 0;
        for key_ref in self.names(TOMBSTONE)? {
            let path = self.file(&key_ref, KEY)?;
            if path.try_exists()? {
                tracing::warn!(key = %key_ref, "a destroyed data key reappeared (an older copy of the key store restored?); destroyed again");
                shred(&path)?;
                again += 1;
            }
        }
        Ok(again)
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
        for key_ref in self.names(KEY)? {
            let path = self.file(&key_ref, KEY)?;
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

    /// The key references that have a file with `extension`, sorted.
    fn names(&self, extension: &str) -> Result<Vec<String>, CryptoError> {
        let suffix = format!(".{extension}");
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)?
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter_map(|name| name.strip_suffix(&suffix).map(str::to_owned))
            .collect();
        names.sort();
        Ok(names)
    }

    fn file(&self, key_ref: &str, extension: &str) -> Result<PathBuf, CryptoError> {
        let safe = !key_ref.is_empty() && key_ref.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !safe {
            return Err(CryptoError::NoKey(key_ref.to_owned()));
        }
        Ok(self.dir.join(format!("{key_ref}.{extension}")))
    }

    fn refuse_destroyed(&self, key_ref: &str) -> Result<(), CryptoError> {
        match self.file(key_ref, TOMBSTONE)?.try_exists()? {
            true => Err(CryptoError::Destroyed(key_ref.to_owned())),
            false => Ok(()),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, DataKey>> {
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Overwrites a wrapped key in place, then unlinks it, so it does not linger in the file's
/// blocks (as far as the file system overwrites in place).
fn shred(path: &Path) -> Result<(), CryptoError> {
    let mut file = match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let len = usize::try_from(file.metadata()?.len()).unwrap_or(0);
    file.write_all(&vec![0u8; len])?;
    file.sync_all()?;
    std::fs::remove_file(path)?;
    Ok(())
}

impl KeyStore for FileKeyStore {
    fn create(&self, key_ref: &str) -> Result<DataKey, CryptoError> {
        self.refuse_destroyed(key_ref)?;
        let path = self.file(key_ref, KEY)?;
        let key = DataKey::generate();
        write_private(&path, &self.master.wrap(&key, key_ref))?;
        self.cache().insert(key_ref.to_owned(), key.clone());
        Ok(key)
    }

    fn get(&self, key_ref: &str) -> Result<DataKey, CryptoError> {
        if let Some(key) = self.cache().get(key_ref) {
            return Ok(key.clone());
        }
        self.refuse_destroyed(key_ref)?;
        let path = self.file(key_ref, KEY)?;
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
        // The record first: after a crash between the two, `get` already refuses the key and the
        // next open of the store shreds it.
        let recorded = write_private(&self.file(key_ref, TOMBSTONE)?, TOMBSTONE_TEXT);
        // Shredding overwrites in place and needs no space: the key goes even when a full volume
        // refused the record.
        shred(&self.file(key_ref, KEY)?)?;
        Ok(recorded?)
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
        assert!(matches!(reopened.get("g-1"), Err(CryptoError::Destroyed(_))));
        assert!(matches!(reopened.get("g-2"), Err(CryptoError::NoKey(_))), "never held");
        assert!(reopened.get("../etc/passwd").is_err());
    }

    #[test]
    fn a_destroyed_key_restored_from_an_older_copy_stays_destroyed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (live, backup) = (dir.path().join("live"), dir.path().join("backup"));
        let master = || MasterKey::from_hex(&"11".repeat(32)).expect("master");
        let store = FileKeyStore::new(&live, master()).expect("store");
        let sealed = store.create("g-1").expect("created").seal(b"t", b"c");
        store.create("g-2").expect("created");
        std::fs::create_dir_all(&backup).expect("backup dir");
        for name in ["g-1.dek", "g-2.dek"] {
            std::fs::copy(live.join(name), backup.join(name)).expect("backed up");
        }
        store.destroy("g-1").expect("destroyed");
        store.destroy("g-1").expect("destroying again is harmless");
        assert!(!live.join("g-1.dek").exists());
        assert!(matches!(store.create("g-1"), Err(CryptoError::Destroyed(_))), "a reference is never reused");

        // The older copy alone still opens the template: what the tombstone is there to stop.
        let old = FileKeyStore::new(&backup, master()).expect("store");
        assert!(old.get("g-1").expect("key").open(&sealed, b"c").is_ok());

        // Copied back into the live directory, the key is refused, and destroyed again on open.
        std::fs::copy(backup.join("g-1.dek"), live.join("g-1.dek")).expect("restored");
        let reopened = FileKeyStore::new(&live, master()).expect("store");
        assert!(!live.join("g-1.dek").exists(), "destroyed again when the store opened");
        let err = reopened.get("g-1").expect_err("destroyed");
        assert!(matches!(err, CryptoError::Destroyed(_)), "{err}");
        assert!(err.to_string().contains("crypto-shredded"), "{err}");
        assert!(reopened.get("g-2").is_ok(), "other keys are untouched");
        std::fs::copy(backup.join("g-1.dek"), live.join("g-1.dek")).expect("restored again");
        assert!(matches!(reopened.get("g-1"), Err(CryptoError::Destroyed(_))), "refused while open too");
        assert_eq!(reopened.destroy_again().expect("destroy again"), 1);
        assert_eq!(reopened.rewrap_all().expect("rewrap"), Rewrapped { rewrapped: 0, current: 1 });
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
