//! Destination request bodies: a create, and a PATCH with Outpost's merge semantics (omitted
//! fields kept; `null` clears; `{}` leaves `config`, `credentials` and both metadata maps as
//! they are but clears `filter`; map keys set to `null` are removed; `type` may be sent but
//! not changed). Topics arrive as `"*"` or an array; filters are checked as they will run.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::super::body::{Fields, Patch, present};
use super::super::error::ApiResult;
use crate::destination::{BUILTIN_TYPES, UNAVAILABLE_TYPES};
use crate::event::{Filter, TopicRules, check_id, check_metadata, topics_from_json};

type MapPatch = Patch<BTreeMap<String, Option<String>>>;

/// A validated create body.
#[derive(Debug)]
pub struct Create {
    pub id: Option<String>,
    pub kind: String,
    pub topics: Vec<String>,
    pub filter: Option<Value>,
    pub config: BTreeMap<String, String>,
    pub credentials: BTreeMap<String, String>,
    pub delivery_metadata: Option<BTreeMap<String, String>>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub disabled_at: Option<DateTime<Utc>>,
}

/// A validated PATCH body.
#[derive(Debug)]
pub struct Update {
    pub kind: Option<String>,
    pub topics: Option<Vec<String>>,
    /// `Null` clears the filter (sent as `null` or `{}`).
    pub filter: Patch<Value>,
    pub config: MapPatch,
    pub credentials: MapPatch,
    pub delivery_metadata: MapPatch,
    pub metadata: MapPatch,
    /// `Null` enables, a time disables.
    pub disabled_at: Patch<DateTime<Utc>>,
}

pub fn create(
    object: &Map<String, Value>,
    rules: &TopicRules,
    now: DateTime<Utc>,
) -> ApiResult<Create> {
    let mut f = Fields::new(object);
    let id = f.string("id");
    if let Some(id) = &id
        && let Err(err) = check_id(id)
    {
        f.fail(format!("id: {err}"));
    }
    let kind = f.required_string("type");
    check_kind(&mut f, kind.as_deref());
    let topics = match f.raw("topics") {
        Patch::Value(v) => topics(&mut f, v, rules),
        Patch::Absent | Patch::Null => {
            f.fail("topics is required (\"*\" for every topic, or an array of topics)");
            None
        }
    };
    let filter = match filter(&mut f) {
        Patch::Value(v) => Some(v),
        Patch::Absent | Patch::Null => None,
    };
    let config = present(f.string_map("config")).unwrap_or_default();
    let credentials = present(f.string_map("credentials")).unwrap_or_default();
    let delivery_metadata = present(f.string_map("delivery_metadata"));
    if let Some(problem) = delivery_metadata_problem(delivery_metadata.as_ref()) {
        f.fail(problem);
    }
    let metadata = present(f.string_map("metadata"));
    let created_at = past(&mut f, "created_at", now);
    let updated_at = past(&mut f, "updated_at", now);
    let disabled_at = past(&mut f, "disabled_at", now);
    f.finish()?;
    Ok(Create {
        id,
        kind: kind.unwrap_or_default(),
        topics: topics.unwrap_or_default(),
        filter,
        config,
        credentials,
        delivery_metadata,
        metadata,
        created_at,
        updated_at,
        disabled_at,
    })
}

pub fn update(
    object: &Map<String, Value>,
    rules: &TopicRules,
    now: DateTime<Utc>,
) -> ApiResult<Update> {
    let mut f = Fields::new(object);
    let kind = f.string("type");
    let topics = match f.raw("topics") {
        Patch::Absent => None,
        Patch::Null => {
            f.fail("topics cannot be null: send \"*\" or an array of topics, or leave it out");
            None
        }
        Patch::Value(v) => topics(&mut f, v, rules),
    };
    let filter = filter(&mut f);
    let config = f.string_map("config");
    let credentials = f.string_map("credentials");
    let delivery_metadata = f.string_map("delivery_metadata");
    let metadata = f.string_map("metadata");
    let disabled_at = match f.time("disabled_at") {
        Patch::Value(t) if t > now => {
            f.fail("disabled_at cannot be in the future");
            Patch::Absent
        }
        other => other,
    };
    f.finish()?;
    Ok(Update {
        kind,
        topics,
        filter,
        config,
        credentials,
        delivery_metadata,
        metadata,
        disabled_at,
    })
}

fn check_kind(f: &mut Fields<'_>, kind: Option<&str>) {
    let Some(kind) = kind.filter(|kind| !BUILTIN_TYPES.contains(kind)) else {
        return;
    };
    let known: Vec<String> = BUILTIN_TYPES.iter().map(|t| format!("{t:?}")).collect();
    let known = known.join(", ");
    match UNAVAILABLE_TYPES.iter().find(|(name, _)| *name == kind) {
        Some((_, why)) => f.fail(format!(
            "type {kind:?} is not available in this build ({why}); it delivers to {known}"
        )),
        None => f.fail(format!(
            "type {kind:?} is not supported: jetpost delivers to {known} destinations only"
        )),
    }
}

fn topics(f: &mut Fields<'_>, value: &Value, rules: &TopicRules) -> Option<Vec<String>> {
    let checked = topics_from_json(value).and_then(|t| rules.validate_destination_topics(&t));
    match checked {
        Ok(topics) => Some(topics),
        Err(err) => {
            let message = err.to_string();
            if message.starts_with("topics") {
                f.fail(message);
            } else {
                f.fail(format!("topics: {message}"));
            }
            None
        }
    }
}

