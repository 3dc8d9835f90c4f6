//! Property tests over generated JSON: the splice keeps every other member's bytes and always
//! yields valid JSON carrying the new tenant; parsing and splicing never panic on any input.

use proptest::prelude::*;
use serde_json::Value;

use super::object::read_object;
use super::{Event, splice_tenant};

fn ws() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["", "", " ", "\n", "\t", "  \r\n "])
}

/// A JSON string literal: encoded by serde_json, or written with escapes serde_json would not
/// produce.
fn string_literal() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>().prop_map(|s| Value::String(s).to_string()),
        "[a-z_]{0,8}".prop_map(|s| format!("\"{s}\"")),
        prop::sample::select(vec![
            r#""\u003c<&>\u003e""#,
            r#""\ud83d\ude00""#,
            r#""\/\b\f\n\r\t\"\\""#,
            r#""é""#,
        ])
        .prop_map(str::to_owned),
    ]
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "null",
            "true",
            "false",
            "0",
            "-0",
            "12345678901234567890",
            "-9223372036854775809",
            "1.5e300",
            "1E-7",
            "0.1000000000000000055511151231257827",
        ])
        .prop_map(str::to_owned),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| f.to_string()),
        string_literal(),
    ]
}

/// Any JSON value as text, with random whitespace between tokens.
fn value() -> impl Strategy<Value = String> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec((ws(), inner.clone(), ws()), 0..6).prop_map(|items| {
                let items: Vec<String> = items
                    .into_iter()
                    .map(|(a, v, b)| format!("{a}{v}{b}"))
                    .collect();
                format!("[{}]", items.join(","))
            }),
            object(inner),
        ]
    })
}

fn object(values: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    prop::collection::vec((ws(), string_literal(), ws(), ws(), values, ws()), 0..6).prop_map(
        |members| {
            let members: Vec<String> = members
                .into_iter()
                .map(|(a, k, b, c, v, d)| format!("{a}{k}{b}:{c}{v}{d}"))
                .collect();
            format!("{{{}}}", members.join(","))
        },
    )
}

/// Keys a spoofer might use for the tenant, and ordinary keys.
fn top_level_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            r#""tenant_id""#,
            r#""Tenant_ID""#,
            r#""TENANT_ID""#,
            r#""tenant\u005fid""#,
            r#""\u0074enant_id""#,
            r#""tenant_ıd""#,
            r#""tenant_İd""#,
            r#""tenant_id ""#,
            r#""topic""#,
            r#""id""#,
            r#""metadata""#,
        ])
        .prop_map(str::to_owned),
        string_literal(),
    ]
    .prop_filter("data is placed separately", |k| {
        serde_json::from_str::<String>(k).is_ok_and(|k| k != "data")
    })
}

/// A top-level object as text with one `data` member somewhere among the others; returns the
/// text and the `data` value's text.
fn event_like() -> impl Strategy<Value = (String, String)> {
    (
        prop::collection::vec((ws(), top_level_key(), ws(), ws(), value(), ws()), 0..8),
        object(value()),
        any::<prop::sample::Index>(),
        ws(),
        ws(),
    )
        .prop_map(|(members, data, at, lead, trail)| {
            let mut members: Vec<String> = members
                .into_iter()
                .map(|(a, k, b, c, v, d)| format!("{a}{k}{b}:{c}{v}{d}"))
                .collect();
            let at = at.index(members.len() + 1);
            members.insert(at, format!("\"data\" : {data}"));
            (format!("{lead}{{{}}}{trail}", members.join(",")), data)
        })
}

