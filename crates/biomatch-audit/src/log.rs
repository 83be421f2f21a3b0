//! The log behind the service: the compact Merkle tree in memory (leaf hashes are read back from
//! the store, a chunk at a time, for proofs that reach inside a chunk), group commit of appends,
//! and signed checkpoints.

use biomatch_auditlog::checkpoint::{self, Checkpoint};
use biomatch_auditlog::compact::{CompactTree, View};
use biomatch_auditlog::merkle::{self, Hash, ProofError, Tree};
use biomatch_auditlog::{StoredLeaf, Verifier};
use biomatch_domain::Clock;
use biomatch_store::{AuditLeafRow, AuditStore, CheckpointRow, NewAuditLeaf, StoreError, Written};
use ed25519_dalek::{SigningKey, VerifyingKey};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{Mutex, mpsc, oneshot};

/// Appends queued while a commit is in flight go into the next commit, up to this many.
const MAX_BATCH: usize = 512;
const PAGE: u32 = 10_000;
/// Chunks of leaf hashes kept after a proof read them (64 KiB each): recent leaves' proofs, the
/// common case, then read nothing from the store.
const CACHED_CHUNKS: usize = 8;

type Reply = oneshot::Sender<Result<Written<AuditLeafRow>, Arc<StoreError>>>;

/// How often the log signs a checkpoint, and how long one group commit may take.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub checkpoint_interval: Duration,
    pub commit_timeout: Duration,
}

pub struct Log {
    commit_timeout: Duration,
    store: Arc<dyn AuditStore>,
    tree: RwLock<CompactTree>,
    chunks: std::sync::Mutex<Vec<(u64, Arc<Tree>)>>,
    key: SigningKey,
    origin: String,
    clock: Clock,
    signing: Mutex<()>,
    queue: mpsc::Sender<(NewAuditLeaf, Reply)>,
}

/// The chain link, with the exact higher-ranked type the store asks for.
fn chain(previous: &[u8], leaf_hash: &[u8]) -> Vec<u8> {
    biomatch_auditlog::chain_hash(previous, leaf_hash)
}

fn to_hash(bytes: &[u8]) -> Result<Hash, StoreError> {
    bytes.try_into().map_err(|_| StoreError::Corrupt("leaf hash is not 32 bytes".into()))
}

/// The leaf hashes of `rows`, each checked by `verifier` first (its index follows the one before,
/// its bytes hash to its leaf hash, it decodes, its chain hash links to the previous leaf's); or
/// what is wrong with the first that fails.
fn checked_hashes(verifier: &mut Verifier, rows: Vec<AuditLeafRow>) -> Result<Vec<Hash>, String> {
    rows.into_iter()
        .map(|row| {
            let leaf = StoredLeaf {
                index: row.index,
                leaf: row.leaf,
                leaf_hash: row.leaf_hash,
                chain_hash: row.chain_hash,
            };
            verifier.push(&leaf).map_err(|e| e.to_string())?;
            to_hash(&leaf.leaf_hash)
                .map_err(|_| format!("leaf {}: the leaf hash is not 32 bytes", leaf.index))
        })
        .collect()
}

impl Log {
    /// Rebuilds the tree from the stored leaf hashes, checking the log against its latest signed
    /// checkpoint (see `load_tree`: a log that fails is refused with an error naming the leaf),
    /// and starts the committer. The returned future commits queued appends (and signs
    /// checkpoints on `interval`) until it is dropped.
    pub async fn open(
        store: Arc<dyn AuditStore>,
        key: SigningKey,
        origin: String,
        clock: Clock,
        timing: Timing,
    ) -> Result<(Arc<Self>, impl Future<Output = ()> + Send + 'static), StoreError> {
        let tree = Self::load_tree(store.as_ref(), &key.verifying_key()).await?;
        tracing::info!(leaves = tree.size(), "audit log loaded");
        let (queue, receiver) = mpsc::channel(4 * MAX_BATCH);
        let log = Arc::new(Self {
            commit_timeout: timing.commit_timeout,
            store,
            tree: RwLock::new(tree),
            chunks: std::sync::Mutex::new(Vec::new()),
            key,
            origin,
            clock,
            signing: Mutex::new(()),
            queue,
        });
        let worker = {
            let log = log.clone();
            async move {
                tokio::join!(
                    log.clone().commit_loop(receiver),
                    log.checkpoint_loop(timing.checkpoint_interval)
                );
            }
        };
        Ok((log, worker))
    }

