-- What each finished step used (domain::Usage): wall time, the agent's CPU time, and a
-- model's tokens when the agent knows them. NULL for steps that have not finished (and for
-- steps finished before this migration).
ALTER TABLE steps ADD COLUMN wall_ms BIGINT;
ALTER TABLE steps ADD COLUMN agent_cpu_ms BIGINT;
ALTER TABLE steps ADD COLUMN prompt_tokens BIGINT;
ALTER TABLE steps ADD COLUMN completion_tokens BIGINT;

CREATE INDEX steps_finished_at ON steps (finished_at);
