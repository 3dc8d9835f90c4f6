-- jetpost store, SQLite schema v5: the tables Postgres uses for replicas and the NATS
-- accounts each one owns. A SQLite store serves one process, which consumes every account;
-- the tables stay empty and keep both backends at the same schema version.
CREATE TABLE replicas (
    id            TEXT PRIMARY KEY,
    started_at    TEXT NOT NULL,
    heartbeat_at  TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    leaving       INTEGER NOT NULL DEFAULT FALSE
);

CREATE TABLE account_owners (
    account       TEXT PRIMARY KEY,
    replica_id    TEXT NOT NULL,
    acquired_at   TEXT NOT NULL,
    expires_at    TEXT NOT NULL
);
CREATE INDEX account_owners_replica ON account_owners (replica_id);
