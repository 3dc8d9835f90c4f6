//! Event domain: the Outpost event model and its parsing from raw bytes, the tenant splice,
//! event ids and the shape of every id, topic and metadata entry, topic rules and destination
//! filters. Pure: no I/O, so every rule here is unit tested in isolation and shared by the
//! NATS source, HTTP publish and the API.

mod filter;
mod id;
mod ident;
mod object;
mod parse;
mod splice;
mod topic;

#[cfg(test)]
mod proptests;

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::value::RawValue;

pub use filter::{Document, Filter, FilterError, MAX_FILTER_BYTES};
pub use id::{derive_event_id, new_event_id};
pub use ident::{
    IdentError, MAX_ID_CHARS, MAX_METADATA_BYTES, MAX_METADATA_ENTRIES, MAX_METADATA_KEY_CHARS,
    MAX_TOPIC_CHARS, MetadataError, check_id, check_metadata, check_topic,
};
pub use object::JsonKind;
pub use parse::{EventError, MAX_DATA_DEPTH};
pub use splice::{SpliceError, splice_tenant};
pub use topic::{MAX_DESTINATION_TOPICS, TopicError, TopicRules, topics_from_json, topics_match};

/// An event as Outpost defines it (`POST /api/v1/publish` body, NATS message body).
///
/// Outpost treats an empty string and an absent field alike for `id`, `topic` and
/// `destination_id`; [`Event::parse`] therefore maps `""` to `None` for those.
#[derive(Debug, Clone)]
pub struct Event {
    /// Absent when the publisher gave none; ingest fills it ([`derive_event_id`] for NATS,
    /// [`new_event_id`] for HTTP).
    pub id: Option<String>,
    pub tenant_id: String,
    /// Routes the event to this one destination instead of matching topics and filters.
    pub destination_id: Option<String>,
    pub topic: Option<String>,
    /// Defaults to `true`.
    pub eligible_for_retry: bool,
    /// Absent when the publisher gave none; ingest fills it with the receive time.
    pub time: Option<DateTime<Utc>>,
    pub metadata: BTreeMap<String, String>,
    /// The `data` object's exact bytes, delivered as the webhook body.
    pub data: Box<RawValue>,
}

impl Event {
    /// The document destination filters are evaluated against, shaped as Outpost builds it:
    /// `{id, topic, time, metadata, data}` with `time` in RFC 3339 seconds and absent strings
    /// as `""`.
    ///
    /// `time` falls back to now when unset (ingest normally sets it first). `data` is decoded
    /// as a [`Document`], which reads every JSON text [`Event::parse`] accepts (numbers beyond
    /// f64 as ±infinity, lone surrogates as U+FFFD); text that is not a JSON object (not
    /// possible after `parse`) reads as `{}`, as in Outpost, so such an event matches only
    /// filters that ask nothing of `data`.
    pub fn filter_input(&self) -> Document {
        let time = self.time.unwrap_or_else(Utc::now);
        let data = Document::parse(self.data.get())
            .filter(|d| matches!(d, Document::Object(_)))
            .unwrap_or_else(|| Document::Object(BTreeMap::new()));
        let text = |s: Option<&str>| Document::String(s.unwrap_or("").to_owned());
        Document::Object(BTreeMap::from([
            ("id".to_owned(), text(self.id.as_deref())),
            ("topic".to_owned(), text(self.topic.as_deref())),
            (
                "time".to_owned(),
                Document::String(time.to_rfc3339_opts(SecondsFormat::Secs, true)),
            ),
            (
                "metadata".to_owned(),
                Document::Object(
                    self.metadata
                        .iter()
                        .map(|(k, v)| (k.clone(), Document::String(v.clone())))
                        .collect(),
                ),
            ),
            ("data".to_owned(), data),
        ]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filter_input_has_outposts_shape() {
        let event = Event::parse(
            br#"{"id":"e1","tenant_id":"t","topic":"order.paid","time":"2024-01-15T10:30:00.123+02:00",
                "metadata":{"region":"eu"},"data":{"amount":12345678901234567890,"n":{"x":[1,"a"]}}}"#,
        )
        .unwrap();
        assert_eq!(
            event.filter_input(),
            Document::from(&json!({
                "id": "e1",
                "topic": "order.paid",
                "time": "2024-01-15T08:30:00Z",
                "metadata": {"region": "eu"},
                "data": {"amount": 12345678901234567890u64, "n": {"x": [1, "a"]}},
            }))
        );
    }

    #[test]
    fn filter_input_uses_empty_strings_and_maps_for_absent_fields() {
        let mut event = Event::parse(br#"{"tenant_id":"t","data":{}}"#).unwrap();
        event.time = Some("2024-01-01T00:00:00Z".parse().unwrap());
        assert_eq!(
            event.filter_input(),
            Document::from(
                &json!({"id": "", "topic": "", "time": "2024-01-01T00:00:00Z", "metadata": {}, "data": {}})
            )
        );
    }

    #[test]
    fn filter_input_without_time_uses_now() {
        let event = Event::parse(br#"{"tenant_id":"t","data":{}}"#).unwrap();
        let input = event.filter_input();
        let Some(Document::String(time)) = input.get("time") else {
            panic!("no time in {input:?}");
        };
        assert!(DateTime::parse_from_rfc3339(time).is_ok(), "{time}");
    }

    #[test]
    fn filter_input_reads_data_serde_json_values_cannot_hold() {
        let event =
            Event::parse(br#"{"tenant_id":"t","data":{"a":"\ud800","n":1e400,"b":1}}"#).unwrap();
        let input = event.filter_input();
        let data = input.get("data").unwrap();
        assert_eq!(data.get("a"), Some(&Document::String("\u{fffd}".into())));
        assert_eq!(data.get("n"), Some(&Document::Number(f64::INFINITY)));
        assert_eq!(data.get("b"), Some(&Document::Number(1.0)));
    }
}
