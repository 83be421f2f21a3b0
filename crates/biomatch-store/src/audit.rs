//! [`AuditStore`] over SQL.

use crate::sql::{WriteLock, to_i64, to_u64};
use crate::{AuditLeafRow, AuditQuery, AuditStore, NewAuditLeaf, SqlStore, StoreError, Written};
use async_trait::async_trait;
use sqlx::Row;
use sqlx::any::AnyRow;

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

#[async_trait]
impl AuditStore for SqlStore {
    async fn append_leaf(
        &self,
        leaf: NewAuditLeaf,
        chain: for<'h> fn(previous: &'h [u8], leaf_hash: &'h [u8]) -> Vec<u8>,
    ) -> Result<Written<AuditLeafRow>, StoreError> {
        let mut tx = self.begin_write(WriteLock::AuditLog).await?;
        if let Some(key) = &leaf.idempotency_key {
            let existing =
                sqlx::query(&format!("SELECT {LEAF_COLUMNS} FROM audit_leaves WHERE idempotency_key = $1"))
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(row) = existing {
                return Ok(Written { value: leaf_from_row(&row)?, replayed: true });
            }
        }
        let last = sqlx::query("SELECT idx, chain_hash FROM audit_leaves ORDER BY idx DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
        let (index, previous) = match last {
            Some(row) => (to_u64(row.try_get("idx")?)? + 1, row.try_get::<Vec<u8>, _>("chain_hash")?),
            None => (0, Vec::new()),
        };
        let chain_hash = chain(&previous, &leaf.leaf_hash);
        sqlx::query(
            "INSERT INTO audit_leaves (idx, idempotency_key, leaf, leaf_hash, chain_hash, appended_at, \
             actor_subject, operation, gallery) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(to_i64(index))
        .bind(&leaf.idempotency_key)
        .bind(&leaf.leaf)
        .bind(&leaf.leaf_hash)
        .bind(&chain_hash)
        .bind(leaf.appended_at_ms)
        .bind(&leaf.actor_subject)
        .bind(&leaf.operation)
        .bind(&leaf.gallery)
        .execute(&mut *tx)
        .await?;
        for subject in &leaf.subject_ids {
            sqlx::query(
                "INSERT INTO audit_leaf_subjects (idx, subject_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(to_i64(index))
            .bind(subject)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        let row = AuditLeafRow {
            index,
            leaf: leaf.leaf,
            leaf_hash: leaf.leaf_hash,
            chain_hash,
            appended_at_ms: leaf.appended_at_ms,
        };
        Ok(Written { value: row, replayed: false })
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

    async fn leaf_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_leaves").fetch_one(&self.read).await?;
        to_u64(n)
    }

    async fn query_leaves(&self, q: &AuditQuery) -> Result<Vec<AuditLeafRow>, StoreError> {
        let (cursor, order) = if q.descending { ("<", "DESC") } else { (">", "ASC") };
        let sql = format!(
            "SELECT {LEAF_COLUMNS} FROM audit_leaves a WHERE \
             ($1 = '' OR a.actor_subject = $1) AND ($2 = '' OR a.operation = $2) AND ($3 = '' OR a.gallery = $3) \
             AND ($4 = '' OR EXISTS (SELECT 1 FROM audit_leaf_subjects s WHERE s.idx = a.idx AND s.subject_id = $4)) \
             AND a.appended_at >= $5 AND a.appended_at <= $6 AND a.idx {cursor} $7 \
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
            .bind(i64::from(q.limit.clamp(1, 1000)))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(leaf_from_row).collect()
    }
}
