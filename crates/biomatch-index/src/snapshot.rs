//! A shard index as bytes: FAISS's serialisation plus which subject owns which template, and the
//! search settings set at run time. The matcher seals these bytes before they reach a disk; here
//! they are only encoded and checked. Version 1 (without the settings) is still read.

use crate::io;
use crate::settings::SearchSettings;
use crate::shard::{IndexError, Layout, ShardIndex};
use biomatch_domain::IndexSpec;
use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

const MAGIC: &[u8; 4] = b"BMIX";
const VERSION: u8 = 2;
/// `tuned_at` of a shard never tuned since it trained.
const NEVER_TUNED: u64 = u64::MAX;

impl ShardIndex {
    /// The whole shard as bytes (see [`ShardIndex::from_snapshot`]).
    pub fn to_snapshot(&self) -> Result<Vec<u8>, IndexError> {
        // Room for the subject maps and, for the kinds that hold full vectors, FAISS's copy of
        // them, so a large shard is not copied again as the buffer grows.
        use faiss::Index;
        let vectors = match self.layout {
            Layout::Exact | Layout::Staging | Layout::Hnsw | Layout::Rerank => {
                self.index.ntotal() as usize * self.dimension * 4
            }
            Layout::IvfRerank { .. } => self.template_count() * self.dimension * 4,
            Layout::Ivf { .. } => 0,
        };
        let mut out = Vec::with_capacity(vectors + self.subject_of.len() * 40 + 4096);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        let (layout, nlist) = match self.layout {
            Layout::Exact => (0u8, 0u32),
            Layout::Staging => (1, 0),
            Layout::Ivf { nlist } => (2, nlist),
            Layout::Hnsw => (3, 0),
            Layout::Rerank => (4, 0),
            Layout::IvfRerank { nlist } => (5, nlist),
        };
        out.push(layout);
        out.extend_from_slice(&nlist.to_le_bytes());
        out.extend_from_slice(&(self.dimension as u64).to_le_bytes());
        out.extend_from_slice(&(self.stale as u64).to_le_bytes());
        out.extend_from_slice(&self.settings.nprobe.to_le_bytes());
        out.extend_from_slice(&self.settings.rerank_depth.to_le_bytes());
        out.extend_from_slice(&self.tuned_at.map_or(NEVER_TUNED, |n| n as u64).to_le_bytes());
        out.extend_from_slice(&(self.templates_of.len() as u64).to_le_bytes());
        for (subject, ids) in &self.templates_of {
            out.extend_from_slice(&(subject.len() as u32).to_le_bytes());
            out.extend_from_slice(subject.as_bytes());
            out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
            for id in ids {
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
        for index in std::iter::once(&self.index).chain(&self.exact) {
            let length_at = out.len();
            out.extend_from_slice(&0u64.to_le_bytes());
            io::append_bytes(index, &mut out)?;
            let faiss_len = (out.len() - length_at - 8) as u64;
            out[length_at..length_at + 8].copy_from_slice(&faiss_len.to_le_bytes());
        }
        Ok(out)
    }

    /// A shard from [`ShardIndex::to_snapshot`] bytes, refused unless it is whole and matches the
    /// gallery's dimension and index kind.
    pub fn from_snapshot(dimension: usize, spec: &IndexSpec, bytes: &[u8]) -> Result<Self, IndexError> {
        Self::read_snapshot(dimension, spec, &mut { bytes })
    }

    /// [`ShardIndex::from_snapshot`] from a stream, so a large shard is never held twice (once as
    /// bytes, once as FAISS's structure). Reads `source` to its end.
    pub fn read_snapshot(
        dimension: usize,
        spec: &IndexSpec,
        source: &mut dyn Read,
    ) -> Result<Self, IndexError> {
        let spec = spec.resolved(dimension).map_err(|e| IndexError::Spec(e.0))?;
        let mut r = Reader(source);
        if r.array::<4>()? != *MAGIC {
            return Err(bad("not a biomatch shard snapshot"));
        }
        let version = r.u8()?;
        if !(1..=VERSION).contains(&version) {
            return Err(bad("not a biomatch shard snapshot of a known version"));
        }
        let layout = match (r.u8()?, r.u32()?) {
            (0, _) => Layout::Exact,
            (1, _) => Layout::Staging,
            (2, nlist) => Layout::Ivf { nlist },
            (3, _) => Layout::Hnsw,
            (4, _) => Layout::Rerank,
            (5, nlist) => Layout::IvfRerank { nlist },
            _ => return Err(bad("unknown layout")),
        };
        let expected = match spec.kind {
            biomatch_domain::IndexKind::Flat => matches!(layout, Layout::Exact),
            biomatch_domain::IndexKind::Hnsw => matches!(layout, Layout::Hnsw),
            biomatch_domain::IndexKind::PqRerank => matches!(layout, Layout::Staging | Layout::Rerank),
            biomatch_domain::IndexKind::IvfRerank => {
                matches!(layout, Layout::Staging | Layout::IvfRerank { .. })
            }
            _ => matches!(layout, Layout::Staging | Layout::Ivf { .. }),
        };
        if r.u64()? != dimension as u64 || !expected {
            return Err(bad("snapshot is of another dimension or index kind"));
        }
        let stale = usize::try_from(r.u64()?).map_err(|_| bad("stale count"))?;
        let (settings, tuned_at) = if version >= 2 {
            let settings = SearchSettings { nprobe: r.u32()?, rerank_depth: r.u32()? };
            let tuned_at = match r.u64()? {
                NEVER_TUNED => None,
                n => Some(usize::try_from(n).map_err(|_| bad("tuned template count"))?),
            };
            (settings, tuned_at)
        } else {
            (SearchSettings::default(), None)
        };
        let subjects = r.u64()?;
        let mut templates_of = HashMap::new();
        let mut templates = 0usize;
        for _ in 0..subjects {
            let len = r.u32()?;
            let subject =
                String::from_utf8(r.bytes(len.into())?).map_err(|_| bad("subject id is not UTF-8"))?;
            let count = r.u32()? as usize;
            let ids = (0..count).map(|_| r.u64().map(|id| id as i64)).collect::<Result<Vec<_>, _>>()?;
            templates += ids.len();
            templates_of.insert(Arc::<str>::from(subject), ids);
        }
        // The exact store of the re-rank layouts holds the live templates only.
        let mut read_faiss = |entries: usize| -> Result<faiss::index::IndexImpl, IndexError> {
            use faiss::Index;
            let len = r.u64()?;
            let mut part = (&mut *r.0).take(len);
            let index = io::from_reader(&mut part)?;
            if part.limit() != 0 {
                return Err(bad("index shorter than its length"));
            }
            if index.d() as usize != dimension || index.ntotal() as usize != entries {
                return Err(bad("index and template list disagree"));
            }
            Ok(index)
        };
        let index = read_faiss(templates + stale)?;
        let exact = if layout.reranks() { Some(read_faiss(templates)?) } else { None };
        if r.0.read(&mut [0u8; 1]).map_err(|e| bad(&e.to_string()))? != 0 {
            return Err(bad("trailing bytes"));
        }
        let mut shard = ShardIndex::assemble((index, exact), dimension, spec, layout, templates_of, stale);
        shard.tuned_at = tuned_at;
        // Settings the gallery's spec no longer allows fall back to its own.
        if shard.set_search_settings(settings).is_err() {
            shard.set_search_settings(SearchSettings::default())?;
        }
        Ok(shard)
    }
}

fn bad(what: &str) -> IndexError {
    IndexError::Snapshot(what.to_owned())
}

struct Reader<'a>(&'a mut dyn Read);

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], IndexError> {
        let mut out = [0u8; N];
        self.0.read_exact(&mut out).map_err(|e| bad(&format!("truncated ({e})")))?;
        Ok(out)
    }

    /// `n` bytes; memory grows only as they arrive, so a bad length cannot allocate much.
    fn bytes(&mut self, n: u64) -> Result<Vec<u8>, IndexError> {
        let mut out = Vec::new();
        (&mut *self.0).take(n).read_to_end(&mut out).map_err(|e| bad(&e.to_string()))?;
        if out.len() as u64 != n {
            return Err(bad("truncated"));
        }
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, IndexError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, IndexError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, IndexError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}
