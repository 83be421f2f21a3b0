//! Admission control: each gRPC service (search, matcher, audit, ingest, embed; each with its own
//! bounds, so a process running several roles cannot starve the matcher its own searches call)
//! serves at most `max_in_flight` calls at once and lets at most `max_waiting` more wait for a turn, each no longer than its own deadline (`grpc-timeout`) or
//! `max_wait`, whichever is sooner. Past that it answers `RESOURCE_EXHAUSTED` at once, before
//! any work is done, so an overloaded role refuses quickly what it cannot serve in time instead
//! of queueing without bound until memory runs out and every answer comes too late. Refusals are
//! counted in `biomatch_shed_total{service,reason}`; health checks and reflection are never shed (a
//! probe refused under load would get a busy pod killed).
//!
//! With `adaptive` limits (front doors only, when configured) `max_in_flight` is a ceiling: the number of
//! turns follows the admitted calls' service time ([`crate::latency_limit`]), so that on a machine
//! with fewer cores than the ceiling assumes, calls are refused rather than admitted to queue for
//! the CPU; `biomatch_admission_limit{service}` shows it. While latency holds the limit below
//! its ceiling, a call also waits for a turn no longer than a call takes unhindered.

use crate::latency_limit::LatencyLimit;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits of one role's gRPC server.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionLimits {
    pub max_in_flight: usize,
    pub max_waiting: usize,
    /// The longest a call waits for a turn when its caller set no shorter deadline.
    pub max_wait: Duration,
    /// Whether the number of turns follows latency, up to `max_in_flight`.
    pub adaptive: bool,
}

/// The services that get bounds of their own; any other path shares one more.
const SERVICES: [&str; 5] =
    ["SearchService", "MatcherService", "AuditService", "IngestService", "EmbedService"];
const INTERNAL: [&str; 2] = ["MatcherService", "AuditService"];

#[derive(Debug, Clone)]
pub struct AdmissionLayer {
    /// One per entry of `SERVICES`, then the one for every other path.
    buckets: Arc<Vec<Arc<Shared>>>,
}

#[derive(Debug)]
struct Shared {
    service: &'static str,
    limits: AdmissionLimits,
    turns: Arc<Semaphore>,
    /// How many turns `turns` holds, taken or not.
    capacity: AtomicUsize,
    adaptive: Option<LatencyLimit>,
    waiting: AtomicUsize,
}

impl Shared {
    fn new(service: &'static str, limits: AdmissionLimits) -> Self {
        let adaptive = limits.adaptive.then(|| LatencyLimit::new(limits.max_in_flight));
        let capacity = adaptive.as_ref().map_or(limits.max_in_flight, LatencyLimit::limit).max(1);
        let turns = Arc::new(Semaphore::new(capacity));
        Self {
            service,
            limits,
            turns,
            capacity: AtomicUsize::new(capacity),
            adaptive,
            waiting: AtomicUsize::new(0),
        }
    }

    /// The longest a call may wait for a turn: `max_wait`, and while latency holds adaptive turns
    /// back no longer than a call takes unhindered (the floor), so that what an admitted call
    /// waited adds at most that much to its latency; past it, the caller does better to retry
    /// elsewhere.
    fn max_wait(&self) -> Duration {
        let floor = self.adaptive.as_ref().and_then(LatencyLimit::held_back_floor);
        floor.map_or(self.limits.max_wait, |floor| floor.min(self.limits.max_wait))
    }

    /// Notes that a call found every turn taken.
    fn saturated(&self) {
        if let Some(limit) = &self.adaptive {
            limit.saturated();
        }
    }

    /// Gives `turn` back after a call served in `service`, first moving the number of turns one
    /// step towards the latency limit.
    fn release(&self, turn: OwnedSemaphorePermit, service: Duration, now: Instant) {
        let Some(limit) = &self.adaptive else { return };
        let target = limit.record(service, now);
        let capacity = self.capacity.load(Ordering::SeqCst);
        let step =
            |to| self.capacity.compare_exchange(capacity, to, Ordering::SeqCst, Ordering::SeqCst).is_ok();
        if capacity > target && step(capacity - 1) {
            turn.forget();
        } else if capacity < target && step(capacity + 1) {
            self.turns.add_permits(1);
        } else {
            return;
        }
        metrics::gauge!("biomatch_admission_limit", "service" => self.service)
            .set(self.capacity.load(Ordering::SeqCst) as f64);
    }
}

impl AdmissionLayer {
    /// The same bounds for every service.
    pub fn new(limits: AdmissionLimits) -> Self {
        Self::with_internal(limits, limits)
    }

    /// `front` for the services callers reach (search, ingest, embed), `internal` for the ones
    /// only other roles call (matcher, audit): every admitted search makes calls to them, so
    /// they need room for every front door's admitted calls at once.
    pub fn with_internal(front: AdmissionLimits, internal: AdmissionLimits) -> Self {
        let bucket = |service| {
            let limits = if INTERNAL.contains(&service) { internal } else { front };
            Arc::new(Shared::new(service, limits))
        };
        let buckets = SERVICES.iter().copied().chain(["other"]).map(bucket).collect();
        Self { buckets: Arc::new(buckets) }
    }

