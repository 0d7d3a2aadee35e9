-- Dashboard sign-ins: a person signs in at /login with an API token and gets a session
-- cookie. Only the SHA-256 of the cookie's random id is stored; the session lives no longer
-- than `expires_at` and not a request longer than its token (revoking the token ends it).
CREATE TABLE dashboard_sessions (
    -- SHA-256 of the session id carried by the cookie, hex.
    session_hash  TEXT PRIMARY KEY,
    token_id      INTEGER NOT NULL REFERENCES api_tokens (id),
    -- The value every form of the session must send back (CSRF protection).
    csrf_secret   TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
);
CREATE INDEX dashboard_sessions_by_expiry ON dashboard_sessions (expires_at);
