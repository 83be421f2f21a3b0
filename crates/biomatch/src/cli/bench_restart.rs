//! The restart part of `biomatch bench search`: a matcher that restarts loads each shard from its
//! encrypted snapshot (read, authenticate and decrypt, deserialise FAISS and the subject maps)
//! before it replays the change log written since. Measured through the matcher's own
//! [`SnapshotStore`], on the benchmark's shard.

use biomatch_crypto::{FileKeyStore, KeyStore, MasterKey};
use biomatch_domain::IndexSpec;
use biomatch_index::ShardIndex;
use biomatch_matcher::SnapshotStore;
use biomatch_store::GalleryRecord;
use std::sync::Arc;
use std::time::Instant;

pub(crate) struct Restart {
    pub snapshot_mib: f64,
    /// Serialise, seal, write, fsync, rename.
    pub write_s: f64,
    /// Reading the file alone, from disk.
    pub read_s: f64,
    /// Read (from the page cache), authenticate, decrypt, deserialise: the shard is searchable
    /// after this.
    pub load_s: f64,
}

/// Snapshots `index` and loads it back as a restarting matcher does; the loaded shard must answer
/// `probe` exactly as the original.
pub(crate) fn measure(index: &mut ShardIndex, spec: &IndexSpec, probe: &[f32]) -> anyhow::Result<Restart> {
    let dir = tempfile::tempdir()?;
    let master = MasterKey::load_or_create(&dir.path().join("master.key"))?;
    let keys = Arc::new(FileKeyStore::new(&dir.path().join("keys"), master)?);
    keys.create("bench-gallery")?;
    let settings = biomatch_domain::Gallery {
        name: biomatch_domain::GalleryName::parse("bench")?,
        dimension: index.dimension() as u32,
        shard_count: 1,
        index: spec.clone(),
        model_id: String::new(),
        model_version: String::new(),
        threshold: 0.5,
        threshold_version: 1,
        allowed_purposes: Vec::new(),
        retention_seconds: 0,
        default_k: 10,
        created_at_ms: 0,
    };
    let gallery = GalleryRecord {
        id: 1,
        key_ref: "bench-gallery".into(),
        settings,
        tuning: None,
        threshold_policy: None,
    };
    let snapshots = SnapshotStore::new(dir.path().join("snapshots"), keys);
    std::fs::create_dir_all(dir.path().join("snapshots"))?;

    let started = Instant::now();
    let bytes = index.to_snapshot()?;
    let snapshot_mib = bytes.len() as f64 / (1024.0 * 1024.0);
    snapshots.write((gallery.id, &gallery.key_ref), 0, 1, bytes)?;
    let write_s = started.elapsed().as_secs_f64();

    // The file alone first (its pages then stay cached for the load below).
    let started = Instant::now();
    let file = std::fs::read(snapshots.path(gallery.id, 0))?;
    let read_s = started.elapsed().as_secs_f64();
    drop(file);
    let started = Instant::now();
    let (mut loaded, seq) =
        snapshots.load(&gallery, 0, 1).ok_or_else(|| anyhow::anyhow!("the snapshot did not load"))?;
    let load_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(seq == 1, "the snapshot came back at change {seq}");
    anyhow::ensure!(
        loaded.search(probe, 10)? == index.search(probe, 10)?,
        "the restored shard answers differently"
    );
    Ok(Restart { snapshot_mib, write_s, read_s, load_s })
}
