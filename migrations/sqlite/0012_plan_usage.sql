-- What planning by a model used (domain::Usage), one row each time a runbook or a follow-up
-- was planned by one, whether the plan was made or not: tokens are spent either way and
-- count toward the organisation's budgets. Plans read from the template layout ask no model
-- and leave no row.
CREATE TABLE plan_usage (
    runbook_number      INTEGER NOT NULL REFERENCES runbooks (number),
    finished_at         INTEGER NOT NULL,
    wall_ms             INTEGER NOT NULL,
    agent_cpu_ms        INTEGER NOT NULL,
    prompt_tokens       INTEGER,
    completion_tokens   INTEGER
);

CREATE INDEX plan_usage_runbook ON plan_usage (runbook_number);
CREATE INDEX plan_usage_finished_at ON plan_usage (finished_at);
