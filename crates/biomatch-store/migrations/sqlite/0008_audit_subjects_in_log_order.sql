-- The subjects each leaf names, kept in the order the log grows. Keyed (subject, leaf), every
-- subject an identify named was a write to a page of its own, anywhere in the index: a commit of
-- a hundred identifies that each listed ten candidates wrote about a thousand pages to the
-- write-ahead log, and that was most of the audit role's work under load. Keyed (leaf, subject),
-- a commit appends to the end. Subject queries are unchanged: SQLite checks (leaf, subject) for
-- each leaf it reads either way (`EXPLAIN QUERY PLAN` of `query_leaves`). PostgreSQL logs rows,
-- not pages, and keeps its (subject, leaf) key.
CREATE TABLE audit_leaf_subjects_by_leaf (
    idx INTEGER NOT NULL,
    subject_id TEXT NOT NULL,
    PRIMARY KEY (idx, subject_id)
) WITHOUT ROWID;
INSERT INTO audit_leaf_subjects_by_leaf (idx, subject_id)
    SELECT idx, subject_id FROM audit_leaf_subjects ORDER BY idx, subject_id;
DROP TABLE audit_leaf_subjects;
ALTER TABLE audit_leaf_subjects_by_leaf RENAME TO audit_leaf_subjects;
CREATE TRIGGER audit_subjects_no_update BEFORE UPDATE ON audit_leaf_subjects
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_subjects_no_delete BEFORE DELETE ON audit_leaf_subjects
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
