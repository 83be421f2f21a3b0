//! An in-flight limit that follows latency, for a front door's admission control. A fixed
//! `max_in_flight` is right for one machine only: too high where cores are few, and admitted calls
//! queue for the CPU behind each other (each answered late); too low where they are many. This
//! limit starts at the configured one (its ceiling) and, each window of calls, compares their
//! median service time with the lowest median seen (the floor: the time a call takes when it does
//! not wait for others):
//!
//! - it starts at [`START`] (or the ceiling, if lower), so that the floor is learnt with few
//!   calls at once, even when the role starts under load;
//! - above [`TOLERANCE`] times the floor, the limit shrinks in proportion (by half at most);
//! - at or below it, if calls found every turn taken during the window, the limit grows by one.
//!
//! So under overload the limit settles where admitted calls are served at about the floor's
//! speed, and the rest are refused. At a limit of one call, calls cannot be waiting for each
//! other, so the median there is the floor, higher or lower: a lasting change in the work (a
//! gallery grown tenfold) is learnt again rather than read as overload for ever.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How much slower than the floor the window's median may be before the limit shrinks.
pub const TOLERANCE: f64 = 1.5;
/// The limit to start from.
const START: usize = 4;
/// A window closes after at least this many calls and this long.
const WINDOW_CALLS: usize = 16;
const WINDOW_TIME: Duration = Duration::from_millis(50);

#[derive(Debug)]
pub(crate) struct LatencyLimit {
    max: usize,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    limit: usize,
    /// Seconds; `None` until the first window closes.
    floor: Option<f64>,
    window: Vec<f64>,
    saturated: bool,
    /// Since the limit last shrank for latency, until it is back at the ceiling.
    held_back: bool,
    opened: Instant,
}

impl LatencyLimit {
    pub(crate) fn new(max: usize) -> Self {
        let max = max.max(1);
        let limit = START.min(max);
        let opened = Instant::now();
        let state =
            State { limit, floor: None, window: Vec::new(), saturated: false, held_back: false, opened };
        Self { max, state: Mutex::new(state) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn limit(&self) -> usize {
        self.state().limit
    }

    /// While latency holds the limit below its ceiling, the median service time of a call not
    /// waiting for others: a wait longer than that is not worth it. `None` otherwise (a role
    /// starting, or one that keeps up).
    pub(crate) fn held_back_floor(&self) -> Option<Duration> {
        let state = self.state();
        state.floor.filter(|_| state.held_back).map(Duration::from_secs_f64)
    }

    /// Notes that a call found every turn taken.
    pub(crate) fn saturated(&self) {
        self.state().saturated = true;
    }

    /// Records an admitted call's service time at `now`; returns the limit.
    pub(crate) fn record(&self, service: Duration, now: Instant) -> usize {
        let mut state = self.state();
        state.window.push(service.as_secs_f64());
        if state.window.len() < WINDOW_CALLS || now.duration_since(state.opened) < WINDOW_TIME {
            return state.limit;
        }
        let mut window = std::mem::take(&mut state.window);
        window.sort_unstable_by(f64::total_cmp);
        let median = window[window.len() / 2];
        let floor = match state.floor {
            Some(floor) if state.limit > 1 => floor.min(median),
            _ => median,
        };
        state.floor = Some(floor);
        if median > TOLERANCE * floor {
            let scaled = (state.limit as f64 * TOLERANCE * floor / median).floor() as usize;
            state.limit = scaled.max(state.limit / 2).max(1);
            state.held_back = true;
        } else if state.saturated {
            state.limit = (state.limit + 1).min(self.max);
            state.held_back &= state.limit < self.max;
        }
        state.saturated = false;
        state.opened = now;
        state.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `windows` windows of calls that each take `service(limit)`, every call finding
    /// every turn taken, from the time the last window closed; returns the last limit.
    fn run(limit: &LatencyLimit, windows: usize, service: impl Fn(usize) -> Duration) -> usize {
        let mut now = limit.state().opened;
        let mut current = limit.state().limit;
        for _ in 0..windows {
            limit.saturated();
            for _ in 0..WINDOW_CALLS {
                current = limit.record(service(current), now);
            }
            now += WINDOW_TIME;
            current = limit.record(service(current), now);
        }
        current
    }

    #[test]
    fn calls_that_queue_for_one_core_shrink_the_limit_to_what_it_serves_at_speed() {
        // One core, 1 ms of CPU a call, 4 ms of waiting on I/O: n calls at once take
        // max(5 ms, n ms) each.
        let one_core = |n: usize| Duration::from_millis(5.max(n as u64));
        let limit = LatencyLimit::new(64);
        let settled = run(&limit, 200, one_core);
        // It grows while calls take at most 1.5 x 5 ms, and shrinks past that.
        assert!((7..=8).contains(&settled), "settled at {settled}");
    }

    #[test]
    fn a_lasting_change_in_the_work_is_learnt_again() {
        let limit = LatencyLimit::new(16);
        run(&limit, 50, |_| Duration::from_millis(5));
        assert_eq!(limit.held_back_floor(), None, "at the ceiling, nothing is held back");
        assert_eq!(run(&limit, 4, |_| Duration::from_millis(50)), 1, "read as overload at first");
        assert_eq!(limit.held_back_floor(), Some(Duration::from_millis(5)), "waits are cut to the floor");
        assert_eq!(run(&limit, 50, |_| Duration::from_millis(50)), 16, "then as the new floor");
        assert_eq!(limit.held_back_floor(), None);
    }

    #[test]
    fn a_machine_that_keeps_up_grows_the_limit_to_its_ceiling() {
        let limit = LatencyLimit::new(32);
        assert_eq!(run(&limit, 100, |_| Duration::from_millis(5)), 32, "never above the configured one");
    }

    #[test]
    fn without_saturation_the_limit_stays() {
        let limit = LatencyLimit::new(8);
        let mut now = Instant::now();
        for _ in 0..10 {
            for _ in 0..WINDOW_CALLS {
                limit.record(Duration::from_millis(5), now);
            }
            now += WINDOW_TIME;
        }
        assert_eq!(limit.record(Duration::from_millis(5), now), START);
        assert_eq!(LatencyLimit::new(0).record(Duration::ZERO, now), 1, "at least one call is served");
    }
}