/// Why a destination's `delivery_metadata` (sent as headers with every event) cannot be kept,
/// naming the field; checked on create and whenever a PATCH changes it.
pub fn delivery_metadata_problem(map: Option<&BTreeMap<String, String>>) -> Option<String> {
    let err = check_metadata(map?).err()?;
    Some(format!("{}: {err}", err.field("delivery_metadata")))
}

/// `null` or `{}` clear; an object must be a valid filter.
fn filter(f: &mut Fields<'_>) -> Patch<Value> {
    match f.raw("filter") {
        Patch::Absent => Patch::Absent,
        Patch::Null => Patch::Null,
        Patch::Value(Value::Object(map)) if map.is_empty() => Patch::Null,
        Patch::Value(value @ Value::Object(_)) => match Filter::from_written_json(value) {
            Ok(_) => Patch::Value(value.clone()),
            Err(err) => {
                // FilterError messages start with "filter", naming the position.
                f.fail(err.to_string());
                Patch::Absent
            }
        },
        Patch::Value(_) => {
            f.fail("filter must be a JSON object (or null to clear it)");
            Patch::Absent
        }
    }
}

/// An optional time that must not be in the future.
fn past(f: &mut Fields<'_>, key: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match f.time(key) {
        Patch::Value(t) if t > now => {
            f.fail(format!("{key} cannot be in the future"));
            None
        }
        Patch::Value(t) => Some(t),
        Patch::Absent | Patch::Null => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn messages(err: super::super::super::error::ApiError) -> Vec<String> {
        err.data
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn create_reads_topics_as_star_or_array() {
        let rules = TopicRules::default();
        let c = create(
            &object(json!({"type": "webhook", "topics": "*", "config": {"url": "https://e.com"}})),
            &rules,
            Utc::now(),
        )
        .unwrap();
        assert_eq!(c.topics, vec!["*"]);
        let c = create(
            &object(json!({"type": "webhook", "topics": ["a", "a", "b"], "filter": {}})),
            &rules,
            Utc::now(),
        )
        .unwrap();
        assert_eq!(c.topics, vec!["a", "b"]);
        assert_eq!(c.filter, None);
    }

    #[test]
    fn create_names_every_bad_field() {
        let rules = TopicRules::new(["order.paid"], false);
        let err = create(
            &object(json!({
                "type": "sqs",
                "topics": ["user.created"],
                "filter": {"data": {"$bogus": 1}},
                "created_at": "2999-01-01T00:00:00Z"
            })),
            &rules,
            Utc::now(),
        )
        .unwrap_err();
        let m = messages(err);
        assert_eq!(m.len(), 4, "{m:?}");
        assert!(m[0].starts_with("type \"sqs\" is not supported"));
        let pubsub = object(json!({"type": "gcp_pubsub", "topics": "*"}));
        let refused = messages(create(&pubsub, &rules, Utc::now()).unwrap_err());
        assert!(
            refused[0].starts_with("type \"gcp_pubsub\" is not available in this build (Google's"),
            "{refused:?}"
        );
        assert!(m[1].starts_with("topics: topic \"user.created\""));
        assert!(
            m[2].starts_with("filter at \"data\": unknown operator"),
            "{}",
            m[2]
        );
        assert_eq!(m[3], "created_at cannot be in the future");
        let m = messages(create(&object(json!({})), &rules, Utc::now()).unwrap_err());
        assert_eq!(m[0], "type is required");
        assert!(m[1].starts_with("topics is required"));
    }

    #[test]
    fn create_refuses_ids_and_delivery_metadata_that_break_headers() {
        let rules = TopicRules::default();
        let m = messages(
            create(
                &object(json!({
                    "id": "d\r\n1",
                    "type": "webhook",
                    "topics": ["a b"],
                    "delivery_metadata": {"app": "shop\nx"}
                })),
                &rules,
                Utc::now(),
            )
            .unwrap_err(),
        );
        assert_eq!(m.len(), 3, "{m:?}");
        assert!(m[0].starts_with("id: has '\\r' at character 2"), "{}", m[0]);
        assert!(m[1].starts_with("topics[0] has ' '"), "{}", m[1]);
        assert!(
            m[2].starts_with("delivery_metadata.app: has '\\n'"),
            "{}",
            m[2]
        );
        let ok = create(
            &object(
                json!({"id": "user@example.com:hooks", "type": "webhook", "topics": "*",
                           "delivery_metadata": {"X-App": "shop"}}),
            ),
            &rules,
            Utc::now(),
        )
        .unwrap();
        assert_eq!(ok.id.as_deref(), Some("user@example.com:hooks"));
    }

    #[test]
    fn update_distinguishes_absent_null_and_empty() {
        let rules = TopicRules::default();
        let u = update(&object(json!({"type": "webhook"})), &rules, Utc::now()).unwrap();
        assert_eq!(u.filter, Patch::Absent);
        assert_eq!(u.metadata, Patch::Absent);
        let u = update(
            &object(json!({"filter": {}, "metadata": {}, "delivery_metadata": null})),
            &rules,
            Utc::now(),
        )
        .unwrap();
        assert_eq!(u.filter, Patch::Null);
        assert_eq!(u.metadata, Patch::Value(BTreeMap::new()));
        assert_eq!(u.delivery_metadata, Patch::Null);
        assert!(update(&object(json!({"topics": null})), &rules, Utc::now()).is_err());
    }
}
