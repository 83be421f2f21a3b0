//! Per-principal query budgets: a contractor's or partner's account cannot walk the gallery. The
//! search role spends one per identify and verify, the ingest role one per subject read, from
//! the same budget (shared through Redis when configured).

use crate::{Transport, actor, append_audit};
use biomatch_auth::ServiceCredentials;
use biomatch_domain::{ErrorClass, Principal, Role};
use biomatch_proto::status_with;
use biomatch_proto::v1::audit_service_client::AuditServiceClient;
use biomatch_proto::v1::{AuditEvent, Operation};
use std::collections::HashMap;
use std::sync::Mutex;
use tonic::Status;

/// Searches a principal may make per minute and per day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_minute: u32,
    pub per_day: u32,
}

/// Limits by role (other roles neither search nor read subjects).
#[derive(Debug, Clone)]
pub struct BudgetPolicy {
    pub kiosk: Limits,
    pub analyst: Limits,
    /// Enrollers search nothing; their subject reads are counted.
    pub enroller: Limits,
}

impl Default for BudgetPolicy {
    fn default() -> Self {
        Self {
            // A kiosk lane sees a traveler every few seconds; bursts of retries stay well inside.
            kiosk: Limits { per_minute: 120, per_day: 20_000 },
            // An analyst reviews cases, not the whole gallery.
            analyst: Limits { per_minute: 60, per_day: 2_000 },
            // Checking a load's subjects one by one; a whole gallery's membership is out of reach.
            enroller: Limits { per_minute: 600, per_day: 20_000 },
        }
    }
}

/// Which window a refusal came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    Minute,
    Day,
}

/// Why a search was not allowed to spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Exceeded(Exceeded),
    /// The shared counter (Redis) could not be reached: fail closed.
    Unavailable,
}

/// Counts searches per principal in fixed minute and day windows: in Redis when configured, so
/// every search replica shares the counts, otherwise in this process.
pub struct Budgets {
    policy: BudgetPolicy,
    used: Mutex<HashMap<String, Usage>>,
    redis: Option<(redis::aio::ConnectionManager, String)>,
}

impl std::fmt::Debug for Budgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budgets")
            .field("policy", &self.policy)
            .field("shared", &self.redis.is_some())
            .finish()
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    minute: i64,
    in_minute: u32,
    day: i64,
    in_day: u32,
}

impl Budgets {
    /// Counts in this process.
    pub fn new(policy: BudgetPolicy) -> Self {
        Self { policy, used: Mutex::new(HashMap::new()), redis: None }
    }

    /// Counts in Redis under `prefix`, shared by every search replica.
    pub async fn shared(policy: BudgetPolicy, url: &str, prefix: &str) -> Result<Self, redis::RedisError> {
        let conn = biomatch_auth::redis_connection(url).await?;
        Ok(Self { policy, used: Mutex::new(HashMap::new()), redis: Some((conn, prefix.to_owned())) })
    }

    fn limits(&self, role: Role) -> Option<Limits> {
        match role {
            Role::Kiosk => Some(self.policy.kiosk),
            Role::Analyst => Some(self.policy.analyst),
            Role::Enroller => Some(self.policy.enroller),
            Role::Service | Role::Admin | Role::Auditor => None,
        }
    }

    /// Spends one search of `principal` at `now_ms`, or says why not.
    pub async fn take(&self, principal: &Principal, now_ms: i64) -> Result<(), Refusal> {
        let Some(limits) = self.limits(principal.role) else { return Ok(()) };
        let Some((conn, prefix)) = &self.redis else {
            return self.take_local(principal, limits, now_ms).map_err(Refusal::Exceeded);
        };
        let (minute, day) = (now_ms.div_euclid(60_000), now_ms.div_euclid(86_400_000));
        let who = format!("{prefix}:budget:{}:{}", principal.role, principal.subject);
        let (minute_key, day_key) = (format!("{who}:m{minute}"), format!("{who}:d{day}"));
        // Refused attempts count too: a caller hammering past its budget stays refused.
        let mut conn = conn.clone();
        let counts: Result<(u64, u64), _> = biomatch_auth::within_deadline(
            redis::pipe()
                .atomic()
                .incr(&minute_key, 1)
                .cmd("EXPIRE")
                .arg(&minute_key)
                .arg(120)
                .ignore()
                .incr(&day_key, 1)
                .cmd("EXPIRE")
                .arg(&day_key)
                .arg(2 * 86_400)
                .ignore()
                .query_async(&mut conn),
        )
        .await;
        match counts {
            Err(e) => {
                tracing::error!(error = %e, "query budget store unreachable; refusing");
                Err(Refusal::Unavailable)
            }
            Ok((_, in_day)) if in_day > u64::from(limits.per_day) => Err(Refusal::Exceeded(Exceeded::Day)),
            Ok((in_minute, _)) if in_minute > u64::from(limits.per_minute) => {
                Err(Refusal::Exceeded(Exceeded::Minute))
            }
            Ok(_) => Ok(()),
        }
    }