    /// Rebuilds the tree from the stored leaf hashes, refusing a log that was rewritten behind the
    /// service's back (triggers dropped, database file edited): otherwise the next checkpoint would
    /// sign the forgery.
    ///
    /// - The latest checkpoint must be signed by `key`, and the first `size` leaf hashes must hash
    ///   to its root: a rewrite below the checkpoint, hashes and chain included, is caught here.
    /// - Every leaf after it is read whole: its index follows the one before, its bytes hash to its
    ///   leaf hash, it decodes, and its chain hash links to the previous leaf's (anchored at the
    ///   stored chain hash of the checkpoint's last leaf).
    ///
    /// Nothing signed covers the leaves after the latest checkpoint, so a consistent rewrite of
    /// them (bytes, leaf hashes and every later chain hash) cannot be told from the original; see
    /// docs/security.md.
    async fn load_tree(store: &dyn AuditStore, key: &VerifyingKey) -> Result<CompactTree, StoreError> {
        let tampered = |what: String| {
            StoreError::Corrupt(format!(
                "audit log tampered: {what}; the audit role will not start (run `biomatch audit verify`)"
            ))
        };
        let mut tree = CompactTree::default();
        let signed = match store.latest_checkpoint().await? {
            Some(row) => {
                let opened = checkpoint::open(&row.note, key).map_err(|e| {
                    tampered(format!(
                        "the latest checkpoint (size {}) does not open with this log's signing key: {e}",
                        row.tree_size
                    ))
                })?;
                if opened.size != row.tree_size || opened.root[..] != row.root_hash[..] {
                    return Err(tampered(format!(
                        "the latest checkpoint (size {}) differs from its signed note",
                        row.tree_size
                    )));
                }
                Some(opened)
            }
            None => None,
        };
        let size = signed.as_ref().map_or(0, |c| c.size);
        while tree.size() < size {
            let want = u32::try_from(size - tree.size()).unwrap_or(u32::MAX).min(PAGE);
            let page = store.leaf_hashes(tree.size(), want).await?;
            if page.is_empty() {
                return Err(tampered(format!(
                    "a checkpoint was signed at size {size} but the log holds only {} leaves (leaves were dropped)",
                    tree.size()
                )));
            }
            for h in page {
                let index = tree.size();
                tree.push(
                    to_hash(&h)
                        .map_err(|_| tampered(format!("leaf {index}: the leaf hash is not 32 bytes")))?,
                );
            }
        }
        if let Some(c) = &signed
            && tree.root().ok() != Some(c.root)
        {
            return Err(tampered(format!(
                "leaves 0..{size} do not hash to the root signed at size {size} \
                 (a leaf below index {size} was rewritten with its hashes)"
            )));
        }
        let anchor = match size.checked_sub(1) {
            Some(last) => store.leaves(last, 1).await?.pop().map(|l| l.chain_hash).unwrap_or_default(),
            None => Vec::new(),
        };
        let mut verifier = Verifier::resume(size, anchor);
        loop {
            let page = store.leaves(tree.size(), PAGE).await?;
            if page.is_empty() {
                return Ok(tree);
            }
            checked_hashes(&mut verifier, page).map_err(tampered)?.into_iter().for_each(|h| tree.push(h));
        }
    }

    fn tree(&self) -> std::sync::RwLockReadGuard<'_, CompactTree> {
        self.tree.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    pub fn size(&self) -> u64 {
        self.tree().size()
    }

