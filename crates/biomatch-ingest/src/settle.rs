//! Settling changes whose fate was unknown. A change refused as `INDETERMINATE` (the store
//! stopped answering inside its write, or the answer to its commit was lost) leaves its intent
//! open in the audit log: it may or may not have been made. The ingest role keeps each such
//! change and, once the store answers again, asks it which ([`GalleryStore::settle_attempt`]:
//! a final answer, see `biomatch_store::as_attempt`), then appends the outcome: `OK` when the
//! change was made, `ABORTED` when it was not. A retry under the same idempotency key may still
//! conclude it first; a change without a key (a scheduled purge, a threshold review) has no other
//! way to be concluded.
//!
//! The list lives in memory: a change left unsettled when the role stops stays open, and `audit
//! verify --strict` lists it for an auditor, with its attempt id in the `INDETERMINATE` leaf's
//! detail. One still unsettled after half of the store's memory of attempts is given up on, with
//! an error log, for the same follow-up.

use crate::IngestServer;
use crate::custody::Custody;
use biomatch_proto::v1::AuditEvent;
use biomatch_store::ATTEMPTS_KEPT_FOR_MS;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the store is asked about unsettled changes.
const SETTLE_EVERY: Duration = Duration::from_secs(1);
/// How often attempts older than the store keeps are forgotten.
const FORGET_EVERY: Duration = Duration::from_secs(3600);

/// A change of unknown fate: the custody of its leaves and the event its outcome repeats.
struct Unsettled {
    custody: Custody,
    event: AuditEvent,
    since: Instant,
}

/// The changes of unknown fate, oldest first.
#[derive(Default)]
pub(crate) struct UnsettledChanges {
    changes: Mutex<Vec<Unsettled>>,
}

impl UnsettledChanges {
    pub(crate) fn push(&self, custody: Custody, event: AuditEvent) {
        let mut changes = self.changes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        changes.push(Unsettled { custody, event, since: Instant::now() });
        metrics::gauge!("biomatch_unsettled_changes").set(changes.len() as f64);
    }

    fn take(&self) -> Vec<Unsettled> {
        std::mem::take(&mut *self.changes.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Puts back those not settled this round, before any that came meanwhile.
    fn put_back(&self, mut left: Vec<Unsettled>) {
        let mut changes = self.changes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        left.append(&mut changes);
        *changes = left;
        metrics::gauge!("biomatch_unsettled_changes").set(changes.len() as f64);
    }
}

impl IngestServer {
    /// Settles changes of unknown fate every second, and forgets old attempts every hour.
    pub async fn settle_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SETTLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut forgot: Option<Instant> = None;
        loop {
            tick.tick().await;
            self.settle_unsettled().await;
            if forgot.is_none_or(|at| at.elapsed() >= FORGET_EVERY) {
                match self.store.forget_old_attempts().await {
                    Ok(_) => forgot = Some(Instant::now()),
                    Err(e) => tracing::warn!(error = %e, "old change attempts could not be forgotten"),
                }
            }
        }
    }

    /// One round: asks the store about each unsettled change and records the answer.
    async fn settle_unsettled(&self) {
        let give_up_after = Duration::from_millis((ATTEMPTS_KEPT_FOR_MS / 2).unsigned_abs());
        let mut left = Vec::new();
        for change in self.unsettled.take() {
            match self.settle(&change).await {
                Ok(()) => {}
                Err(_) if change.since.elapsed() > give_up_after => {
                    tracing::error!(
                        request_id = %change.custody.request_id,
                        attempt = change.custody.attempt_id(),
                        "a change of unknown fate could not be settled: it stays open in the audit log"
                    );
                }
                Err(reason) => {
                    tracing::debug!(%reason, "a change of unknown fate is not settled yet");
                    left.push(change);
                }
            }
        }
        self.unsettled.put_back(left);
    }

    async fn settle(&self, change: &Unsettled) -> Result<(), String> {
        let attempt = change.custody.attempt_id();
        let keys = change.custody.idempotency_keys();
        let fate = self.store.settle_attempt(attempt, keys).await.map_err(|e| e.to_string())?;
        let (event, key) = change.custody.settled(change.event.clone(), fate);
        self.audit(event, key).await.map_err(|e| e.to_string())?;
        tracing::info!(request_id = %change.custody.request_id, attempt, ?fate, "a change of unknown fate settled");
        Ok(())
    }
}
