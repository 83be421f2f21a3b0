//! [`GalleryStore::enroll`](crate::GalleryStore::enroll): a batch of enrolments in one write
//! transaction, each item succeeding or failing on its own.
//!
//! A bulk load is thousands of new subjects, one template and one idempotency key each. Written
//! item by item that is a savepoint and six statements per item, each a round trip; here the
//! batch is read in bulk first (stored keys, enrolled subjects), and every item that can only
//! succeed (a subject new to the gallery and named once in the batch, a key used once) is written
//! with a handful of multi-row statements. Replays and conflicts are answered from the bulk read.
//! What is left (a subject already enrolled, a subject or key named twice in the batch) takes the
//! per-item path under a savepoint, so one bad item still fails alone. Item failures (a key
//! conflict, a model mismatch) are found before anything is written; a database error fails the
//! whole batch, as it always has.

use super::{append_change, check_idempotency, corrupt, remember_idempotency};
use crate::sql::{WriteLock, to_u32, to_u64};
use crate::{ChangeOp, EnrollResult, EnrollWrite, GalleryRecord, Idempotency, SqlStore, StoreError, Written};
use sqlx::{Any, Row, Transaction};
use std::collections::{HashMap, HashSet};

/// Rows per multi-row statement: at most 3 parameters a row plus a few shared ones stays far
/// below SQLite's 32766 and PostgreSQL's 65535 bound parameters, and a statement of 512-d
/// templates stays near a megabyte.
const ROWS_PER_STATEMENT: usize = 500;

type ItemResult = Result<Written<EnrollResult>, StoreError>;

/// `$from, $from+1, ...` for `n` values.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// `($a, $b, $c), (...)`: `rows` tuples of `width` parameters numbered from `from`, each tuple
/// followed by the `shared` text (e.g. `, $1, $2`).
fn tuples(from: usize, rows: usize, width: usize, shared: &str) -> String {
    (0..rows)
        .map(|r| format!("({}{shared})", placeholders(from + r * width, width)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Stored `(request_hash, response)` of those of `keys` that were used before.
pub(crate) async fn stored_keys(
    conn: &mut sqlx::AnyConnection,
    keys: &[&str],
) -> Result<HashMap<String, (String, String)>, StoreError> {
    let mut stored = HashMap::new();
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT key, request_hash, response FROM idempotency WHERE key IN ({})",
            placeholders(1, chunk.len())
        );
        let mut query = sqlx::query(&sql);
        for key in chunk {
            query = query.bind(*key);
        }
        for row in query.fetch_all(&mut *conn).await? {
            stored.insert(row.try_get("key")?, (row.try_get("request_hash")?, row.try_get("response")?));
        }
    }
    Ok(stored)
}

/// The keys of those of `items` that another request used: read in bulk, outside a write
/// transaction, so a batch writer can refuse a reused key before it appends an intent leaf.
pub(super) async fn conflicting_keys(
    store: &SqlStore,
    items: &[Idempotency],
) -> Result<HashSet<String>, StoreError> {
    let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
    let mut conn = store.read.acquire().await?;
    let stored = stored_keys(&mut conn, &keys).await?;
    Ok(items
        .iter()
        .filter(|i| stored.get(&i.key).is_some_and(|(hash, _)| *hash != i.request_hash))
        .map(|i| i.key.clone())
        .collect())
}

/// Those of `subjects` already enrolled in the gallery.
async fn enrolled_subjects(
    tx: &mut Transaction<'static, Any>,
    gallery_id: i64,
    subjects: &[&str],
) -> Result<HashSet<String>, StoreError> {
    let mut enrolled = HashSet::new();
    for chunk in subjects.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT subject_id FROM subjects WHERE gallery_id = $1 AND subject_id IN ({})",
            placeholders(2, chunk.len())
        );
        // Planned for each call's values: a prepared statement's generic plan, chosen while the
        // table was small, looks the gallery up by `gallery_id` alone and filters every subject
        // of it, so each batch of a bulk load scanned the whole gallery (PostgreSQL: 9 s per
        // 2048 at 160,000 subjects).
        let mut query = sqlx::query_scalar::<_, String>(&sql).persistent(false).bind(gallery_id);
        for subject in chunk {
            query = query.bind(*subject);
        }
        enrolled.extend(query.fetch_all(&mut **tx).await?);
    }
    Ok(enrolled)
}

