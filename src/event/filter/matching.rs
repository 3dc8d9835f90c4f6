//! Evaluation of a filter against a document, ported rule for rule from Outpost's
//! `internal/simplejsonmatch` (itself a port of hookdeck/simple-json-match), quirks included,
//! so a destination filter selects the same events here as in Outpost:
//!
//! - keys of an object schema are ANDed; a missing key fails unless its schema has
//!   `$exist: false`;
//! - a scalar schema matches a scalar by equality (numbers as f64, no cross-type coercion)
//!   and an array when any element matches;
//! - an array schema matches an array that contains a match for every schema element;
//! - an operator object applied to an array applies the operators to the array as a whole
//!   (`$in: "x"` tests membership, `$eq: [..]` array equality); an object schema without
//!   operators applied to an array matches when any element matches;
//! - `$or` next to operators in the same object wins over them; `$not` is honoured only at the
//!   top of an object schema evaluated against an object (or the whole document);
//! - an operator meeting a type it does not handle (`$gt` on a boolean, `$in: [..]` on an
//!   array) is "no match", also under `$nin`.

use serde_json::Value;

use super::OPERATORS;
use super::document::Document;

/// Go's `matchJSONToSchema`.
pub(super) fn matches(input: &Document, schema: &Value) -> bool {
    if let Value::Object(schema) = schema
        && let Some(negated) = schema.get("$not")
    {
        let negated_matches = matches(input, negated);
        if schema.len() == 1 {
            return !negated_matches;
        }
        if negated_matches {
            return false;
        }
    }
    let (Document::Object(input_map), Value::Object(schema_map)) = (input, schema) else {
        return value_matches(input, schema);
    };
    for (key, sub_schema) in schema_map {
        match (key.as_str(), sub_schema) {
            ("$not", _) => continue,
            ("$or", Value::Array(alternatives)) => {
                if !alternatives.iter().any(|alt| matches(input, alt)) {
                    return false;
                }
                continue;
            }
            ("$and", Value::Array(all)) => {
                if !all.iter().all(|each| matches(input, each)) {
                    return false;
                }
                continue;
            }
            _ => {}
        }
        match input_map.get(key) {
            Some(value) => {
                if !value_matches(value, sub_schema) {
                    return false;
                }
            }
            None => {
                let exist_false = sub_schema.get("$exist") == Some(&Value::Bool(false));
                if !exist_false {
                    return false;
                }
            }
        }
    }
    true
}

/// Go's `recursivelyMatchValue`, with its result inverted (Go returns "mismatch").
fn value_matches(input: &Document, schema: &Value) -> bool {
    if is_primitive(schema) {
        return match input {
            Document::Array(items) => items.iter().any(|item| value_matches(item, schema)),
            Document::Object(_) => false,
            _ => loose_eq(input, schema),
        };
    }
    if let Document::Array(items) = input {
        return match schema {
            Value::Array(sub_schemas) => sub_schemas
                .iter()
                .all(|sub| items.iter().any(|item| value_matches(item, sub))),
            Value::Object(schema_map) if schema_map.keys().any(|k| is_operator(k)) => {
                all_operators_pass(input, schema_map)
            }
            _ => items.iter().any(|item| value_matches(item, schema)),
        };
    }
    let Value::Object(schema_map) = schema else {
        return false;
    };
    if let Some(Value::Array(alternatives)) = schema_map.get("$or") {
        return alternatives.iter().any(|alt| matches(input, alt));
    }
    if schema_map.keys().any(|k| is_operator(k)) {
        return all_operators_pass(input, schema_map);
    }
    if input.is_primitive() {
        return false;
    }
    matches(input, schema)
}

fn all_operators_pass(input: &Document, schema: &serde_json::Map<String, Value>) -> bool {
    schema
        .iter()
        .filter(|(key, _)| is_operator(key))
        .all(|(op, operand)| apply(op, input, operand) == Some(true))
}

