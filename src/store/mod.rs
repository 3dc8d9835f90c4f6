//! The store of truth: tenants, destinations, events, deliveries and attempts, in SQLite (the
//! default: one file, one node) or Postgres (several replicas), behind one API. Destination
//! credentials are encrypted and decrypted here; the SQL lives in `sql`. See docs/storage.md.

mod aggregate;
mod changes;
mod crypto;
mod error;
mod group_commit;
mod migrations;
mod model;
mod page;
mod sql;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Sqlite};

use self::changes::LocalChanges;
use self::crypto::{CredentialCipher, destination_aad};
use self::page::PagePlan;
use self::sql::rows::SealedDestination;
use self::sql::sqlite_writer::SqliteWriter;
use self::sql::{Dialect, SqlStore};

pub use self::aggregate::{
    AggregateQuery, Aggregates, AttemptAggregateFilter, AttemptAggregateQuery, AttemptDimension,
    AttemptGroup, BucketUnit, EventAggregateFilter, EventAggregateQuery, EventDimension,
    EventGroup, Granularity,
};
pub use self::changes::{LocalFeed, RoutingChange, RoutingChanges};
pub use self::error::{ErrorKind, Result, StoreError};
pub use self::group_commit::{GroupCommit, GroupCommitError};
pub use self::migrations::MigrationInfo;
pub use self::model::{
    AccountLease, Attempt, AttemptCompletion, AttemptFilter, AttemptRecorded, AttemptStatus,
    ClaimRequest, ClaimedDelivery, Credentials, Delivery, DeliveryOutcome, DeliveryStatus,
    Destination, DestinationFilter, DestinationTimes, Event, EventFilter, InsertOutcome, Lease,
    Metadata, NewAttempt, NewDestination, NewEvent, NewLease, ReplicaBeat, ReplicaLease, Tenant,
    TenantFilter, TimeRange, Upserted,
};
pub use self::page::{ByteBudget, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, Page, PageRequest, SortDir};

/// Where the store lives when `database_url` is not configured.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./data/jetpost.db";

/// Connection tuning; the defaults suit a single node.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Pool size: Postgres connections, or SQLite reader connections (SQLite always writes
    /// through one connection).
    pub max_connections: u32,
    /// How long a call waits for a free connection before failing as transient.
    pub acquire_timeout: Duration,
    /// SQLite: how long a write waits for the file lock held by another process.
    pub busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
            busy_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Sqlite,
    Postgres,
}

/// A handle on the store; cheap to clone (pools are shared).
#[derive(Clone)]
pub struct Store {
    db: Db,
    cipher: Option<Arc<CredentialCipher>>,
    /// This process's tenant and destination writes, announced as they return.
    changes: LocalChanges,
}

#[derive(Clone)]
enum Db {
    /// The sqlx pools, and the thread that writes the hot path (events, claims, attempts).
    Sqlite(SqlStore<Sqlite>, SqliteWriter),
    Postgres(SqlStore<Postgres>),
}

/// Runs the same expression against whichever backend this store uses.
macro_rules! on_db {
    ($store:expr, $db:ident => $call:expr) => {
        match &$store.db {
            Db::Sqlite($db, _) => $call,
            Db::Postgres($db) => $call,
        }
    };
}

// After `on_db!`, which it uses.
mod retention;

pub use self::retention::{PurgeOptions, Purged, TableRows};

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .field("encrypts_credentials", &self.cipher.is_some())
            .finish()
    }
}

impl Store {
    /// Opens `sqlite://PATH` (file and folder created on first run) or `postgres://…`.
    /// `aes_secret` encrypts destination credentials; without it, destinations with
    /// credentials can be neither written nor read.
    pub async fn connect(database_url: &str, aes_secret: Option<&str>) -> Result<Store> {
        Store::connect_with(database_url, aes_secret, &StoreOptions::default()).await
    }

