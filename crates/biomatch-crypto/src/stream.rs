//! Large plaintexts (shard snapshots of gigabytes) sealed as a sequence of chunks, each
//! AES-256-GCM with its own tag, so a reader authenticates and releases one chunk at a time
//! instead of holding the whole ciphertext and plaintext at once.
//!
//! Layout: `prefix (8 random bytes) || chunk_0 || tag_0 || ... || chunk_n-1 || tag_n-1`, every
//! chunk [`CHUNK`] bytes of plaintext except the last (0..=CHUNK bytes; an empty plaintext is one
//! empty chunk). Chunk `i`'s nonce is `prefix || i` (32-bit big-endian) and its associated data is
//! `context || i || last`, so chunks cannot be reordered, dropped, or truncated at a chunk
//! boundary (the new last chunk would not authenticate as last) without failing.

use crate::{CryptoError, DataKey, NONCE, TAG};
use std::io::Read;
use zeroize::Zeroizing;

/// Plaintext bytes per chunk.
pub const CHUNK: usize = 1 << 20;
const PREFIX: usize = 8;

fn nonce(prefix: &[u8; PREFIX], index: usize) -> Result<[u8; NONCE], CryptoError> {
    let index = u32::try_from(index).map_err(|_| CryptoError::Open)?;
    let mut nonce = [0u8; NONCE];
    nonce[..PREFIX].copy_from_slice(prefix);
    nonce[PREFIX..].copy_from_slice(&index.to_be_bytes());
    Ok(nonce)
}

/// Chunk `i` of a plaintext of `len` bytes.
fn chunk_range(i: usize, len: usize) -> std::ops::Range<usize> {
    (i * CHUNK).min(len)..((i + 1) * CHUNK).min(len)
}

fn chunk_context(context: &[u8], index: usize, last: bool) -> Vec<u8> {
    [context, &(index as u64).to_le_bytes(), &[u8::from(last)]].concat()
}

/// A plaintext sealed where it lay: the prefix and one tag per chunk, to be written around the
/// (now encrypted) buffer by [`SealedChunks::parts`].
pub struct SealedChunks {
    prefix: [u8; PREFIX],
    tags: Vec<[u8; TAG]>,
}

impl SealedChunks {
    /// Encrypts `buffer` in place, chunk by chunk.
    pub fn seal(key: &DataKey, buffer: &mut [u8], context: &[u8]) -> Self {
        let prefix: [u8; PREFIX] = rand::random();
        let len = buffer.len();
        let count = len.div_ceil(CHUNK).max(1);
        let tags = (0..count)
            .map(|i| {
                let chunk = &mut buffer[chunk_range(i, len)];
                // At most 2^32 chunks (4 PiB) fit the nonce; a shard is far below that.
                let nonce = nonce(&prefix, i).expect("fewer than 2^32 chunks");
                key.seal_detached(nonce, &chunk_context(context, i, i + 1 == count), chunk)
            })
            .collect();
        Self { prefix, tags }
    }

    /// The sealed stream in order, given the buffer [`SealedChunks::seal`] encrypted.
    pub fn parts<'a>(&'a self, buffer: &'a [u8]) -> Vec<&'a [u8]> {
        let mut parts = vec![self.prefix.as_slice()];
        for (i, tag) in self.tags.iter().enumerate() {
            parts.push(&buffer[chunk_range(i, buffer.len())]);
            parts.push(tag);
        }
        parts
    }
}

/// Reads a sealed stream of known length, yielding only authenticated plaintext; any tampering,
/// reordering or truncation is an error of kind `InvalidData`. The chunk buffer is wiped on drop.
pub struct OpenChunks<'k, R> {
    key: &'k DataKey,
    context: Vec<u8>,
    inner: R,
    prefix: [u8; PREFIX],
    next: usize,
    count: usize,
    /// Sealed bytes of the chunks not read yet.
    left: u64,
    buffer: Zeroizing<Vec<u8>>,
    plain: std::ops::Range<usize>,
}

impl<'k, R: Read> OpenChunks<'k, R> {
    /// `sealed_len` is the length of the whole stream, prefix included (the file's length less
    /// any header before it).
    pub fn new(key: &'k DataKey, context: &[u8], mut inner: R, sealed_len: u64) -> std::io::Result<Self> {
        let body = sealed_len.checked_sub(PREFIX as u64).filter(|b| *b >= TAG as u64).ok_or_else(invalid)?;
        let mut prefix = [0u8; PREFIX];
        inner.read_exact(&mut prefix)?;
        let count = usize::try_from(body.div_ceil((CHUNK + TAG) as u64)).map_err(|_| invalid())?;
        Ok(Self {
            key,
            context: context.to_vec(),
            inner,
            prefix,
            next: 0,
            count,
            left: body,
            buffer: Zeroizing::new(Vec::with_capacity(CHUNK + TAG)),
            plain: 0..0,
        })
    }

