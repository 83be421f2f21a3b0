-- Gallery store
CREATE TABLE galleries (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    dimension BIGINT NOT NULL,
    shard_count BIGINT NOT NULL,
    index_spec TEXT NOT NULL,
    model_id TEXT NOT NULL,
    model_version TEXT NOT NULL,
    threshold DOUBLE PRECISION NOT NULL,
    threshold_version BIGINT NOT NULL,
    allowed_purposes TEXT NOT NULL,
    retention_seconds BIGINT NOT NULL,
    default_k BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE subjects (
    gallery_id BIGINT NOT NULL,
    subject_id TEXT NOT NULL,
    shard BIGINT NOT NULL,
    model_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    expires_at BIGINT,
    PRIMARY KEY (gallery_id, subject_id)
);

CREATE TABLE templates (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    gallery_id BIGINT NOT NULL,
    subject_id TEXT NOT NULL,
    shard BIGINT NOT NULL,
    vector BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX templates_by_subject ON templates (gallery_id, subject_id);
CREATE INDEX templates_by_shard ON templates (gallery_id, shard, id);

CREATE TABLE changes (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    gallery_id BIGINT NOT NULL,
    shard BIGINT NOT NULL,
    subject_id TEXT NOT NULL,
    op TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE idempotency (
    key TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Audit store
CREATE TABLE audit_leaves (
    idx BIGINT PRIMARY KEY,
    idempotency_key TEXT UNIQUE,
    leaf BYTEA NOT NULL,
    leaf_hash BYTEA NOT NULL,
    chain_hash BYTEA NOT NULL,
    appended_at BIGINT NOT NULL,
    actor_subject TEXT NOT NULL,
    operation TEXT NOT NULL,
    gallery TEXT NOT NULL
);
CREATE INDEX audit_by_time ON audit_leaves (appended_at);

CREATE TABLE audit_leaf_subjects (
    idx BIGINT NOT NULL,
    subject_id TEXT NOT NULL,
    PRIMARY KEY (subject_id, idx)
);
