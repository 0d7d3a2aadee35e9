-- The issue or pull-request thread a runbook was started from with a `/runbook` comment, and
-- the status comment the app keeps up to date there.
CREATE TABLE runbook_threads (
    runbook_number      INTEGER PRIMARY KEY REFERENCES runbooks (number),
    -- Lower case, as repository names compare on GitHub.
    repository          TEXT NOT NULL,
    issue_number        INTEGER NOT NULL,
    is_pull_request     INTEGER NOT NULL,
    -- The thread's page on GitHub.
    url                 TEXT NOT NULL,
    -- The comment that started the runbook: one runbook per comment, however often the
    -- webhook is delivered.
    command_comment_id  INTEGER NOT NULL UNIQUE,
    requested_by        TEXT NOT NULL,
    -- The issue's title and body, given to the planner as context.
    context             TEXT,
    status_comment_id   INTEGER,
    status_comment_url  TEXT,
    -- What the status comment says now (its last edit), to skip edits that change nothing.
    status_body         TEXT,
    -- Set when the status comment must be brought up to date by the runbook's lease holder.
    needs_report        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runbook_threads_by_thread ON runbook_threads (repository, issue_number, runbook_number);
