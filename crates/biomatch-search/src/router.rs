//! Finding the matcher that holds a shard, and asking its replicas in turn.

use biomatch_client::request;
use biomatch_domain::ErrorClass;
use biomatch_proto::status_with;
use biomatch_proto::v1::DescribeMatcherRequest;
use biomatch_proto::v1::matcher_service_client::MatcherServiceClient;
use std::collections::HashMap;
use std::sync::RwLock;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Another replica may answer: this one is down, slow, or does not hold the shard.
pub(crate) fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::NotFound | Code::Unknown | Code::Cancelled
    )
}

/// Matcher endpoints and what each one said it holds.
pub struct Router {
    matchers: Vec<MatcherServiceClient<Channel>>,
    held: RwLock<HashMap<(String, u32), Vec<usize>>>,
}

impl Router {
    pub fn new(matchers: Vec<MatcherServiceClient<Channel>>) -> Self {
        Self { matchers, held: RwLock::new(HashMap::new()) }
    }

    /// Matchers to try for a shard, those known to hold it first, then every other one (a matcher
    /// that learns of a gallery after our last look still answers).
    pub fn candidates(&self, gallery: &str, shard: u32) -> Vec<MatcherServiceClient<Channel>> {
        let held = self.held.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let known = held.get(&(gallery.to_owned(), shard)).cloned().unwrap_or_default();
        let rest = (0..self.matchers.len()).filter(|i| !known.contains(i));
        known.iter().copied().chain(rest).map(|i| self.matchers[i].clone()).collect()
    }

    /// Asks the matchers for a shard in turn ([`Self::candidates`]) until one answers. An error
    /// another replica may not have ([`retryable`]) moves on to the next; any other error is the
    /// answer. When none answers, the router looks again at what every matcher holds (a shard
    /// may have moved) and the last error is returned.
    pub async fn ask<T, Fut>(
        &self,
        gallery: &str,
        shard: u32,
        token: &str,
        mut call: impl FnMut(MatcherServiceClient<Channel>) -> Fut,
    ) -> Result<T, Status>
    where
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut last = status_with(ErrorClass::Unavailable, format!("no matcher holds shard {shard}"));
        for matcher in self.candidates(gallery, shard) {
            match call(matcher).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if retryable(&status) => last = status,
                Err(status) => return Err(status),
            }
        }
        self.refresh(token).await;
        Err(last)
    }

    /// Asks every matcher what it holds.
    pub async fn refresh(&self, token: &str) {
        let mut held: HashMap<(String, u32), Vec<usize>> = HashMap::new();
        for (i, matcher) in self.matchers.iter().enumerate() {
            let mut client = matcher.clone();
            match client.describe(request(DescribeMatcherRequest {}, token)).await {
                Ok(response) => {
                    for status in response.into_inner().shards {
                        if let Some(s) = status.shard {
                            held.entry((s.gallery, s.shard)).or_default().push(i);
                        }
                    }
                }
                Err(status) => tracing::warn!(matcher = i, code = ?status.code(), "matcher describe failed"),
            }
        }
        *self.held.write().unwrap_or_else(std::sync::PoisonError::into_inner) = held;
    }
}
