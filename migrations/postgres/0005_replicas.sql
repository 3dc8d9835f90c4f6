-- jetpost store, Postgres schema v5: replicas and the NATS accounts each one owns
-- (`publishmq.nats.ownership: exclusive`). Every time here is the database's clock, so the
-- replicas' own clocks never decide who owns an account.
CREATE TABLE replicas (
    id            TEXT PRIMARY KEY,
    started_at    TIMESTAMPTZ NOT NULL,
    heartbeat_at  TIMESTAMPTZ NOT NULL,
    -- Live while this is in the future; a replica that stops renewing it is gone.
    expires_at    TIMESTAMPTZ NOT NULL,
    -- Set on SIGTERM: the others stop counting it while it hands its accounts over.
    leaving       BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE account_owners (
    account       TEXT PRIMARY KEY,
    replica_id    TEXT NOT NULL,
    acquired_at   TIMESTAMPTZ NOT NULL,
    -- Another replica may take the account once this has passed.
    expires_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX account_owners_replica ON account_owners (replica_id);
