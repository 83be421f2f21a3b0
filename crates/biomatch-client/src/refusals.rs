//! The audit log as the request pipeline's [`RefusalLog`]: every authorization denial is a leaf,
//! and refused authentications (a bad signature, an expired, forged or replayed token: the signal
//! of a stolen token) are leaves too, aggregated per source and minute so that a flood cannot
//! fill the log: the first refusal of a source in a minute is written at once, the rest of that
//! minute are counted and written as one leaf with the next refusal after it.

use crate::{Transport, append_audit, deny};
use biomatch_auth::{RefusalLog, ServiceCredentials};
use biomatch_domain::{Clock, Principal};
use biomatch_proto::v1::audit_service_client::AuditServiceClient;
use biomatch_proto::v1::{Actor, AuditEvent, Operation};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// At most this many sources are counted at once; beyond it, refusals count under one source.
const MAX_SOURCES: usize = 10_000;
const OVERFLOW: &str = "other sources";

/// Refusals of one source in one minute beyond the first, with their last reason and RPC.
#[derive(Debug, Clone)]
struct Window {
    minute: i64,
    more: u64,
    last: String,
}

pub struct AuditRefusals {
    audit: AuditServiceClient<Transport>,
    creds: Arc<ServiceCredentials>,
    clock: Clock,
    windows: Mutex<HashMap<String, Window>>,
}

impl AuditRefusals {
    pub fn new(audit: AuditServiceClient<Transport>, creds: Arc<ServiceCredentials>, clock: Clock) -> Self {
        Self { audit, creds, clock, windows: Mutex::default() }
    }

    /// Counts one refusal; returns the leaves to write now: past minutes' counts (every source's,
    /// so a source that went quiet is reported too) and, when it is the first of its minute,
    /// this refusal.
    fn count(&self, source: &str, what: String) -> Vec<AuditEvent> {
        let minute = (self.clock)().div_euclid(60_000);
        let mut windows = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut leaves: Vec<AuditEvent> = Vec::new();
        windows.retain(|source, w| {
            if w.minute < minute && w.more > 0 {
                leaves.push(event(
                    source,
                    format!(
                        "{} further refused authentications in minute {} (last: {})",
                        w.more, w.minute, w.last
                    ),
                ));
            }
            w.minute == minute
        });
        let key =
            if windows.len() >= MAX_SOURCES && !windows.contains_key(source) { OVERFLOW } else { source };
        match windows.get_mut(key) {
            Some(w) => {
                w.more += 1;
                w.last = what;
            }
            None => {
                leaves.push(event(key, what.clone()));
                windows.insert(key.to_owned(), Window { minute, more: 0, last: what });
            }
        }
        leaves
    }
}

/// A refused authentication's leaf: there is no authenticated actor, so the actor is the source.
fn event(source: &str, detail: String) -> AuditEvent {
    AuditEvent {
        actor: Some(Actor {
            subject: format!("unauthenticated@{source}"),
            role: String::new(),
            device_id: String::new(),
        }),
        operation: Operation::AuthFailed.into(),
        outcome: "UNAUTHENTICATED".into(),
        detail,
        ..Default::default()
    }
}

impl RefusalLog for AuditRefusals {
    fn denied(&self, principal: Principal, why: String) -> BoxFuture<'static, ()> {
        let (audit, creds) = (self.audit.clone(), self.creds.clone());
        Box::pin(async move {
            deny(&audit, &creds, &principal, "", why).await;
        })
    }

    fn unauthenticated(&self, source: String, rpc: String, why: String) -> BoxFuture<'static, ()> {
        let leaves = self.count(&source, format!("{rpc}: {why}"));
        let (audit, creds) = (self.audit.clone(), self.creds.clone());
        Box::pin(async move {
            for leaf in leaves {
                let key = format!("auth-failed:{}", uuid::Uuid::new_v4());
                if let Err(e) = append_audit(&audit, &creds, leaf, key).await {
                    tracing::warn!(error = %e, "a refused authentication could not be audited");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    #[tokio::test]
    async fn a_flood_is_one_leaf_per_source_and_minute_and_a_count() {
        let now = Arc::new(AtomicI64::new(0));
        let clock_now = now.clone();
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
        let signer_dir = tempfile::tempdir().expect("tempdir");
        let (private, _) = biomatch_auth::keys::generate(signer_dir.path(), "service-all").expect("keys");
        let signer = biomatch_auth::TokenSigner::from_file(&private, "i", "a").expect("signer");
        let log = AuditRefusals::new(
            AuditServiceClient::new(channel.into()),
            Arc::new(ServiceCredentials::new(signer, "all")),
            Arc::new(move || clock_now.load(Ordering::SeqCst)),
        );
        assert_eq!(log.count("10.0.0.1", "expired".into()).len(), 1, "the first is written");
        for _ in 0..1000 {
            assert!(log.count("10.0.0.1", "bad signature".into()).is_empty(), "the rest are counted");
        }
        assert_eq!(log.count("10.0.0.2", "expired".into()).len(), 1, "another source");
        now.store(61_000, Ordering::SeqCst);
        let next = log.count("10.0.0.2", "expired".into());
        assert_eq!(next.len(), 2, "the count of the last minute, and this one");
        assert!(next[0].detail.starts_with("1000 further"), "{:?}", next[0].detail);
        assert_eq!(next[0].actor.as_ref().map(|a| a.subject.as_str()), Some("unauthenticated@10.0.0.1"));
    }
}
