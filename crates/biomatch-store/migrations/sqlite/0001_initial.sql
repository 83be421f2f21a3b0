-- Gallery store
CREATE TABLE galleries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    dimension INTEGER NOT NULL,
    shard_count INTEGER NOT NULL,
    index_spec TEXT NOT NULL,
    model_id TEXT NOT NULL,
    model_version TEXT NOT NULL,
    threshold REAL NOT NULL,
    threshold_version INTEGER NOT NULL,
    allowed_purposes TEXT NOT NULL,
    retention_seconds INTEGER NOT NULL,
    default_k INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE subjects (
    gallery_id INTEGER NOT NULL,
    subject_id TEXT NOT NULL,
    shard INTEGER NOT NULL,
    model_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (gallery_id, subject_id)
);

CREATE TABLE templates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    gallery_id INTEGER NOT NULL,
    subject_id TEXT NOT NULL,
    shard INTEGER NOT NULL,
    vector BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX templates_by_subject ON templates (gallery_id, subject_id);
CREATE INDEX templates_by_shard ON templates (gallery_id, shard, id);

CREATE TABLE changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    gallery_id INTEGER NOT NULL,
    shard INTEGER NOT NULL,
    subject_id TEXT NOT NULL,
    op TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE idempotency (
    key TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- Audit store
CREATE TABLE audit_leaves (
    idx INTEGER PRIMARY KEY,
    idempotency_key TEXT UNIQUE,
    leaf BLOB NOT NULL,
    leaf_hash BLOB NOT NULL,
    chain_hash BLOB NOT NULL,
    appended_at INTEGER NOT NULL,
    actor_subject TEXT NOT NULL,
    operation TEXT NOT NULL,
    gallery TEXT NOT NULL
);
CREATE INDEX audit_by_time ON audit_leaves (appended_at);

CREATE TABLE audit_leaf_subjects (
    idx INTEGER NOT NULL,
    subject_id TEXT NOT NULL,
    PRIMARY KEY (subject_id, idx)
);
