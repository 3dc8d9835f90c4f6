-- jetpost store, Postgres schema v1.
-- JSON documents are text (the store never queries inside them; cast to jsonb for ad-hoc SQL);
-- events.data holds the exact bytes the publisher sent.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    metadata    TEXT,                 -- JSON object of strings, or NULL
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    deleted_at  TIMESTAMPTZ           -- soft delete
);
CREATE INDEX tenants_created ON tenants (created_at, id);

CREATE TABLE destinations (
    tenant_id          TEXT NOT NULL REFERENCES tenants (id),
    id                 TEXT NOT NULL,
    type               TEXT NOT NULL,
    topics             TEXT NOT NULL,  -- JSON array; ["*"] = every topic
    filter             TEXT,           -- JSON object, or NULL
    config             TEXT NOT NULL,  -- JSON object of strings
    credentials        TEXT,           -- AES-256-GCM sealed JSON object, or NULL when empty
    delivery_metadata  TEXT,
    metadata           TEXT,
    disabled_at        TIMESTAMPTZ,
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL,
    deleted_at         TIMESTAMPTZ,    -- soft delete
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE events (
    seq                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- pagination tie-breaker
    tenant_id           TEXT NOT NULL,
    id                  TEXT NOT NULL,
    destination_id      TEXT,
    topic               TEXT NOT NULL,
    time                TIMESTAMPTZ NOT NULL,
    metadata            TEXT,
    data                TEXT NOT NULL,        -- exact bytes of the event's data object
    eligible_for_retry  BOOLEAN NOT NULL,
    destination_ids     TEXT NOT NULL,        -- JSON array of the matched destination ids
    created_at          TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant_id, id)                    -- durable per-tenant idempotency
);
CREATE INDEX events_time ON events (time, seq);
CREATE INDEX events_tenant_time ON events (tenant_id, time, seq);

CREATE TABLE deliveries (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id         TEXT NOT NULL,
    event_id          TEXT NOT NULL,
    destination_id    TEXT NOT NULL,
    status            TEXT NOT NULL
                      CHECK (status IN ('pending', 'delivering', 'success', 'failed', 'cancelled')),
    attempts          BIGINT NOT NULL DEFAULT 0,
    -- pending: when it is due; delivering: when the lease expires (an expired lease is due
    -- again); NULL once finished.
    next_attempt_at   TIMESTAMPTZ,
    manual            BOOLEAN NOT NULL DEFAULT FALSE,
    lease_owner       TEXT,
    lease_expires_at  TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL,
    FOREIGN KEY (tenant_id, event_id) REFERENCES events (tenant_id, id)
);
CREATE UNIQUE INDEX deliveries_event_destination ON deliveries (tenant_id, event_id, destination_id);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
-- One queue per destination, for fair claims (see claim_due).
CREATE INDEX deliveries_queue ON deliveries (tenant_id, destination_id, next_attempt_at)
    WHERE status IN ('pending', 'delivering');
-- Deliveries in flight per destination (the claim's per-destination cap).
CREATE INDEX deliveries_in_flight ON deliveries (tenant_id, destination_id, next_attempt_at)
    WHERE status = 'delivering';

CREATE TABLE attempts (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    destination_id  TEXT NOT NULL,
    delivery_id     BIGINT NOT NULL REFERENCES deliveries (id),
    attempt_number  BIGINT NOT NULL,
    manual          BOOLEAN NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('success', 'failed')),
    code            TEXT NOT NULL,
    response_data   TEXT,                 -- JSON object, or NULL
    time            TIMESTAMPTZ NOT NULL
);
CREATE INDEX attempts_time ON attempts (time, id);
CREATE INDEX attempts_tenant_time ON attempts (tenant_id, time, id);
CREATE INDEX attempts_destination_time ON attempts (tenant_id, destination_id, time, id);
CREATE INDEX attempts_event ON attempts (tenant_id, event_id, time, id);
