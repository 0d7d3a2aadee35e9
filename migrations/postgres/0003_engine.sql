-- The engine: leases on runbooks, step kinds and logs, cancellation.

-- A runbook's work (planning, its steps one at a time) is done by the holder of its lease.
-- A lease not renewed in time expires, and another worker (or the same process restarted)
-- takes the runbook over.
CREATE TABLE runbook_leases (
    runbook_number  BIGINT PRIMARY KEY REFERENCES runbooks (number),
    owner           TEXT NOT NULL,
    expires_at      BIGINT NOT NULL
);

-- `plan`: the step that stands for a plan that could not be generated (it carries the error,
-- so the runbook reports `failed` instead of staying `generating_steps`).
ALTER TABLE steps ADD COLUMN kind TEXT NOT NULL DEFAULT 'work';
ALTER TABLE steps ADD COLUMN log TEXT;
ALTER TABLE steps ADD COLUMN branch TEXT;

ALTER TABLE runbooks ADD COLUMN cancel_requested_at BIGINT;
