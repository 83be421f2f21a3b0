//! Encrypted shard snapshots: a matcher restarts from its last snapshot and replays the change
//! log from the position the snapshot includes, instead of decrypting and re-indexing every
//! template (and, for HNSW and IVF, rebuilding the graph or retraining).
//!
//! A snapshot is sealed with the gallery's data key (AES-256-GCM); the associated data binds it
//! to the gallery's key, the gallery id, the shard and the change-log position, so a corrupt file,
//! a snapshot of another shard or gallery, or an edited position fails authentication and the
//! shard is rebuilt from the store. Deleting a gallery destroys its key, and with it every
//! snapshot of the gallery. Files are written atomically (temp file, fsync, rename) and readable
//! by their owner only.

use biomatch_crypto::KeyStore;
use biomatch_index::ShardIndex;
use biomatch_store::GalleryRecord;
use std::path::PathBuf;
use std::sync::Arc;

const MAGIC: &[u8; 4] = b"BMSS";

/// Where snapshots live, and the keys that seal them.
pub struct SnapshotStore {
    dir: PathBuf,
    keys: Arc<dyn KeyStore>,
}

fn context(key_ref: &str, gallery_id: i64, shard: u32, seq: u64) -> Vec<u8> {
    format!("biomatch-snapshot:v1:{key_ref}:{gallery_id}:{shard}:{seq}").into_bytes()
}

impl SnapshotStore {
    pub fn new(dir: PathBuf, keys: Arc<dyn KeyStore>) -> Self {
        Self { dir, keys }
    }

    /// The file holding a shard's snapshot.
    pub fn path(&self, gallery_id: i64, shard: u32) -> PathBuf {
        self.dir.join(format!("{gallery_id}-{shard}.snapshot"))
    }

    /// Seals and writes the shard's bytes as of change `seq`.
    pub fn write(&self, gallery: (i64, &str), shard: u32, seq: u64, bytes: &[u8]) -> std::io::Result<()> {
        let (gallery_id, key_ref) = gallery;
        let key = self.keys.get(key_ref).map_err(std::io::Error::other)?;
        let sealed = key.seal(bytes, &context(key_ref, gallery_id, shard, seq));
        let mut file = Vec::with_capacity(sealed.len() + 12);
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&seq.to_le_bytes());
        file.extend_from_slice(&sealed);
        biomatch_crypto::write_private(&self.path(gallery_id, shard), &file)
    }

    /// The shard as of the returned change position, or `None` (with a warning, and the file
    /// removed) when there is no usable snapshot: missing, corrupt, foreign, or newer than the
    /// store (`head`), which happens when the store was restored from an older backup.
    pub fn load(&self, gallery: &GalleryRecord, shard: u32, head: u64) -> Option<(ShardIndex, u64)> {
        let path = self.path(gallery.id, shard);
        let file = std::fs::read(&path).ok()?;
        let loaded = self.open(gallery, shard, head, &file);
        if let Err(why) = &loaded {
            tracing::warn!(gallery = %gallery.name, shard, %why, "snapshot refused; rebuilding the shard from the store");
            let _ = std::fs::remove_file(&path);
        }
        loaded.ok()
    }

    fn open(
        &self,
        gallery: &GalleryRecord,
        shard: u32,
        head: u64,
        file: &[u8],
    ) -> Result<(ShardIndex, u64), String> {
        if file.len() < 12 || &file[..4] != MAGIC {
            return Err("not a biomatch snapshot".into());
        }
        let seq = u64::from_le_bytes(file[4..12].try_into().map_err(|_| "header")?);
        if seq > head {
            return Err(format!("snapshot is at change {seq}, the store only at {head}"));
        }
        let key = self.keys.get(&gallery.key_ref).map_err(|e| e.to_string())?;
        let plain = key
            .open(&file[12..], &context(&gallery.key_ref, gallery.id, shard, seq))
            .map_err(|_| "authentication failed (corrupt, or another shard's snapshot)".to_owned())?;
        let index = ShardIndex::from_snapshot(gallery.dimension as usize, &gallery.index, &plain)
            .map_err(|e| e.to_string())?;
        Ok((index, seq))
    }

    /// Removes every snapshot of a deleted gallery.
    pub fn remove_gallery(&self, gallery_id: i64) {
        let prefix = format!("{gallery_id}-");
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}
