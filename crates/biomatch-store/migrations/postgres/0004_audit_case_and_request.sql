-- The case reference and request id of each leaf, as columns, so that a case's searches and a
-- search's reviews are found by index instead of by decoding every leaf. Leaves written before
-- this migration keep empty columns (their bytes, and so their hashes, are unchanged).
ALTER TABLE audit_leaves ADD COLUMN case_ref TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_leaves ADD COLUMN request_id TEXT NOT NULL DEFAULT '';
CREATE INDEX audit_by_case ON audit_leaves (case_ref, idx) WHERE case_ref <> '';
CREATE INDEX audit_by_request ON audit_leaves (request_id, idx) WHERE request_id <> '';