pub(super) async fn enroll(
    store: &SqlStore,
    gallery: &GalleryRecord,
    items: &[EnrollWrite],
    now_ms: i64,
) -> Result<Vec<ItemResult>, StoreError> {
    let mut tx = store.begin_write(WriteLock::ChangeLog).await?;
    let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM galleries WHERE id = $1")
        .bind(gallery.id)
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_none() {
        return Err(StoreError::GalleryNotFound(gallery.settings.name.to_string()));
    }
    let mut results: Vec<Option<ItemResult>> = items.iter().map(|_| None).collect();

    // Replays and conflicts, answered from one read of the batch's keys.
    let keys: Vec<&str> =
        items.iter().filter_map(|i| i.idempotency.as_ref().map(|k| k.key.as_str())).collect();
    let stored = stored_keys(&mut tx, &keys).await?;
    for (item, result) in items.iter().zip(&mut results) {
        let Some(idem) = &item.idempotency else { continue };
        let Some((hash, response)) = stored.get(&idem.key) else { continue };
        *result = Some(if *hash == idem.request_hash {
            serde_json::from_str(response).map(|value| Written { value, replayed: true }).map_err(corrupt)
        } else {
            Err(StoreError::IdempotencyConflict(idem.key.clone()))
        });
    }

    // The rest: bulk where the item can only succeed, item by item otherwise.
    let open: Vec<usize> = (0..items.len()).filter(|&i| results[i].is_none()).collect();
    let mut subject_uses: HashMap<&str, usize> = HashMap::new();
    let mut key_uses: HashMap<&str, usize> = HashMap::new();
    for &i in &open {
        *subject_uses.entry(items[i].subject.as_str()).or_default() += 1;
        if let Some(idem) = &items[i].idempotency {
            *key_uses.entry(idem.key.as_str()).or_default() += 1;
        }
    }
    let subjects: Vec<&str> = subject_uses.keys().copied().collect();
    let enrolled = enrolled_subjects(&mut tx, gallery.id, &subjects).await?;
    let (bulk, single): (Vec<usize>, Vec<usize>) = open.into_iter().partition(|&i| {
        let item = &items[i];
        let subject = item.subject.as_str();
        !enrolled.contains(subject)
            && subject_uses[subject] == 1
            && item.idempotency.as_ref().is_none_or(|k| key_uses[k.key.as_str()] == 1)
    });
    for i in single {
        results[i] = Some(enroll_alone(&mut tx, gallery, &items[i], now_ms).await?);
    }
    let bulk: Vec<&EnrollWrite> = bulk.iter().map(|&i| &items[i]).collect();
    let mut written = write_new_subjects(&mut tx, gallery, &bulk, now_ms).await?.into_iter();
    for result in &mut results {
        if result.is_none() {
            *result = written.next().map(|value| Ok(Written { value, replayed: false }));
        }
    }
    crate::error::commit(tx).await?;
    store.refresh_statistics(bulk.len() as u64);
    results
        .into_iter()
        .map(|r| r.ok_or_else(|| StoreError::Corrupt("an enrolment without a result".into())))
        .collect()
}

/// One item under its own savepoint: a failed item rolls back to it and leaves the others in the
/// batch intact; a database error fails the batch.
async fn enroll_alone(
    tx: &mut Transaction<'static, Any>,
    gallery: &GalleryRecord,
    item: &EnrollWrite,
    now_ms: i64,
) -> Result<ItemResult, StoreError> {
    sqlx::query("SAVEPOINT item").execute(&mut **tx).await?;
    match enroll_one(tx, gallery, item, now_ms).await {
        Ok(written) => {
            sqlx::query("RELEASE SAVEPOINT item").execute(&mut **tx).await?;
            Ok(Ok(written))
        }
        Err(StoreError::Database(e)) => Err(StoreError::Database(e)),
        Err(e) => {
            sqlx::query("ROLLBACK TO SAVEPOINT item").execute(&mut **tx).await?;
            sqlx::query("RELEASE SAVEPOINT item").execute(&mut **tx).await?;
            Ok(Err(e))
        }
    }
}

