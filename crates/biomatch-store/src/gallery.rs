//! [`GalleryStore`] over SQL.

use crate::sql::{WriteLock, to_i64, to_u32, to_u64};
use crate::{
    AttemptFate, Change, ChangeOp, DeletedGallery, EnrollResult, EnrollWrite, ExpiredSubject, GalleryCounts,
    GalleryRecord, GalleryStore, Idempotency, PurgedSubject, SqlStore, StoreError, SubjectRecord,
    TemplateRow, Written,
};
use async_trait::async_trait;
use biomatch_domain::{Gallery, GalleryName, SearchTuning, SubjectId, ThresholdPolicy};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use std::collections::HashSet;

#[path = "enroll.rs"]
pub(crate) mod enroll;

const GALLERY_COLUMNS: &str = "g.id, g.key_ref, g.name, g.dimension, g.shard_count, g.index_spec, g.model_id, \
     g.model_version, g.threshold, g.threshold_version, g.allowed_purposes, g.retention_seconds, \
     g.default_k, g.created_at, g.search_tuning, g.threshold_policy";

fn gallery_from_row(row: &AnyRow) -> Result<GalleryRecord, StoreError> {
    let index: String = row.try_get("index_spec")?;
    let purposes: String = row.try_get("allowed_purposes")?;
    let name: String = row.try_get("name")?;
    let settings = Gallery {
        name: GalleryName::parse(&name).map_err(|e| StoreError::Corrupt(format!("gallery name: {e}")))?,
        dimension: to_u32(row.try_get("dimension")?)?,
        shard_count: to_u32(row.try_get("shard_count")?)?,
        index: serde_json::from_str(&index).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        model_id: row.try_get("model_id")?,
        model_version: row.try_get("model_version")?,
        threshold: row.try_get::<f64, _>("threshold")? as f32,
        threshold_version: to_u32(row.try_get("threshold_version")?)?,
        allowed_purposes: serde_json::from_str(&purposes).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        retention_seconds: row.try_get("retention_seconds")?,
        default_k: to_u32(row.try_get("default_k")?)?,
        created_at_ms: row.try_get("created_at")?,
    };
    Ok(GalleryRecord {
        id: row.try_get("id")?,
        key_ref: row.try_get("key_ref")?,
        settings,
        tuning: optional_json(row, "search_tuning")?,
        threshold_policy: optional_json(row, "threshold_policy")?,
    })
}

/// A JSON column that is empty when unset.
fn optional_json<T: serde::de::DeserializeOwned>(
    row: &AnyRow,
    column: &str,
) -> Result<Option<T>, StoreError> {
    let text: String = row.try_get(column)?;
    match text.as_str() {
        "" => Ok(None),
        json => {
            serde_json::from_str(json).map(Some).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
        }
    }
}

fn optional_json_text<T: serde::Serialize>(value: Option<&T>) -> Result<String, StoreError> {
    value.map_or(Ok(String::new()), |v| serde_json::to_string(v).map_err(corrupt))
}

fn template_from_row(row: &AnyRow) -> Result<TemplateRow, StoreError> {
    Ok(TemplateRow {
        id: row.try_get("id")?,
        subject_id: row.try_get("subject_id")?,
        shard: to_u32(row.try_get("shard")?)?,
        vector: row.try_get("vector")?,
    })
}

async fn append_change(
    tx: &mut Transaction<'static, Any>,
    gallery_id: i64,
    shard: u32,
    subject: &str,
    op: ChangeOp,
    now_ms: i64,
) -> Result<u64, StoreError> {
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO changes (gallery_id, shard, subject_id, op, created_at) VALUES ($1, $2, $3, $4, $5) \
         RETURNING seq",
    )
    .bind(gallery_id)
    .bind(i64::from(shard))
    .bind(subject)
    .bind(op.as_str())
    .bind(now_ms)
    .fetch_one(&mut **tx)
    .await?;
    to_u64(seq)
}

