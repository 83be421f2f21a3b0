//! Secret files (keys, sealed snapshots): readable by their owner only (mode 0600 on Unix) and
//! written atomically (a temp file, fsync, then a rename or link, then fsync of the directory), so
//! a crash never leaves a half-written key and no other user ever reads one. A write that fails
//! (a full disk) removes its temp file and leaves the file it was replacing as it was.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `contents` to `path`, replacing any file there.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_private_parts(path, &[contents])
}

/// [`write_private`] of the concatenation of `parts`, without concatenating them in memory.
pub fn write_private_parts(path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    let tmp = temp_file(path, parts)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(path)
}

/// Whether an I/O error says the filesystem (or the owner's quota on it) is full.
pub fn is_full(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
}

/// Writes `contents` to `path` only if nothing is there: `ErrorKind::AlreadyExists` otherwise,
/// so of two processes creating the same key, one wins and the other reads its key.
pub fn create_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = temp_file(path, &[contents])?;
    let linked = std::fs::hard_link(&tmp, path);
    std::fs::remove_file(&tmp)?;
    linked?;
    sync_dir(path)
}

/// A new owner-only temp file beside `path` holding `parts`, synced; removed again when it
/// cannot be written whole (on a full disk a partial one would hold the space it took).
fn temp_file(path: &Path, parts: &[&[u8]]) -> std::io::Result<PathBuf> {
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
    let written = parts.iter().try_for_each(|part| file.write_all(part)).and_then(|()| file.sync_all());
    if let Err(e) = written {
        drop(file);
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_are_owner_only_replaced_whole_and_created_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/key");
        write_private(&path, b"one").expect("write");
        write_private_parts(&path, &[b"tw", b"o"]).expect("replace");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("metadata").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let taken = create_private(&path, b"three").expect_err("exists");
        assert_eq!(taken.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).expect("read"), b"two", "the first key stands");
        let fresh = dir.path().join("fresh");
        create_private(&fresh, b"new").expect("create");
        assert_eq!(std::fs::read(&fresh).expect("read"), b"new");
        let left: Vec<_> = std::fs::read_dir(dir.path().join("sub")).expect("dir").collect();
        assert_eq!(left.len(), 1, "no temp file is left behind");
    }
}