/// Enrols subjects new to the gallery, each named once, with multi-row statements; results in
/// `items`' order.
async fn write_new_subjects(
    tx: &mut Transaction<'static, Any>,
    gallery: &GalleryRecord,
    items: &[&EnrollWrite],
    now_ms: i64,
) -> Result<Vec<EnrollResult>, StoreError> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let expires_at =
        (gallery.settings.retention_seconds > 0).then(|| now_ms + gallery.settings.retention_seconds * 1000);
    for chunk in items.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO subjects (subject_id, shard, model_id, gallery_id, created_at, updated_at, expires_at) \
             VALUES {}",
            tuples(4, chunk.len(), 3, ", $1, $2, $2, $3")
        );
        let mut query = sqlx::query(&sql).bind(gallery.id).bind(now_ms).bind(expires_at);
        for item in chunk {
            query = query.bind(item.subject.as_str()).bind(i64::from(item.shard)).bind(&item.model_id);
        }
        query.execute(&mut **tx).await?;
    }
    let templates: Vec<(&EnrollWrite, &Vec<u8>)> =
        items.iter().flat_map(|item| item.sealed_templates.iter().map(move |t| (*item, t))).collect();
    for chunk in templates.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO templates (subject_id, shard, vector, gallery_id, created_at) VALUES {}",
            tuples(3, chunk.len(), 3, ", $1, $2")
        );
        let mut query = sqlx::query(&sql).bind(gallery.id).bind(now_ms);
        for (item, template) in chunk {
            query = query.bind(item.subject.as_str()).bind(i64::from(item.shard)).bind(*template);
        }
        query.execute(&mut **tx).await?;
    }
    let seqs = append_changes(tx, gallery.id, items, now_ms).await?;
    let results: Vec<EnrollResult> = items
        .iter()
        .map(|item| {
            let subject = item.subject.as_str();
            let change_seq =
                *seqs.get(subject).ok_or_else(|| StoreError::Corrupt(format!("no change for {subject}")))?;
            let added = u32::try_from(item.sealed_templates.len()).unwrap_or(u32::MAX);
            Ok(EnrollResult {
                subject_id: subject.to_owned(),
                templates_added: added,
                template_count: added,
                change_seq,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    let keyed: Vec<(&str, &str, String)> = items
        .iter()
        .zip(&results)
        .filter_map(|(item, result)| item.idempotency.as_ref().map(|k| (k, result)))
        .map(|(k, result)| {
            Ok((k.key.as_str(), k.request_hash.as_str(), serde_json::to_string(result).map_err(corrupt)?))
        })
        .collect::<Result<_, StoreError>>()?;
    for chunk in keyed.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO idempotency (key, request_hash, response, created_at) VALUES {}",
            tuples(2, chunk.len(), 3, ", $1")
        );
        let mut query = sqlx::query(&sql).bind(now_ms);
        for (key, hash, response) in chunk {
            query = query.bind(*key).bind(*hash).bind(response.as_str());
        }
        query.execute(&mut **tx).await?;
    }
    Ok(results)
}

/// One upsert change per item, in `items`' order, under the change-log lock the transaction
/// holds (so the numbers follow on from the last committed one); each subject's sequence number.
async fn append_changes(
    tx: &mut Transaction<'static, Any>,
    gallery_id: i64,
    items: &[&EnrollWrite],
    now_ms: i64,
) -> Result<HashMap<String, u64>, StoreError> {
    let mut seqs = HashMap::with_capacity(items.len());
    if items.len() == 1 {
        // The common single enrolment: the existing one-row statement.
        let item = items[0];
        let seq = append_change(tx, gallery_id, item.shard, item.subject.as_str(), ChangeOp::Upsert, now_ms)
            .await?;
        seqs.insert(item.subject.to_string(), seq);
        return Ok(seqs);
    }
    for chunk in items.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO changes (subject_id, shard, gallery_id, op, created_at) VALUES {} RETURNING seq, subject_id",
            tuples(4, chunk.len(), 2, ", $1, $2, $3")
        );
        let mut query = sqlx::query(&sql).bind(gallery_id).bind(ChangeOp::Upsert.as_str()).bind(now_ms);
        for item in chunk {
            query = query.bind(item.subject.as_str()).bind(i64::from(item.shard));
        }
        for row in query.fetch_all(&mut **tx).await? {
            seqs.insert(row.try_get("subject_id")?, to_u64(row.try_get("seq")?)?);
        }
    }
    Ok(seqs)
}

