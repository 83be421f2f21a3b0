//! Settling a change whose fate is unknown. When the store stops answering inside a write (the
//! caller gave up waiting, or the answer to its `COMMIT` was lost), the change may or may not
//! have been made, and a read of the data afterwards cannot tell for sure: a `COMMIT` still on
//! its way may land after the read. So every change is written as a named attempt:
//!
//! - [`as_attempt`] runs a write as attempt `id`; the one transaction it commits also inserts
//!   `id` into `change_attempts` (fate `made`), in the same commit as the change.
//! - [`GalleryStore::settle_attempt`](crate::GalleryStore::settle_attempt), once the store
//!   answers again, inserts `id` with fate `abandoned` unless it is there already. The primary
//!   key orders the two: if the change's transaction is still pending, the insert waits for it;
//!   if the settlement's insert lands first, the change's transaction can no longer commit. The
//!   answer is final either way.
//!
//! A request with idempotency keys may be made by one attempt and retried in another: settling
//! the retry's attempt then answers [`AttemptFate::Made`] when every key's record exists, since
//! the change that wrote them is the request's.
//!
//! Rows are kept for a day ([`KEPT_FOR_MS`]; the ingest role forgets older ones every hour):
//! long enough to settle any attempt, short enough that one row per change does not pile up.

use biomatch_domain::unix_ms as now_ms;
use sqlx::{Any, Transaction};
use std::future::Future;

/// Whether an attempt's change was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptFate {
    /// The change was committed.
    Made,
    /// The change was not made and now never will be.
    Abandoned,
}

/// How long attempts are remembered; settle within this.
pub const KEPT_FOR_MS: i64 = 24 * 3600 * 1000;

tokio::task_local! {
    static ATTEMPT: String;
}

/// Runs `write` (one call of a [`GalleryStore`](crate::GalleryStore) write method) as attempt `id`.
pub async fn as_attempt<F: Future>(id: &str, write: F) -> F::Output {
    ATTEMPT.scope(id.to_owned(), write).await
}

/// Inside [`as_attempt`], records the attempt in `tx` (called just before its commit).
pub(crate) async fn record(tx: &mut Transaction<'_, Any>) -> Result<(), sqlx::Error> {
    let Ok(id) = ATTEMPT.try_with(Clone::clone) else { return Ok(()) };
    sqlx::query("INSERT INTO change_attempts (id, fate, recorded_at) VALUES ($1, 'made', $2)")
        .bind(id)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Settles attempt `id` of a request with `idempotency_keys` (see the module's docs).
pub(crate) async fn settle(
    store: &crate::SqlStore,
    id: &str,
    idempotency_keys: &[String],
) -> Result<AttemptFate, crate::StoreError> {
    let now = now_ms();
    let fenced = sqlx::query(
        "INSERT INTO change_attempts (id, fate, recorded_at) VALUES ($1, 'abandoned', $2) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(now)
    .execute(&store.write)
    .await?
    .rows_affected()
        == 1;
    let fate = if fenced {
        AttemptFate::Abandoned
    } else {
        let fate: String = sqlx::query_scalar("SELECT fate FROM change_attempts WHERE id = $1")
            .bind(id)
            .fetch_one(&store.write)
            .await?;
        if fate == "made" { AttemptFate::Made } else { AttemptFate::Abandoned }
    };
    if fate == AttemptFate::Abandoned && !idempotency_keys.is_empty() {
        let keys: Vec<&str> = idempotency_keys.iter().map(String::as_str).collect();
        let mut conn = store.write.acquire().await?;
        if crate::gallery::enroll::stored_keys(&mut conn, &keys).await?.len() == keys.len() {
            return Ok(AttemptFate::Made);
        }
    }
    Ok(fate)
}

/// Forgets the attempts recorded more than [`KEPT_FOR_MS`] ago; returns how many.
pub(crate) async fn forget_old(store: &crate::SqlStore) -> Result<u64, crate::StoreError> {
    let removed = sqlx::query("DELETE FROM change_attempts WHERE recorded_at < $1")
        .bind(now_ms() - KEPT_FOR_MS)
        .execute(&store.write)
        .await?
        .rows_affected();
    Ok(removed)
}
