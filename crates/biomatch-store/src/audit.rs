//! [`AuditStore`] over SQL.

use crate::sql::{Backend, WriteLock, to_i64, to_u64};
use crate::{
    AuditLeafRow, AuditQuery, AuditStore, CheckpointRow, NewAuditLeaf, SqlStore, StoreError, Written,
};
use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use std::collections::HashMap;

const LEAF_COLUMNS: &str = "idx, leaf, leaf_hash, chain_hash, appended_at";

fn leaf_from_row(row: &AnyRow) -> Result<AuditLeafRow, StoreError> {
    Ok(AuditLeafRow {
        index: to_u64(row.try_get("idx")?)?,
        leaf: row.try_get("leaf")?,
        leaf_hash: row.try_get("leaf_hash")?,
        chain_hash: row.try_get("chain_hash")?,
        appended_at_ms: row.try_get("appended_at")?,
    })
}

fn checkpoint_from_row(row: &AnyRow) -> Result<CheckpointRow, StoreError> {
    Ok(CheckpointRow {
        tree_size: to_u64(row.try_get("tree_size")?)?,
        root_hash: row.try_get("root_hash")?,
        note: row.try_get("note")?,
        signed_at_ms: row.try_get("signed_at")?,
    })
}

/// Rows per multi-row statement: a commit of many appends is a few statements, not one per leaf
/// and subject, and stays far below the bound-parameter limits (SQLite 32,766, PostgreSQL 65,535).
const ROWS_PER_STATEMENT: usize = 500;

/// The `n`th (1-based) of a statement's parameters, each bound once and in order. SQLite gets
/// anonymous `?`s: with numbered ones it looks each number up in a list of every name of the
/// statement, when parsing and again when binding, which made binding a commit's multi-row
/// inserts the audit role's largest SQLite cost (5 % of an identify's CPU in `perf`).
fn parameter(backend: Backend, n: usize) -> String {
    match backend {
        Backend::Sqlite => "?".to_owned(),
        Backend::Postgres => format!("${n}"),
    }
}

