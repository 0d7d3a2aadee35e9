-- What a runbook still owes GitHub. A row means: the pull requests and the status comment
-- may not show the runbook's state yet. It is written before the work that makes GitHub
-- stale (a worker writes it when it takes the runbook), removed only once GitHub shows
-- everything (and only if no newer change came meanwhile: `version`), and survives crashes,
-- so whoever holds the runbook next finishes the job. Failures wait `not_before` (backoff).
CREATE TABLE runbook_owed (
    runbook_number  INTEGER PRIMARY KEY REFERENCES runbooks (number),
    version         INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    not_before      INTEGER NOT NULL DEFAULT 0,
    error           TEXT
);

-- A `manual` runbook's pull request was asked for (it is opened, and kept, from then on).
ALTER TABLE runbooks ADD COLUMN pull_request_requested_at INTEGER;
