-- One row per committed change, written in the change's own transaction, and one per attempt
-- settled as not made: the fence that lets the ingest role tell, once storage answers again,
-- whether a write it gave up on was made (see src/attempts.rs).
CREATE TABLE change_attempts (
    id TEXT PRIMARY KEY,
    fate TEXT NOT NULL,
    recorded_at INTEGER NOT NULL
);
CREATE INDEX change_attempts_recorded_at ON change_attempts (recorded_at);