    fn take_local(&self, principal: &Principal, limits: Limits, now_ms: i64) -> Result<(), Exceeded> {
        let (minute, day) = (now_ms.div_euclid(60_000), now_ms.div_euclid(86_400_000));
        let mut used = self.used.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = format!("{}\u{0}{}", principal.role, principal.subject);
        let u = used.entry(key).or_default();
        if u.minute != minute {
            (u.minute, u.in_minute) = (minute, 0);
        }
        if u.day != day {
            (u.day, u.in_day) = (day, 0);
        }
        if u.in_day >= limits.per_day {
            return Err(Exceeded::Day);
        }
        if u.in_minute >= limits.per_minute {
            return Err(Exceeded::Minute);
        }
        u.in_minute += 1;
        u.in_day += 1;
        Ok(())
    }
}

/// Spends one query of `principal` at `now_ms`. An exhausted budget is refused with
/// `RESOURCE_EXHAUSTED`, counted in `biomatch_budget_refusals_total` (labelled by role and window,
/// never by subject) and recorded as a `budget_exceeded` leaf (best effort: the refusal stands).
pub async fn spend(
    budgets: &Budgets,
    audit: &AuditServiceClient<Transport>,
    creds: &ServiceCredentials,
    principal: &Principal,
    gallery: &str,
    now_ms: i64,
) -> Result<(), Status> {
    let what = match budgets.take(principal, now_ms).await {
        Ok(()) => return Ok(()),
        Err(Refusal::Unavailable) => {
            return Err(status_with(ErrorClass::Unavailable, "query budgets cannot be checked"));
        }
        Err(Refusal::Exceeded(Exceeded::Minute)) => "per-minute",
        Err(Refusal::Exceeded(Exceeded::Day)) => "per-day",
    };
    tracing::warn!(role = %principal.role, window = what, "query budget exceeded");
    metrics::counter!("biomatch_budget_refusals_total", "role" => principal.role.as_str(), "window" => what)
        .increment(1);
    let event = AuditEvent {
        actor: Some(actor(principal)),
        operation: Operation::BudgetExceeded.into(),
        gallery: gallery.to_owned(),
        outcome: "RESOURCE_EXHAUSTED".into(),
        detail: format!("{what} query budget exhausted"),
        ..Default::default()
    };
    if let Err(e) = append_audit(audit, creds, event, format!("budget:{}", uuid::Uuid::new_v4())).await {
        tracing::warn!(error = %e, "a budget refusal could not be audited");
    }
    Err(status_with(ErrorClass::ResourceExhausted, format!("{what} query budget exhausted for this caller")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn budgets_refuse_past_the_limit_and_reset_with_the_window() {
        let policy = BudgetPolicy {
            kiosk: Limits { per_minute: 3, per_day: 5 },
            analyst: Limits { per_minute: 1, per_day: 1 },
            enroller: Limits { per_minute: 1, per_day: 1 },
        };
        let budgets = Budgets::new(policy);
        let kiosk = Principal::new("k1", Role::Kiosk);
        let t = 1_800_000_000_000;
        for _ in 0..3 {
            assert_eq!(budgets.take(&kiosk, t).await, Ok(()));
        }
        assert_eq!(budgets.take(&kiosk, t + 1_000).await, Err(Refusal::Exceeded(Exceeded::Minute)));
        assert_eq!(
            budgets.take(&Principal::new("k2", Role::Kiosk), t).await,
            Ok(()),
            "budgets are per principal"
        );
        assert_eq!(budgets.take(&kiosk, t + 60_000).await, Ok(()), "a new minute");
        assert_eq!(budgets.take(&kiosk, t + 61_000).await, Ok(()));
        assert_eq!(budgets.take(&kiosk, t + 120_000).await, Err(Refusal::Exceeded(Exceeded::Day)));
        assert_eq!(budgets.take(&kiosk, t + 86_400_000).await, Ok(()), "a new day");
        assert_eq!(budgets.take(&Principal::new("ops", Role::Admin), t).await, Ok(()));
    }
}