fn folds_to_tenant_id(key: &str) -> bool {
    let folded: String = key
        .chars()
        .map(|c| match c {
            'ı' | 'İ' => 'I',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    folded == "TENANT_ID"
}

proptest! {
    #[test]
    fn splice_keeps_members_and_sets_tenant((raw, data) in event_like(), tenant in any::<String>()) {
        let out = splice_tenant(raw.as_bytes(), &tenant).unwrap();
        let value: Value = serde_json::from_slice(&out).unwrap();
        prop_assert_eq!(value["tenant_id"].as_str(), Some(tenant.as_str()));

        let before = read_object(raw.as_bytes()).unwrap();
        let after = read_object(&out).unwrap();
        prop_assert_eq!(after.members[0].key.as_ref(), "tenant_id");
        let kept_before: Vec<&str> = before
            .members
            .iter()
            .filter(|m| !folds_to_tenant_id(&m.key))
            .map(|m| &before.text[m.span.clone()])
            .collect();
        let kept_after: Vec<&str> = after.members[1..]
            .iter()
            .map(|m| &after.text[m.span.clone()])
            .collect();
        prop_assert_eq!(kept_before, kept_after);
        prop_assert!(after.members[1..].iter().all(|m| !folds_to_tenant_id(&m.key)));

        let data_after = after.members.iter().find(|m| m.key == "data").unwrap();
        prop_assert_eq!(data_after.value.get(), data.as_str());
    }

    #[test]
    fn splice_is_idempotent((raw, _) in event_like(), a in "[a-z]{1,5}", b in any::<String>()) {
        let once = splice_tenant(raw.as_bytes(), &b).unwrap();
        let twice = splice_tenant(&splice_tenant(raw.as_bytes(), &a).unwrap(), &b).unwrap();
        prop_assert_eq!(once, twice);
    }

    #[test]
    fn spliced_events_parse_with_the_new_tenant((raw, data) in event_like(), tenant in "[a-z]{1,8}") {
        let out = splice_tenant(raw.as_bytes(), &tenant).unwrap();
        // Generated members may legitimately be rejected (duplicates, wrong types); when
        // accepted, the event carries the spliced tenant and the exact data bytes.
        if let Ok(event) = Event::parse(&out) {
            prop_assert_eq!(event.tenant_id, tenant);
            prop_assert_eq!(event.data.get(), data.as_str());
        }
    }

    #[test]
    fn never_panic_on_arbitrary_bytes(raw in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Event::parse(&raw);
        if let Ok(out) = splice_tenant(&raw, "t") {
            prop_assert!(serde_json::from_slice::<Value>(&out).is_ok());
        }
    }

    #[test]
    fn never_panic_on_json_like_text(tokens in prop::collection::vec(prop::sample::select(vec![
        "{", "}", "[", "]", ",", ":", " ", "\"tenant_id\"", "\"data\"", "\"metadata\"",
        "\"time\"", "\"topic\"", "\"id\"", "\"eligible_for_retry\"", "1", "-", "1e999", "null",
        "true", "\"x\"", "\"2024-01-15T10:30:00Z\"", "\"\\u00", "\"\\ud800\"", "\\", "\"",
    ]), 0..40)) {
        let raw = tokens.concat();
        let parsed = Event::parse(raw.as_bytes());
        if let Ok(out) = splice_tenant(raw.as_bytes(), "t") {
            prop_assert!(serde_json::from_slice::<Value>(&out).is_ok());
            let _ = Event::parse(&out);
        }
        if let Ok(event) = parsed {
            let _ = event.filter_input();
        }
    }
}

/// Guards the generator itself: properties over inputs that never contain spoofed tenant keys
/// or never form a valid event would prove little.
#[test]
fn generator_reaches_the_interesting_cases() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let strategy = event_like();
    let (mut spoofed, mut valid_events) = (0, 0);
    for _ in 0..500 {
        let (raw, _) = strategy.new_tree(&mut runner).unwrap().current();
        let top = read_object(raw.as_bytes()).unwrap();
        if top
            .members
            .iter()
            .filter(|m| folds_to_tenant_id(&m.key))
            .count()
            >= 2
        {
            spoofed += 1;
        }
        if Event::parse(&splice_tenant(raw.as_bytes(), "t").unwrap()).is_ok() {
            valid_events += 1;
        }
    }
    assert!(spoofed >= 25, "{spoofed}");
    assert!(valid_events >= 25, "{valid_events}");
}