    pub async fn connect_with(
        database_url: &str,
        aes_secret: Option<&str>,
        options: &StoreOptions,
    ) -> Result<Store> {
        let db = if database_url.starts_with("sqlite:") {
            let (db, hot) = sql::sqlite::connect(database_url, options).await?;
            Db::Sqlite(db, hot)
        } else if database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://")
        {
            Db::Postgres(sql::postgres::connect(database_url, options).await?)
        } else {
            return Err(StoreError::BadUrl {
                url: error::redact_url(database_url),
                reason: "use sqlite://PATH or postgres://USER@HOST/DATABASE".to_string(),
            });
        };
        let cipher = aes_secret
            .filter(|s| !s.is_empty())
            .map(|s| Arc::new(CredentialCipher::new(s)));
        Ok(Store {
            db,
            cipher,
            changes: LocalChanges::new(),
        })
    }

    pub fn backend(&self) -> BackendKind {
        match self.db {
            Db::Sqlite(..) => BackendKind::Sqlite,
            Db::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// Applies pending schema migrations (safe to run again, and from several replicas at
    /// once on Postgres: the migrator takes an advisory lock).
    pub async fn migrate(&self) -> Result<()> {
        on_db!(self, db => db.migrate().await)
    }

    /// Migrations this binary would apply. Fails if the database was migrated by a newer
    /// jetpost or a migration failed part-way.
    pub async fn pending_migrations(&self) -> Result<Vec<MigrationInfo>> {
        on_db!(self, db => pending_of(db).await)
    }

    /// For `serve --no-migrate`: an error saying what to run unless the schema is current.
    pub async fn check_migrated(&self) -> Result<()> {
        let pending = self.pending_migrations().await?;
        if pending.is_empty() {
            Ok(())
        } else {
            Err(StoreError::NotMigrated {
                pending: pending.iter().map(|m| m.version).collect(),
            })
        }
    }

    /// A round trip through the write path, for `/healthz`.
    pub async fn ping(&self) -> Result<()> {
        match &self.db {
            Db::Sqlite(db, hot) => {
                db.ping().await?;
                hot.ping().await
            }
            Db::Postgres(db) => db.ping().await,
        }
    }

    /// The Postgres store behind account ownership across replicas; SQLite serves one
    /// process, which consumes every account itself.
    fn replicas_store(&self) -> Result<&sql::SqlStore<Postgres>> {
        match &self.db {
            Db::Postgres(db) => Ok(db),
            Db::Sqlite(..) => Err(StoreError::Invalid(
                "account ownership across replicas needs the Postgres store (database_url \
                 postgres://…); a SQLite store serves one process, which consumes every account"
                    .into(),
            )),
        }
    }

    /// Renews this replica's lease for `lease` and returns the live replicas (Postgres only).
    pub async fn replica_heartbeat(&self, replica: &str, lease: Duration) -> Result<ReplicaBeat> {
        self.replicas_store()?
            .replica_heartbeat(replica, lease)
            .await
    }

    /// Marks this replica as leaving: the others compute their shares without it (Postgres
    /// only).
    pub async fn replica_leaving(&self, replica: &str) -> Result<()> {
        self.replicas_store()?.replica_leaving(replica).await
    }

    /// Takes or renews the leases on `accounts` that are free, run out or already this
    /// replica's; returns the ones it holds now (Postgres only).
    pub async fn hold_accounts(
        &self,
        replica: &str,
        accounts: &[String],
        lease: Duration,
    ) -> Result<Vec<String>> {
        self.replicas_store()?
            .hold_accounts(replica, accounts, lease)
            .await
    }

    /// Gives up this replica's leases on `accounts`; returns how many it held (Postgres only).
    pub async fn release_accounts(&self, replica: &str, accounts: &[String]) -> Result<u64> {
        self.replicas_store()?
            .release_accounts(replica, accounts)
            .await
    }

    /// Every NATS account lease, by account (Postgres only).
    pub async fn account_leases(&self) -> Result<Vec<AccountLease>> {
        self.replicas_store()?.account_leases().await
    }

    /// Every replica seen in the last hour (Postgres only).
    pub async fn replica_leases(&self) -> Result<Vec<ReplicaLease>> {
        self.replicas_store()?.replica_leases().await
    }

    /// Every tenant or destination write made through this handle or its clones, announced
    /// before the write method returns: what a reader sees after a write includes it.
    pub fn local_changes(&self) -> LocalFeed {
        self.changes.subscribe()
    }

    /// Moves after every write `local_changes` announces: while it stays put, a subscriber has
    /// nothing to take.
    pub fn local_generation(&self) -> u64 {
        self.changes.generation()
    }

    /// Cross-replica notice of tenant and destination writes, for the routing cache (Postgres
    /// LISTEN/NOTIFY, on a connection of its own; this process's own writes come back too).
    /// `None` on SQLite, where one process owns the database and `local_changes` is all.
    pub async fn routing_changes(&self) -> Result<Option<RoutingChanges>> {
        match &self.db {
            Db::Sqlite(..) => Ok(None),
            Db::Postgres(db) => RoutingChanges::listen(db.pool()).await.map(Some),
        }
    }

    /// Closes the pools; calls made afterwards fail.
    pub async fn close(&self) {
        if let Db::Sqlite(_, hot) = &self.db {
            hot.close().await;
        }
        on_db!(self, db => db.close().await)
    }

    // --- tenants ---

    /// Creates the tenant, or replaces its metadata. A deleted tenant comes back as new
    /// (`created: true`) without its old destinations.
    pub async fn upsert_tenant(&self, id: &str, metadata: Option<&Metadata>) -> Result<Upserted> {
        let upserted = on_db!(self, db => db.upsert_tenant(id, metadata).await)?;
        self.changes.announce(id);
        Ok(upserted)
    }

    /// The tenant, unless it does not exist or was deleted.
    pub async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>> {
        on_db!(self, db => db.get_tenant(id).await)
    }

    /// Live tenants ordered by `created_at`.
    pub async fn list_tenants(
        &self,
        filter: &TenantFilter,
        page: &PageRequest,
    ) -> Result<Page<Tenant>> {
        let plan = PagePlan::new(page)?;
        on_db!(self, db => db.list_tenants(filter, &plan).await)
    }

    pub async fn count_tenants(&self) -> Result<u64> {
        on_db!(self, db => db.count_tenants().await)
    }

    /// Soft-deletes the tenant and its destinations and cancels their pending deliveries;
    /// events and attempts stay. `NotFound` if absent or already deleted.
    pub async fn delete_tenant(&self, id: &str) -> Result<()> {
        on_db!(self, db => db.delete_tenant(id).await)?;
        self.changes.announce(id);
        Ok(())
    }

    // --- destinations ---

    /// `NotFound` if the tenant does not exist, `Conflict` if the id is taken.
    pub async fn create_destination(&self, d: &NewDestination) -> Result<Destination> {
        let sealed = self.seal(d)?;
        let stored = on_db!(self, db => db.create_destination(d, sealed.as_deref()).await)?;
        self.changes.announce(&d.tenant_id);
        self.open(stored)
    }

    /// The live destination (enabled or disabled) with credentials decrypted.
    pub async fn get_destination(&self, tenant_id: &str, id: &str) -> Result<Option<Destination>> {
        let stored = on_db!(self, db => db.get_destination(tenant_id, id).await)?;
        stored.map(|s| self.open(s)).transpose()
    }

    /// Live destinations of the tenant, oldest first, narrowed by `filter`.
    pub async fn list_destinations(
        &self,
        tenant_id: &str,
        filter: &DestinationFilter,
    ) -> Result<Vec<Destination>> {
        let stored = on_db!(self, db => db.list_destinations(tenant_id).await)?;
        stored
            .into_iter()
            .filter(|s| matches_filter(&s.destination, filter))
            .map(|s| self.open(s))
            .collect()
    }

    /// Live, enabled destinations of the tenant: what the routing cache loads.
    pub async fn list_enabled_destinations(&self, tenant_id: &str) -> Result<Vec<Destination>> {
        let stored = on_db!(self, db => db.list_enabled_destinations(tenant_id).await)?;
        stored.into_iter().map(|s| self.open(s)).collect()
    }

    /// Live destinations of the tenant (for `max_destinations_per_tenant`).
    pub async fn count_destinations(&self, tenant_id: &str) -> Result<u64> {
        on_db!(self, db => db.count_destinations(tenant_id).await)
    }

    /// Replaces type, topics, filter, config, credentials and both metadata maps with `d`'s
    /// (the API merges a PATCH into the current record first). `NotFound` if absent.
    pub async fn update_destination(&self, d: &NewDestination) -> Result<Destination> {
        let sealed = self.seal(d)?;
        let stored = on_db!(self, db => db.update_destination(d, sealed.as_deref()).await)?;
        self.changes.announce(&d.tenant_id);
        self.open(stored)
    }

    /// Sets `disabled_at` (kept if already set) and cancels the destination's pending
    /// deliveries; attempts in flight finish, their retries are cancelled.
    pub async fn disable_destination(&self, tenant_id: &str, id: &str) -> Result<Destination> {
        let stored = on_db!(self, db => db.disable_destination(tenant_id, id).await)?;
        self.changes.announce(tenant_id);
        self.open(stored)
    }

    /// Clears `disabled_at` and the consecutive-failure count (alerts start over). Deliveries
    /// cancelled by the disable stay cancelled.
    pub async fn enable_destination(&self, tenant_id: &str, id: &str) -> Result<Destination> {
        let stored = on_db!(self, db => db.enable_destination(tenant_id, id).await)?;
        self.changes.announce(tenant_id);
        self.open(stored)
    }

    /// Soft-deletes the destination (its id stays reserved) and cancels its pending
    /// deliveries. `NotFound` if absent or already deleted.
    pub async fn delete_destination(&self, tenant_id: &str, id: &str) -> Result<()> {
        on_db!(self, db => db.delete_destination(tenant_id, id).await)?;
        self.changes.announce(tenant_id);
        Ok(())
    }

    /// Sets the given timestamps (Outpost's import fields) and returns the destination.
    /// `disabled_at` applies only to a destination disabled already. `NotFound` if absent.
    pub async fn set_destination_times(
        &self,
        tenant_id: &str,
        id: &str,
        times: &DestinationTimes,
    ) -> Result<Destination> {
        let stored = on_db!(self, db => db.set_destination_times(tenant_id, id, times).await)?;
        self.changes.announce(tenant_id);
        self.open(stored)
    }

    // --- events ---

    /// Stores the batch in one transaction: each new event with one pending delivery (due
    /// now) per distinct destination id. An event whose (tenant_id, id) is already stored, or
    /// appears earlier in the batch, is `Duplicate` and writes nothing. Outcomes are in batch
    /// order. A transient error means nothing was stored: retry the whole batch.
    pub async fn insert_events(&self, batch: &[NewEvent]) -> Result<Vec<InsertOutcome>> {
        match &self.db {
            Db::Sqlite(_, hot) => hot.insert_events(batch).await,
            Db::Postgres(db) => db.insert_events(batch).await,
        }
    }

    pub async fn get_event(&self, tenant_id: &str, id: &str) -> Result<Option<Event>> {
        on_db!(self, db => db.get_event(tenant_id, id).await)
    }

    /// Events ordered by `time` (ties by insertion order).
    pub async fn list_events(
        &self,
        filter: &EventFilter,
        page: &PageRequest,
    ) -> Result<Page<Event>> {
        let plan = PagePlan::new(page)?;
        on_db!(self, db => db.list_events(filter, &plan).await)
    }

    // --- deliveries ---

    /// Claims due deliveries for `req.owner` until `req.now + req.lease`, with their event and
    /// destination. Fair across destinations: round-robin (every destination's oldest due
    /// delivery, then every destination's second oldest, ...), and at most `per_destination`
    /// in flight per destination counting unexpired leases held by anyone. Deliveries whose
    /// destination was disabled or deleted meanwhile are cancelled rather than returned. An
    /// expired lease is claimable again (at-least-once). Cost: a few index probes per
    /// destination that has queued deliveries, independent of the backlog's size.
    ///
    /// A delivery whose destination credentials cannot be opened (wrong or missing
    /// `AES_ENCRYPTION_SECRET`) is logged and left under its lease: it is claimed again when
    /// the lease runs out, costs no attempt, and does not hold up the other deliveries.
    pub async fn claim_due(&self, req: &ClaimRequest<'_>) -> Result<Vec<ClaimedDelivery>> {
        let rows = match &self.db {
            Db::Sqlite(_, hot) => hot.claim_due(req).await?,
            Db::Postgres(db) => db.claim_due(req).await?,
        };
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            match self.open(row.destination) {
                Ok(destination) => claimed.push(ClaimedDelivery {
                    delivery: row.delivery,
                    lease: row.lease,
                    event: row.event,
                    destination,
                }),
                Err(err) => tracing::error!(
                    tenant = %row.delivery.tenant_id,
                    event_id = %row.delivery.event_id,
                    destination_id = %row.delivery.destination_id,
                    "delivery postponed until {}: {err}",
                    row.lease.expires_at.to_rfc3339()
                ),
            }
        }
        Ok(claimed)
    }

    /// Records `attempt` and applies `outcome` to the delivery, in one transaction, if `lease`
    /// still holds it. `Ok(false)`: the lease was lost (expired and claimed by someone else,
    /// or reset by a manual retry) and nothing was written.
    pub async fn complete_attempt(
        &self,
        lease: &Lease,
        attempt: &NewAttempt,
        outcome: DeliveryOutcome,
    ) -> Result<bool> {
        Ok(self
            .record_attempt(lease, attempt, outcome)
            .await?
            .is_some())
    }

    /// `complete_attempt` that also says what it wrote: the attempt's number and the
    /// destination's consecutive failed attempts (reset to 0 by a success, counted in the
    /// same transaction). `Ok(None)`: the lease was lost and nothing was written.
    pub async fn record_attempt(
        &self,
        lease: &Lease,
        attempt: &NewAttempt,
        outcome: DeliveryOutcome,
    ) -> Result<Option<AttemptRecorded>> {
        let one = AttemptCompletion {
            lease: lease.clone(),
            attempt: attempt.clone(),
            outcome,
        };
        let recorded = self.record_attempts(std::slice::from_ref(&one)).await?;
        Ok(recorded.into_iter().next().flatten())
    }

    /// `record_attempt` for many attempts in one transaction (the dispatcher's group commit):
    /// one result per item, in batch order. Each item is checked against its own lease (`None`:
    /// lost, nothing written for it; a delivery completes at most once per batch), and
    /// consecutive failures are counted in batch order, as if each item were recorded alone
    /// one after the other. An error means nothing was written.
    pub async fn record_attempts(
        &self,
        batch: &[AttemptCompletion],
    ) -> Result<Vec<Option<AttemptRecorded>>> {
        match &self.db {
            Db::Sqlite(_, hot) => hot.complete_attempts(batch).await,
            Db::Postgres(db) => db.complete_attempts(batch).await,
        }
    }

    /// Queues the event for the destination again, due now, flagged manual: replaces a pending
    /// automatic retry, reopens a finished delivery, or creates one. `NotFound` for an unknown
    /// event or destination, `Invalid` for a disabled destination, `Conflict` while an attempt
    /// holds an unexpired lease on it.
    pub async fn schedule_manual_retry(
        &self,
        tenant_id: &str,
        event_id: &str,
        destination_id: &str,
    ) -> Result<Delivery> {
        on_db!(self, db => db.schedule_manual_retry(tenant_id, event_id, destination_id).await)
    }

    /// The deliveries of one event, by destination id.
    pub async fn list_deliveries(&self, tenant_id: &str, event_id: &str) -> Result<Vec<Delivery>> {
        on_db!(self, db => db.list_deliveries(tenant_id, event_id).await)
    }

    /// When the next delivery becomes due (pending, or a lease running out); `None` when
    /// nothing is queued. Lets the dispatcher sleep until then.
    pub async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>> {
        let due = on_db!(self, db => db.next_due_at().await)?;
        Ok(due.map(|t| t.0))
    }

    /// Deliveries in a status (e.g. pending, for `jetpost_deliveries_pending`).
    pub async fn count_deliveries(&self, status: DeliveryStatus) -> Result<u64> {
        on_db!(self, db => db.count_deliveries(status).await)
    }

    // --- attempts ---

    /// `tenant_id: None` finds the attempt in any tenant (admin).
    pub async fn get_attempt(&self, tenant_id: Option<&str>, id: &str) -> Result<Option<Attempt>> {
        on_db!(self, db => db.get_attempt(tenant_id, id).await)
    }

    /// Attempts ordered by `time` (ties by id).
    pub async fn list_attempts(
        &self,
        filter: &AttemptFilter,
        page: &PageRequest,
    ) -> Result<Page<Attempt>> {
        let plan = PagePlan::new(page)?;
        on_db!(self, db => db.list_attempts(filter, &plan).await)
    }

    // --- aggregates ---

    /// Events per bucket and group, for `/metrics/events`.
    pub async fn aggregate_events(
        &self,
        query: &EventAggregateQuery,
    ) -> Result<Aggregates<EventGroup>> {
        check_range(query.start, query.end)?;
        on_db!(self, db => db.aggregate_events(query).await)
    }

    /// Attempts per bucket and group, for `/metrics/attempts`.
    pub async fn aggregate_attempts(
        &self,
        query: &AttemptAggregateQuery,
    ) -> Result<Aggregates<AttemptGroup>> {
        check_range(query.start, query.end)?;
        on_db!(self, db => db.aggregate_attempts(query).await)
    }

    // --- credentials ---

    fn seal(&self, d: &NewDestination) -> Result<Option<String>> {
        if d.credentials.0.is_empty() {
            return Ok(None);
        }
        let cipher = self.cipher.as_ref().ok_or(StoreError::SecretMissing)?;
        let plain = sql::rows::to_json("credentials", &d.credentials)?;
        cipher
            .seal(&destination_aad(&d.tenant_id, &d.id), plain.as_bytes())
            .map(Some)
            .ok_or_else(|| StoreError::Invalid("credentials are too large to encrypt".into()))
    }

    fn open(&self, stored: SealedDestination) -> Result<Destination> {
        let mut destination = stored.destination;
        let Some(sealed) = stored.sealed_credentials else {
            return Ok(destination);
        };
        let cipher = self.cipher.as_ref().ok_or(StoreError::SecretMissing)?;
        let plain = cipher
            .open(
                &destination_aad(&destination.tenant_id, &destination.id),
                &sealed,
            )
            .ok_or_else(|| StoreError::Undecryptable {
                tenant_id: destination.tenant_id.clone(),
                destination_id: destination.id.clone(),
            })?;
        destination.credentials = serde_json::from_slice(&plain)
            .map_err(|e| StoreError::corrupt("destination credentials", e))?;
        Ok(destination)
    }
}

async fn pending_of<DB>(db: &SqlStore<DB>) -> Result<Vec<MigrationInfo>>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> bool: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let applied = db.applied_migrations().await?;
    migrations::pending(DB::MIGRATIONS, applied.as_deref())
}

fn check_range(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<()> {
    if start < end {
        Ok(())
    } else {
        Err(StoreError::Invalid(
            "invalid time range: start must be before end".to_string(),
        ))
    }
}

fn matches_filter(d: &Destination, filter: &DestinationFilter) -> bool {
    let kind_ok = filter.kinds.is_empty() || filter.kinds.contains(&d.kind);
    let topic_ok = filter.topics.is_empty()
        || d.topics.iter().any(|t| t == "*")
        || filter.topics.iter().any(|t| d.topics.contains(t));
    kind_ok && topic_ok
}
