//! Micro-batching: searches of one shard that arrive together are gathered for at most
//! [`Batching::wait`] (or until [`Batching::max_queries`]) and run as one FAISS search, so an
//! exact shard is scanned once for the whole batch (a matrix product) instead of once per query.
//! One batch of a shard runs at a time, on the blocking pool; shards run in parallel.

use biomatch_domain::ErrorClass;
use biomatch_index::{ScoredSubject, ShardIndex};
use biomatch_proto::{status_from, status_with};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long and how much to gather.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub wait: Duration,
    pub max_queries: usize,
}

impl Default for Batching {
    fn default() -> Self {
        Self { wait: Duration::from_millis(1), max_queries: 64 }
    }
}

type Answer = Result<Vec<Vec<ScoredSubject>>, tonic::Status>;

struct Job {
    queries: Vec<f32>,
    k: usize,
    reply: oneshot::Sender<Answer>,
}

/// The queue in front of one shard's index. Dropping it ends the worker.
pub(crate) struct Batcher {
    jobs: mpsc::Sender<Job>,
}

impl Batcher {
    pub(crate) fn start(index: Arc<Mutex<ShardIndex>>, dimension: usize, batching: Batching) -> Self {
        let (jobs, receiver) = mpsc::channel(4096);
        tokio::spawn(run(index, dimension, batching, receiver));
        Self { jobs }
    }

    /// Top `k` subjects for each query, searched in a batch with whatever else is waiting.
    pub(crate) async fn search(&self, queries: Vec<f32>, k: usize) -> Answer {
        let (reply, answer) = oneshot::channel();
        let closed =
            || status_with(ErrorClass::Unavailable, "the shard was dropped (its gallery was deleted?)");
        self.jobs.send(Job { queries, k, reply }).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

async fn run(
    index: Arc<Mutex<ShardIndex>>,
    dimension: usize,
    batching: Batching,
    mut receiver: mpsc::Receiver<Job>,
) {
    let count = |job: &Job| job.queries.len() / dimension.max(1);
    while let Some(first) = receiver.recv().await {
        let mut queued = count(&first);
        let mut jobs = vec![first];
        let deadline = tokio::time::Instant::now() + batching.wait;
        while queued < batching.max_queries {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(job)) => {
                    queued += count(&job);
                    jobs.push(job);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let k = jobs.iter().map(|j| j.k).max().unwrap_or(1);
        let all: Vec<f32> = jobs.iter().flat_map(|j| j.queries.iter().copied()).collect();
        let index = index.clone();
        let searched = tokio::task::spawn_blocking(move || {
            index.lock().unwrap_or_else(std::sync::PoisonError::into_inner).search(&all, k)
        })
        .await;
        let mut results = match searched {
            Ok(Ok(results)) => results.into_iter(),
            Ok(Err(e)) => {
                let e = status_from(&e);
                jobs.into_iter().for_each(|job| drop(job.reply.send(Err(e.clone()))));
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "matcher search task failed");
                let e = status_with(ErrorClass::Internal, "internal error");
                jobs.into_iter().for_each(|job| drop(job.reply.send(Err(e.clone()))));
                continue;
            }
        };
        for job in jobs {
            // A subject's rank does not depend on k: the top k are a prefix of the top k_max.
            let mine: Vec<Vec<ScoredSubject>> = results
                .by_ref()
                .take(count(&job))
                .map(|mut list| {
                    list.truncate(job.k);
                    list
                })
                .collect();
            let _ = job.reply.send(Ok(mine));
        }
    }
}
