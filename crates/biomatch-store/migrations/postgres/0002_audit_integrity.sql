-- Signed checkpoints of the audit log's Merkle tree.
CREATE TABLE audit_checkpoints (
    tree_size BIGINT PRIMARY KEY,
    root_hash BYTEA NOT NULL,
    note TEXT NOT NULL,
    signed_at BIGINT NOT NULL
);

-- The audit log is append-only, for its owner too: UPDATE, DELETE and TRUNCATE raise.
CREATE FUNCTION biomatch_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only' USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_leaves_append_only BEFORE UPDATE OR DELETE ON audit_leaves
    FOR EACH ROW EXECUTE FUNCTION biomatch_audit_append_only();
CREATE TRIGGER audit_leaves_no_truncate BEFORE TRUNCATE ON audit_leaves
    FOR EACH STATEMENT EXECUTE FUNCTION biomatch_audit_append_only();
CREATE TRIGGER audit_subjects_append_only BEFORE UPDATE OR DELETE ON audit_leaf_subjects
    FOR EACH ROW EXECUTE FUNCTION biomatch_audit_append_only();
CREATE TRIGGER audit_subjects_no_truncate BEFORE TRUNCATE ON audit_leaf_subjects
    FOR EACH STATEMENT EXECUTE FUNCTION biomatch_audit_append_only();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION biomatch_audit_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION biomatch_audit_append_only();

-- The role the audit service runs as in a cluster: it may read and append, nothing else.
-- Roles are cluster-wide, so another database may have created it already.
DO $$
BEGIN
    CREATE ROLE biomatch_audit NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END;
$$;
GRANT SELECT, INSERT ON audit_leaves, audit_leaf_subjects, audit_checkpoints TO biomatch_audit;
