//! The metadata a broker-type destination sends beside an event's data (as message headers or
//! attributes), merged as Outpost's publishers do: `event-id`, `topic` and `timestamp` first,
//! then the destination's `delivery_metadata`, then the event's own `metadata`, each later one
//! overriding an earlier key.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::store::Event;

/// The merged metadata of `event` sent at `sent_at` to a destination with `delivery_metadata`.
pub fn message_metadata(
    event: &Event,
    delivery_metadata: &BTreeMap<String, String>,
    sent_at: DateTime<Utc>,
) -> BTreeMap<String, String> {
    let mut merged = BTreeMap::from([
        ("event-id".to_owned(), event.id.clone()),
        ("topic".to_owned(), event.topic.clone()),
        (
            "timestamp".to_owned(),
            sent_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        ),
    ]);
    merged.extend(delivery_metadata.clone());
    merged.extend(event.metadata.clone().unwrap_or_default());
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_metadata_overrides_delivery_metadata_which_overrides_the_system_keys() {
        let event = Event {
            tenant_id: "t".into(),
            id: "evt_123".into(),
            destination_id: None,
            topic: "user.created".into(),
            time: Utc::now(),
            metadata: Some(BTreeMap::from([
                ("user-id".into(), "usr_456".into()),
                ("region".into(), "eu".into()),
            ])),
            data: "{}".into(),
            eligible_for_retry: true,
            destination_ids: Vec::new(),
            created_at: Utc::now(),
        };
        let delivery = BTreeMap::from([
            ("region".into(), "us".into()),
            ("topic".into(), "overridden".into()),
        ]);
        let at: DateTime<Utc> = "2021-01-01T00:00:00.250Z".parse().unwrap();
        let merged = message_metadata(&event, &delivery, at);
        let expected: BTreeMap<String, String> = [
            ("event-id", "evt_123"),
            ("topic", "overridden"),
            ("timestamp", "2021-01-01T00:00:00Z"),
            ("user-id", "usr_456"),
            ("region", "eu"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(merged, expected);
    }
}
