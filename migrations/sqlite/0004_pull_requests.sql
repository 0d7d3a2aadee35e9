-- What the engine needs to keep a pull request current.
ALTER TABLE pull_requests ADD COLUMN node_id TEXT;
ALTER TABLE pull_requests ADD COLUMN head TEXT;
-- When the PR was made final (title without `[WIP] `, ready for review unless `draft`).
ALTER TABLE pull_requests ADD COLUMN finished_at INTEGER;
