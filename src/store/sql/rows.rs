//! Reading rows into records, the same for both backends: typed column access (`RowExt`), the
//! column lists each record is selected with, and the mapping from row to record.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use sqlx::{ColumnIndex, Decode, Row, Type};

use super::timestamp::Timestamp;
use crate::store::error::{Result, StoreError};
use crate::store::model::{
    Attempt, AttemptStatus, Credentials, Delivery, DeliveryStatus, Destination, Event, Tenant,
};

// Column lists as macros, so that `concat!` can build whole statements as `&'static str`.

macro_rules! tenant_columns {
    () => {
        "id, metadata, created_at, updated_at"
    };
}

macro_rules! destination_columns {
    () => {
        "tenant_id, id, type, topics, filter, config, credentials, delivery_metadata, metadata, \
         disabled_at, created_at, updated_at"
    };
}

macro_rules! event_columns {
    () => {
        "seq, tenant_id, id, destination_id, topic, time, metadata, data, eligible_for_retry, \
         destination_ids, created_at"
    };
}

macro_rules! delivery_columns {
    () => {
        "id, tenant_id, event_id, destination_id, status, attempts, next_attempt_at, manual, \
         lease_owner, lease_expires_at, created_at, updated_at"
    };
}

macro_rules! attempt_columns {
    () => {
        "id, tenant_id, event_id, destination_id, delivery_id, attempt_number, manual, status, \
         code, response_data, time, \
         (SELECT t.type FROM destinations t WHERE t.tenant_id = attempts.tenant_id \
          AND t.id = attempts.destination_id) AS destination_type"
    };
}

pub(crate) use {
    attempt_columns, delivery_columns, destination_columns, event_columns, tenant_columns,
};

/// Typed access to a column by name; decode failures become `StoreError::Corrupt`.
pub(crate) trait RowExt {
    fn text(&self, col: &str) -> Result<String>;
    fn opt_text(&self, col: &str) -> Result<Option<String>>;
    fn int(&self, col: &str) -> Result<i64>;
    fn flag(&self, col: &str) -> Result<bool>;
    fn time(&self, col: &str) -> Result<DateTime<Utc>>;
    fn opt_time(&self, col: &str) -> Result<Option<DateTime<Utc>>>;
}

impl<R> RowExt for R
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Timestamp: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, col: &str) -> Result<String> {
        self.try_get(col).map_err(|e| unreadable(col, e))
    }

    fn opt_text(&self, col: &str) -> Result<Option<String>> {
        self.try_get(col).map_err(|e| unreadable(col, e))
    }

    fn int(&self, col: &str) -> Result<i64> {
        self.try_get(col).map_err(|e| unreadable(col, e))
    }

    fn flag(&self, col: &str) -> Result<bool> {
        self.try_get(col).map_err(|e| unreadable(col, e))
    }

    fn time(&self, col: &str) -> Result<DateTime<Utc>> {
        self.try_get::<Timestamp, _>(col)
            .map(|t| t.0)
            .map_err(|e| unreadable(col, e))
    }

    fn opt_time(&self, col: &str) -> Result<Option<DateTime<Utc>>> {
        self.try_get::<Option<Timestamp>, _>(col)
            .map(|t| t.map(|t| t.0))
            .map_err(|e| unreadable(col, e))
    }
}

fn unreadable(col: &str, e: sqlx::Error) -> StoreError {
    StoreError::corrupt("column", format!("{col}: {e}"))
}

fn json<T: DeserializeOwned>(col: &str, text: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::corrupt("JSON column", format!("{col}: {e}")))
}

fn opt_json<T: DeserializeOwned>(col: &str, text: Option<String>) -> Result<Option<T>> {
    text.map(|t| json(col, &t)).transpose()
}

/// Column name with an optional alias prefix (joined queries select `e_id`, `t_id`, ...).
fn col<'a>(prefix: &str, name: &'a str) -> Cow<'a, str> {
    if prefix.is_empty() {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(format!("{prefix}{name}"))
    }
}

pub(crate) fn tenant(r: &impl RowExt) -> Result<Tenant> {
    Ok(Tenant {
        id: r.text("id")?,
        metadata: opt_json("metadata", r.opt_text("metadata")?)?,
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
    })
}