/// Comparison operators (`$or`, `$and`, `$not` are structural and handled above).
fn is_operator(key: &str) -> bool {
    OPERATORS.contains(&key)
}

fn is_primitive(value: &Value) -> bool {
    !matches!(value, Value::Array(_) | Value::Object(_))
}

/// One operator on one value; `None` is Go's `ErrUnsupportedType` (counts as no match).
fn apply(op: &str, value: &Document, operand: &Value) -> Option<bool> {
    match op {
        "$eq" => Some(deep_eq(value, operand)),
        "$neq" => Some(!deep_eq(value, operand)),
        "$gt" => compare(value, operand).map(|o| o.is_gt()),
        "$gte" => compare(value, operand).map(|o| o.is_ge()),
        "$lt" => compare(value, operand).map(|o| o.is_lt()),
        "$lte" => compare(value, operand).map(|o| o.is_le()),
        "$in" => contains(value, operand),
        "$nin" => contains(value, operand).map(|found| !found),
        "$startsWith" => affix(value, operand, |v, a| v.starts_with(a)),
        "$endsWith" => affix(value, operand, |v, a| v.ends_with(a)),
        // Only reached for a present value: absence is handled where keys are looked up.
        "$exist" => operand.as_bool(),
        _ => None,
    }
}

/// Equality of two scalars: numbers as f64, strings, booleans, null; no cross-type matches.
/// A document number beyond f64's range (infinite) equals no filter operand, which is finite.
fn loose_eq(a: &Document, b: &Value) -> bool {
    match (a, b) {
        (Document::Null, Value::Null) => true,
        (Document::Number(x), Value::Number(y)) => Some(*x) == y.as_f64(),
        (Document::String(x), Value::String(y)) => x == y,
        (Document::Bool(x), Value::Bool(y)) => x == y,
        _ => false,
    }
}

/// Go compares non-scalars by their JSON encoding (object keys sorted), which is structural
/// equality with numbers compared as f64.
fn deep_eq(a: &Document, b: &Value) -> bool {
    match (a, b) {
        (Document::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| deep_eq(a, b))
        }
        (Document::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, a)| y.get(k).is_some_and(|b| deep_eq(a, b)))
        }
        _ => loose_eq(a, b),
    }
}

/// `$gt` and friends: string with string (byte order) or number with number. A number beyond
/// f64's range compares as ±infinity: above (or below) every operand.
fn compare(value: &Document, operand: &Value) -> Option<std::cmp::Ordering> {
    match (value, operand) {
        (Document::String(a), Value::String(b)) => Some(a.as_str().cmp(b.as_str())),
        (Document::Number(a), Value::Number(b)) => a.partial_cmp(&b.as_f64()?),
        _ => None,
    }
}

/// `$in`: the value is one of the operand's elements, the operand is a substring of the value,
/// or the value is an array holding the operand.
fn contains(value: &Document, operand: &Value) -> Option<bool> {
    if let Value::Array(candidates) = operand {
        if !value.is_primitive() {
            return None;
        }
        return Some(candidates.iter().any(|c| loose_eq(value, c)));
    }
    match value {
        Document::String(haystack) => match operand {
            Value::String(needle) => Some(haystack.contains(needle.as_str())),
            _ => None,
        },
        Document::Array(items) => Some(items.iter().any(|item| loose_eq(item, operand))),
        _ => None,
    }
}

/// `$startsWith` / `$endsWith` with a string or a list of strings (any may match; a non-string
/// element met before a match makes the whole test fail, as in Go).
fn affix(value: &Document, operand: &Value, test: fn(&str, &str) -> bool) -> Option<bool> {
    let Document::String(value) = value else {
        return None;
    };
    match operand {
        Value::String(affix) => Some(test(value, affix)),
        Value::Array(affixes) => {
            for affix in affixes {
                if test(value, affix.as_str()?) {
                    return Some(true);
                }
            }
            Some(false)
        }
        _ => None,
    }
}
