//! Finding the matcher that holds a shard, and asking its replicas in turn.

use biomatch_client::{Transport, request};
use biomatch_domain::ErrorClass;
use biomatch_proto::status_with;
use biomatch_proto::v1::DescribeMatcherRequest;
use biomatch_proto::v1::matcher_service_client::MatcherServiceClient;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tonic::{Code, Status};

/// Another replica may answer: this one is down, slow, or does not hold the shard.
pub(crate) fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::NotFound | Code::Unknown | Code::Cancelled
    )
}

/// How long what the matchers said they hold is trusted before the router asks again (after an
/// answer, so a replica that was down or not ready at the last look rejoins the rotation).
const PLACEMENT_TTL: Duration = Duration::from_secs(30);
/// How long a matcher may take to say what it holds.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Matcher endpoints and what each one said it holds.
pub struct Router {
    matchers: Arc<Vec<MatcherServiceClient<Transport>>>,
    placement: Arc<Placement>,
    /// Turns among the replicas known to hold a shard, so they share its searches.
    turn: AtomicUsize,
}

/// Which matchers hold which shards, as they last said, and when the router last asked.
#[derive(Default)]
struct Placement {
    held: RwLock<HashMap<(String, u32), Vec<usize>>>,
    /// When the router last asked every matcher (`None`: never).
    looked: Mutex<Option<Instant>>,
    /// A look is under way: another caller does not start one.
    looking: AtomicBool,
}

impl Router {
    pub fn new(matchers: Vec<MatcherServiceClient<Transport>>) -> Self {
        Self { matchers: Arc::new(matchers), placement: Arc::default(), turn: AtomicUsize::new(0) }
    }

    /// The matchers to try for a shard, by index: those known to hold it (and ready) first,
    /// starting with the next in turn, then every other one (a matcher that learned of a gallery
    /// or caught up after the router's last look still answers). Also how many are known holders.
    fn order(&self, gallery: &str, shard: u32) -> (Vec<usize>, usize) {
        let held = self.placement.held.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let known = held.get(&(gallery.to_owned(), shard)).map(Vec::as_slice).unwrap_or_default();
        let start = match known.len() {
            0 => 0,
            n => self.turn.fetch_add(1, Ordering::Relaxed) % n,
        };
        let rest = (0..self.matchers.len()).filter(|i| !known.contains(i));
        let order = known[start..].iter().chain(&known[..start]).copied().chain(rest).collect();
        (order, known.len())
    }

    /// Asks the matchers for a shard in turn ([`Self::order`]) until one answers. An error
    /// another replica may not have ([`retryable`]) moves on to the next; any other error is the
    /// answer. The router looks again at what every matcher holds, in the background, when none
    /// answers (a shard may have moved; the last error is returned), when one it did not know of
    /// answered (a new gallery), and every [`PLACEMENT_TTL`].
    pub async fn ask<T, Fut>(
        &self,
        gallery: &str,
        shard: u32,
        token: &str,
        mut call: impl FnMut(MatcherServiceClient<Transport>) -> Fut,
    ) -> Result<T, Status>
    where
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut last = status_with(ErrorClass::Unavailable, format!("no matcher holds shard {shard}"));
        let (order, known) = self.order(gallery, shard);
        for (position, i) in order.into_iter().enumerate() {
            match call(self.matchers[i].clone()).await {
                Ok(response) => {
                    if position >= known || self.due() {
                        self.look_again(token);
                    }
                    return Ok(response.into_inner());
                }
                Err(status) if retryable(&status) => last = status,
                Err(status) => return Err(status),
            }
        }
        self.look_again(token);
        Err(last)
    }

    /// Whether the last look is older than [`PLACEMENT_TTL`]; the caller that sees so looks
    /// again, and concurrent callers do not.
    fn due(&self) -> bool {
        let mut looked = self.placement.looked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = looked.is_none_or(|at| at.elapsed() >= PLACEMENT_TTL);
        if due {
            *looked = Some(Instant::now());
        }
        due
    }

    /// Asks every matcher at once what it holds, in a task of its own (no search waits on it),
    /// unless a look is already under way.
    fn look_again(&self, token: &str) {
        if self.placement.looking.swap(true, Ordering::AcqRel) {
            return;
        }
        let (matchers, placement, token) = (self.matchers.clone(), self.placement.clone(), token.to_owned());
        tokio::spawn(async move {
            let held = look(&matchers, &token).await;
            *placement.held.write().unwrap_or_else(std::sync::PoisonError::into_inner) = held;
            *placement.looked.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(Instant::now());
            placement.looking.store(false, Ordering::Release);
        });
    }
}

/// The shards each matcher holds and is ready to search, by matcher index.
async fn look(
    matchers: &[MatcherServiceClient<Transport>],
    token: &str,
) -> HashMap<(String, u32), Vec<usize>> {
    let describes = matchers.iter().enumerate().map(|(i, matcher)| {
        let mut client = matcher.clone();
        let mut call = request(DescribeMatcherRequest {}, token);
        call.set_timeout(DESCRIBE_TIMEOUT);
        async move { (i, client.describe(call).await) }
    });
    let mut held: HashMap<(String, u32), Vec<usize>> = HashMap::new();
    for (i, described) in futures::future::join_all(describes).await {
        match described {
            Ok(response) => {
                for status in response.into_inner().shards.into_iter().filter(|s| s.ready) {
                    if let Some(s) = status.shard {
                        held.entry((s.gallery, s.shard)).or_default().push(i);
                    }
                }
            }
            Err(status) => tracing::warn!(matcher = i, code = ?status.code(), "matcher describe failed"),
        }
    }
    held
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(matchers: usize) -> Router {
        let channel = || tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        Router::new((0..matchers).map(|_| MatcherServiceClient::new(channel().into())).collect())
    }

    #[tokio::test]
    async fn replicas_known_to_hold_a_shard_take_turns_and_come_first() {
        let router = router(4);
        assert_eq!(router.order("g", 1), (vec![0, 1, 2, 3], 0), "nothing known: every matcher in turn");
        router.placement.held.write().expect("lock").insert(("g".into(), 1), vec![2, 3]);
        let firsts: Vec<usize> = (0..4).map(|_| router.order("g", 1).0[0]).collect();
        assert_eq!(firsts, vec![2, 3, 2, 3], "the replicas share the shard's searches");
        let (order, known) = router.order("g", 1);
        assert_eq!((&order[2..], known), (&[0, 1][..], 2), "the others follow, for a moved shard");
        assert_eq!(router.order("g", 0), (vec![0, 1, 2, 3], 0));
    }

    #[tokio::test]
    async fn one_caller_looks_again_when_the_placement_is_old() {
        let router = router(1);
        assert!(router.due(), "never looked");
        assert!(!router.due(), "the first caller looks; the next does not");
        *router.placement.looked.lock().expect("lock") = Instant::now().checked_sub(PLACEMENT_TTL);
        assert!(router.due());
    }
}
