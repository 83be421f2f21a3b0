//! Micro-batching: searches of one shard that arrive together are gathered for at most
//! [`Batching::wait`] (or until [`Batching::max_queries`]) and run as one FAISS search, so an
//! exact shard is scanned once for the whole batch (a matrix product) instead of once per query.
//! A batch waits only for as many searches as recent batches held, so a lone caller runs at once
//! and callers that keep arriving together are gathered without waiting out the timer.
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
    /// FAISS threads for one batch.
    pub threads: usize,
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
    #[tracing::instrument(name = "matcher.batched_search", skip_all)]
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
    let mut expected_batch = 0;
    while let Some(first) = receiver.recv().await {
        let mut queued = count(&first);
        let mut jobs = vec![first];
        // Wait, at most `wait`, for as many searches as recent batches held: callers that arrived
        // together are likely on their way again. Beyond that, take only what is already queued:
        // a lone caller does not wait for company that is not coming (a tokio timer would round
        // the wait up to the next ms). The expectation halves per batch rather than dropping to
        // the last size, so that callers split into two batches once are gathered again instead
        // of alternating for good.
        let expected = expected_batch.min(batching.max_queries);
        let deadline = tokio::time::Instant::now() + batching.wait;
        while queued < batching.max_queries {
            let next = if queued < expected {
                tokio::time::timeout_at(deadline, receiver.recv()).await.ok().flatten()
            } else {
                receiver.try_recv().ok()
            };
            let Some(job) = next else { break };
            queued += count(&job);
            jobs.push(job);
        }
        expected_batch = queued.max(expected_batch / 2);
        metrics::histogram!("biomatch_matcher_batch_queries").record(queued as f64);
        let k = jobs.iter().map(|j| j.k).max().unwrap_or(1);
        let all: Vec<f32> = jobs.iter().flat_map(|j| j.queries.iter().copied()).collect();
        let index = index.clone();
        let threads = batching.threads;
        let searched = tokio::task::spawn_blocking(move || {
            index.lock().unwrap_or_else(std::sync::PoisonError::into_inner).search_threaded(&all, k, threads)
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

#[cfg(test)]
mod tests {
    use super::*;
    use biomatch_domain::IndexSpec;

    fn vectors(d: usize) -> Vec<Vec<f32>> {
        (0..500)
            .map(|i| {
                let v: Vec<f32> =
                    (0..d).map(|j| ((i * 7919 + j * j * 104_729) % 1009) as f32 - 504.0).collect();
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.into_iter().map(|x| x / n).collect()
            })
            .collect()
    }

    fn batcher(vectors: &[Vec<f32>], batching: Batching) -> Batcher {
        let d = vectors[0].len();
        let mut index = ShardIndex::new(d, &IndexSpec::flat()).expect("index");
        for (i, v) in vectors.iter().enumerate() {
            index.replace_subject(&format!("s{i}"), &[(i as i64, v)]).expect("add");
        }
        Batcher::start(Arc::new(Mutex::new(index)), d, batching)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_search_does_not_wait_for_company() {
        let vectors = vectors(16);
        // A wait no test outlives: a lone search that waited would hit the bound below.
        let batching = Batching { wait: Duration::from_secs(3600), max_queries: 16, threads: 1 };
        let batcher = batcher(&vectors, batching);
        for i in [3, 7, 11] {
            let answer = tokio::time::timeout(Duration::from_secs(60), batcher.search(vectors[i].clone(), 1))
                .await
                .expect("a lone search runs without waiting")
                .expect("answer");
            assert_eq!(&*answer[0][0].subject, format!("s{i}"));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_searches_are_batched_and_each_gets_its_own_answer() {
        let vectors = vectors(16);
        let batching = Batching { wait: Duration::from_millis(20), max_queries: 16, threads: 2 };
        let batcher = Arc::new(batcher(&vectors, batching));
        let searches: Vec<_> = (0..40)
            .map(|i| {
                let (batcher, query) = (batcher.clone(), vectors[i * 11].clone());
                tokio::spawn(async move { (i, batcher.search(query, 1 + i % 5).await) })
            })
            .collect();
        for search in searches {
            let (i, answer) = search.await.expect("task");
            let answer = answer.expect("answer");
            assert_eq!(answer.len(), 1);
            assert_eq!(answer[0].len(), 1 + i % 5, "each caller gets its own k");
            assert_eq!(
                &*answer[0][0].subject,
                format!("s{}", i * 11),
                "each caller gets its own query's answer"
            );
        }
    }
}
