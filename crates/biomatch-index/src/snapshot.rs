//! A shard index as bytes: FAISS's serialisation plus which subject owns which template. The
//! matcher seals these bytes before they reach a disk; here they are only encoded and checked.

use crate::io;
use crate::shard::{IndexError, Layout, ShardIndex};
use biomatch_domain::IndexSpec;
use std::collections::HashMap;
use std::sync::Arc;

const MAGIC: &[u8; 4] = b"BMIX";
const VERSION: u8 = 1;

impl ShardIndex {
    /// The whole shard as bytes (see [`ShardIndex::from_snapshot`]).
    pub fn to_snapshot(&self) -> Result<Vec<u8>, IndexError> {
        let faiss = io::to_bytes(&self.index).map_err(IndexError::Snapshot)?;
        let mut out = Vec::with_capacity(faiss.len() + self.subject_of.len() * 24 + 64);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        let (layout, nlist) = match self.layout {
            Layout::Exact => (0u8, 0u32),
            Layout::Staging => (1, 0),
            Layout::Ivf { nlist } => (2, nlist),
            Layout::Hnsw => (3, 0),
        };
        out.push(layout);
        out.extend_from_slice(&nlist.to_le_bytes());
        out.extend_from_slice(&(self.dimension as u64).to_le_bytes());
        out.extend_from_slice(&(self.stale as u64).to_le_bytes());
        out.extend_from_slice(&(self.templates_of.len() as u64).to_le_bytes());
        for (subject, ids) in &self.templates_of {
            out.extend_from_slice(&(subject.len() as u32).to_le_bytes());
            out.extend_from_slice(subject.as_bytes());
            out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
            for id in ids {
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
        out.extend_from_slice(&(faiss.len() as u64).to_le_bytes());
        out.extend_from_slice(&faiss);
        Ok(out)
    }

    /// A shard from [`ShardIndex::to_snapshot`] bytes, refused unless it is whole and matches the
    /// gallery's dimension and index kind.
    pub fn from_snapshot(dimension: usize, spec: &IndexSpec, bytes: &[u8]) -> Result<Self, IndexError> {
        let spec = spec.resolved(dimension).map_err(IndexError::Spec)?;
        let mut r = Reader { bytes, at: 0 };
        if r.take(4)? != MAGIC || r.u8()? != VERSION {
            return Err(bad("not a biomatch shard snapshot of this version"));
        }
        let layout = match (r.u8()?, r.u32()?) {
            (0, _) => Layout::Exact,
            (1, _) => Layout::Staging,
            (2, nlist) => Layout::Ivf { nlist },
            (3, _) => Layout::Hnsw,
            _ => return Err(bad("unknown layout")),
        };
        let expected = match spec.kind {
            biomatch_domain::IndexKind::Flat => matches!(layout, Layout::Exact),
            biomatch_domain::IndexKind::Hnsw => matches!(layout, Layout::Hnsw),
            _ => matches!(layout, Layout::Staging | Layout::Ivf { .. }),
        };
        if r.u64()? != dimension as u64 || !expected {
            return Err(bad("snapshot is of another dimension or index kind"));
        }
        let stale = usize::try_from(r.u64()?).map_err(|_| bad("stale count"))?;
        let subjects = r.u64()?;
        let mut templates_of = HashMap::new();
        let mut templates = 0usize;
        for _ in 0..subjects {
            let len = r.u32()? as usize;
            let subject = std::str::from_utf8(r.take(len)?).map_err(|_| bad("subject id is not UTF-8"))?;
            let count = r.u32()? as usize;
            let ids = (0..count).map(|_| r.i64()).collect::<Result<Vec<_>, _>>()?;
            templates += ids.len();
            templates_of.insert(Arc::<str>::from(subject), ids);
        }
        let len = usize::try_from(r.u64()?).map_err(|_| bad("length"))?;
        let faiss = r.take(len)?.to_vec();
        if r.at != bytes.len() {
            return Err(bad("trailing bytes"));
        }
        let index = io::from_bytes(faiss).map_err(IndexError::Snapshot)?;
        use faiss::Index;
        if index.d() as usize != dimension || index.ntotal() as usize != templates + stale {
            return Err(bad("index and template list disagree"));
        }
        Ok(ShardIndex::assemble(index, dimension, spec, layout, templates_of, stale))
    }
}

fn bad(what: &str) -> IndexError {
    IndexError::Snapshot(what.to_owned())
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], IndexError> {
        let end =
            self.at.checked_add(n).filter(|end| *end <= self.bytes.len()).ok_or_else(|| bad("truncated"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, IndexError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, IndexError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| bad("u32"))?))
    }

    fn u64(&mut self) -> Result<u64, IndexError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| bad("u64"))?))
    }

    fn i64(&mut self) -> Result<i64, IndexError> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().map_err(|_| bad("i64"))?))
    }
}
