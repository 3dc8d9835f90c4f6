//! The records the store keeps (tenants, destinations, events, deliveries, attempts) and the
//! inputs that create them, shaped after Outpost's model. Plain data: no I/O here.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Outpost's metadata maps: string keys to string values.
pub type Metadata = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: String,
    pub metadata: Option<Metadata>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What `upsert_tenant` did: `created` is true when the tenant did not exist (or had been
/// deleted), which the API answers with 201 instead of 200.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upserted {
    pub tenant: Tenant,
    pub created: bool,
}

/// A destination's secrets (webhook `secret`, `previous_secret`, ...). Encrypted at rest;
/// `Debug` shows the keys only.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Credentials(pub BTreeMap<String, String>);

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "<redacted>")))
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    pub tenant_id: String,
    pub id: String,
    /// Outpost's `type` (`webhook`, ...).
    pub kind: String,
    /// Subscribed topics; `["*"]` means every topic.
    pub topics: Vec<String>,
    /// Outpost filter document (a JSON object), if any.
    pub filter: Option<serde_json::Value>,
    pub config: BTreeMap<String, String>,
    pub credentials: Credentials,
    pub delivery_metadata: Option<Metadata>,
    pub metadata: Option<Metadata>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The writable part of a destination: `create_destination` inserts it, `update_destination`
/// replaces the stored record with it (the API merges a PATCH into the current record first).
#[derive(Debug, Clone, PartialEq)]
pub struct NewDestination {
    pub tenant_id: String,
    pub id: String,
    pub kind: String,
    pub topics: Vec<String>,
    pub filter: Option<serde_json::Value>,
    pub config: BTreeMap<String, String>,
    pub credentials: Credentials,
    pub delivery_metadata: Option<Metadata>,
    pub metadata: Option<Metadata>,
}

/// Timestamps to set on a destination (`set_destination_times`); `None` keeps the stored one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DestinationTimes {
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// Applies only to a destination that is disabled already.
    pub disabled_at: Option<DateTime<Utc>>,
}

/// Narrows `list_destinations`; empty lists match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationFilter {
    /// Keep destinations of one of these types.
    pub kinds: Vec<String>,
    /// Keep destinations subscribed to one of these topics (exactly, or through `"*"`).
    pub topics: Vec<String>,
}

/// An event to ingest, with the destinations routing matched for it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub tenant_id: String,
    pub id: String,
    pub destination_id: Option<String>,
    pub topic: String,
    /// Stored with microsecond precision.
    pub time: DateTime<Utc>,
    pub metadata: Option<Metadata>,
    /// The exact bytes of the event's `data` object; stored and returned untouched.
    pub data: String,
    pub eligible_for_retry: bool,
    /// One delivery is created per distinct id: pending, or leased when `lease` names it.
    pub destination_ids: Vec<String>,
    /// Deliveries handed straight to a dispatcher (`delivery::Handoff`): inserted already
    /// leased to it instead of pending.
    pub lease: Option<NewLease>,
}

/// The lease a new event's handed-off deliveries are inserted under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLease {
    pub owner: String,
    pub expires_at: DateTime<Utc>,
    /// A subset of the event's `destination_ids`.
    pub destination_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    /// The event was stored; `leased` holds the ids of the deliveries inserted under its
    /// lease, in the order of `NewLease::destination_ids`.
    Inserted { leased: Vec<i64> },
    /// The tenant already has an event with this id (stored earlier, or earlier in the same
    /// batch): nothing was written for it.
    Duplicate,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub tenant_id: String,
    pub id: String,
    pub destination_id: Option<String>,
    pub topic: String,
    pub time: DateTime<Utc>,
    pub metadata: Option<Metadata>,
    /// The exact bytes of the event's `data` object.
    pub data: String,
    pub eligible_for_retry: bool,
    /// Outpost's `matched_destination_ids`.
    pub destination_ids: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// Time bounds shared by the event and attempt filters (Outpost's `time[gte]` etc.).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub gte: Option<DateTime<Utc>>,
    pub gt: Option<DateTime<Utc>>,
    pub lte: Option<DateTime<Utc>>,
    pub lt: Option<DateTime<Utc>>,
}

/// Narrows `list_events`; empty lists match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub tenant_ids: Vec<String>,
    pub ids: Vec<String>,
    /// Events routed to one of these destinations.
    pub destination_ids: Vec<String>,
    pub topics: Vec<String>,
    pub time: TimeRange,
}

/// Narrows `list_tenants`; an empty list matches every tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantFilter {
    pub ids: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    Delivering,
    Success,
    Failed,
    Cancelled,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivering => "delivering",
            DeliveryStatus::Success => "success",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Cancelled => "cancelled",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => DeliveryStatus::Pending,
            "delivering" => DeliveryStatus::Delivering,
            "success" => DeliveryStatus::Success,
            "failed" => DeliveryStatus::Failed,
            "cancelled" => DeliveryStatus::Cancelled,
            _ => return None,
        })
    }
}