    fn bucket(&self, path: &str) -> Arc<Shared> {
        let service =
            path.strip_prefix("/biomatch.v1.").and_then(|rest| rest.split('/').next()).unwrap_or_default();
        let i = SERVICES.iter().position(|s| *s == service).unwrap_or(SERVICES.len());
        self.buckets[i].clone()
    }
}

impl<S> tower::Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Admission { inner, layer: self.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct Admission<S> {
    inner: S,
    layer: AdmissionLayer,
}

/// Calls that are never shed: health checks and reflection.
fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.")
}

/// The caller's deadline from the `grpc-timeout` header (e.g. `250m`, `5S`), if any.
pub fn caller_deadline<B>(request: &http::Request<B>) -> Option<Duration> {
    let value = request.headers().get("grpc-timeout")?.to_str().ok()?;
    if value.is_empty() || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

fn shed<B: Default>(shared: &Shared, reason: &'static str) -> http::Response<B> {
    metrics::counter!("biomatch_shed_total", "service" => shared.service, "reason" => reason).increment(1);
    tonic::Status::resource_exhausted(format!(
        "{} is overloaded ({} calls in flight, {} waiting: {reason}); retry later with backoff, or another replica",
        shared.service,
        shared.capacity.load(Ordering::Relaxed),
        shared.limits.max_waiting
    ))
    .into_http()
}

/// A place in a service's queue, given back when dropped.
struct Waiting<'a> {
    shared: &'a Shared,
    /// How many were waiting before this one.
    ahead: usize,
}

