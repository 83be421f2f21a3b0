//! Gathering a batch-enrol stream into per-gallery transactions with one audit leaf each.

use crate::custody::{Custody, digest};
use crate::{IngestServer, events, failure};
use biomatch_domain::Principal;
use biomatch_proto::status_from;
use biomatch_proto::v1::BatchEnrollResponse;
use biomatch_store::{EnrollWrite, GalleryRecord, Idempotency, StoreError};
use std::collections::HashMap;
use tonic::Status;

#[derive(Default)]
pub(crate) struct Batch {
    groups: Vec<(GalleryRecord, Vec<(u32, EnrollWrite)>)>,
    response: BatchEnrollResponse,
}

impl Batch {
    pub(crate) fn push(&mut self, gallery: &GalleryRecord, index: u32, write: EnrollWrite) {
        match self.groups.iter_mut().find(|(g, _)| g.id == gallery.id) {
            Some((_, items)) => items.push((index, write)),
            None => self.groups.push((gallery.clone(), vec![(index, write)])),
        }
    }

    pub(crate) fn fail(&mut self, index: u32, subject_id: String, status: &Status) {
        self.response.rejected += 1;
        self.response.failures.push(failure(index, subject_id, status));
    }

    pub(crate) fn pending(&self) -> usize {
        self.groups.iter().map(|(_, items)| items.len()).sum()
    }

    /// Refuses the items whose idempotency key another request used (one read for the group),
    /// names each gallery's other pending enrolments in an intent leaf, commits them, then
    /// records what was enrolled in an outcome leaf; an audit failure ends the stream with
    /// `UNAVAILABLE` (and a failed intent leaves the group unwritten).
    pub(crate) async fn flush(&mut self, server: &IngestServer, principal: &Principal) -> Result<(), Status> {
        for (gallery, items) in std::mem::take(&mut self.groups) {
            let items = self.without_reused_keys(server, items).await?;
            if items.is_empty() {
                continue;
            }
            let custody = custody(&gallery, &items);
            let intended: Vec<String> = items.iter().map(|(_, w)| w.subject.to_string()).collect();
            let mut intent = events::enroll_event(principal, &gallery, intended.clone());
            intent.detail = format!("batch: {} enrolment(s)", items.len());
            server.intent(&custody, intent).await?;
            let (indexes, writes): (Vec<u32>, Vec<EnrollWrite>) = items.into_iter().unzip();
            let results =
                match custody.attempt(server.store.enroll(&gallery, &writes, (server.clock)())).await {
                    Ok(results) => results,
                    Err(e) => {
                        // Nothing of the group was written: its intent is concluded as refused.
                        let event = events::enroll_event(principal, &gallery, intended);
                        return Err(server.refused(&custody, event, status_from(&e)).await);
                    }
                };
            let (mut enrolled, mut replayed) = (Vec::new(), 0usize);
            let total = writes.len();
            for ((index, write), result) in indexes.into_iter().zip(writes).zip(results) {
                match result {
                    Ok(written) => {
                        self.response.accepted += 1;
                        self.response.last_change_seq =
                            self.response.last_change_seq.max(written.value.change_seq);
                        replayed += usize::from(written.replayed);
                        enrolled.push(written.value.subject_id);
                    }
                    Err(e) => self.fail(index, write.subject.into_string(), &status_from(&e)),
                }
            }
            server.changed.notify_one();
            let mut event = events::enroll_event(principal, &gallery, enrolled);
            // A stream re-sent after a cut says which part was answered from the first run.
            event.detail =
                format!("batch: {} of {total} enrolled ({replayed} replayed)", event.subject_ids.len());
            let leaf = server.outcome(&custody, event).await?;
            self.response.audit_leaf_indexes.push(leaf);
        }
        Ok(())
    }

    /// `items` less those whose key another request used (stored, or earlier in this group with
    /// another body), each failed `INVALID_ARGUMENT` before any leaf names it (the store's
    /// transaction checks again).
    async fn without_reused_keys(
        &mut self,
        server: &IngestServer,
        items: Vec<(u32, EnrollWrite)>,
    ) -> Result<Vec<(u32, EnrollWrite)>, Status> {
        let keys: Vec<Idempotency> = items.iter().filter_map(|(_, w)| w.idempotency.clone()).collect();
        if keys.is_empty() {
            return Ok(items);
        }
        let stored = server.store.conflicting_keys(&keys).await.map_err(|e| status_from(&e))?;
        let mut first_use: HashMap<&str, &str> = HashMap::new();
        let reused: Vec<bool> = items
            .iter()
            .map(|(_, w)| {
                w.idempotency.as_ref().is_some_and(|i| {
                    let first = *first_use.entry(&i.key).or_insert(&i.request_hash);
                    stored.contains(&i.key) || first != i.request_hash
                })
            })
            .collect();
        let mut kept = Vec::with_capacity(items.len());
        for ((index, write), reused) in items.into_iter().zip(reused) {
            if !reused {
                kept.push((index, write));
                continue;
            }
            let key = write.idempotency.map(|i| i.key).unwrap_or_default();
            let refusal = status_from(&StoreError::IdempotencyConflict(key));
            self.fail(index, write.subject.into_string(), &refusal);
        }
        Ok(kept)
    }

    pub(crate) fn into_response(self) -> BatchEnrollResponse {
        self.response
    }
}

/// A group whose every item has an idempotency key gets audit keys derived from them, so
/// retrying the same stream finds the same leaves; otherwise a fresh request id.
fn custody(gallery: &GalleryRecord, items: &[(u32, EnrollWrite)]) -> Custody {
    let keys: Option<Vec<&[u8]>> = items
        .iter()
        .map(|(_, w)| w.idempotency.as_ref().map(|i| [i.key.as_bytes(), i.request_hash.as_bytes()]))
        .collect::<Option<Vec<_>>>()
        .map(|pairs| pairs.into_iter().flatten().collect());
    match keys {
        Some(keys) => {
            let used =
                items.iter().filter_map(|(_, w)| w.idempotency.as_ref().map(|i| i.key.clone())).collect();
            Custody::keyed("batch-enroll", gallery.settings.name.as_str(), &digest(&keys))
                .with_idempotency_keys(used)
        }
        None => Custody::fresh("batch-enroll"),
    }
}
