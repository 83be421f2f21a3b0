//! Per-principal query budgets: a contractor's or partner's account cannot walk the gallery.

use biomatch_domain::{Principal, Role};
use std::collections::HashMap;
use std::sync::Mutex;

/// Searches a principal may make per minute and per day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_minute: u32,
    pub per_day: u32,
}

/// Limits by role; roles without limits here may not search at all.
#[derive(Debug, Clone)]
pub struct BudgetPolicy {
    pub kiosk: Limits,
    pub analyst: Limits,
}

impl Default for BudgetPolicy {
    fn default() -> Self {
        Self {
            // A kiosk lane sees a traveler every few seconds; bursts of retries stay well inside.
            kiosk: Limits { per_minute: 120, per_day: 20_000 },
            // An analyst reviews cases, not the whole gallery.
            analyst: Limits { per_minute: 60, per_day: 2_000 },
        }
    }
}

/// Which window a refusal came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    Minute,
    Day,
}

/// Counts searches per principal in fixed minute and day windows, in process. (A cluster with
/// several search replicas needs the counts shared; Redis is the intended home.)
#[derive(Debug, Default)]
pub struct Budgets {
    policy: BudgetPolicy,
    used: Mutex<HashMap<String, Usage>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    minute: i64,
    in_minute: u32,
    day: i64,
    in_day: u32,
}

impl Budgets {
    pub fn new(policy: BudgetPolicy) -> Self {
        Self { policy, used: Mutex::new(HashMap::new()) }
    }

    /// Spends one search of `principal` at `now_ms`, or says which budget is exhausted.
    pub fn take(&self, principal: &Principal, now_ms: i64) -> Result<(), Exceeded> {
        let limits = match principal.role {
            Role::Kiosk => self.policy.kiosk,
            Role::Analyst => self.policy.analyst,
            _ => return Ok(()),
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_refuse_past_the_limit_and_reset_with_the_window() {
        let policy = BudgetPolicy {
            kiosk: Limits { per_minute: 3, per_day: 5 },
            analyst: Limits { per_minute: 1, per_day: 1 },
        };
        let budgets = Budgets::new(policy);
        let kiosk = Principal::new("k1", Role::Kiosk);
        let t = 1_800_000_000_000;
        for _ in 0..3 {
            assert_eq!(budgets.take(&kiosk, t), Ok(()));
        }
        assert_eq!(budgets.take(&kiosk, t + 1_000), Err(Exceeded::Minute));
        assert_eq!(budgets.take(&Principal::new("k2", Role::Kiosk), t), Ok(()), "budgets are per principal");
        assert_eq!(budgets.take(&kiosk, t + 60_000), Ok(()), "a new minute");
        assert_eq!(budgets.take(&kiosk, t + 61_000), Ok(()));
        assert_eq!(budgets.take(&kiosk, t + 120_000), Err(Exceeded::Day));
        assert_eq!(budgets.take(&kiosk, t + 86_400_000), Ok(()), "a new day");
        assert_eq!(budgets.take(&Principal::new("ops", Role::Admin), t), Ok(()));
    }
}
