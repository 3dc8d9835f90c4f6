-- jetpost store, SQLite schema v3: indexes for retention (log_retention_ttl_days).
-- The purge walks events by when jetpost stored them (created_at), oldest first.
CREATE INDEX events_created ON events (created_at, seq);
-- Deleting a delivery makes the database look for attempts still pointing at it (the foreign
-- key); without this index that lookup reads the whole attempts table once per delivery.
CREATE INDEX attempts_delivery ON attempts (delivery_id);
