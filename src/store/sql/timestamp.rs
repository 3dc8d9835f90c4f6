//! The column type for times: `timestamptz` on Postgres, and on SQLite fixed-width UTC text
//! (`2024-01-01T00:00:00.000000Z`) so that comparing and sorting the text orders by time.
//! Every stored time is truncated to microseconds, the precision both backends keep.

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentsBuffer, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Postgres, Sqlite, Type};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Timestamp(pub DateTime<Utc>);

impl Timestamp {
    pub fn new(t: DateTime<Utc>) -> Self {
        Timestamp(truncate_micros(t))
    }

    pub fn now() -> Self {
        Timestamp::new(Utc::now())
    }

    /// SQLite's stored form.
    pub(crate) fn to_text(self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    /// Reads SQLite's stored form.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let t = DateTime::parse_from_rfc3339(text)
            .map_err(|e| format!("stored time {text:?} is not RFC 3339: {e}"))?;
        Ok(Timestamp(t.with_timezone(&Utc)))
    }
}

/// Drops sub-microsecond digits, so a time reads back exactly as it was written.
pub(crate) fn truncate_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

impl Type<Sqlite> for Timestamp {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for Timestamp {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Sqlite>::encode(self.to_text(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Timestamp {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<Sqlite>>::decode(value)?;
        Ok(Timestamp::parse(text)?)
    }
}

impl Type<Postgres> for Timestamp {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for Timestamp {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Postgres>::encode(self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for Timestamp {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Timestamp(<DateTime<Utc> as Decode<Postgres>>::decode(
            value,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_text_is_fixed_width_and_sorts_by_time() {
        let a = Timestamp::new(DateTime::from_timestamp(1_700_000_000, 0).unwrap());
        let b = Timestamp::new(DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap());
        let c = Timestamp::new(DateTime::from_timestamp(1_700_000_001, 5_000).unwrap());
        let texts: Vec<String> = [a, b, c].iter().map(|t| t.to_text()).collect();
        assert_eq!(texts[0], "2023-11-14T22:13:20.000000Z");
        assert_eq!(texts[1], "2023-11-14T22:13:20.123456Z");
        assert!(texts.iter().all(|t| t.len() == texts[0].len()));
        assert!(texts[0] < texts[1] && texts[1] < texts[2]);
        assert_eq!(b.0.timestamp_subsec_nanos(), 123_456_000);
    }
}
