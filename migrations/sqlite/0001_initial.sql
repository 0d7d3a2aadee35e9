-- Runbooks schema, SQLite dialect. Keep in step with migrations/postgres.
-- Times are Unix milliseconds; booleans are 0/1 integers.

CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO counters (name, value) VALUES ('runbook', 0);

CREATE TABLE api_tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL,
    -- SHA-256 of the token, hex. The token itself is never stored.
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE api_token_orgs (
    token_id  INTEGER NOT NULL REFERENCES api_tokens (id),
    -- Lower case: GitHub organisation names compare without regard to case.
    org       TEXT NOT NULL,
    PRIMARY KEY (token_id, org)
);

CREATE TABLE runbooks (
    number            INTEGER PRIMARY KEY,
    org               TEXT NOT NULL,
    repo              TEXT NOT NULL,
    title             TEXT NOT NULL,
    prompt            TEXT NOT NULL,
    oneshot           INTEGER NOT NULL,
    draft             INTEGER,
    pr_mode           TEXT,
    target_branch     TEXT,
    description       TEXT,
    labels            TEXT NOT NULL,
    author_email      TEXT,
    created_by_token  INTEGER REFERENCES api_tokens (id),
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX runbooks_by_repo ON runbooks (org, repo);

CREATE TABLE steps (
    runbook_number  INTEGER NOT NULL REFERENCES runbooks (number),
    number          TEXT NOT NULL,
    -- Plan order: a parent before its children, siblings by number, follow-ups after.
    position        INTEGER NOT NULL,
    title           TEXT NOT NULL,
    details         TEXT NOT NULL,
    is_leaf         INTEGER NOT NULL,
    state           TEXT NOT NULL,
    pr_number       INTEGER,
    commit_sha      TEXT,
    error           TEXT,
    started_at      INTEGER,
    finished_at     INTEGER,
    PRIMARY KEY (runbook_number, number)
);
CREATE UNIQUE INDEX steps_in_plan_order ON steps (runbook_number, position);

CREATE TABLE pull_requests (
    runbook_number  INTEGER NOT NULL REFERENCES runbooks (number),
    number          INTEGER NOT NULL,
    url             TEXT NOT NULL,
    position        INTEGER NOT NULL,
    PRIMARY KEY (runbook_number, number)
);

CREATE TABLE follow_ups (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    runbook_number  INTEGER NOT NULL REFERENCES runbooks (number),
    prompt          TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    processed_at    INTEGER
);
CREATE INDEX follow_ups_pending ON follow_ups (runbook_number, processed_at);