/// Looks the key up: `Some(response)` when it was used by the same request before.
async fn check_idempotency(
    tx: &mut Transaction<'static, Any>,
    idem: &Idempotency,
) -> Result<Option<String>, StoreError> {
    let row = sqlx::query("SELECT request_hash, response FROM idempotency WHERE key = $1")
        .bind(&idem.key)
        .fetch_optional(&mut **tx)
        .await?;
    idempotent(row, idem)
}

/// The stored response of `idem`'s key, if the same request used it.
fn idempotent(row: Option<AnyRow>, idem: &Idempotency) -> Result<Option<String>, StoreError> {
    match row {
        None => Ok(None),
        Some(row) => {
            let hash: String = row.try_get("request_hash")?;
            if hash != idem.request_hash {
                return Err(StoreError::IdempotencyConflict(idem.key.clone()));
            }
            Ok(Some(row.try_get("response")?))
        }
    }
}

async fn remember_idempotency(
    tx: &mut Transaction<'static, Any>,
    idem: &Idempotency,
    response: String,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO idempotency (key, request_hash, response, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&idem.key)
        .bind(&idem.request_hash)
        .bind(response)
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

#[async_trait]
impl GalleryStore for SqlStore {
    async fn create_gallery(
        &self,
        spec: &Gallery,
        policy: Option<&ThresholdPolicy>,
        key_ref: &str,
        idempotency: Option<&Idempotency>,
        now_ms: i64,
    ) -> Result<Written<GalleryRecord>, StoreError> {
        let mut tx = self.begin_write(WriteLock::ChangeLog).await?;
        if let Some(idem) = idempotency
            && let Some(response) = check_idempotency(&mut tx, idem).await?
        {
            drop(tx);
            // The gallery this request made, by its id: not whatever has the name now.
            let id: i64 = response.parse().map_err(|_| StoreError::Corrupt("idempotency response".into()))?;
            let made = self.gallery_by_id(id).await?;
            let made = made.ok_or_else(|| StoreError::GalleryNotFound(spec.name.to_string()))?;
            return Ok(Written { value: made, replayed: true });
        }
        let taken: Option<i64> = sqlx::query_scalar("SELECT id FROM galleries WHERE name = $1")
            .bind(spec.name.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if taken.is_some() {
            return Err(StoreError::GalleryExists(spec.name.to_string()));
        }
        sqlx::query(
            "INSERT INTO galleries (name, dimension, shard_count, index_spec, model_id, model_version, \
             threshold, threshold_version, allowed_purposes, retention_seconds, default_k, created_at, key_ref, \
             threshold_policy) VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9, $10, $11, $12, $13)",
        )
        .bind(spec.name.as_str())
        .bind(i64::from(spec.dimension))
        .bind(i64::from(spec.shard_count))
        .bind(serde_json::to_string(&spec.index).map_err(corrupt)?)
        .bind(&spec.model_id)
        .bind(&spec.model_version)
        .bind(f64::from(spec.threshold))
        .bind(serde_json::to_string(&spec.allowed_purposes).map_err(corrupt)?)
        .bind(spec.retention_seconds)
        .bind(i64::from(spec.default_k))
        .bind(now_ms)
        .bind(key_ref)
        .bind(optional_json_text(policy)?)
        .execute(&mut *tx)
        .await?;
        let id: i64 = sqlx::query_scalar("SELECT id FROM galleries WHERE name = $1")
            .bind(spec.name.as_str())
            .fetch_one(&mut *tx)
            .await?;
        append_change(&mut tx, id, 0, "", ChangeOp::CreateGallery, now_ms).await?;
        if let Some(idem) = idempotency {
            remember_idempotency(&mut tx, idem, id.to_string(), now_ms).await?;
        }
        crate::error::commit(tx).await?;
        Ok(Written { value: self.gallery(&spec.name).await?, replayed: false })
    }

    async fn gallery(&self, name: &GalleryName) -> Result<GalleryRecord, StoreError> {
        let row = sqlx::query(&format!("SELECT {GALLERY_COLUMNS} FROM galleries g WHERE g.name = $1"))
            .bind(name.as_str())
            .fetch_optional(&self.read)
            .await?
            .ok_or_else(|| StoreError::GalleryNotFound(name.to_string()))?;
        gallery_from_row(&row)
    }

    async fn gallery_by_id(&self, id: i64) -> Result<Option<GalleryRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {GALLERY_COLUMNS} FROM galleries g WHERE g.id = $1"))
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(gallery_from_row).transpose()
    }

    async fn gallery_counts(&self, gallery_id: i64) -> Result<GalleryCounts, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM subjects WHERE gallery_id = $1) AS subjects, \
             (SELECT COUNT(*) FROM templates WHERE gallery_id = $1) AS templates",
        )
        .bind(gallery_id)
        .fetch_one(&self.read)
        .await?;
        Ok(GalleryCounts {
            subjects: to_u64(row.try_get("subjects")?)?,
            templates: to_u64(row.try_get("templates")?)?,
        })
    }

    async fn galleries(&self) -> Result<Vec<GalleryRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {GALLERY_COLUMNS} FROM galleries g ORDER BY g.name"))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(gallery_from_row).collect()
    }

    async fn set_threshold(
        &self,
        name: &GalleryName,
        threshold: f32,
        policy: Option<&ThresholdPolicy>,
        only_if: Option<&ThresholdPolicy>,
        now_ms: i64,
    ) -> Result<GalleryRecord, StoreError> {
        let mut tx = self.begin_write(WriteLock::ChangeLog).await?;
        let row = sqlx::query("SELECT id, threshold, threshold_policy FROM galleries WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::GalleryNotFound(name.to_string()))?;
        let id: i64 = row.try_get("id")?;
        if let Some(expected) = only_if {
            let stored: Option<ThresholdPolicy> = optional_json(&row, "threshold_policy")?;
            if stored.as_ref() != Some(expected) {
                return Err(StoreError::ThresholdChanged(name.to_string()));
            }
        }
        let changed = row.try_get::<f64, _>("threshold")? as f32 != threshold;
        sqlx::query(
            "UPDATE galleries SET threshold = $1, threshold_version = threshold_version + $2, \
             threshold_policy = $3 WHERE id = $4",
        )
        .bind(f64::from(threshold))
        .bind(i64::from(changed))
        .bind(optional_json_text(policy)?)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        // Roles that cache the settings learn of the change through the log.
        if changed {
            append_change(&mut tx, id, 0, "", ChangeOp::Settings, now_ms).await?;
        }
        crate::error::commit(tx).await?;
        self.gallery(name).await
    }

    async fn set_search_tuning(
        &self,
        name: &GalleryName,
        tuning: &SearchTuning,
        now_ms: i64,
    ) -> Result<GalleryRecord, StoreError> {
        let mut tx = self.begin_write(WriteLock::ChangeLog).await?;
        let row = sqlx::query("SELECT id, search_tuning FROM galleries WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::GalleryNotFound(name.to_string()))?;
        let id: i64 = row.try_get("id")?;
        let before: Option<SearchTuning> = optional_json(&row, "search_tuning")?;
        let version = before.map_or(0, |t| t.version);
        let tuning = SearchTuning { version: version + 1, ..tuning.clone() };
        sqlx::query("UPDATE galleries SET search_tuning = $1 WHERE id = $2")
            .bind(serde_json::to_string(&tuning).map_err(corrupt)?)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        append_change(&mut tx, id, 0, "", ChangeOp::Settings, now_ms).await?;
        crate::error::commit(tx).await?;
        self.gallery(name).await
    }

    async fn delete_gallery(
        &self,
        name: &GalleryName,
        idempotency: Option<&Idempotency>,
        now_ms: i64,
    ) -> Result<Written<DeletedGallery>, StoreError> {
        let mut tx = self.begin_write(WriteLock::ChangeLog).await?;
        if let Some(idem) = idempotency
            && let Some(response) = check_idempotency(&mut tx, idem).await?
        {
            return Ok(Written { value: serde_json::from_str(&response).map_err(corrupt)?, replayed: true });
        }
        let row = sqlx::query("SELECT id, key_ref FROM galleries WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::GalleryNotFound(name.to_string()))?;
        let id: i64 = row.try_get("id")?;
        let key_ref: String = row.try_get("key_ref")?;
        for table in ["templates", "subjects", "changes"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE gallery_id = $1"))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM galleries WHERE id = $1").bind(id).execute(&mut *tx).await?;
        let change_seq = append_change(&mut tx, id, 0, "", ChangeOp::DropGallery, now_ms).await?;
        let deleted = DeletedGallery { change_seq, key_ref };
        if let Some(idem) = idempotency {
            remember_idempotency(&mut tx, idem, serde_json::to_string(&deleted).map_err(corrupt)?, now_ms)
                .await?;
        }
        crate::error::commit(tx).await?;
        Ok(Written { value: deleted, replayed: false })
    }

    async fn idempotent_response(&self, idem: &Idempotency) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT request_hash, response FROM idempotency WHERE key = $1")
            .bind(&idem.key)
            .fetch_optional(&self.read)
            .await?;
        idempotent(row, idem)
    }

    async fn conflicting_keys(&self, items: &[Idempotency]) -> Result<HashSet<String>, StoreError> {
        enroll::conflicting_keys(self, items).await
    }

    async fn enroll(
        &self,
        gallery: &GalleryRecord,
        items: &[EnrollWrite],
        now_ms: i64,
    ) -> Result<Vec<Result<Written<EnrollResult>, StoreError>>, StoreError> {
        enroll::enroll(self, gallery, items, now_ms).await
    }

    async fn delete_subject(
        &self,
        gallery: &GalleryRecord,
        subject: &SubjectId,
        idempotency: Option<&Idempotency>,
        now_ms: i64,
    ) -> Result<Written<u64>, StoreError> {
        let mut tx = self.begin_write(WriteLock::ChangeLog).await?;
        if let Some(idem) = idempotency
            && let Some(response) = check_idempotency(&mut tx, idem).await?
        {
            return Ok(Written { value: serde_json::from_str(&response).map_err(corrupt)?, replayed: true });
        }
        let shard: i64 =
            sqlx::query_scalar("SELECT shard FROM subjects WHERE gallery_id = $1 AND subject_id = $2")
                .bind(gallery.id)
                .bind(subject.as_str())
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| StoreError::SubjectNotFound(subject.to_string()))?;
        for table in ["templates", "subjects"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE gallery_id = $1 AND subject_id = $2"))
                .bind(gallery.id)
                .bind(subject.as_str())
                .execute(&mut *tx)
                .await?;
        }
        let seq =
            append_change(&mut tx, gallery.id, to_u32(shard)?, subject.as_str(), ChangeOp::Delete, now_ms)
                .await?;
        if let Some(idem) = idempotency {
            remember_idempotency(&mut tx, idem, seq.to_string(), now_ms).await?;
        }
        crate::error::commit(tx).await?;
        Ok(Written { value: seq, replayed: false })
    }

    async fn subject(
        &self,
        gallery: &GalleryRecord,
        subject: &SubjectId,
    ) -> Result<SubjectRecord, StoreError> {
        let row = sqlx::query(
            "SELECT s.subject_id, s.shard, s.model_id, s.created_at, s.updated_at, s.expires_at, \
             (SELECT COUNT(*) FROM templates t WHERE t.gallery_id = s.gallery_id AND t.subject_id = s.subject_id) \
             AS template_count FROM subjects s WHERE s.gallery_id = $1 AND s.subject_id = $2",
        )
        .bind(gallery.id)
        .bind(subject.as_str())
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| StoreError::SubjectNotFound(subject.to_string()))?;
        Ok(SubjectRecord {
            subject_id: row.try_get("subject_id")?,
            shard: to_u32(row.try_get("shard")?)?,
            model_id: row.try_get("model_id")?,
            template_count: to_u32(row.try_get("template_count")?)?,
            created_at_ms: row.try_get("created_at")?,
            updated_at_ms: row.try_get("updated_at")?,
            expires_at_ms: row.try_get("expires_at")?,
        })
    }

    async fn expired(&self, now_ms: i64, limit: u32) -> Result<Vec<ExpiredSubject>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.gallery_id, g.name, s.subject_id FROM subjects s JOIN galleries g ON g.id = s.gallery_id \
             WHERE s.expires_at IS NOT NULL AND s.expires_at <= $1 ORDER BY s.expires_at LIMIT $2",
        )
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ExpiredSubject {
                    gallery_id: row.try_get("gallery_id")?,
                    gallery: row.try_get("name")?,
                    subject_id: row.try_get("subject_id")?,
                })
            })
            .collect()
    }

    async fn purge(
        &self,
        subjects: &[ExpiredSubject],
        now_ms: i64,
    ) -> Result<Vec<PurgedSubject>, StoreError> {
        let mut tx = self.begin_write(WriteLock::ChangeLog).await?;
        let mut purged = Vec::with_capacity(subjects.len());
        for expired in subjects {
            let shard: Option<i64> = sqlx::query_scalar(
                "SELECT shard FROM subjects WHERE gallery_id = $1 AND subject_id = $2 \
                 AND expires_at IS NOT NULL AND expires_at <= $3",
            )
            .bind(expired.gallery_id)
            .bind(&expired.subject_id)
            .bind(now_ms)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(shard) = shard else { continue };
            for table in ["templates", "subjects"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE gallery_id = $1 AND subject_id = $2"))
                    .bind(expired.gallery_id)
                    .bind(&expired.subject_id)
                    .execute(&mut *tx)
                    .await?;
            }
            let change_seq = append_change(
                &mut tx,
                expired.gallery_id,
                to_u32(shard)?,
                &expired.subject_id,
                ChangeOp::Delete,
                now_ms,
            )
            .await?;
            purged.push(PurgedSubject {
                gallery: expired.gallery.clone(),
                subject_id: expired.subject_id.clone(),
                change_seq,
            });
        }
        crate::error::commit(tx).await?;
        Ok(purged)
    }

    async fn settle_attempt(&self, id: &str, idempotency_keys: &[String]) -> Result<AttemptFate, StoreError> {
        crate::attempts::settle(self, id, idempotency_keys).await
    }

    async fn forget_old_attempts(&self) -> Result<u64, StoreError> {
        crate::attempts::forget_old(self).await
    }

    async fn head_seq(&self) -> Result<u64, StoreError> {
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT MAX(seq) FROM changes").fetch_one(&self.read).await?;
        to_u64(seq.unwrap_or(0))
    }

    async fn changes_after(&self, seq: u64, limit: u32) -> Result<Vec<Change>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, gallery_id, shard, subject_id, op FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(to_i64(seq))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                let op: String = row.try_get("op")?;
                Ok(Change {
                    seq: to_u64(row.try_get("seq")?)?,
                    gallery_id: row.try_get("gallery_id")?,
                    shard: to_u32(row.try_get("shard")?)?,
                    subject_id: row.try_get("subject_id")?,
                    op: ChangeOp::parse(&op)
                        .ok_or_else(|| StoreError::Corrupt(format!("change op {op:?}")))?,
                })
            })
            .collect()
    }

    async fn subject_templates(
        &self,
        gallery_id: i64,
        subject: &str,
    ) -> Result<Vec<TemplateRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, subject_id, shard, vector FROM templates WHERE gallery_id = $1 AND subject_id = $2 \
             ORDER BY id",
        )
        .bind(gallery_id)
        .bind(subject)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(template_from_row).collect()
    }

    async fn shard_templates(
        &self,
        gallery_id: i64,
        shard: u32,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<TemplateRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, subject_id, shard, vector FROM templates WHERE gallery_id = $1 AND shard = $2 AND id > $3 \
             ORDER BY id LIMIT $4",
        )
        .bind(gallery_id)
        .bind(i64::from(shard))
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(template_from_row).collect()
    }
}