impl<'a> Waiting<'a> {
    fn enter(shared: &'a Shared) -> Self {
        Self { shared, ahead: shared.waiting.fetch_add(1, Ordering::SeqCst) }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.shared.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Admission<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        // The clone that was made ready answers this call (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if exempt(request.uri().path()) {
            return Box::pin(inner.call(request));
        }
        let shared = self.layer.bucket(request.uri().path());
        Box::pin(async move {
            let turn = match shared.turns.clone().try_acquire_owned() {
                Ok(turn) => turn,
                Err(_) => {
                    shared.saturated();
                    // Counted while it waits, and uncounted however the wait ends: a caller
                    // that cancels, or a deadline that drops this future, frees its place.
                    let waiting = Waiting::enter(&shared);
                    if waiting.ahead >= shared.limits.max_waiting {
                        drop(waiting);
                        return Ok(shed(&shared, "queue_full"));
                    }
                    let wait =
                        caller_deadline(&request).map_or(shared.max_wait(), |d| d.min(shared.max_wait()));
                    let turn = tokio::time::timeout(wait, shared.turns.clone().acquire_owned()).await;
                    drop(waiting);
                    match turn {
                        Ok(Ok(turn)) => turn,
                        _ => return Ok(shed(&shared, "waited_too_long")),
                    }
                }
            };
            let started = Instant::now();
            let answer = inner.call(request).await;
            shared.release(turn, started.elapsed(), Instant::now());
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, ServiceExt};

    fn status<B>(answer: &http::Response<B>) -> Option<&[u8]> {
        answer.headers().get("grpc-status").map(|v| v.as_bytes())
    }

    #[tokio::test]
    async fn past_the_queue_calls_are_refused_at_once_and_health_checks_pass() {
        // Handlers hold until the gate opens.
        let gate = Arc::new(Semaphore::new(0));
        let entered = Arc::new(AtomicUsize::new(0));
        let handler = {
            let (gate, entered) = (gate.clone(), entered.clone());
            tower::service_fn(move |_request: http::Request<()>| {
                let (gate, entered) = (gate.clone(), entered.clone());
                async move {
                    entered.fetch_add(1, Ordering::SeqCst);
                    let _pass = gate.acquire().await.expect("gate");
                    Ok::<_, std::convert::Infallible>(http::Response::new(String::from("served")))
                }
            })
        };
        let limits = AdmissionLimits {
            max_in_flight: 2,
            max_waiting: 1,
            max_wait: Duration::from_secs(30),
            adaptive: false,
        };
        let layer = AdmissionLayer::new(limits);
        let service = layer.clone().layer(handler);
        let call = |path: &str| {
            service.clone().oneshot(http::Request::builder().uri(path).body(()).expect("request"))
        };
        // Two in flight and one waiting.
        let held: Vec<_> =
            (0..3).map(|_| tokio::spawn(call("/biomatch.v1.SearchService/Identify"))).collect();
        let search = layer.bucket("/biomatch.v1.SearchService/Identify");
        while entered.load(Ordering::SeqCst) < 2 || search.waiting.load(Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
        let refused = call("/biomatch.v1.SearchService/Identify").await.expect("answer");
        assert_eq!(status(&refused), Some(&b"8"[..]), "RESOURCE_EXHAUSTED when the queue is full");
        assert_eq!(entered.load(Ordering::SeqCst), 2, "the refused call did no work");
        // The matcher has bounds of its own: a search holding every search turn can still call it.
        let matcher = tokio::spawn(call("/biomatch.v1.MatcherService/Search"));
        while entered.load(Ordering::SeqCst) < 3 {
            tokio::task::yield_now().await;
        }
        let health = tokio::spawn(call("/grpc.health.v1.Health/Check"));
        while entered.load(Ordering::SeqCst) < 4 {
            tokio::task::yield_now().await;
        }
        gate.add_permits(16);
        assert_eq!(health.await.expect("join").expect("answer").into_body(), "served");
        assert_eq!(matcher.await.expect("join").expect("answer").into_body(), "served");
        for call in held {
            assert_eq!(
                call.await.expect("join").expect("answer").into_body(),
                "served",
                "the waiting call got its turn"
            );
        }
    }

    #[test]
    fn adaptive_turns_follow_the_latency_limit_down_and_up() {
        let limits =
            AdmissionLimits { max_in_flight: 8, max_waiting: 0, max_wait: Duration::ZERO, adaptive: true };
        let shared = Shared::new("SearchService", limits);
        let start = shared.capacity.load(Ordering::SeqCst);
        assert!(start < 8, "it starts low and learns the floor: {start}");
        let mut now = Instant::now();
        let mut serve = |n: usize, service: Duration| {
            for _ in 0..n {
                shared.saturated();
                let turn = shared.turns.clone().try_acquire_owned().expect("a turn");
                now += Duration::from_millis(5);
                shared.release(turn, service, now);
            }
        };
        serve(400, Duration::from_millis(4));
        assert_eq!(shared.capacity.load(Ordering::SeqCst), 8, "grown to the ceiling while calls are fast");
        assert_eq!(shared.turns.available_permits(), 8, "every turn given back");
        // Three windows of 16 calls: the limit halves in each (to be learnt again if it lasts).
        serve(48, Duration::from_millis(40));
        let shrunk = shared.capacity.load(Ordering::SeqCst);
        assert!(shrunk <= 2, "calls ten times slower shrink it: {shrunk}");
        assert_eq!(shared.turns.available_permits(), shrunk, "the turns held back are gone");
    }

    #[tokio::test]
    async fn a_caller_that_cancels_while_waiting_frees_its_place() {
        let handler = tower::service_fn(|_request: http::Request<()>| async {
            std::future::pending::<()>().await;
            Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
        });
        let limits = AdmissionLimits {
            max_in_flight: 1,
            max_waiting: 1,
            max_wait: Duration::from_secs(30),
            adaptive: false,
        };
        let layer = AdmissionLayer::new(limits);
        let service = layer.clone().layer(handler);
        let call = || service.clone().oneshot(http::Request::builder().uri("/a").body(()).expect("req"));
        let busy = tokio::spawn(call());
        let queue = layer.bucket("/a");
        for _ in 0..3 {
            let waiter = tokio::spawn(call());
            while queue.waiting.load(Ordering::SeqCst) < 1 {
                tokio::task::yield_now().await;
            }
            waiter.abort();
            let _ = waiter.await;
            assert_eq!(queue.waiting.load(Ordering::SeqCst), 0, "the cancelled call no longer counts");
        }
        busy.abort();
    }

    #[tokio::test]
    async fn a_waiting_call_gives_up_at_its_callers_deadline() {
        let handler = tower::service_fn(|_request: http::Request<()>| async {
            std::future::pending::<()>().await;
            Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
        });
        let limits = AdmissionLimits {
            max_in_flight: 1,
            max_waiting: 8,
            max_wait: Duration::from_secs(30),
            adaptive: false,
        };
        let service = AdmissionLayer::new(limits).layer(handler);
        let busy =
            tokio::spawn(service.clone().oneshot(http::Request::builder().uri("/a").body(()).expect("req")));
        tokio::task::yield_now().await;
        let started = std::time::Instant::now();
        let request =
            http::Request::builder().uri("/b").header("grpc-timeout", "250m").body(()).expect("req");
        let refused = service.clone().oneshot(request).await.expect("answer");
        assert_eq!(status(&refused), Some(&b"8"[..]));
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(250), "it waited for a turn first: {waited:?}");
        assert!(
            waited < Duration::from_secs(20),
            "the caller's deadline ended the wait, not max_wait: {waited:?}"
        );
        busy.abort();
    }

    #[test]
    fn grpc_timeouts_parse_and_nonsense_is_ignored() {
        let with = |v: &str| {
            caller_deadline(&http::Request::builder().header("grpc-timeout", v).body(()).expect("req"))
        };
        assert_eq!(with("250m"), Some(Duration::from_millis(250)));
        assert_eq!(with("5S"), Some(Duration::from_secs(5)));
        assert_eq!(with("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(with("x"), None);
        assert_eq!(with("12345678901S"), None);
        assert_eq!(with("-5S"), None);
    }
}
