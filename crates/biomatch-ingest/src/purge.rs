//! The retention purge: every subject whose retention has ended is removed, on a schedule and
//! on request, each round audited before and after like any other change.

use crate::IngestServer;
use crate::custody::Custody;
use crate::events;
use biomatch_domain::Principal;
use biomatch_proto::status_from;
use biomatch_proto::v1::PurgeExpiredResponse;
use biomatch_store::ExpiredSubject;
use std::sync::Arc;
use tonic::Status;

impl IngestServer {
    /// Removes every subject whose retention has ended, everywhere (store, change log, and
    /// through it every matcher). Each round names the subjects it will remove in one intent leaf
    /// per gallery before removing them, then records what was removed in an outcome leaf.
    pub async fn purge_expired(&self, actor: &Principal) -> Result<PurgeExpiredResponse, Status> {
        let mut response = PurgeExpiredResponse::default();
        loop {
            let now = (self.clock)();
            let expired = self.store.expired(now, 1000).await.map_err(|e| status_from(&e))?;
            if expired.is_empty() {
                return Ok(response);
            }
            let custody = Custody::fresh("purge");
            let intended = by_gallery(expired.iter().map(|e: &ExpiredSubject| (&e.gallery, &e.subject_id)));
            for (i, (gallery, subject_ids)) in intended.iter().enumerate() {
                let mut event = events::purge_event(actor, gallery, subject_ids.clone());
                event.detail = "retention ended: purging".into();
                if let Err(status) = self.intent(&custody.part(gallery), event).await {
                    // Nothing was purged: the galleries announced before this one say so.
                    return Err(self.purge_refused(actor, &custody, &intended[..i], status).await);
                }
            }
            let purged = match custody.attempt(self.store.purge(&expired, now)).await {
                Ok(purged) => purged,
                Err(e) => return Err(self.purge_refused(actor, &custody, &intended, status_from(&e)).await),
            };
            self.changed.notify_one();
            for p in &purged {
                response.purged += 1;
                response.last_change_seq = response.last_change_seq.max(p.change_seq);
            }
            let mut done = by_gallery(purged.iter().map(|p| (&p.gallery, &p.subject_id)));
            for (gallery, _) in &intended {
                // Every intent gets its outcome, even when all its subjects were re-enrolled meanwhile.
                let subject_ids = match done.iter_mut().find(|(g, _)| g == gallery) {
                    Some((_, ids)) => std::mem::take(ids),
                    None => Vec::new(),
                };
                let event = events::purge_event(actor, gallery, subject_ids);
                response.audit_leaf_indexes.push(self.outcome(&custody.part(gallery), event).await?);
            }
        }
    }

    /// Records, best effort, that the announced purges of `galleries` were not made.
    async fn purge_refused(
        &self,
        actor: &Principal,
        custody: &Custody,
        galleries: &[(String, Vec<String>)],
        status: Status,
    ) -> Status {
        for (gallery, subject_ids) in galleries {
            let event = events::purge_event(actor, gallery, subject_ids.clone());
            self.refused(&custody.part(gallery), event, status.clone()).await;
        }
        status
    }

    /// Purges on a schedule, as this role's own service principal.
    pub async fn purge_loop(self: Arc<Self>, interval: std::time::Duration) {
        let me = self.creds.principal();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.purge_expired(&me).await {
                Ok(r) if r.purged > 0 => tracing::info!(purged = r.purged, "expired subjects purged"),
                Ok(_) => {}
                Err(status) => tracing::warn!(code = ?status.code(), "purge failed, retrying later"),
            }
        }
    }
}

/// Subject ids grouped by gallery, in first-seen order.
fn by_gallery<'a>(items: impl Iterator<Item = (&'a String, &'a String)>) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for (gallery, subject) in items {
        match groups.iter_mut().find(|(g, _)| g == gallery) {
            Some((_, ids)) => ids.push(subject.clone()),
            None => groups.push((gallery.clone(), vec![subject.clone()])),
        }
    }
    groups
}
