//! Where tests find the model files and real photos (`scripts/fetch-models.sh`,
//! `scripts/fetch-customer-model.sh`, `scripts/fetch-test-photos.sh`). Without them a test skips, except under `CI=true`, where a
//! missing fixture is a failure.

use std::path::{Path, PathBuf};

fn required(what: &str, path: &Path, fetch: &str) -> Option<PathBuf> {
    if path.is_dir() && std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_some()) {
        return Some(path.to_path_buf());
    }
    let message = format!("{what} not found at {} (run {fetch})", path.display());
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
    eprintln!("SKIPPED: {message}");
    None
}

/// `BIOMATCH_MODEL_DIR`, else `models/` at the workspace root.
pub fn model_dir() -> Option<PathBuf> {
    let path = std::env::var_os("BIOMATCH_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    required("face models", &path, "scripts/fetch-models.sh")
}

/// `BIOMATCH_CUSTOMER_MODEL_DIR`, else `models/customer` at the workspace root: a network standing
/// for a customer's own, configured like one (`scripts/fetch-customer-model.sh`; never shipped).
pub fn customer_model_dir() -> Option<PathBuf> {
    let path = std::env::var_os("BIOMATCH_CUSTOMER_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/customer"));
    required("the customer model", &path, "scripts/fetch-customer-model.sh")
}

/// `BIOMATCH_TEST_PHOTOS`, else `$HOME/.cache/biomatch/testdata/photos`.
pub fn photo_dir() -> Option<PathBuf> {
    let path = std::env::var_os("BIOMATCH_TEST_PHOTOS").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/biomatch/testdata/photos")
    });
    required("test photos", &path, "scripts/fetch-test-photos.sh")
}

/// A PNG of a few dozen bytes that declares `side` x `side` pixels: a valid header and the
/// start of its image data (one stored deflate block of zeros), as a decompression bomb begins.
pub fn decompression_bomb(side: u32) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
    fn chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        png.extend_from_slice(&body);
        png.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    let mut png = Vec::from(&b"\x89PNG\r\n\x1a\n"[..]);
    let mut header = side.to_be_bytes().to_vec();
    header.extend_from_slice(&side.to_be_bytes());
    header.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &header);
    // zlib header, a final stored block of 16 zero bytes, Adler-32 of them.
    let mut idat = vec![0x78, 0x01, 0x01, 16, 0, !16u8, 0xFF];
    idat.extend_from_slice(&[0; 16]);
    idat.extend_from_slice(&0x0010_0001u32.to_be_bytes());
    chunk(&mut png, b"IDAT", &idat);
    chunk(&mut png, b"IEND", &[]);
    png
}
