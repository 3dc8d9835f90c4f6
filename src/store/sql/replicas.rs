//! Replicas and the NATS accounts each one owns (Postgres only): renewable leases timed by the
//! database's clock. A replica's heartbeat renews its own lease and lists the live replicas;
//! it then holds its share of the accounts (see `source::nats::ownership`) with leases of
//! their own, which another replica may take only once they have run out or been released.

use std::time::Duration;

use sqlx::Postgres;

use super::SqlStore;
use super::rows::RowExt as _;
use crate::store::error::{Result, db_error};
use crate::store::model::{AccountLease, ReplicaBeat, ReplicaLease};

/// A lease's length in milliseconds, as the statements bind it.
fn millis(lease: Duration) -> f64 {
    lease.as_secs_f64() * 1000.0
}

impl SqlStore<Postgres> {
    /// Renews `replica`'s lease for `lease` (registering it on its first beat) and returns the
    /// live replicas: those whose lease runs and that are not leaving, this one included unless
    /// it is leaving; and how soon the first of the others' leases runs out unless renewed.
    pub async fn replica_heartbeat(&self, replica: &str, lease: Duration) -> Result<ReplicaBeat> {
        let op = "renew the replica's lease";
        // A replica that stopped renewing stays in the replicas view for an hour.
        sqlx::query("DELETE FROM replicas WHERE expires_at < now() - interval '1 hour'")
            .execute(&self.writer)
            .await
            .map_err(db_error(op))?;
        let rows = sqlx::query(
            "WITH beat AS ( \
                 INSERT INTO replicas (id, started_at, heartbeat_at, expires_at) \
                 VALUES ($1, now(), now(), now() + $2 * interval '1 millisecond') \
                 ON CONFLICT (id) DO UPDATE \
                 SET heartbeat_at = excluded.heartbeat_at, expires_at = excluded.expires_at \
                 RETURNING id, leaving, expires_at) \
             SELECT id, (extract(epoch FROM expires_at - now()) * 1000)::bigint AS left_ms \
             FROM replicas WHERE expires_at > now() AND NOT leaving AND id <> $1 \
             UNION SELECT id, 0 FROM beat WHERE NOT leaving \
             ORDER BY id",
        )
        .bind(replica)
        .bind(millis(lease))
        .fetch_all(&self.writer)
        .await
        .map_err(db_error(op))?;
        let mut beat = ReplicaBeat::default();
        for row in &rows {
            let id = row.text("id")?;
            if id != replica {
                let left = Duration::from_millis(row.int("left_ms")?.max(0) as u64);
                beat.first_expiry = Some(beat.first_expiry.map_or(left, |f| f.min(left)));
            }
            beat.live.push(id);
        }
        Ok(beat)
    }

    /// Marks `replica` as leaving: the others no longer count it live and compute their
    /// shares without it, while it still holds its accounts until it releases them.
    pub async fn replica_leaving(&self, replica: &str) -> Result<()> {
        sqlx::query("UPDATE replicas SET leaving = TRUE WHERE id = $1")
            .bind(replica)
            .execute(&self.writer)
            .await
            .map_err(db_error("mark the replica as leaving"))?;
        Ok(())
    }

    /// Takes or renews, for `lease`, each of `accounts` that is free, whose lease has run
    /// out, or that `replica` holds already; returns the accounts `replica` holds now among
    /// them. An account another replica holds is left to it.
    pub async fn hold_accounts(
        &self,
        replica: &str,
        accounts: &[String],
        lease: Duration,
    ) -> Result<Vec<String>> {
        // ON CONFLICT locks the row and tests the condition against its latest version, so
        // of two replicas taking the same expired account, one gets it. Rows are taken in
        // account order, so two replicas' holds never wait for each other in a cycle.
        let rows = sqlx::query(
            "INSERT INTO account_owners (account, replica_id, acquired_at, expires_at) \
             SELECT a, $1, now(), now() + $3 * interval '1 millisecond' \
             FROM unnest($2::text[]) AS a ORDER BY a \
             ON CONFLICT (account) DO UPDATE \
             SET replica_id = excluded.replica_id, expires_at = excluded.expires_at, \
                 acquired_at = CASE WHEN account_owners.replica_id = excluded.replica_id \
                                    THEN account_owners.acquired_at \
                                    ELSE excluded.acquired_at END \
             WHERE account_owners.replica_id = excluded.replica_id \
                OR account_owners.expires_at <= now() \
             RETURNING account",
        )
        .bind(replica)
        .bind(accounts)
        .bind(millis(lease))
        .fetch_all(&self.writer)
        .await
        .map_err(db_error("hold NATS accounts"))?;
        let mut held = rows
            .iter()
            .map(|r| r.text("account"))
            .collect::<Result<Vec<_>>>()?;
        held.sort();
        Ok(held)
    }

    /// Gives up `replica`'s leases on `accounts` (after it stopped consuming them); returns
    /// how many it held.
    pub async fn release_accounts(&self, replica: &str, accounts: &[String]) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM account_owners WHERE replica_id = $1 AND account = ANY($2::text[])",
        )
        .bind(replica)
        .bind(accounts)
        .execute(&self.writer)
        .await
        .map_err(db_error("release NATS accounts"))?;
        Ok(done.rows_affected())
    }

    /// Every account lease, live or run out, by account.
    pub async fn account_leases(&self) -> Result<Vec<AccountLease>> {
        let rows = sqlx::query(
            "SELECT account, replica_id, acquired_at, expires_at, expires_at > now() AS live \
             FROM account_owners ORDER BY account",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(db_error("list NATS account owners"))?;
        rows.iter()
            .map(|r| {
                Ok(AccountLease {
                    account: r.text("account")?,
                    replica_id: r.text("replica_id")?,
                    acquired_at: r.time("acquired_at")?,
                    expires_at: r.time("expires_at")?,
                    live: r.flag("live")?,
                })
            })
            .collect()
    }

    /// Every replica seen in the last hour, with the number of live account leases it holds.
    pub async fn replica_leases(&self) -> Result<Vec<ReplicaLease>> {
        let rows = sqlx::query(
            "SELECT r.id, r.started_at, r.heartbeat_at, r.expires_at, r.leaving, \
                 r.expires_at > now() AS live, \
                 (SELECT count(*) FROM account_owners o \
                  WHERE o.replica_id = r.id AND o.expires_at > now()) AS accounts \
             FROM replicas r ORDER BY r.id",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(db_error("list replicas"))?;
        rows.iter()
            .map(|r| {
                Ok(ReplicaLease {
                    id: r.text("id")?,
                    started_at: r.time("started_at")?,
                    heartbeat_at: r.time("heartbeat_at")?,
                    expires_at: r.time("expires_at")?,
                    leaving: r.flag("leaving")?,
                    live: r.flag("live")?,
                    accounts: r.int("accounts")?.max(0) as u64,
                })
            })
            .collect()
    }
}
