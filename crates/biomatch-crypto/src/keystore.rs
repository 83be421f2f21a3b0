//! Where wrapped data keys live.

use crate::{CryptoError, DataKey, MasterKey};
use std::collections::HashMap;
use std::io::Write;
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
pub struct FileKeyStore {
    dir: PathBuf,
    master: MasterKey,
    cache: Mutex<HashMap<String, DataKey>>,
}

impl FileKeyStore {
    pub fn new(dir: &Path, master: MasterKey) -> Result<Self, CryptoError> {
        std::fs::create_dir_all(dir)?;
        Ok(Self { dir: dir.to_path_buf(), master, cache: Mutex::new(HashMap::new()) })
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

/// Writes a file only its owner can read, atomically: temp file, fsync, rename, fsync the
/// directory.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Unique per writer: two processes writing the same file never share a temp file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp.{}.{n}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
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
        let key = self.master.unwrap(&wrapped, key_ref)?;
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
}
