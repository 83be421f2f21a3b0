//! Gathering a batch-enrol stream into per-gallery transactions with one audit leaf each.

use crate::{IngestServer, events, failure};
use biomatch_domain::Principal;
use biomatch_proto::status_from;
use biomatch_proto::v1::BatchEnrollResponse;
use biomatch_store::{EnrollWrite, GalleryRecord};
use tonic::Status;

#[derive(Default)]
pub(crate) struct Batch {
    groups: Vec<(GalleryRecord, Vec<(u32, EnrollWrite)>)>,
    response: BatchEnrollResponse,
}

impl Batch {
    pub(crate) fn push(&mut self, gallery: GalleryRecord, index: u32, write: EnrollWrite) {
        match self.groups.iter_mut().find(|(g, _)| g.id == gallery.id) {
            Some((_, items)) => items.push((index, write)),
            None => self.groups.push((gallery, vec![(index, write)])),
        }
    }

    pub(crate) fn fail(&mut self, index: u32, subject_id: String, status: &Status) {
        self.response.rejected += 1;
        self.response.failures.push(failure(index, subject_id, status));
    }

    pub(crate) fn pending(&self) -> usize {
        self.groups.iter().map(|(_, items)| items.len()).sum()
    }

    /// Commits what is pending, then audits it; an audit failure ends the stream with `UNAVAILABLE`.
    pub(crate) async fn flush(&mut self, server: &IngestServer, principal: &Principal) -> Result<(), Status> {
        for (gallery, items) in std::mem::take(&mut self.groups) {
            let writes: Vec<EnrollWrite> = items.iter().map(|(_, w)| w.clone()).collect();
            let results = server
                .store
                .enroll(&gallery, &writes, (server.clock)())
                .await
                .map_err(|e| status_from(&e))?;
            let mut enrolled = Vec::new();
            for ((index, write), result) in items.into_iter().zip(results) {
                match result {
                    Ok(written) => {
                        self.response.accepted += 1;
                        self.response.last_change_seq =
                            self.response.last_change_seq.max(written.value.change_seq);
                        enrolled.push(written.value.subject_id);
                    }
                    Err(e) => self.fail(index, write.subject.into_string(), &status_from(&e)),
                }
            }
            server.changed.notify_one();
            if !enrolled.is_empty() {
                let event = events::enroll_event(principal, &gallery, enrolled);
                let leaf = server.audit(event, crate::audit_key("batch-enroll", "")).await?;
                self.response.audit_leaf_indexes.push(leaf);
            }
        }
        Ok(())
    }

    pub(crate) fn into_response(self) -> BatchEnrollResponse {
        self.response
    }
}
