-- A pull request's state on GitHub, from `pull_request` webhooks: open, closed or merged.
ALTER TABLE pull_requests ADD COLUMN state TEXT NOT NULL DEFAULT 'open';
ALTER TABLE pull_requests ADD COLUMN base TEXT;
