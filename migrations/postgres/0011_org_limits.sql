-- Limits per organisation, set with `runbooks org set`. `org` is the organisation's name in
-- lower case (GitHub compares logins without regard to case); a NULL column is no limit.
CREATE TABLE org_limits (
    org                 TEXT PRIMARY KEY,
    -- Runbooks of the organisation a worker may hold for an agent's work at once.
    max_running         BIGINT,
    -- Leaf steps a runbook's plan may have, follow-ups included.
    max_steps           BIGINT,
    -- Model tokens (prompt and completion) the organisation's steps may use in a calendar
    -- month (UTC), and their wall time (milliseconds).
    monthly_tokens      BIGINT,
    monthly_agent_ms    BIGINT,
    updated_at          BIGINT NOT NULL
);

-- When an organisation's runbook was last taken by a worker for an agent's work: the
-- organisations whose turn is oldest go first (fair sharing of the workers). Its row is
-- also what a claim locks, so two replicas cannot both take an organisation's last place.
CREATE TABLE org_turns (
    org             TEXT PRIMARY KEY,
    last_claimed_at BIGINT NOT NULL
);

CREATE INDEX runbooks_org_lower ON runbooks (LOWER(org));
