-- A runbook's repository setup (`setup`, `on_failure`, `cache` in .github/runbooks.yml). The
-- row is written when the runbook is first planned, with the setup the file asked for
-- (`config`, JSON), and updated each time the setup runs in a fresh working tree: `status`
-- (`in_progress`, `completed`, `failed`; NULL until it first runs), what the cache did
-- (`hit`, `miss`, `none`), the commands' output (bounded by the output cap) and how long it
-- took. A runbook whose repository asks for no setup has no row.
CREATE TABLE runbook_setup (
    runbook_number  INTEGER PRIMARY KEY REFERENCES runbooks (number),
    config          TEXT NOT NULL,
    status          TEXT,
    cache           TEXT,
    log             TEXT,
    wall_ms         INTEGER,
    updated_at      INTEGER NOT NULL
);