/// The delivery of one event to one destination: its state across attempts and retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub tenant_id: String,
    pub event_id: String,
    pub destination_id: String,
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// Pending: when it is due. Delivering: when the lease expires. Finished: `None`.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The current round was asked for by a user (manual retry).
    pub manual: bool,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Parameters of one `claim_due` call.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest<'a> {
    /// Who claims (a worker id unique per process); recorded as `lease_owner`.
    pub owner: &'a str,
    /// Deliveries due at or before this time are claimed.
    pub now: DateTime<Utc>,
    /// At most this many deliveries in total.
    pub limit: u32,
    /// At most this many deliveries in flight per destination, counting unexpired leases
    /// already held by anyone (`delivery_max_concurrency_per_destination`).
    pub per_destination: u32,
    /// How long the claim is held; after that another worker may claim the delivery again.
    pub lease: Duration,
}

/// Proof of a claim: `complete_attempt` succeeds only while the delivery is still held under
/// this exact lease (same owner, same expiry), so a worker whose lease ran out and was
/// re-claimed cannot overwrite the new holder's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub delivery_id: i64,
    pub owner: String,
    pub expires_at: DateTime<Utc>,
}

/// A claimed delivery with everything needed to send it.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub delivery: Delivery,
    pub lease: Lease,
    pub event: Event,
    /// Credentials decrypted.
    pub destination: Destination,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptStatus {
    Success,
    Failed,
}

impl AttemptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptStatus::Success => "success",
            AttemptStatus::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "success" => Some(AttemptStatus::Success),
            "failed" => Some(AttemptStatus::Failed),
            _ => None,
        }
    }
}

/// One attempt as the dispatcher saw it. Tenant, event, destination, delivery, attempt number
/// and the manual flag come from the delivery it completes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAttempt {
    /// Unique attempt id, chosen by the caller (e.g. a UUIDv7).
    pub id: String,
    pub status: AttemptStatus,
    /// HTTP status code, or an error code such as `timeout`.
    pub code: String,
    /// Outpost's response data (`status_code`, `body`, `headers`); the caller caps the body.
    pub response_data: Option<serde_json::Value>,
    pub time: DateTime<Utc>,
}

/// What happens to the delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Delivered: the delivery is finished.
    Success,
    /// Try again at this time (becomes `cancelled` instead if the destination was disabled or
    /// deleted meanwhile).
    RetryAt(DateTime<Utc>),
    /// No more retries: the delivery is finished as failed.
    Failed,
    /// Stop without further attempts (e.g. the destination was disabled).
    Cancelled,
}

/// A finished attempt to record under its claim's lease, one item of `Store::record_attempts`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptCompletion {
    pub lease: Lease,
    pub attempt: NewAttempt,
    pub outcome: DeliveryOutcome,
}

/// What `record_attempt` wrote, for the dispatcher's logs and alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptRecorded {
    /// The attempt's number within its delivery (1 = first).
    pub attempt_number: u32,
    /// The destination's failed attempts in a row, this one included; 0 after a success.
    /// Counted in the attempt's transaction, so every value is seen by exactly one attempt.
    pub consecutive_failures: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub id: String,
    pub tenant_id: String,
    pub event_id: String,
    pub destination_id: String,
    pub delivery_id: i64,
    /// 1 for the first attempt of the delivery, 2+ for retries (manual ones included).
    pub attempt_number: u32,
    pub manual: bool,
    pub status: AttemptStatus,
    pub code: String,
    pub response_data: Option<serde_json::Value>,
    pub time: DateTime<Utc>,
    /// The destination's type (`webhook`, `rabbitmq`, …), read from the destination.
    pub destination_type: String,
}

/// Narrows `list_attempts`; empty lists match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttemptFilter {
    pub tenant_ids: Vec<String>,
    pub event_ids: Vec<String>,
    pub destination_ids: Vec<String>,
    /// Destination types (`webhook`, ...).
    pub destination_kinds: Vec<String>,
    pub status: Option<AttemptStatus>,
    /// Topics of the attempted events.
    pub topics: Vec<String>,
    /// Bounds on the attempt's time.
    pub time: TimeRange,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_debug_hides_values() {
        let c = Credentials(BTreeMap::from([("secret".into(), "whsec_abc".into())]));
        let shown = format!("{c:?}");
        assert!(shown.contains("secret"));
        assert!(!shown.contains("whsec_abc"));
    }

    #[test]
    fn delivery_status_round_trips() {
        for s in [
            DeliveryStatus::Pending,
            DeliveryStatus::Delivering,
            DeliveryStatus::Success,
            DeliveryStatus::Failed,
            DeliveryStatus::Cancelled,
        ] {
            assert_eq!(DeliveryStatus::parse(s.as_str()), Some(s));
        }
    }
}

/// What a replica's heartbeat returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaBeat {
    /// The live replicas' ids, sorted.
    pub live: Vec<String>,
    /// How soon the first of the other live replicas' leases runs out unless renewed.
    pub first_expiry: Option<std::time::Duration>,
}

/// A replica of `jetpost serve` sharing a Postgres store, as its heartbeats left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaLease {
    pub id: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Handing its accounts over before it exits (SIGTERM).
    pub leaving: bool,
    /// Its lease runs (by the database's clock).
    pub live: bool,
    /// Account leases it holds that run.
    pub accounts: u64,
}

/// Which replica owns a NATS account, and until when unless it renews.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountLease {
    pub account: String,
    pub replica_id: String,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The lease runs (by the database's clock).
    pub live: bool,
}
