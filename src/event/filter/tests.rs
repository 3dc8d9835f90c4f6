//! Filter tests: Outpost's own match tests, ported case for case, and a table of filters
//! against a realistic event covering every operator, type mismatches and arrays.

use serde_json::{Value, json};

use super::matching::matches;
use super::*;
use crate::event::Event;

fn parse(json: &str) -> Value {
    serde_json::from_str(json).unwrap()
}

/// Outpost `internal/simplejsonmatch/match_test.go` `TestMatch` (index, input, schema,
/// expected); Outpost runs each also wrapped in `$not`, expecting the opposite.
const OUTPOST_MATCH: &[(u32, &str, &str, bool)] = &[
    (0, r#"{"type":"created"}"#, r#"{"type":"created"}"#, true),
    (1, r#"{}"#, r#"{"type":"created"}"#, false),
    (2, r#"{"type":"updated"}"#, r#"{"type":"created"}"#, false),
    (3, r#"{"type":1}"#, r#"{"type":"created"}"#, false),
    (4, r#"{"type":1}"#, r#"{"type":1}"#, true),
    (5, r#"{"count":1,"type":"created"}"#, r#"{"count":1}"#, true),
    (
        6,
        r#"{"count":1,"type":"created"}"#,
        r#"{"count":1,"type":"created"}"#,
        true,
    ),
    (
        7,
        r#"{"count":1}"#,
        r#"{"count":1,"type":"created"}"#,
        false,
    ),
    (8, r#"{"count":0}"#, r#"{"count":{"$lt":1}}"#, true),
    (9, r#"{"count":2}"#, r#"{"count":{"$lt":1}}"#, false),
    (10, r#"{"count":2}"#, r#"{"count":{"$eq":2}}"#, true),
    (11, r#"{"count":2}"#, r#"{"count":{"$neq":2}}"#, false),
    (12, r#"{"count":2}"#, r#"{"count":{"$gt":1,"$lt":3}}"#, true),
    (
        13,
        r#"{"count":4}"#,
        r#"{"count":{"$gt":1,"$lt":3}}"#,
        false,
    ),
    (14, r#"{"title":"a"}"#, r#"{"title":{"$gt":"b"}}"#, false),
    (15, r#"{"title":"c"}"#, r#"{"title":{"$gt":"b"}}"#, true),
    (
        16,
        r#"{"type":"created"}"#,
        r#"{"type":{"$neq":"created"}}"#,
        false,
    ),
    (
        17,
        r#"{"type":"created"}"#,
        r#"{"type":{"$eq":"created"}}"#,
        true,
    ),
    (
        18,
        r#"{"type":{"something":"created"}}"#,
        r#"{"type":{"something":"created"}}"#,
        true,
    ),
    (
        19,
        r#"{"type":{"something":"created"}}"#,
        r#"{"type":{"something":"updated"}}"#,
        false,
    ),
    (
        20,
        r#"{"type":{"something":"created"}}"#,
        r#"{"type":1}"#,
        false,
    ),
    (
        21,
        r#"{"tags":["test","other"]}"#,
        r#"{"tags":"test"}"#,
        true,
    ),
    (
        22,
        r#"{"tags":["test","other"]}"#,
        r#"{"tags":"nope"}"#,
        false,
    ),
    (
        23,
        r#"{"items":[{"sku":"test"}]}"#,
        r#"{"items":{"sku":"test"}}"#,
        true,
    ),
    (
        24,
        r#"{"items":[{"sku":"test"}]}"#,
        r#"{"items":{"sku":"1"}}"#,
        false,
    ),
    (
        25,
        r#"{"items":[{"inventory":9},{"inventory":11}]}"#,
        r#"{"items":{"inventory":{"$lte":10}}}"#,
        true,
    ),
    (
        26,
        r#"{"items":[{"inventory":12},{"inventory":11}]}"#,
        r#"{"items":{"inventory":{"$lte":10}}}"#,
        false,
    ),
    (
        27,
        r#"{"tags":["test","other","more"]}"#,
        r#"{"tags":["test","other"]}"#,
        true,
    ),
    (
        28,
        r#"{"tags":["test","other","more"]}"#,
        r#"{"tags":["test","whatever"]}"#,
        false,
    ),
    (
        29,
        r#"{"tags":["test","other"]}"#,
        r#"{"tags":{"$eq":["test","other"]}}"#,
        true,
    ),
    (
        30,
        r#"{"tags":["test","other","more"]}"#,
        r#"{"tags":{"$eq":["test","other"]}}"#,
        false,
    ),
    (31, r#"[1,2,3]"#, r#"3"#, true),
    (32, r#"[1,2,3]"#, r#"4"#, false),
    (33, r#"[1,2,3]"#, r#"[{"$eq":3}]"#, true),
    (34, r#"[1,2,3]"#, r#"[{"$eq":4}]"#, false),
    (35, r#"[1,2,3]"#, r#"{"$eq":3}"#, false),
    (36, r#"{"exist":true}"#, r#"{"exist":true}"#, true),
    (37, r#"{"exist":true}"#, r#"{"exist":false}"#, false),
    (38, r#"{"exist":null}"#, r#"{"exist":null}"#, true),
    (39, r#"{"exist":null}"#, r#"{"exist":false}"#, false),
    (40, r#"{"exist":null}"#, r#"{"exist":{"$eq":null}}"#, true),
    (41, r#"{"exist":null}"#, r#"{"exist":{"$neq":null}}"#, false),
    (42, r#""created""#, r#""created""#, true),
    (43, r#"1"#, r#"2"#, false),
    (44, r#"10"#, r#"{"$gte":5}"#, true),
    (45, r#"{"test":true}"#, r#"true"#, false),
    (
        46,
        r#"{"test":"some-text"}"#,
        r#"{"test":{"$startsWith":"some"}}"#,
        true,
    ),
    (
        47,
        r#"{"test":"some-text"}"#,
        r#"{"test":{"$endsWith":"some"}}"#,
        false,
    ),
    (
        48,
        r#"{"test":"some-text"}"#,
        r#"{"test":{"$endsWith":"text"}}"#,
        true,
    ),
    (
        49,
        r#"{"test":"some-text"}"#,
        r#"{"test":{"something":"text"}}"#,
        false,
    ),
    (
        50,
        r#"{"test":{"more":true}}"#,
        r#"{"test":{"$startsWith":"text"}}"#,
        false,
    ),
    (
        51,
        r#"{"test":"some-text"}"#,
        r#"{"test":{"$startsWith":["some","else"]}}"#,
        true,
    ),
    (
        52,
        r#"{"test":"some-text"}"#,
        r#"{"test":{"$startsWith":["something","else"]}}"#,
        false,
    ),
    (
        53,
        r#"{"test":"some-text"}"#,
        r#"{"test":{"$endsWith":["some","else"]}}"#,
        false,
    ),
    (
        54,
        r#"{"test":"some-text"}"#,
        r#"{"test":{"$endsWith":["text","else"]}}"#,
        true,
    ),
    (
        55,
        r#"{"test":"some-text","id":123}"#,
        r#"{"test":{"$in":"text"},"id":{"$in":[123,456]}}"#,
        true,
    ),
    (
        56,
        r#"{"test":"some-text","id":123}"#,
        r#"{"test":{"$in":["some-text","other-text"]},"id":{"$in":[123,456]}}"#,
        true,
    ),
    (
        57,
        r#"{"test":"some-text","id":123}"#,
        r#"{"test":{"$in":["some","text"]},"id":{"$nin":[123,456]}}"#,
        false,
    ),
    (
        58,
        r#"{"test":"some-text"}"#,
        r#"{"test":{"$in":"text"}}"#,
        true,
    ),
    (
        59,
        r#"{"test":"some-text"}"#,
        r#"{"test":{"$nin":"some"}}"#,
        false,
    ),
    (
        60,
        r#"{"tags":["test","something"]}"#,
        r#"{"tags":{"$nin":"test"}}"#,
        false,
    ),
    (73, r#"{"test":1}"#, r#"{"test":{"$gt":[1,2,3]}}"#, false),
    (74, r#"{"test":true}"#, r#"{"$or":[{"test":true}]}"#, true),
    (75, r#"{"test":true}"#, r#"{"$or":[{"test":false}]}"#, false),
    (
        76,
        r#"{"test":{"something":"else"}}"#,
        r#"{"test":{"$or":[{"something":true},{"something":{"$in":"else"}}]}}"#,
        true,
    ),
    (
        77,
        r#"{"test":{"something":"else"}}"#,
        r#"{"test":{"$or":[{"something":true},{"something":{"$in":"no"}}]}}"#,
        false,
    ),
    (78, r#"1"#, r#"{"$or":[1,2]}"#, true),
    (79, r#"1"#, r#"{"$or":[2,3]}"#, false),
    (80, r#"{"test":true}"#, r#"{"$and":[{"test":true}]}"#, true),
    (81, r#"{"test":true}"#, r#"{"$or":[{"test":false}]}"#, false),
    (
        82,
        r#"{"test":{"something":"else"}}"#,
        r#"{"test":{"$and":[{"something":{"$neq":null}},{"something":{"$in":"else"}}]}}"#,
        true,
    ),
    (
        83,
        r#"{"test":{"something":null}}"#,
        r#"{"test":{"$and":[{"something":{"$neq":null}},{"something":{"$in":"else"}}]}}"#,
        false,
    ),
    (84, r#"1"#, r#"{"$and":[1,2]}"#, false),
    (
        86,
        r#"{"test":"else"}"#,
        r#"{"test":{"$exist":true}}"#,
        true,
    ),
    (
        87,
        r#"{"test":"else"}"#,
        r#"{"test":{"$exist":false}}"#,
        false,
    ),
    (
        88,
        r#"{"test1":"else"}"#,
        r#"{"test":{"$exist":true}}"#,
        false,
    ),
    (
        89,
        r#"{"test1":"else"}"#,
        r#"{"test":{"$exist":false}}"#,
        true,
    ),
    (90, r#""/test""#, r#""/test""#, true),
    (91, r#""/test""#, r#""/test2""#, false),
    (92, r#"1"#, r#"1"#, true),
    (93, r#"1"#, r#"2"#, false),
    (94, r#"1"#, r#"{}"#, false),
    (
        95,
        r#"{"test":{"test1":"else"}}"#,
        r#"{"test":{"test1":{"$exist":true,"$or":["else","not"]}}}"#,
        true,
    ),
    (
        96,
        r#"{"test":{"test1":"else1"}}"#,
        r#"{"test":{"test1":{"$exist":true,"$or":["else","not"]}}}"#,
        false,
    ),
    (
        97,
        r#"{"test":{"test1":"else"}}"#,
        r#"{"test":{"test1":{"$exist":true,"$in":"el"}}}"#,
        true,
    ),
    (
        98,
        r#"{"test":{"test1":"else"}}"#,
        r#"{"test":{"test1":{"$exist":true,"$in":"no"}}}"#,
        false,
    ),
    (
        99,
        r#"{"test":{"test1":"else","test2":"not"}}"#,
        r#"{"test":{"test1":{"$exist":true,"$or":["else","not"]},"$and":[{"test1":"else"},{"test2":"not"}]}}"#,
        true,
    ),
    (
        100,
        r#"{"test":{"test1":"else","test2":"not"}}"#,
        r#"{"test":{"test1":{"$exist":true,"$or":["else1","not1"]},"$and":[{"test1":"else1"},{"test2":"not1"}]}}"#,
        false,
    ),
    (
        101,
        r#"{"test":{"test1":{"test2":"else"}}}"#,
        r#"{"test":{"test1":{"test2":{"$exist":true}}}}"#,
        true,
    ),
    (
        102,
        r#"{"test":{"test1":{"test2":"else"}}}"#,
        r#"{"test":{"test1":{"test2":{"$exist":false}}}}"#,
        false,
    ),
    (
        103,
        r#"{"test":{"test1":{"test3":"else"}}}"#,
        r#"{"test":{"test1":{"test2":{"$exist":false}}}}"#,
        true,
    ),
    (
        104,
        r#"{"test":{"test1":{"test3":"else"}}}"#,
        r#"{"test":{"test1":{"test2":{"$exist":true}}}}"#,
        false,
    ),
    (
        105,
        r#"{"test":{"test1":"else"}}"#,
        r#"{"$or":[{"test":{"test1":{"$exist":true}}},{"test":{"test1":"else1"}}]}"#,
        true,
    ),
    (
        106,
        r#"{"test":{"test1":"else"}}"#,
        r#"{"$or":[{"test":{"test1":{"$exist":false}}},{"test":{"test1":"else"}}]}"#,
        true,
    ),
    (
        107,
        r#"{"test":{"test2":"else"}}"#,
        r#"{"$or":[{"test":{"test1":{"$exist":true}}},{"test":{"test2":"else"}}]}"#,
        true,
    ),
    (
        108,
        r#"{"test":{"test2":"else"}}"#,
        r#"{"$or":[{"test":{"test1":{"$exist":true}}},{"test":{"test2":"else1"}}]}"#,
        false,
    ),
    (
        109,
        r#"{"test":{"test1":"else","test2":"not"}}"#,
        r#"{"$or":[{"test":{"test1":{"$exist":true}}},{"test":{"test2":"else1"}}]}"#,
        true,
    ),
    (
        110,
        r#"{"test":{"test1":"else","test2":"not"}}"#,
        r#"{"$and":[{"test":{"test1":{"$exist":true}}},{"test":{"test2":"not"}}]}"#,
        true,
    ),
    (
        111,
        r#"{"test":{"test1":"else","test2":"not"}}"#,
        r#"{"$and":[{"test":{"test1":{"$exist":true}}},{"test":{"test2":"not1"}}]}"#,
        false,
    ),
    (
        112,
        r#"{"test":{"test1":"else","test2":"not"}}"#,
        r#"{"$and":[{"test":{"test1":{"$exist":true}}},{"test":{"test1":"else"}}]}"#,
        true,
    ),
    (
        113,
        r#"{"test":{"test1":"else","test2":"not"}}"#,
        r#"{"$and":[{"test":{"test1":{"$exist":true}}},{"test":{"test1":"else1"}}]}"#,
        false,
    ),
    (
        114,
        r#"{"test":{"test1":"else","test2":"not"}}"#,
        r#"{"$and":[{"test":{"test1":{"$exist":true,"$eq":"else"}}}]}"#,
        true,
    ),
    (
        115,
        r#"{"test":{"test2":"not"}}"#,
        r#"{"$and":[{"test":{"test1":{"$exist":true,"$eq":"not"}}}]}"#,
        false,
    ),
    (
        116,
        r#"{"test":{"test1":"else","test2":"not"}}"#,
        r#"{"$and":[{"test":{"test1":{"$exist":true}}},{"test":{"test2":{"$exist":true}}}]}"#,
        true,
    ),
    (
        117,
        r#"{"test":{"test1":"else","test2":"not"}}"#,
        r#"{"$and":[{"test":{"test1":{"$exist":true}}},{"test":{"test2":{"$exist":false}}}]}"#,
        false,
    ),
    (
        118,
        r#"{"test":{"test1":"else"}}"#,
        r#"{"$and":[{"test":{"test1":{"$exist":true}}},{"test":{"test2":{"$exist":false}}}]}"#,
        true,
    ),
    (
        119,
        r#"{"test":{"test1":"else"}}"#,
        r#"{"$or":[{"test":{"test1":{"$exist":true}}},{"test":{"test2":{"$exist":false}}}]}"#,
        true,
    ),
    (
        120,
        r#"{"test":{"test3":"else"}}"#,
        r#"{"$or":[{"test":{"test1":{"$exist":true}}},{"test":{"test2":{"$exist":false}}}]}"#,
        true,
    ),
];

/// Outpost `TestMatchNot`: `$not` next to `$and` / `$or`.
const OUTPOST_NOT: &[(u32, &str, &str, bool)] = &[
    (
        0,
        r#"{"test":{"test1":"else","test2":"not"}}"#,
        r#"{"$not":{"test":{"test1":"else2"}},"$and":[{"test":{"test1":"else"}},{"test":{"test2":"not"}}]}"#,
        true,
    ),
    (
        1,
        r#"{"test":{"test1":"else","test2":"not"}}"#,
        r#"{"$not":{"test":{"test1":"else"}},"$and":[{"test":{"test1":"else"}},{"test":{"test2":"not"}}]}"#,
        false,
    ),
    (
        2,
        r#"{"test":{"test1":"else","test2":"not"}}"#,
        r#"{"$not":{"test":{"test1":{"$exist":true}}},"$and":[{"test":{"test1":"else"}},{"test":{"test2":"not"}}]}"#,
        false,
    ),
    (
        3,
        r#"{"test":{"test1":"else","test2":"not"}}"#,
        r#"{"$not":{"test":{"test1":{"$exist":false}}},"$and":[{"test":{"test1":"else"}},{"test":{"test2":"not"}}]}"#,
        true,
    ),
    (
        4,
        r#"{"test":{"test1":"else","test2":"not"}}"#,
        r#"{"$not":{"test":{"test1":{"$exist":false}}},"$and":[{"test":{"test3":{"$exist":false}}},{"test":{"test2":"not"}}]}"#,
        true,
    ),
    (
        5,
        r#"{"test":{"test1":"else","test2":"not"}}"#,
        r#"{"$not":{"test":{"test1":{"$exist":false}}},"$and":[{"test":{"test3":{"$exist":true}}},{"test":{"test2":"not"}}]}"#,
        false,
    ),
    (
        6,
        r#"{"test":{"test1":"else","test2":"not"}}"#,
        r#"{"$not":{"test":{"test1":"else2"}},"$or":[{"test":{"test3":{"$exist":true}}},{"test":{"test2":"not"}}]}"#,
        true,
    ),
    (
        7,
        r#"{"test":{"test1":"else","test2":"not"}}"#,
        r#"{"$not":{"test":{"test1":"else"}},"$or":[{"test":{"test3":{"$exist":true}}},{"test":{"test2":"not"}}]}"#,
        false,
    ),
    (
        8,
        r#"{"test":{"test1":"else","test2":"not"}}"#,
        r#"{"$not":{"test":{"test1":"else"}},"$or":[{"test":{"test3":{"$exist":false}}},{"test":{"test2":"not"}}]}"#,
        false,
    ),
    (
        9,
        r#"{"test":{"test1":"else","test2":"not"}}"#,
        r#"{"$not":{"test":{"test1":"else"}},"$or":[{"test":{"test3":{"$exist":false}}},{"test":{"test2":"not2"}}]}"#,
        false,
    ),
    (
        10,
        r#"{"test":{"test1":"else","test2":"not"}}"#,
        r#"{"$not":{"test":{"test1":"else2"}},"$or":[{"test":{"test3":{"$exist":true}}},{"test":{"test2":"not2"}}]}"#,
        false,
    ),
    (
        11,
        r#"{"test":{"test1":"else","test2":"not"}}"#,
        r#"{"$not":{"test":{"test1":"else2"}},"$or":[{"test":{"test3":{"$exist":false}}},{"test":{"test2":"not"}}]}"#,
        true,
    ),
];

#[test]
fn outpost_match_cases() {
    for (index, input, schema, expected) in OUTPOST_MATCH {
        let (input, schema) = (parse(input), parse(schema));
        assert_eq!(
            matches(&Document::from(&input), &schema),
            *expected,
            "case {index}: {input} ~ {schema}"
        );
        let negated = json!({ "$not": schema });
        assert_eq!(
            matches(&Document::from(&input), &negated),
            !*expected,
            "case {index}: {input} ~ {negated}"
        );
    }
}

#[test]
fn outpost_not_cases() {
    for (index, input, schema, expected) in OUTPOST_NOT {
        let (input, schema) = (parse(input), parse(schema));
        assert_eq!(
            matches(&Document::from(&input), &schema),
            *expected,
            "not case {index}: {input} ~ {schema}"
        );
    }
}

/// Every ported case whose schema is a filter jetpost accepts gives Outpost's answer through
/// the public API too.
#[test]
fn accepted_outpost_filters_agree_through_the_api() {
    let mut accepted = 0;
    for (index, input, schema, expected) in OUTPOST_MATCH.iter().chain(OUTPOST_NOT) {
        let (input, schema) = (parse(input), parse(schema));
        if let Ok(filter) = Filter::from_json(&schema) {
            accepted += 1;
            let expected = *expected || filter.is_empty();
            assert_eq!(
                filter.matches(&Document::from(&input)),
                expected,
                "case {index}: {input} ~ {schema}"
            );
        }
    }
    assert!(accepted > 80, "{accepted}");
}

fn event_input() -> Document {
    let mut event = Event::parse(
        br#"{"id":"evt_1","tenant_id":"t","topic":"order.paid","time":"2024-01-15T10:30:00Z",
            "metadata":{"region":"eu","tier":"gold"},
            "data":{"amount":150,"currency":"EUR","price":9.99,"big":12345678901234567890,
                "customer":{"tier":"premium","email":"a@example.com","tags":["vip","beta"]},
                "items":[{"sku":"A1","qty":2},{"sku":"B2","qty":5}],
                "scores":[1,5,9],"active":true,"note":null,"empty":[],"nested":{"deep":{"x":1}}}}"#,
    )
    .unwrap();
    event.time = event.time.or_else(|| Some(chrono::Utc::now()));
    event.filter_input()
}

/// (filter, expected) against [`event_input`].
const EVENT_CASES: &[(&str, bool)] = &[
    // Implicit equality and AND over keys.
    (r#"{}"#, true),
    (r#"{"topic":"order.paid"}"#, true),
    (r#"{"topic":"order.created"}"#, false),
    (r#"{"topic":"order.paid","data":{"currency":"EUR"}}"#, true),
    (r#"{"topic":"order.paid","data":{"currency":"USD"}}"#, false),
    (r#"{"metadata":{"region":"eu"}}"#, true),
    (r#"{"metadata":{"region":"us"}}"#, false),
    (r#"{"data":{"customer":{"tier":"premium"}}}"#, true),
    (r#"{"data":{"customer":{"tier":"basic"}}}"#, false),
    (r#"{"data":{"missing":"x"}}"#, false),
    (r#"{"id":"evt_1"}"#, true),
    (r#"{"time":"2024-01-15T10:30:00Z"}"#, true),
    // $eq / $neq: numbers as f64, no cross-type coercion, deep equality for structures.
    (r#"{"data":{"amount":{"$eq":150}}}"#, true),
    (r#"{"data":{"amount":{"$eq":150.0}}}"#, true),
    (r#"{"data":{"amount":{"$eq":"150"}}}"#, false),
    (r#"{"data":{"amount":{"$neq":150}}}"#, false),
    (r#"{"data":{"amount":{"$neq":"150"}}}"#, true),
    (
        r#"{"data":{"customer":{"$eq":{"tier":"premium","tags":["vip","beta"],"email":"a@example.com"}}}}"#,
        true,
    ),
    (
        r#"{"data":{"customer":{"tags":{"$eq":["beta","vip"]}}}}"#,
        false,
    ),
    (
        r#"{"data":{"customer":{"tags":{"$eq":["vip","beta"]}}}}"#,
        true,
    ),
    (r#"{"data":{"note":null}}"#, true),
    (r#"{"data":{"note":{"$eq":null}}}"#, true),
    (r#"{"data":{"note":{"$neq":null}}}"#, false),
    (r#"{"data":{"active":true}}"#, true),
    (r#"{"data":{"active":"true"}}"#, false),
    (r#"{"data":{"big":12345678901234567890}}"#, true),
    // $gt $gte $lt $lte: number with number, string with string (byte order).
    (r#"{"data":{"amount":{"$gt":100}}}"#, true),
    (r#"{"data":{"amount":{"$gt":150}}}"#, false),
    (r#"{"data":{"amount":{"$gte":150}}}"#, true),
    (r#"{"data":{"amount":{"$lt":150}}}"#, false),
    (r#"{"data":{"amount":{"$lte":150}}}"#, true),
    (r#"{"data":{"amount":{"$gte":100,"$lt":200}}}"#, true),
    (r#"{"data":{"amount":{"$gte":100,"$lt":120}}}"#, false),
    (r#"{"data":{"price":{"$gt":9.98,"$lt":10}}}"#, true),
    (r#"{"data":{"currency":{"$gt":"EUA"}}}"#, true),
    (r#"{"data":{"currency":{"$lt":"EUA"}}}"#, false),
    (r#"{"time":{"$gte":"2024-01-01T00:00:00Z"}}"#, true),
    (r#"{"time":{"$lt":"2024-01-01T00:00:00Z"}}"#, false),
    // Comparison type mismatches never match.
    (r#"{"data":{"amount":{"$gt":"100"}}}"#, false),
    (r#"{"data":{"currency":{"$gt":1}}}"#, false),
    (r#"{"data":{"active":{"$gt":0}}}"#, false),
    (r#"{"data":{"note":{"$lt":1}}}"#, false),
    (r#"{"data":{"customer":{"$gt":1}}}"#, false),
    (r#"{"data":{"scores":{"$gt":0}}}"#, false),
    // $in / $nin: list membership, substring, array holding the operand.
    (r#"{"data":{"currency":{"$in":["EUR","USD"]}}}"#, true),
    (r#"{"data":{"currency":{"$in":["GBP","USD"]}}}"#, false),
    (r#"{"data":{"currency":{"$nin":["GBP","USD"]}}}"#, true),
    (r#"{"data":{"currency":{"$nin":["EUR"]}}}"#, false),
    (r#"{"data":{"amount":{"$in":[100,150]}}}"#, true),
    (r#"{"data":{"amount":{"$in":["150"]}}}"#, false),
    (
        r#"{"data":{"customer":{"email":{"$in":"@example.com"}}}}"#,
        true,
    ),
    (
        r#"{"data":{"customer":{"email":{"$nin":"@example.org"}}}}"#,
        true,
    ),
    (r#"{"data":{"customer":{"tags":{"$in":"vip"}}}}"#, true),
    (r#"{"data":{"customer":{"tags":{"$nin":"vip"}}}}"#, false),
    (r#"{"data":{"customer":{"tags":{"$nin":"alpha"}}}}"#, true),
    (r#"{"data":{"scores":{"$in":5}}}"#, true),
    (r#"{"data":{"note":{"$in":[null,"x"]}}}"#, true),
    // $in / $nin type mismatches never match, not even under $nin (as Outpost).
    (
        r#"{"data":{"customer":{"tags":{"$in":["vip","x"]}}}}"#,
        false,
    ),
    (
        r#"{"data":{"customer":{"tags":{"$nin":["alpha"]}}}}"#,
        false,
    ),
    (r#"{"data":{"amount":{"$in":"15"}}}"#, false),
    (r#"{"data":{"amount":{"$nin":"15"}}}"#, false),
    (r#"{"data":{"customer":{"$in":["premium"]}}}"#, false),
    // $startsWith / $endsWith with a string or a list.
    (r#"{"topic":{"$startsWith":"order."}}"#, true),
    (r#"{"topic":{"$startsWith":"user."}}"#, false),
    (r#"{"topic":{"$endsWith":".paid"}}"#, true),
    (r#"{"topic":{"$startsWith":["user.","order."]}}"#, true),
    (r#"{"topic":{"$endsWith":[".created",".deleted"]}}"#, false),
    (r#"{"data":{"amount":{"$startsWith":"1"}}}"#, false),
    (
        r#"{"data":{"customer":{"tags":{"$startsWith":"v"}}}}"#,
        false,
    ),
    (
        r#"{"data":{"customer":{"email":{"$endsWith":"@example.com","$startsWith":"a"}}}}"#,
        true,
    ),
    // $exist: presence, null counts as present; other operators fail on absent fields.
    (r#"{"data":{"note":{"$exist":true}}}"#, true),
    (r#"{"data":{"note":{"$exist":false}}}"#, false),
    (r#"{"data":{"missing":{"$exist":false}}}"#, true),
    (r#"{"data":{"missing":{"$exist":true}}}"#, false),
    (r#"{"data":{"customer":{"phone":{"$exist":false}}}}"#, true),
    (r#"{"data":{"missing":{"$neq":1}}}"#, false),
    (r#"{"data":{"empty":{"$exist":true}}}"#, true),
    // $or / $and / $not.
    (
        r#"{"$or":[{"topic":"order.created"},{"data":{"amount":{"$gt":100}}}]}"#,
        true,
    ),
    (
        r#"{"$or":[{"topic":"order.created"},{"data":{"amount":{"$gt":1000}}}]}"#,
        false,
    ),
    (r#"{"$or":[]}"#, false),
    (
        r#"{"$and":[{"topic":"order.paid"},{"metadata":{"tier":"gold"}}]}"#,
        true,
    ),
    (
        r#"{"$and":[{"topic":"order.paid"},{"metadata":{"tier":"silver"}}]}"#,
        false,
    ),
    (r#"{"$and":[]}"#, true),
    (r#"{"$not":{"topic":"order.created"}}"#, true),
    (r#"{"$not":{"topic":"order.paid"}}"#, false),
    (
        r#"{"$not":{"data":{"amount":{"$lt":100}}},"topic":"order.paid"}"#,
        true,
    ),
    (
        r#"{"$not":{"data":{"amount":{"$lt":200}}},"topic":"order.paid"}"#,
        false,
    ),
    (r#"{"data":{"$not":{"currency":"USD"}}}"#, true),
    (
        r#"{"data":{"$or":[{"currency":"USD"},{"amount":150}]}}"#,
        true,
    ),
    (
        r#"{"data":{"$and":[{"currency":"EUR"},{"amount":{"$gt":1}}]}}"#,
        true,
    ),
    (r#"{"data":{"currency":{"$or":["USD","EUR"]}}}"#, true),
    // Outpost quirks kept on purpose: $not under a scalar never matches; $or beside
    // operators decides alone.
    (r#"{"data":{"amount":{"$not":{"$gt":1000}}}}"#, false),
    (
        r#"{"data":{"currency":{"$in":["USD"],"$or":["EUR"]}}}"#,
        true,
    ),
    // Arrays.
    (r#"{"data":{"scores":5}}"#, true),
    (r#"{"data":{"scores":4}}"#, false),
    (r#"{"data":{"scores":[1,9]}}"#, true),
    (r#"{"data":{"scores":[1,4]}}"#, false),
    (r#"{"data":{"scores":[]}}"#, true),
    (r#"{"data":{"scores":{"$eq":[1,5,9]}}}"#, true),
    (r#"{"data":{"scores":{"$eq":[1,5]}}}"#, false),
    (r#"{"data":{"items":{"sku":"B2"}}}"#, true),
    (r#"{"data":{"items":{"sku":"B2","qty":2}}}"#, false),
    (r#"{"data":{"items":{"qty":{"$gte":5}}}}"#, true),
    (r#"{"data":{"items":[{"sku":"A1"},{"qty":5}]}}"#, true),
    (
        r#"{"data":{"items":{"$eq":[{"qty":2,"sku":"A1"},{"sku":"B2","qty":5}]}}}"#,
        true,
    ),
    (r#"{"data":{"empty":"x"}}"#, false),
    // Shape mismatches.
    (r#"{"data":{"customer":"premium"}}"#, false),
    (r#"{"data":{"currency":["EUR"]}}"#, false),
    (r#"{"data":{"currency":{"code":"EUR"}}}"#, false),
    (r#"{"data":{"nested":{"deep":{"x":{"$gte":1}}}}}"#, true),
    (
        r#"{"data":{"nested":{"deep":{"x":{"$exist":true},"y":{"$exist":false}}}}}"#,
        true,
    ),
];

#[test]
fn event_filter_table() {
    assert!(EVENT_CASES.len() >= 80);
    let input = event_input();
    for (filter, expected) in EVENT_CASES {
        let filter = Filter::from_json(&parse(filter))
            .unwrap_or_else(|e| panic!("{filter} should be a valid filter: {e}"));
        assert_eq!(filter.matches(&input), *expected, "{}", filter.as_json());
    }
}

#[test]
fn empty_filter_matches_anything() {
    let filter = Filter::from_json(&json!({})).unwrap();
    assert!(filter.is_empty());
    assert_eq!(filter, Filter::default());
    for input in [json!({}), json!(null), json!([1]), json!("x")] {
        assert!(filter.matches(&Document::from(&input)), "{input}");
    }
    assert!(filter.matches(&event_input()));
}

/// Data serde_json cannot hold as a value (a number beyond f64, a lone surrogate) is still
/// matchable: the rest of the document matches as usual, and the out-of-range number compares
/// as ±infinity.
#[test]
fn data_beyond_serde_json_values_still_matches() {
    let mut event = Event::parse(
        br#"{"tenant_id":"t","topic":"x","data":{"a":1e400,"n":-1e400,"b":1,"s":"\ud800"}}"#,
    )
    .unwrap();
    event.time = Some(chrono::Utc::now());
    let input = event.filter_input();
    let check = |filter: Value, expected: bool| {
        let f = Filter::from_json(&filter).unwrap();
        assert_eq!(f.matches(&input), expected, "{filter}");
    };
    check(json!({"data": {"b": 1}}), true);
    check(json!({"data": {"b": 2}}), false);
    check(json!({"data": {"a": {"$gt": 1e308}}}), true);
    check(json!({"data": {"a": {"$lt": 0}}}), false);
    check(json!({"data": {"n": {"$lt": -1e308}}}), true);
    check(json!({"data": {"a": 1.7976931348623157e308}}), false);
    check(
        json!({"data": {"a": {"$exist": true}, "b": {"$in": [1, 2]}}}),
        true,
    );
    check(json!({"data": {"s": "\u{fffd}"}}), true);
}

#[test]
fn keyed_filters_against_other_shapes() {
    let filter = Filter::from_json(&json!({"data": {"a": 1}})).unwrap();
    for input in [json!(null), json!(1), json!("data"), json!([]), json!({})] {
        assert!(!filter.matches(&Document::from(&input)), "{input}");
    }
    // As in Outpost, a document that is an array matches when any element does.
    let array = json!([{"data": {"a": 2}}, {"data": {"a": 1}}]);
    assert!(filter.matches(&Document::from(&array)));
}

#[test]
fn invalid_filters_are_rejected_naming_the_position() {
    let err = |filter: Value| Filter::from_json(&filter).unwrap_err().to_string();
    assert_eq!(err(json!(null)), "filter must be a JSON object, found null");
    assert_eq!(
        err(json!([{"a": 1}])),
        "filter must be a JSON object, found array"
    );
    assert!(
        err(json!({"data": {"amount": {"$gtt": 1}}}))
            .starts_with(r#"filter at "data.amount": unknown operator "$gtt" (supported: $eq"#)
    );
    assert!(
        err(json!({"$ref": "x"}))
            .starts_with(r#"filter at the top level: unknown operator "$ref""#)
    );
    assert_eq!(
        err(json!({"data": {"amount": {"$gt": [1]}}})),
        r#"filter at "data.amount": $gt expects a number or a string, found array"#
    );
    assert_eq!(
        err(json!({"data": {"amount": {"$lte": null}}})),
        r#"filter at "data.amount": $lte expects a number or a string, found null"#
    );
    assert_eq!(
        err(json!({"data": {"x": {"$in": {"a": 1}}}})),
        r#"filter at "data.x": $in expects a string, number, boolean, null or an array, found object"#
    );
    assert_eq!(
        err(json!({"data": {"x": {"$nin": [1, [2]]}}})),
        r#"filter at "data.x": $nin expects an array of strings, numbers, booleans or nulls, found an array holding an array or object"#
    );
    assert_eq!(
        err(json!({"topic": {"$startsWith": 1}})),
        r#"filter at "topic": $startsWith expects a string or an array of strings, found number"#
    );
    assert_eq!(
        err(json!({"topic": {"$endsWith": ["a", 1]}})),
        r#"filter at "topic": $endsWith expects a string or an array of strings, found array"#
    );
    assert_eq!(
        err(json!({"data": {"x": {"$exist": "yes"}}})),
        r#"filter at "data.x": $exist expects true or false, found string"#
    );
    assert_eq!(
        err(json!({"$or": {"topic": "a"}})),
        r#"filter at the top level: $or expects an array of filters, found object"#
    );
    assert_eq!(
        err(json!({"data": {"$and": "x"}})),
        r#"filter at "data": $and expects an array of filters, found string"#
    );
    assert!(
        err(json!({"$or": [{"topic": "a"}, {"data": {"$bad": 1}}]}))
            .starts_with(r#"filter at "$or[1].data": unknown operator "$bad""#)
    );
    assert!(
        err(json!({"$not": {"data": {"tags": [{"$nope": 1}]}}}))
            .starts_with(r#"filter at "$not.data.tags[0]": unknown operator "$nope""#)
    );
}

#[test]
fn eq_operands_are_literals() {
    // `$eq` compares against a literal, so `$`-keys inside it are data, not operators.
    let filter = Filter::from_json(&json!({"data": {"$eq": {"$weird": 1}}})).unwrap();
    assert!(filter.matches(&Document::from(&json!({"data": {"$weird": 1}}))));
    assert!(!filter.matches(&Document::from(&json!({"data": {"$weird": 2}}))));
}

#[test]
fn deep_filters_are_rejected() {
    let mut deep = json!(1);
    for _ in 0..MAX_FILTER_DEPTH {
        deep = json!({ "a": deep });
    }
    assert!(Filter::from_json(&deep).is_ok());
    let deeper = json!({ "a": deep });
    assert_eq!(
        Filter::from_json(&deeper).unwrap_err(),
        FilterError::TooDeep {
            max: MAX_FILTER_DEPTH
        }
    );
}

#[test]
fn written_filters_are_bounded_in_size() {
    let ids: Vec<String> = (0..1000).map(|i| format!("customer-{i:08}")).collect();
    let fits = json!({"data": {"customer": {"$in": ids}}});
    assert!(Filter::from_written_json(&fits).is_ok());
    let ids: Vec<String> = (0..4000).map(|i| format!("customer-{i:08}")).collect();
    let big = json!({"data": {"customer": {"$in": ids}}});
    assert!(matches!(
        Filter::from_written_json(&big),
        Err(FilterError::TooLarge {
            max: MAX_FILTER_BYTES,
            ..
        })
    ));
    assert!(
        Filter::from_json(&big).is_ok(),
        "stored filters are not re-bounded"
    );
    assert!(
        Filter::from_written_json(&json!({"data": {"$nope": 1}})).is_err(),
        "the usual checks still apply"
    );
}
