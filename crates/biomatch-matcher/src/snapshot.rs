//! Encrypted shard snapshots: a matcher restarts from its last snapshot and replays the change
//! log from the position the snapshot includes, instead of decrypting and re-indexing every
//! template (and, for HNSW and IVF, rebuilding the graph or retraining).
//!
//! A snapshot is sealed with the gallery's data key (AES-256-GCM, in 1 MiB chunks, each
//! authenticated before the loader parses it, so a restart never holds the shard twice); the
//! associated data binds it
//! to the gallery's key, the gallery id, the shard and the change-log position, so a corrupt file,
//! a snapshot of another shard or gallery, or an edited position fails authentication and the
//! shard is rebuilt from the store. Deleting a gallery destroys its key, and with it every
//! snapshot of the gallery. Files are written atomically (temp file, fsync, rename) and readable
//! by their owner only.

use biomatch_crypto::{KeyStore, OpenChunks, SealedChunks};
use biomatch_index::ShardIndex;
use biomatch_store::GalleryRecord;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

/// Version 2: sealed in chunks (version 1, "BMSS", was one AES-GCM message).
const MAGIC: &[u8; 4] = b"BMS2";

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

    /// Seals and writes the shard's bytes as of change `seq`. The bytes are encrypted where they
    /// lie (a shard can be gigabytes), so they are ciphertext afterwards.
    pub fn write(
        &self,
        gallery: (i64, &str),
        shard: u32,
        seq: u64,
        mut bytes: Vec<u8>,
    ) -> std::io::Result<()> {
        let (gallery_id, key_ref) = gallery;
        let key = self.keys.get(key_ref).map_err(std::io::Error::other)?;
        let sealed = SealedChunks::seal(&key, &mut bytes, &context(key_ref, gallery_id, shard, seq));
        let seq = seq.to_le_bytes();
        let mut parts: Vec<&[u8]> = vec![MAGIC, &seq];
        parts.extend(sealed.parts(&bytes));
        biomatch_crypto::write_private_parts(&self.path(gallery_id, shard), &parts)
    }

    /// The shard as of the returned change position, or `None` (with a warning, and the file
    /// removed) when there is no usable snapshot: missing, corrupt, foreign, or newer than the
    /// store (`head`), which happens when the store was restored from an older backup.
    pub fn load(&self, gallery: &GalleryRecord, shard: u32, head: u64) -> Option<(ShardIndex, u64)> {
        let path = self.path(gallery.id, shard);
        let file = std::fs::File::open(&path).ok()?;
        let loaded = self.open(gallery, shard, head, file);
        if let Err(why) = &loaded {
            tracing::warn!(gallery = %gallery.settings.name, shard, %why, "snapshot refused; rebuilding the shard from the store");
            let _ = std::fs::remove_file(&path);
        }
        loaded.ok()
    }

    /// Reads the file a chunk at a time: each chunk is authenticated before FAISS sees it, and
    /// the shard is never held twice in memory.
    fn open(
        &self,
        gallery: &GalleryRecord,
        shard: u32,
        head: u64,
        mut file: std::fs::File,
    ) -> Result<(ShardIndex, u64), String> {
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        let mut header = [0u8; 12];
        if len < 12 || file.read_exact(&mut header).is_err() || &header[..4] != MAGIC {
            return Err("not a biomatch snapshot of this version".into());
        }
        let seq = u64::from_le_bytes(header[4..].try_into().map_err(|_| "header")?);
        if seq > head {
            return Err(format!("snapshot is at change {seq}, the store only at {head}"));
        }
        let key = self.keys.get(&gallery.key_ref).map_err(|e| e.to_string())?;
        let context = context(&gallery.key_ref, gallery.id, shard, seq);
        let mut plain = OpenChunks::new(&key, &context, file, len - 12).map_err(|e| e.to_string())?;
        let index = ShardIndex::read_snapshot(
            gallery.settings.dimension as usize,
            &gallery.settings.index,
            &mut plain,
        )
        .map_err(|e| format!("{e} (corrupt, or another shard's snapshot?)"))?;
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