/// A destination as stored: credentials still sealed; the store facade opens them.
#[derive(Debug, Clone)]
pub(crate) struct SealedDestination {
    pub destination: Destination,
    pub sealed_credentials: Option<String>,
}

pub(crate) fn destination(r: &impl RowExt, prefix: &str) -> Result<SealedDestination> {
    let c = |name| col(prefix, name);
    Ok(SealedDestination {
        destination: Destination {
            tenant_id: r.text(&c("tenant_id"))?,
            id: r.text(&c("id"))?,
            kind: r.text(&c("type"))?,
            topics: json("topics", &r.text(&c("topics"))?)?,
            filter: opt_json("filter", r.opt_text(&c("filter"))?)?,
            config: json("config", &r.text(&c("config"))?)?,
            credentials: Credentials::default(),
            delivery_metadata: opt_json("delivery_metadata", r.opt_text(&c("delivery_metadata"))?)?,
            metadata: opt_json("metadata", r.opt_text(&c("metadata"))?)?,
            disabled_at: r.opt_time(&c("disabled_at"))?,
            created_at: r.time(&c("created_at"))?,
            updated_at: r.time(&c("updated_at"))?,
        },
        sealed_credentials: r.opt_text(&c("credentials"))?,
    })
}

/// An event and its `seq` (the pagination tie-breaker).
pub(crate) fn event(r: &impl RowExt, prefix: &str) -> Result<(Event, i64)> {
    let c = |name| col(prefix, name);
    let event = Event {
        tenant_id: r.text(&c("tenant_id"))?,
        id: r.text(&c("id"))?,
        destination_id: r.opt_text(&c("destination_id"))?,
        topic: r.text(&c("topic"))?,
        time: r.time(&c("time"))?,
        metadata: opt_json("metadata", r.opt_text(&c("metadata"))?)?,
        data: r.text(&c("data"))?,
        eligible_for_retry: r.flag(&c("eligible_for_retry"))?,
        destination_ids: json("destination_ids", &r.text(&c("destination_ids"))?)?,
        created_at: r.time(&c("created_at"))?,
    };
    Ok((event, r.int(&c("seq"))?))
}

pub(crate) fn delivery(r: &impl RowExt) -> Result<Delivery> {
    let status = r.text("status")?;
    Ok(Delivery {
        id: r.int("id")?,
        tenant_id: r.text("tenant_id")?,
        event_id: r.text("event_id")?,
        destination_id: r.text("destination_id")?,
        status: DeliveryStatus::parse(&status)
            .ok_or_else(|| StoreError::corrupt("delivery status", &status))?,
        attempts: count("attempts", r.int("attempts")?)?,
        next_attempt_at: r.opt_time("next_attempt_at")?,
        manual: r.flag("manual")?,
        lease_owner: r.opt_text("lease_owner")?,
        lease_expires_at: r.opt_time("lease_expires_at")?,
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
    })
}

pub(crate) fn attempt(r: &impl RowExt) -> Result<Attempt> {
    let status = r.text("status")?;
    Ok(Attempt {
        id: r.text("id")?,
        tenant_id: r.text("tenant_id")?,
        event_id: r.text("event_id")?,
        destination_id: r.text("destination_id")?,
        delivery_id: r.int("delivery_id")?,
        attempt_number: count("attempt_number", r.int("attempt_number")?)?,
        manual: r.flag("manual")?,
        status: AttemptStatus::parse(&status)
            .ok_or_else(|| StoreError::corrupt("attempt status", &status))?,
        code: r.text("code")?,
        response_data: opt_json("response_data", r.opt_text("response_data")?)?,
        time: r.time("time")?,
        // Destination rows are kept (soft-deleted), so the type is always there.
        destination_type: r.opt_text("destination_type")?.unwrap_or_default(),
    })
}

fn count(col: &str, n: i64) -> Result<u32> {
    u32::try_from(n).map_err(|_| StoreError::corrupt("counter", format!("{col} = {n}")))
}

/// JSON text for a column; serializing these plain types cannot fail, but don't panic if so.
pub(crate) fn to_json(col: &'static str, value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Invalid(format!("{col}: {e}")))
}

pub(crate) fn to_opt_json(
    col: &'static str,
    value: Option<&impl serde::Serialize>,
) -> Result<Option<String>> {
    value.map(|v| to_json(col, v)).transpose()
}
