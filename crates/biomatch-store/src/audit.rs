//! [`AuditStore`] over SQL.

use crate::sql::{WriteLock, to_i64, to_u64};
use crate::{
    AuditLeafRow, AuditQuery, AuditStore, CheckpointRow, NewAuditLeaf, SqlStore, StoreError, Written,
};
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

fn checkpoint_from_row(row: &AnyRow) -> Result<CheckpointRow, StoreError> {
    Ok(CheckpointRow {
        tree_size: to_u64(row.try_get("tree_size")?)?,
        root_hash: row.try_get("root_hash")?,
        note: row.try_get("note")?,
        signed_at_ms: row.try_get("signed_at")?,
    })
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
        let mut results: Vec<Written<AuditLeafRow>> = Vec::with_capacity(leaves.len());
        let mut batch_keys: Vec<(String, usize)> = Vec::new();
        for leaf in leaves {
            if let Some(key) = &leaf.idempotency_key {
                if let Some((_, at)) = batch_keys.iter().find(|(k, _)| k == key) {
                    let value = results[*at].value.clone();
                    results.push(Written { value, replayed: true });
                    continue;
                }
                let existing = sqlx::query(&format!(
                    "SELECT {LEAF_COLUMNS} FROM audit_leaves WHERE idempotency_key = $1"
                ))
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(row) = existing {
                    results.push(Written { value: leaf_from_row(&row)?, replayed: true });
                    continue;
                }
                batch_keys.push((key.clone(), results.len()));
            }
            let chain_hash = chain(&previous, &leaf.leaf_hash);
            sqlx::query(
                "INSERT INTO audit_leaves (idx, idempotency_key, leaf, leaf_hash, chain_hash, appended_at, \
                 actor_subject, operation, gallery) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(to_i64(next))
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
                sqlx::query("INSERT INTO audit_leaf_subjects (idx, subject_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(to_i64(next))
                    .bind(subject)
                    .execute(&mut *tx)
                    .await?;
            }
            previous = chain_hash.clone();
            results.push(Written {
                value: AuditLeafRow {
                    index: next,
                    leaf: leaf.leaf,
                    leaf_hash: leaf.leaf_hash,
                    chain_hash,
                    appended_at_ms: leaf.appended_at_ms,
                },
                replayed: false,
            });
            next += 1;
        }
        tx.commit().await?;
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
        tx.commit().await?;
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
