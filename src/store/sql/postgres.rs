//! Postgres specifics: the connection pool, and the statements that lock rows so several
//! replicas can claim deliveries side by side (`FOR UPDATE SKIP LOCKED`).

use std::str::FromStr;

use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgQueryResult};

use super::{Dialect, STATEMENT_CACHE, SqlStore};
use crate::store::StoreOptions;
use crate::store::error::{Result, StoreError, db_error, redact_url};
use crate::store::migrations::EmbeddedMigration;

impl Dialect for Postgres {
    const BEGIN_WRITE: &'static str = "BEGIN";
    const BEGIN_WRITE_UNSYNCED: &'static str = "BEGIN; SET LOCAL synchronous_commit = off";

    // A skip-scan over the destination queues (one index probe per destination with work),
    // each destination's oldest due deliveries (read, not locked), round-robin across
    // destinations; only the rows finally taken are locked, and rows another replica holds
    // are skipped rather than waited for. A queue is ordered by status, then due time, so
    // each destination's oldest due deliveries are read per status (two ordered, limited
    // ranges) and ranked together; an `IN` over both statuses would sort the whole backlog.
    const CLAIM_CANDIDATES: &'static str = "
        WITH RECURSIVE queues AS (
            (SELECT tenant_id, destination_id FROM deliveries
             WHERE status IN ('pending', 'delivering')
             ORDER BY tenant_id, destination_id LIMIT 1)
            UNION ALL
            SELECT n.tenant_id, n.destination_id FROM queues q CROSS JOIN LATERAL (
                SELECT x.tenant_id, x.destination_id FROM deliveries x
                WHERE x.status IN ('pending', 'delivering')
                  AND (x.tenant_id, x.destination_id) > (q.tenant_id, q.destination_id)
                ORDER BY x.tenant_id, x.destination_id LIMIT 1) n
        ),
        loads AS MATERIALIZED (
            SELECT q.tenant_id, q.destination_id,
                (SELECT count(*) FROM deliveries f
                 WHERE f.tenant_id = q.tenant_id AND f.destination_id = q.destination_id
                   AND f.status IN ('pending', 'delivering') AND f.status = 'delivering'
                   AND f.next_attempt_at > $1
                ) AS in_flight,
                EXISTS (SELECT 1 FROM destinations t
                 WHERE t.tenant_id = q.tenant_id AND t.id = q.destination_id
                   AND t.deleted_at IS NULL AND t.disabled_at IS NULL) AS live
            FROM queues q
        ),
        candidates AS (
            SELECT c.id, c.next_attempt_at, l.in_flight, l.live,
                row_number() OVER (PARTITION BY l.tenant_id, l.destination_id
                                   ORDER BY c.next_attempt_at, c.id) AS rank
            FROM loads l CROSS JOIN LATERAL (
                (SELECT x.id, x.next_attempt_at FROM deliveries x
                 WHERE x.tenant_id = l.tenant_id AND x.destination_id = l.destination_id
                   AND x.status IN ('pending', 'delivering') AND x.status = 'pending'
                   AND x.next_attempt_at <= $1
                 ORDER BY x.next_attempt_at LIMIT $2)
                UNION ALL
                (SELECT x.id, x.next_attempt_at FROM deliveries x
                 WHERE x.tenant_id = l.tenant_id AND x.destination_id = l.destination_id
                   AND x.status IN ('pending', 'delivering') AND x.status = 'delivering'
                   AND x.next_attempt_at <= $1
                 ORDER BY x.next_attempt_at LIMIT $2)) c
        ),
        picked AS (
            SELECT id, live, rank, next_attempt_at FROM candidates
            WHERE NOT live OR rank + in_flight <= $2
            ORDER BY rank, next_attempt_at, id
            LIMIT 2 * $3
        )
        SELECT d.id, p.live FROM deliveries d JOIN picked p ON p.id = d.id
        WHERE d.status IN ('pending', 'delivering') AND d.next_attempt_at <= $1
        ORDER BY p.rank, p.next_attempt_at, d.id
        LIMIT $3
        FOR UPDATE OF d SKIP LOCKED";

    const FOR_UPDATE: &'static str = " FOR UPDATE";

    const FOR_KEY_SHARE: &'static str = " FOR KEY SHARE";

    const FOR_UPDATE_SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";