    fn open_next(&mut self) -> std::io::Result<()> {
        let len = self.left.min((CHUNK + TAG) as u64) as usize;
        if len < TAG {
            return Err(invalid());
        }
        self.buffer.resize(len, 0);
        self.inner.read_exact(&mut self.buffer)?;
        let index = self.next;
        let context = chunk_context(&self.context, index, index + 1 == self.count);
        let nonce = nonce(&self.prefix, index).map_err(|_| invalid())?;
        let plain = self.key.open_detached(nonce, &context, &mut self.buffer).map_err(|_| invalid())?;
        self.plain = 0..plain;
        self.next += 1;
        self.left -= len as u64;
        Ok(())
    }
}

impl<R: Read> Read for OpenChunks<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.plain.is_empty() {
            if self.next == self.count {
                return Ok(0);
            }
            self.open_next()?;
        }
        let n = out.len().min(self.plain.len());
        out[..n].copy_from_slice(&self.buffer[self.plain.start..self.plain.start + n]);
        self.plain.start += n;
        Ok(n)
    }
}

fn invalid() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, "sealed stream does not authenticate")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(key: &DataKey, plain: &[u8], context: &[u8]) -> Vec<u8> {
        let mut buffer = plain.to_vec();
        let chunks = SealedChunks::seal(key, &mut buffer, context);
        chunks.parts(&buffer).concat()
    }

    fn open(key: &DataKey, sealed: &[u8], context: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        OpenChunks::new(key, context, sealed, sealed.len() as u64)?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn round_trips_at_every_chunk_boundary() {
        let key = DataKey::generate();
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + 7] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let s = sealed(&key, &plain, b"shard");
            assert_eq!(s.len(), PREFIX + len + TAG * len.div_ceil(CHUNK).max(1));
            assert!(len < 16 || !s.windows(16).any(|w| w == &plain[..16]), "encrypted");
            assert_eq!(open(&key, &s, b"shard").expect("opens"), plain, "length {len}");
        }
    }

    #[test]
    fn tampering_reordering_and_truncation_fail() {
        let key = DataKey::generate();
        let plain: Vec<u8> = (0..3 * CHUNK + 5).map(|i| (i % 13) as u8).collect();
        let s = sealed(&key, &plain, b"g:0:7");
        assert!(open(&key, &s, b"g:0:8").is_err(), "another context");
        assert!(open(&DataKey::generate(), &s, b"g:0:7").is_err(), "another key");
        let mut flipped = s.clone();
        flipped[PREFIX + CHUNK + TAG + 3] ^= 1;
        assert!(open(&key, &flipped, b"g:0:7").is_err(), "a flipped bit in chunk 1");
        let whole = CHUNK + TAG;
        let dropped_last = &s[..PREFIX + 3 * whole];
        assert!(open(&key, dropped_last, b"g:0:7").is_err(), "the last chunk dropped");
        assert!(open(&key, &s[..s.len() - 1], b"g:0:7").is_err(), "a byte short");
        let mut swapped = s.clone();
        swapped[PREFIX..PREFIX + whole].copy_from_slice(&s[PREFIX + whole..PREFIX + 2 * whole]);
        swapped[PREFIX + whole..PREFIX + 2 * whole].copy_from_slice(&s[PREFIX..PREFIX + whole]);
        assert!(open(&key, &swapped, b"g:0:7").is_err(), "chunks reordered");
        assert!(open(&key, &s[..PREFIX + 3], b"g:0:7").is_err(), "shorter than a tag");
    }

    // Fuzzing the snapshot reader's first line of defence: any change, truncation or extension of
    // sealed chunks is refused, never panicked on, and never read back as other plaintext.
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

        #[test]
        fn changed_sealed_chunks_are_refused(
            len in 0usize..3 * CHUNK,
            at in 0usize..4 * CHUNK,
            byte in proptest::prelude::any::<u8>(),
            cut in proptest::option::of(0usize..4 * CHUNK),
        ) {
            let key = DataKey::generate();
            let plain: Vec<u8> = (0..len).map(|i| (i % 241) as u8).collect();
            let mut s = sealed(&key, &plain, b"g:1:9");
            let at = at % s.len();
            proptest::prop_assume!(s[at] != byte);
            s[at] = byte;
            if let Some(cut) = cut {
                s.truncate(cut.min(s.len()));
            }
            proptest::prop_assert!(open(&key, &s, b"g:1:9").is_err());
        }

        #[test]
        fn arbitrary_bytes_are_refused(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let key = DataKey::generate();
            proptest::prop_assert!(open(&key, &bytes, b"g:1:9").is_err());
        }
    }
}