    /// Queues a leaf and waits until the batch holding it is durably committed. The wait is the
    /// histogram `biomatch_audit_append_seconds{outcome}`.
    #[tracing::instrument(name = "audit.commit", skip_all)]
    pub async fn append(&self, leaf: NewAuditLeaf) -> Result<Written<AuditLeafRow>, Arc<StoreError>> {
        let started = std::time::Instant::now();
        let (reply, answer) = oneshot::channel();
        let closed = || Arc::new(StoreError::Corrupt("audit committer stopped".into()));
        self.queue.send((leaf, reply)).await.map_err(|_| closed())?;
        let written = answer.await.map_err(|_| closed())?;
        let outcome = if written.is_ok() { "committed" } else { "failed" };
        metrics::histogram!("biomatch_audit_append_seconds", "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        written
    }

    async fn commit_loop(self: Arc<Self>, mut receiver: mpsc::Receiver<(NewAuditLeaf, Reply)>) {
        while let Some(first) = receiver.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let (leaves, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let commit = tokio::time::timeout(self.commit_timeout, self.store.append_leaves(leaves, chain));
            let committed = commit.await.unwrap_or_else(|_| {
                metrics::counter!("biomatch_storage_stalled_total", "store" => "audit").increment(1);
                Err(StoreError::Stalled { after_ms: self.commit_timeout.as_millis() as u64 })
            });
            match committed {
                Ok(written) => {
                    self.extend_tree(&written).await;
                    for (reply, w) in replies.into_iter().zip(written) {
                        let _ = reply.send(Ok(w));
                    }
                }
                Err(e) => {
                    if e.is_storage_full() {
                        metrics::counter!("biomatch_storage_full_total", "store" => "audit").increment(1);
                        tracing::error!(error = %e, "audit storage is full: appends are refused until space is freed");
                    } else {
                        tracing::error!(error = %e, "audit commit failed");
                    }
                    let stalled = matches!(e, StoreError::Stalled { .. });
                    let e = Arc::new(e);
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                    // What queued behind a commit the store never answered would wait as long
                    // again, each batch in turn: it is refused now, and the next append tries.
                    while let Some((_, reply)) = stalled.then(|| receiver.try_recv().ok()).flatten() {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    /// Adds a commit's new leaves to the tree. Should the store hold leaves the tree lacks (a
    /// commit given up on that landed later, whose retries are replays; or another writer), reads
    /// them in first, checked as at start, within the commit timeout.
    async fn extend_tree(&self, written: &[Written<AuditLeafRow>]) {
        let size = self.size();
        let fresh: Vec<&AuditLeafRow> = written.iter().filter(|w| !w.replayed).map(|w| &w.value).collect();
        let end = size + fresh.len() as u64;
        let in_order = fresh.iter().zip(size..).all(|(row, index)| row.index == index);
        if in_order && written.iter().all(|w| w.value.index < end) {
            match fresh.iter().map(|row| to_hash(&row.leaf_hash)).collect::<Result<Vec<_>, _>>() {
                Ok(hashes) => {
                    let mut tree = self.tree.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                    hashes.into_iter().for_each(|h| tree.push(h));
                    return;
                }
                Err(e) => tracing::error!(error = %e, "unusable leaf hash"),
            }
        }
        tracing::warn!("the audit store holds leaves the tree lacks; reading them");
        match tokio::time::timeout(self.commit_timeout, self.catch_up()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the audit tree could not catch up with the store"),
            Err(_) => tracing::error!("the audit tree's catch-up timed out; the next commit tries again"),
        }
    }

    /// Reads into the tree every leaf the store holds beyond it, each checked (index, bytes, chain
    /// from the tree's last leaf). Only the committer changes the tree, so nothing races it.
    async fn catch_up(&self) -> Result<(), StoreError> {
        let mut size = self.size();
        let anchor = match size.checked_sub(1) {
            Some(last) => self.store.leaves(last, 1).await?.pop().map(|l| l.chain_hash).unwrap_or_default(),
            None => Vec::new(),
        };
        let mut verifier = Verifier::resume(size, anchor);
        loop {
            let page = self.store.leaves(size, PAGE).await?;
            if page.is_empty() {
                return Ok(());
            }
            let hashes = checked_hashes(&mut verifier, page).map_err(|what| {
                StoreError::Corrupt(format!("audit log tampered: {what}; run `biomatch audit verify`"))
            })?;
            size += hashes.len() as u64;
            let mut tree = self.tree.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            hashes.into_iter().for_each(|h| tree.push(h));
        }
    }

    async fn checkpoint_loop(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.size() == 0 {
                self.record_checkpoint_metrics(None);
                continue;
            }
            if let Err(e) = self.sign_checkpoint().await {
                tracing::warn!(error = %e, "signing a checkpoint failed");
                if let Ok(latest) = self.store.latest_checkpoint().await {
                    self.record_checkpoint_metrics(latest.as_ref());
                }
            }
        }
    }

    /// Gauges for alerting on a checkpoint that falls behind: `biomatch_audit_tree_leaves`,
    /// `biomatch_audit_checkpoint_leaves` (the latest signed checkpoint's size) and
    /// `biomatch_audit_checkpoint_age_seconds` (since it was signed). Leaves beyond the checkpoint
    /// while its age grows past a few intervals mean signing is failing.
    /// Recorded at every checkpoint tick, so the age grows while signing fails.
    fn record_checkpoint_metrics(&self, latest: Option<&CheckpointRow>) {
        metrics::gauge!("biomatch_audit_tree_leaves").set(self.size() as f64);
        let (leaves, age_ms) =
            latest.map_or((0, 0), |l| (l.tree_size, ((self.clock)() - l.signed_at_ms).max(0)));
        metrics::gauge!("biomatch_audit_checkpoint_leaves").set(leaves as f64);
        metrics::gauge!("biomatch_audit_checkpoint_age_seconds").set(age_ms as f64 / 1000.0);
    }

    /// Signs and stores a checkpoint of the whole tree, unless the latest one already covers it.
    pub async fn sign_checkpoint(&self) -> Result<CheckpointRow, StoreError> {
        let _one = self.signing.lock().await;
        let (size, root) = {
            let tree = self.tree();
            let root = tree.root().map_err(|e| StoreError::Corrupt(format!("audit tree: {e}")))?;
            (tree.size(), root)
        };
        if let Some(latest) = self.store.latest_checkpoint().await?
            && latest.tree_size >= size
        {
            self.record_checkpoint_metrics(Some(&latest));
            return Ok(latest);
        }
        let note = checkpoint::sign(&Checkpoint { origin: self.origin.clone(), size, root }, &self.key);
        let row =
            CheckpointRow { tree_size: size, root_hash: root.to_vec(), note, signed_at_ms: (self.clock)() };
        self.store.add_checkpoint(&row).await?;
        self.record_checkpoint_metrics(Some(&row));
        tracing::info!(tree_size = size, "signed audit checkpoint");
        Ok(row)
    }

    pub async fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofFailure> {
        self.answer(|tree| merkle::inclusion_proof(tree, index, size)).await
    }

    pub async fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, ProofFailure> {
        self.answer(|tree| merkle::consistency_proof(tree, first, second)).await
    }

    /// Asks `ask` of the tree, reading from the store each chunk of leaf hashes it turns out to
    /// need (a proof needs at most a few), checked against the tree before use.
    async fn answer<T>(&self, ask: impl Fn(&View<'_>) -> Result<T, ProofError>) -> Result<T, ProofFailure> {
        let mut loaded: Vec<(u64, Arc<Tree>)> = Vec::new();
        loop {
            let chunk = {
                let cache = self.cached_chunks().clone();
                let lookup =
                    |c: u64| loaded.iter().chain(cache.iter()).find(|(i, _)| *i == c).map(|(_, t)| t.clone());
                match ask(&self.tree().view(&lookup)) {
                    Err(ProofError::NotLoaded { chunk }) if loaded.iter().all(|(c, _)| *c != chunk) => chunk,
                    other => return other.map_err(ProofFailure::Proof),
                }
            };
            let tree = Arc::new(self.load_chunk(chunk).await?);
            let mut cache = self.cached_chunks();
            if cache.iter().all(|(c, _)| *c != chunk) {
                if cache.len() >= CACHED_CHUNKS {
                    cache.remove(0);
                }
                cache.push((chunk, tree.clone()));
            }
            loaded.push((chunk, tree));
        }
    }

    async fn load_chunk(&self, chunk: u64) -> Result<Tree, StoreError> {
        let (first, len) = self.tree().chunk_span(chunk);
        let count = u32::try_from(len).map_err(|_| StoreError::Corrupt("audit chunk too large".into()))?;
        let read = tokio::time::timeout(self.commit_timeout, self.store.leaf_hashes(first, count));
        let hashes = read
            .await
            .map_err(|_| StoreError::Stalled { after_ms: self.commit_timeout.as_millis() as u64 })??;
        let hashes = hashes.iter().map(|h| to_hash(h)).collect::<Result<Vec<_>, _>>()?;
        self.tree().check_chunk(chunk, hashes).map_err(|e| {
            tracing::error!(error = %e, "audit store edited under a running audit role");
            StoreError::Corrupt(format!("audit log tampered: {e}; run `biomatch audit verify`"))
        })
    }

    fn cached_chunks(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Arc<Tree>)>> {
        self.chunks.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn store(&self) -> &dyn AuditStore {
        self.store.as_ref()
    }
}

/// Why a proof was not given: the request asked for one the tree cannot hold, or the store did not
/// give back the leaf hashes it needed.
#[derive(Debug, thiserror::Error)]
pub enum ProofFailure {
    #[error(transparent)]
    Proof(ProofError),
    #[error(transparent)]
    Store(#[from] StoreError),
}
