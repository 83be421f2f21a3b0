//! Audit before effect: every change is named in an intent leaf before it is made, and its
//! result in an outcome leaf after.
//!
//! The intent leaf (outcome `INTENT`) says what is about to be done (operation, gallery, subject
//! ids, new threshold, reason) and is committed before the store transaction starts; if it cannot
//! be committed the request fails `UNAVAILABLE` and nothing changes. The outcome leaf repeats the
//! intent's request id. If it cannot be committed after the change did, the change is still covered
//! by its intent leaf, the caller gets `UNAVAILABLE`, and a retry with the same idempotency key (and
//! body) derives the same request id and audit keys: the audit log de-duplicates the intent and
//! appends the missing outcome.

use biomatch_auditlog::intents::{INDETERMINATE, INTENT};
use biomatch_proto::v1::AuditEvent;
use biomatch_store::AttemptFate;
use sha2::{Digest, Sha256};

/// The outcome of a change settled as not made.
const ABORTED: &str = "ABORTED";

/// The request id and audit keys of one change's intent and outcome leaves, and the store
/// attempt its write is made as.
#[derive(Debug, Clone)]
pub(crate) struct Custody {
    pub(crate) request_id: String,
    intent_key: String,
    outcome_key: String,
    /// Fresh for every call, retries included: what [`crate::settle`] asks the store about.
    attempt: String,
    /// The request's idempotency keys, whose records show an earlier attempt made it.
    idempotency_keys: Vec<String>,
}

impl Custody {
    /// For a request without an idempotency key: a fresh request id.
    pub(crate) fn fresh(kind: &str) -> Self {
        Self::from_id(kind, uuid::Uuid::new_v4().simple().to_string())
    }

    /// For a request with an idempotency key: derived from the key and the request's digest, so
    /// a retry of the same request finds the same leaves and a reuse of the key with another
    /// body does not.
    pub(crate) fn keyed(kind: &str, idempotency_key: &str, request_digest: &str) -> Self {
        Self::from_id(kind, digest(&[kind.as_bytes(), idempotency_key.as_bytes(), request_digest.as_bytes()]))
    }

    /// As [`Custody::keyed`] when `idempotency` is given, else [`Custody::fresh`].
    pub(crate) fn of(kind: &str, idempotency: Option<&biomatch_store::Idempotency>) -> Self {
        match idempotency {
            Some(idem) => {
                Self::keyed(kind, &idem.key, &idem.request_hash).with_idempotency_keys(vec![idem.key.clone()])
            }
            None => Self::fresh(kind),
        }
    }

    fn from_id(kind: &str, request_id: String) -> Self {
        Self {
            intent_key: format!("{kind}:intent:{request_id}"),
            outcome_key: format!("{kind}:{request_id}"),
            request_id,
            attempt: uuid::Uuid::new_v4().simple().to_string(),
            idempotency_keys: Vec::new(),
        }
    }

    /// The idempotency keys of the request (every item's, for a batch).
    pub(crate) fn with_idempotency_keys(mut self, keys: Vec<String>) -> Self {
        self.idempotency_keys = keys;
        self
    }

    pub(crate) fn idempotency_keys(&self) -> &[String] {
        &self.idempotency_keys
    }

    /// The same request id, with audit keys for one part of it (e.g. one gallery of a purge).
    pub(crate) fn part(&self, part: &str) -> Self {
        Self {
            request_id: self.request_id.clone(),
            intent_key: format!("{}:{part}", self.intent_key),
            outcome_key: format!("{}:{part}", self.outcome_key),
            attempt: self.attempt.clone(),
            idempotency_keys: self.idempotency_keys.clone(),
        }
    }

    /// Replaces the outcome leaf's audit key (one outcome per threshold version).
    pub(crate) fn with_outcome_key(mut self, key: String) -> Self {
        self.outcome_key = key;
        self
    }

    /// Runs the change's one store write as this custody's attempt, so that its fate can be
    /// settled if the store stops answering inside it.
    pub(crate) async fn attempt<F: std::future::Future>(&self, write: F) -> F::Output {
        biomatch_store::as_attempt(&self.attempt, write).await
    }

    pub(crate) fn attempt_id(&self) -> &str {
        &self.attempt
    }

    pub(crate) fn intent(&self, mut event: AuditEvent) -> (AuditEvent, String) {
        event.request_id = self.request_id.clone();
        event.outcome = INTENT.into();
        (event, self.intent_key.clone())
    }

    pub(crate) fn outcome(&self, mut event: AuditEvent) -> (AuditEvent, String) {
        event.request_id = self.request_id.clone();
        (event, self.outcome_key.clone())
    }