    // The planner's estimate (`reltuples`, kept by autovacuum's ANALYZE). A table never
    // analyzed yet (-1) is young: it is counted, up to 100,000 rows.
    const ROW_ESTIMATES: &'static str = "SELECT \
        (SELECT CASE WHEN reltuples >= 0 THEN reltuples::bigint \
                ELSE (SELECT count(*) FROM (SELECT 1 FROM events LIMIT 100000) n) END \
         FROM pg_class WHERE oid = 'events'::regclass) AS events, \
        (SELECT CASE WHEN reltuples >= 0 THEN reltuples::bigint \
                ELSE (SELECT count(*) FROM (SELECT 1 FROM deliveries LIMIT 100000) n) END \
         FROM pg_class WHERE oid = 'deliveries'::regclass) AS deliveries, \
        (SELECT CASE WHEN reltuples >= 0 THEN reltuples::bigint \
                ELSE (SELECT count(*) FROM (SELECT 1 FROM attempts LIMIT 100000) n) END \
         FROM pg_class WHERE oid = 'attempts'::regclass) AS attempts";

    const RECLAIM_SPACE: Option<&'static str> = None;

    const AUTO_VACUUM_MODE: Option<&'static str> = None;

    const SELECT_LIVE_TENANT_LOCKED: &'static str =
        "SELECT 1 FROM tenants WHERE id = $1 AND deleted_at IS NULL FOR SHARE";

    // The channel is `changes::CHANNEL`.
    const NOTIFY_ROUTING: Option<&'static str> = Some("SELECT pg_notify('jetpost_routing', $1)");

    const MIGRATIONS_TABLE_EXISTS: &'static str =
        "SELECT 1 WHERE to_regclass('_sqlx_migrations') IS NOT NULL";

    const MIGRATIONS: &'static [EmbeddedMigration] = &[
        EmbeddedMigration {
            version: 1,
            description: "initial",
            sql: include_str!("../../../migrations/postgres/0001_initial.sql"),
        },
        EmbeddedMigration {
            version: 2,
            description: "destination failures",
            sql: include_str!("../../../migrations/postgres/0002_destination_failures.sql"),
        },
        EmbeddedMigration {
            version: 3,
            description: "retention",
            sql: include_str!("../../../migrations/postgres/0003_retention.sql"),
        },
        EmbeddedMigration {
            version: 4,
            description: "delivery indexes",
            sql: include_str!("../../../migrations/postgres/0004_delivery_indexes.sql"),
        },
        EmbeddedMigration {
            version: 5,
            description: "replicas",
            sql: include_str!("../../../migrations/postgres/0005_replicas.sql"),
        },
    ];

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }
}

pub(crate) async fn connect(url: &str, options: &StoreOptions) -> Result<SqlStore<Postgres>> {
    let mut connect = PgConnectOptions::from_str(url).map_err(|e| StoreError::BadUrl {
        url: redact_url(url),
        reason: e.to_string(),
    })?;
    if connect.get_application_name().is_none() {
        // Names jetpost's sessions in pg_stat_activity.
        connect = connect.application_name("jetpost");
    }
    // Plan every statement for its own parameters. A generic plan cached while the tables were
    // empty stays in the session: the foreign-key check of each new delivery then looked its
    // event up through `events_tenant_time` (tenant only) instead of the (tenant_id, id) key,
    // reading every event of the tenant, and a 50-row insert took over a second once a tenant
    // had 100,000 events (the benchmark on a fresh schema: 335 events/s for one tenant; 2,193
    // with custom plans). Planning each statement costs far less than such a plan.
    connect = connect
        .options([("plan_cache_mode", "force_custom_plan")])
        .statement_cache_capacity(STATEMENT_CACHE);
    let pool = PgPoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .acquire_timeout(options.acquire_timeout)
        .connect_with(connect)
        .await
        .map_err(db_error("connect to Postgres"))?;
    Ok(SqlStore::new(pool.clone(), pool, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The setting above is in force on the store's connections (a Postgres that ignored the
    /// startup option would bring the slow foreign-key checks back).
    #[tokio::test]
    async fn connections_plan_each_statement_for_its_parameters() {
        let url = std::env::var("JETPOST_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let store = connect(&url, &StoreOptions::default())
            .await
            .expect("the tests need the machine's Postgres (JETPOST_TEST_POSTGRES_URL)");
        let mode: String = sqlx::query_scalar("SHOW plan_cache_mode")
            .fetch_one(&store.writer)
            .await
            .unwrap();
        assert_eq!(mode, "force_custom_plan");
    }
}
