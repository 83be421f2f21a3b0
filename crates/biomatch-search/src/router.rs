//! Finding the matcher that holds a shard.

use biomatch_client::request;
use biomatch_proto::v1::DescribeMatcherRequest;
use biomatch_proto::v1::matcher_service_client::MatcherServiceClient;
use std::collections::HashMap;
use std::sync::RwLock;
use tonic::transport::Channel;

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