    /// An outcome saying the intended change was not made, or [`INDETERMINATE`] when it may have
    /// been (the store stopped answering inside the write, or its commit's answer was lost; the
    /// intent stays open); under a key of its own, so a later retry still records its outcome.
    pub(crate) fn refusal(&self, mut event: AuditEvent, status: &tonic::Status) -> (AuditEvent, String) {
        event.request_id = self.request_id.clone();
        if biomatch_store::fate_unknown(status.message()) {
            event.outcome = INDETERMINATE.to_owned();
            let note = format!("attempt {}: its fate is settled once storage answers again", self.attempt);
            event.detail = noted(&event.detail, &note);
        } else {
            event.outcome = biomatch_proto::code_name(status.code());
        }
        (event, self.refusal_key())
    }

    /// The leaf of a change whose fate was unknown, once settled: made, under the outcome's key
    /// (a retry that found it records the same leaf once), or not made, under a key of this
    /// attempt's (a settlement recorded twice is one leaf; a later retry records its own outcome).
    pub(crate) fn settled(&self, mut event: AuditEvent, fate: AttemptFate) -> (AuditEvent, String) {
        event.request_id = self.request_id.clone();
        let (outcome, what, key) = match fate {
            AttemptFate::Made => ("OK", "the change was made", self.outcome_key.clone()),
            AttemptFate::Abandoned => (
                ABORTED,
                "the change was not made",
                format!("{}:abandoned:{}", self.outcome_key, self.attempt),
            ),
        };
        event.outcome = outcome.into();
        let note = format!("attempt {} settled once storage answered again: {what}", self.attempt);
        event.detail = noted(&event.detail, &note);
        (event, key)
    }

    fn refusal_key(&self) -> String {
        format!("{}:refused:{}", self.outcome_key, uuid::Uuid::new_v4().simple())
    }
}

/// `detail` with `note` after it.
fn noted(detail: &str, note: &str) -> String {
    if detail.is_empty() { note.to_owned() } else { format!("{detail}; {note}") }
}

/// SHA-256 (hex) of length-prefixed parts: the digest an idempotency record binds its key to.
pub(crate) fn digest(parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    hex::encode(hash.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_requests_get_stable_ids_bound_to_their_body() {
        let a = Custody::keyed("delete-gallery", "k", &digest(&[b"a"]));
        let again = Custody::keyed("delete-gallery", "k", &digest(&[b"a"]));
        let b = Custody::keyed("delete-gallery", "k", &digest(&[b"b"]));
        assert_eq!(a.request_id, again.request_id);
        assert_ne!(a.request_id, b.request_id);
        assert_ne!(a.intent_key, a.outcome_key);
        assert_ne!(Custody::fresh("x").request_id, Custody::fresh("x").request_id);
        assert_ne!(digest(&[b"ab", b"c"]), digest(&[b"a", b"bc"]), "parts are length-prefixed");
    }

    #[test]
    fn a_write_the_store_stopped_answering_in_is_of_unknown_fate_not_refused() {
        let custody = Custody::fresh("enroll");
        let stalled = biomatch_proto::status_from(&biomatch_store::StoreError::Stalled { after_ms: 10 });
        let (event, stalled_key) = custody.refusal(AuditEvent::default(), &stalled);
        assert_eq!(event.outcome, INDETERMINATE);
        let full = tonic::Status::resource_exhausted("storage is full: the request was not carried out");
        let (event, full_key) = custody.refusal(AuditEvent::default(), &full);
        assert_eq!(event.outcome, "RESOURCE_EXHAUSTED");
        assert_ne!(stalled_key, full_key, "each refusal has a key of its own");
        assert_ne!(stalled_key, custody.outcome(AuditEvent::default()).1, "nor takes the outcome's");
    }

    #[test]
    fn a_settled_change_is_concluded_once_if_made_and_apart_if_not() {
        let custody = Custody::keyed("enroll", "k", &digest(&[b"a"]));
        let retry = Custody::keyed("enroll", "k", &digest(&[b"a"]));
        assert_ne!(custody.attempt_id(), retry.attempt_id(), "every call is an attempt of its own");
        assert_eq!(custody.part("g").attempt_id(), custody.attempt_id(), "one write for every part");
        let (made, made_key) = custody.settled(AuditEvent::default(), AttemptFate::Made);
        assert_eq!(made.outcome, "OK");
        assert_eq!(made_key, custody.outcome(AuditEvent::default()).1, "a retry's outcome is the same leaf");
        let (abandoned, abandoned_key) = custody.settled(AuditEvent::default(), AttemptFate::Abandoned);
        assert_eq!(abandoned.outcome, ABORTED);
        assert_ne!(abandoned_key, made_key, "a later retry still records its own outcome");
        let again = custody.settled(AuditEvent::default(), AttemptFate::Abandoned).1;
        assert_eq!(abandoned_key, again, "a settlement recorded twice is one leaf");
        assert!(abandoned.detail.contains(custody.attempt_id()), "{}", abandoned.detail);
    }
}
