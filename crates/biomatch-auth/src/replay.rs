//! Single-use tokens: a `jti` is spent once. In this process by default; in Redis when configured,
//! so that a token spent at one search replica is refused at every other.

use crate::token::now_secs;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The longest a Redis command may take, reconnecting included, before the request it serves is
/// refused: while Redis is down or stalled, requests are refused within this (fail closed)
/// instead of being held until their callers give up.
pub const REDIS_DEADLINE: Duration = Duration::from_secs(2);

/// A connection to Redis at `url` that reconnects after failures, each attempt bounded.
pub async fn redis_connection(url: &str) -> Result<ConnectionManager, redis::RedisError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_millis(500))
        .set_response_timeout(Duration::from_millis(500))
        .set_number_of_retries(2)
        .set_max_delay(200);
    ConnectionManager::new_with_config(redis::Client::open(url)?, config).await
}

/// `query`'s answer, or an error when none came within [`REDIS_DEADLINE`].
pub async fn within_deadline<T>(
    query: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    tokio::time::timeout(REDIS_DEADLINE, query)
        .await
        .unwrap_or_else(|_| Err((redis::ErrorKind::IoError, "no answer within the deadline").into()))
}

/// Where spent `jti`s are remembered until their token expires.
pub enum ReplayStore {
    Local(Mutex<HashMap<String, u64>>),
    Shared { conn: redis::aio::ConnectionManager, prefix: String },
}

impl std::fmt::Debug for ReplayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Local(_) => "ReplayStore::Local",
            Self::Shared { .. } => "ReplayStore::Shared",
        })
    }
}

impl Default for ReplayStore {
    fn default() -> Self {
        Self::Local(Mutex::new(HashMap::new()))
    }
}

/// The store could not be asked; the token is refused (fail closed).
#[derive(Debug, thiserror::Error)]
#[error("the single-use token store is unreachable")]
pub struct ReplayUnavailable;

impl ReplayStore {
    /// Spent `jti`s kept in Redis under `prefix`.
    pub async fn shared(url: &str, prefix: &str) -> Result<Self, redis::RedisError> {
        Ok(Self::Shared { conn: redis_connection(url).await?, prefix: prefix.to_owned() })
    }

    /// True the first time `jti` is seen; remembered until `exp` (plus the validation leeway).
    pub async fn first_use(&self, jti: &str, exp: u64) -> Result<bool, ReplayUnavailable> {
        let keep_until = exp + 60;
        match self {
            Self::Local(seen) => {
                let mut seen = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if seen.len() > 100_000 {
                    let now = now_secs();
                    seen.retain(|_, until| *until >= now);
                }
                Ok(seen.insert(jti.to_owned(), keep_until).is_none())
            }
            Self::Shared { conn, prefix } => {
                let mut conn = conn.clone();
                let set: Option<String> = within_deadline(
                    redis::cmd("SET")
                        .arg(format!("{prefix}:jti:{jti}"))
                        .arg(1)
                        .arg("NX")
                        .arg("EXAT")
                        .arg(keep_until)
                        .query_async(&mut conn),
                )
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "single-use token store unreachable; refusing");
                    ReplayUnavailable
                })?;
                Ok(set.is_some())
            }
        }
    }
}
