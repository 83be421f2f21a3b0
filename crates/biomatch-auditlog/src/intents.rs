//! Changes announced but not concluded. The ingest role writes an intent leaf (outcome
//! [`INTENT`]) before every change and an outcome leaf with the same request id after it; an
//! intent with no outcome means the change was attempted and may or may not have been made (the
//! process died, or the outcome could not be recorded and the caller never retried). The log is
//! still intact; an auditor follows each one up in the store.
//!
//! An [`INDETERMINATE`] leaf records that the caller was refused because the store stopped
//! answering inside the write: the change may still have been made, so it leaves the intent open.
//! A retry under the same idempotency key concludes it with the change's real outcome.

use crate::AuditRecord;
use std::collections::BTreeMap;

/// The `outcome` of an intent leaf.
pub const INTENT: &str = "INTENT";
/// The `outcome` of a leaf saying the caller was refused while the change's fate is unknown.
pub const INDETERMINATE: &str = "INDETERMINATE";

/// An intent leaf with no outcome leaf after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenIntent {
    pub index: u64,
    pub operation: String,
    pub gallery: String,
    pub request_id: String,
}

/// Intents seen and not yet concluded, fed leaves in log order. One request may change several
/// galleries (a purge), each with its own intent and outcome, so they pair by request id,
/// gallery and operation: only the ingest role writes change leaves, so a leaf of another kind
/// (a refusal any role may record) cannot conclude, and so hide, an intent.
#[derive(Debug, Default)]
pub struct OpenIntents {
    open: BTreeMap<(String, String, String), OpenIntent>,
}

impl OpenIntents {
    pub fn push(&mut self, index: u64, record: &AuditRecord) {
        if record.request_id.is_empty() {
            return;
        }
        let key = (record.request_id.clone(), record.gallery.clone(), record.operation.clone());
        if record.outcome == INTENT {
            let intent = OpenIntent {
                index,
                operation: record.operation.clone(),
                gallery: record.gallery.clone(),
                request_id: record.request_id.clone(),
            };
            self.open.entry(key).or_insert(intent);
        } else if record.outcome != INDETERMINATE {
            self.open.remove(&key);
        }
    }

    /// The intents still open, in log order.
    pub fn open(&self) -> Vec<OpenIntent> {
        let mut open: Vec<OpenIntent> = self.open.values().cloned().collect();
        open.sort_by_key(|intent| intent.index);
        open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(request_id: &str, gallery: &str, outcome: &str) -> AuditRecord {
        kind("enroll", request_id, gallery, outcome)
    }

    fn kind(operation: &str, request_id: &str, gallery: &str, outcome: &str) -> AuditRecord {
        AuditRecord {
            operation: operation.into(),
            gallery: gallery.into(),
            request_id: request_id.into(),
            outcome: outcome.into(),
            ..AuditRecord::default()
        }
    }

    #[test]
    fn an_intent_stays_open_until_its_own_outcome() {
        let mut intents = OpenIntents::default();
        intents.push(0, &leaf("r1", "a", INTENT));
        intents.push(1, &leaf("r1", "b", INTENT));
        intents.push(2, &leaf("r2", "a", INTENT));
        intents.push(3, &leaf("r1", "a", "OK"));
        intents.push(4, &leaf("r2", "a", "UNAVAILABLE"));
        intents.push(5, &leaf("", "a", INTENT));
        let open = intents.open();
        assert_eq!(open.len(), 1, "{open:?}");
        assert_eq!((open[0].index, open[0].gallery.as_str()), (1, "b"));
        // A retry's intent (de-duplicated by the log, or re-appended) keeps the first index.
        intents.push(6, &leaf("r1", "b", INTENT));
        assert_eq!(intents.open()[0].index, 1);
        // A leaf of another kind with the same request id cannot conclude it.
        intents.push(7, &kind("access_denied", "r1", "b", "PERMISSION_DENIED"));
        assert_eq!(intents.open().len(), 1, "a refusal recorded by any role does not hide an intent");
        intents.push(8, &leaf("r1", "b", "OK"));
        assert!(intents.open().is_empty());
    }

    #[test]
    fn a_change_of_unknown_fate_stays_open_until_a_retry_concludes_it() {
        let mut intents = OpenIntents::default();
        intents.push(0, &leaf("r1", "a", INTENT));
        intents.push(1, &leaf("r1", "a", INDETERMINATE));
        assert_eq!(intents.open().len(), 1, "the store may still have made it");
        intents.push(2, &leaf("r1", "a", "OK"));
        assert!(intents.open().is_empty(), "the retry found or made it");
    }
}