/// `($1, $2), ($3, $4), ...`: placeholders for `rows` rows of `columns` values.
fn value_rows(backend: Backend, rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|r| {
            let row: Vec<String> = (1..=columns).map(|c| parameter(backend, r * columns + c)).collect();
            format!("({})", row.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The leaves already written under any of `keys`, by key.
async fn stored_keys(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    keys: &[&str],
) -> Result<HashMap<String, AuditLeafRow>, StoreError> {
    let mut stored = HashMap::new();
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let list: Vec<String> = (1..=chunk.len()).map(|i| parameter(backend, i)).collect();
        let sql = format!(
            "SELECT {LEAF_COLUMNS}, idempotency_key FROM audit_leaves WHERE idempotency_key IN ({})",
            list.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for key in chunk {
            query = query.bind(*key);
        }
        for row in query.fetch_all(&mut **tx).await? {
            stored.insert(row.try_get::<String, _>("idempotency_key")?, leaf_from_row(&row)?);
        }
    }
    Ok(stored)
}

/// Writes `(leaf, index, chain hash)` rows and the subjects each leaf names.
async fn insert_leaves(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    leaves: &[(NewAuditLeaf, u64, Vec<u8>)],
) -> Result<(), StoreError> {
    for chunk in leaves.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO audit_leaves (idx, idempotency_key, leaf, leaf_hash, chain_hash, appended_at, \
             actor_subject, operation, gallery, case_ref, request_id) VALUES {}",
            value_rows(backend, chunk.len(), 11)
        );
        let mut query = sqlx::query(&sql);
        for (leaf, index, chain_hash) in chunk {
            query = query
                .bind(to_i64(*index))
                .bind(&leaf.idempotency_key)
                .bind(&leaf.leaf)
                .bind(&leaf.leaf_hash)
                .bind(chain_hash)
                .bind(leaf.appended_at_ms)
                .bind(&leaf.actor_subject)
                .bind(&leaf.operation)
                .bind(&leaf.gallery)
                .bind(&leaf.case_ref)
                .bind(&leaf.request_id);
        }
        query.execute(&mut **tx).await?;
    }
    let mut subjects: Vec<(i64, &str)> = leaves
        .iter()
        .flat_map(|(leaf, index, _)| leaf.subject_ids.iter().map(|s| (to_i64(*index), s.as_str())))
        .collect();
    subjects.sort_unstable();
    subjects.dedup();
    for chunk in subjects.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO audit_leaf_subjects (idx, subject_id) VALUES {}",
            value_rows(backend, chunk.len(), 2)
        );
        let mut query = sqlx::query(&sql);
        for (index, subject) in chunk {
            query = query.bind(*index).bind(*subject);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

#[async_trait]
impl AuditStore for SqlStore {
    async fn append_leaves(
        &self,
        leaves: Vec<NewAuditLeaf>,
        chain: for<'h> fn(previous: &'h [u8], leaf_hash: &'h [u8]) -> Vec<u8>,
    ) -> Result<Vec<Written<AuditLeafRow>>, StoreError> {
        let mut tx = self.begin_write(WriteLock::AuditLog).await?;
        let last = sqlx::query("SELECT idx, chain_hash FROM audit_leaves ORDER BY idx DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
        let (mut next, mut previous) = match last {
            Some(row) => (to_u64(row.try_get("idx")?)? + 1, row.try_get::<Vec<u8>, _>("chain_hash")?),
            None => (0, Vec::new()),
        };
        let keys: Vec<&str> = leaves.iter().filter_map(|l| l.idempotency_key.as_deref()).collect();
        let stored = stored_keys(&mut tx, self.backend, &keys).await?;
        let mut results: Vec<Written<AuditLeafRow>> = Vec::with_capacity(leaves.len());
        // Where each key of this batch was first written, in `results`.
        let mut batch_keys: HashMap<String, usize> = HashMap::new();
        let mut new_leaves: Vec<(NewAuditLeaf, u64, Vec<u8>)> = Vec::with_capacity(leaves.len());
        for leaf in leaves {
            if let Some(key) = &leaf.idempotency_key {
                let earlier = batch_keys.get(key).map(|&at| results[at].value.clone());
                if let Some(value) = earlier.or_else(|| stored.get(key).cloned()) {
                    results.push(Written { value, replayed: true });
                    continue;
                }
                batch_keys.insert(key.clone(), results.len());
            }
            let chain_hash = chain(&previous, &leaf.leaf_hash);
            previous = chain_hash.clone();
            results.push(Written {
                value: AuditLeafRow {
                    index: next,
                    leaf: leaf.leaf.clone(),
                    leaf_hash: leaf.leaf_hash.clone(),
                    chain_hash: chain_hash.clone(),
                    appended_at_ms: leaf.appended_at_ms,
                },
                replayed: false,
            });
            new_leaves.push((leaf, next, chain_hash));
            next += 1;
        }
        insert_leaves(&mut tx, self.backend, &new_leaves).await?;
        crate::error::commit(tx).await?;
        Ok(results)
    }

    async fn leaves(&self, start: u64, count: u32) -> Result<Vec<AuditLeafRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {LEAF_COLUMNS} FROM audit_leaves WHERE idx >= $1 ORDER BY idx LIMIT $2"
        ))
        .bind(to_i64(start))
        .bind(i64::from(count))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(leaf_from_row).collect()
    }

    async fn leaf_hashes(&self, start: u64, count: u32) -> Result<Vec<Vec<u8>>, StoreError> {
        let hashes =
            sqlx::query_scalar("SELECT leaf_hash FROM audit_leaves WHERE idx >= $1 ORDER BY idx LIMIT $2")
                .bind(to_i64(start))
                .bind(i64::from(count))
                .fetch_all(&self.read)
                .await?;
        Ok(hashes)
    }

    async fn leaf_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_leaves").fetch_one(&self.read).await?;
        to_u64(n)
    }

    async fn leaf_by_key(&self, idempotency_key: &str) -> Result<Option<AuditLeafRow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {LEAF_COLUMNS} FROM audit_leaves WHERE idempotency_key = $1"))
            .bind(idempotency_key)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(leaf_from_row).transpose()
    }

    async fn query_leaves(&self, q: &AuditQuery) -> Result<Vec<AuditLeafRow>, StoreError> {
        let (cursor, order) = if q.descending { ("<", "DESC") } else { (">", "ASC") };
        let sql = format!(
            "SELECT {LEAF_COLUMNS} FROM audit_leaves a WHERE \
             ($1 = '' OR a.actor_subject = $1) AND ($2 = '' OR a.operation = $2) AND ($3 = '' OR a.gallery = $3) \
             AND ($4 = '' OR EXISTS (SELECT 1 FROM audit_leaf_subjects s WHERE s.idx = a.idx AND s.subject_id = $4)) \
             AND a.appended_at >= $5 AND a.appended_at <= $6 AND a.idx {cursor} $7 \
             AND ($9 = '' OR a.case_ref = $9) AND ($10 = '' OR a.request_id = $10) \
             ORDER BY a.idx {order} LIMIT $8"
        );
        let after = match (q.after, q.descending) {
            (Some(a), _) => to_i64(a),
            (None, false) => -1,
            (None, true) => i64::MAX,
        };
        let rows = sqlx::query(&sql)
            .bind(&q.actor_subject)
            .bind(&q.operation)
            .bind(&q.gallery)
            .bind(&q.subject_id)
            .bind(q.from_ms.unwrap_or(i64::MIN))
            .bind(q.to_ms.unwrap_or(i64::MAX))
            .bind(after)
            // A page of up to 1,000 leaves plus one that says whether there is more (clamping
            // at 1,000 made a full page look like the last one).
            .bind(i64::from(q.limit.clamp(1, 1001)))
            .bind(&q.case_ref)
            .bind(&q.request_id)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(leaf_from_row).collect()
    }

    async fn add_checkpoint(&self, c: &CheckpointRow) -> Result<(), StoreError> {
        let mut tx = self.begin_write(WriteLock::AuditLog).await?;
        sqlx::query(
            "INSERT INTO audit_checkpoints (tree_size, root_hash, note, signed_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tree_size) DO NOTHING",
        )
        .bind(to_i64(c.tree_size))
        .bind(&c.root_hash)
        .bind(&c.note)
        .bind(c.signed_at_ms)
        .execute(&mut *tx)
        .await?;
        crate::error::commit(tx).await?;
        Ok(())
    }

    async fn checkpoints(&self, after_size: u64, limit: u32) -> Result<Vec<CheckpointRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT tree_size, root_hash, note, signed_at FROM audit_checkpoints WHERE tree_size > $1 \
             ORDER BY tree_size LIMIT $2",
        )
        .bind(to_i64(after_size))
        .bind(i64::from(limit.clamp(1, 10_000)))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(checkpoint_from_row).collect()
    }

    async fn latest_checkpoint(&self) -> Result<Option<CheckpointRow>, StoreError> {
        let row = sqlx::query(
            "SELECT tree_size, root_hash, note, signed_at FROM audit_checkpoints ORDER BY tree_size DESC LIMIT 1",
        )
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(checkpoint_from_row).transpose()
    }
}
