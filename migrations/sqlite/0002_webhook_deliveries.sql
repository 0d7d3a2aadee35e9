-- Webhook deliveries from GitHub, persisted before they are answered.
-- The delivery id (X-GitHub-Delivery) stays the same on redelivery: it is the key that makes
-- a redelivered webhook have effect once.
CREATE TABLE webhook_deliveries (
    delivery_id   TEXT PRIMARY KEY,
    event         TEXT NOT NULL,
    action        TEXT,
    payload       TEXT NOT NULL,
    received_at   INTEGER NOT NULL,
    processed_at  INTEGER,
    error         TEXT
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (processed_at, received_at);