/// One enrolment, read and written row by row.
async fn enroll_one(
    tx: &mut Transaction<'static, Any>,
    gallery: &GalleryRecord,
    item: &EnrollWrite,
    now_ms: i64,
) -> Result<Written<EnrollResult>, StoreError> {
    if let Some(idem) = &item.idempotency
        && let Some(response) = check_idempotency(tx, idem).await?
    {
        return Ok(Written { value: serde_json::from_str(&response).map_err(corrupt)?, replayed: true });
    }
    let subject = item.subject.as_str();
    let existing: Option<String> =
        sqlx::query_scalar("SELECT model_id FROM subjects WHERE gallery_id = $1 AND subject_id = $2")
            .bind(gallery.id)
            .bind(subject)
            .fetch_optional(&mut **tx)
            .await?;
    let expires_at =
        (gallery.settings.retention_seconds > 0).then(|| now_ms + gallery.settings.retention_seconds * 1000);
    match existing {
        Some(model) if model != item.model_id => {
            return Err(StoreError::ModelMismatch {
                subject: subject.to_owned(),
                enrolled: model,
                given: item.model_id.clone(),
            });
        }
        Some(_) => {
            sqlx::query(
                "UPDATE subjects SET updated_at = $1, expires_at = $2 WHERE gallery_id = $3 AND subject_id = $4",
            )
            .bind(now_ms)
            .bind(expires_at)
            .bind(gallery.id)
            .bind(subject)
            .execute(&mut **tx)
            .await?;
        }
        None => {
            sqlx::query(
                "INSERT INTO subjects (gallery_id, subject_id, shard, model_id, created_at, updated_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $5, $6)",
            )
            .bind(gallery.id)
            .bind(subject)
            .bind(i64::from(item.shard))
            .bind(&item.model_id)
            .bind(now_ms)
            .bind(expires_at)
            .execute(&mut **tx)
            .await?;
        }
    }
    if item.replace {
        sqlx::query("DELETE FROM templates WHERE gallery_id = $1 AND subject_id = $2")
            .bind(gallery.id)
            .bind(subject)
            .execute(&mut **tx)
            .await?;
    }
    for template in &item.sealed_templates {
        sqlx::query(
            "INSERT INTO templates (gallery_id, subject_id, shard, vector, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(gallery.id)
        .bind(subject)
        .bind(i64::from(item.shard))
        .bind(template)
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
    }
    let count: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM templates WHERE gallery_id = $1 AND subject_id = $2")
            .bind(gallery.id)
            .bind(subject)
            .fetch_one(&mut **tx)
            .await?;
    let change_seq = append_change(tx, gallery.id, item.shard, subject, ChangeOp::Upsert, now_ms).await?;
    let result = EnrollResult {
        subject_id: subject.to_owned(),
        templates_added: u32::try_from(item.sealed_templates.len()).unwrap_or(u32::MAX),
        template_count: to_u32(count)?,
        change_seq,
    };
    if let Some(idem) = &item.idempotency {
        remember_idempotency(tx, idem, serde_json::to_string(&result).map_err(corrupt)?, now_ms).await?;
    }
    Ok(Written { value: result, replayed: false })
}
