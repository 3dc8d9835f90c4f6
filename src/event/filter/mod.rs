//! Destination filters (Outpost's `filter` field): a JSON document with `$` operators that an
//! event's filter input (see [`Event::filter_input`](super::Event::filter_input)) must match.
//! Validation happens once, when a filter is accepted; matching follows Outpost exactly.

mod document;
mod matching;
#[cfg(test)]
mod tests;

pub use document::Document;

use std::fmt;

use serde_json::Value;

use super::object::JsonKind;

/// Comparison operators, applied to the value at their position (`$or`, `$and` and `$not`
/// combine whole schemas and are handled structurally).
const OPERATORS: &[&str] = &[
    "$eq",
    "$neq",
    "$gt",
    "$gte",
    "$lt",
    "$lte",
    "$in",
    "$nin",
    "$startsWith",
    "$endsWith",
    "$exist",
];

/// Deepest nesting accepted in a filter; real filters are a few levels deep, and the limit
/// bounds the recursion of validation and matching.
pub const MAX_FILTER_DEPTH: usize = 64;

/// Largest filter accepted through the API, as compact JSON. Every event of the tenant is
/// matched against it, so its size is a cost on the hot path; real filters are far smaller
/// (an `$in` list of 1,000 ids is about 40 KiB).
pub const MAX_FILTER_BYTES: usize = 64 * 1024;

/// A rejected filter; the message names the position in the filter (`data.amount`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("filter must be a JSON object, found {found}")]
    NotAnObject { found: JsonKind },
    #[error(
        "filter {}: unknown operator \"{operator}\" (supported: $eq, $neq, $gt, $gte, $lt, $lte, \
         $in, $nin, $startsWith, $endsWith, $exist, $or, $and, $not)",
        At(.path)
    )]
    UnknownOperator { path: String, operator: String },
    #[error("filter {}: {operator} expects {expected}, found {found}", At(.path))]
    InvalidOperand {
        path: String,
        operator: String,
        expected: &'static str,
        found: String,
    },
    #[error("filter is nested deeper than {max} levels")]
    TooDeep { max: usize },
    #[error("filter is {bytes} bytes as compact JSON; at most {max} are allowed")]
    TooLarge { bytes: usize, max: usize },
}

/// Formats a filter position for messages: `at "data.amount"`, or `at the top level`.
struct At<'a>(&'a String);

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("at the top level")
        } else {
            write!(f, "at \"{}\"", self.0)
        }
    }
}

/// A validated destination filter. The empty filter `{}` matches every event.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    schema: Value,
}

impl Default for Filter {
    fn default() -> Self {
        Filter {
            schema: Value::Object(serde_json::Map::new()),
        }
    }
}

impl Filter {
    /// Accepts a filter object, rejecting what could never work as intended: unknown `$`
    /// operators (Outpost would silently treat them as field names) and operands of the wrong
    /// type (Outpost would silently never match). Operands of `$eq`/`$neq` are literal values
    /// and are not inspected.
    pub fn from_json(value: &Value) -> Result<Filter, FilterError> {
        if !value.is_object() {
            return Err(FilterError::NotAnObject {
                found: JsonKind::of_value(value),
            });
        }
        validate(value, &mut String::new(), 1)?;
        Ok(Filter {
            schema: value.clone(),
        })
    }

    /// A filter being written (destination create or update): [`Filter::from_json`]'s checks
    /// and at most [`MAX_FILTER_BYTES`]. Stored filters are read with `from_json`, so one stored
    /// before the bound existed keeps matching.
    pub fn from_written_json(value: &Value) -> Result<Filter, FilterError> {
        let filter = Filter::from_json(value)?;
        let bytes = value.to_string().len();
        if bytes > MAX_FILTER_BYTES {
            return Err(FilterError::TooLarge {
                bytes,
                max: MAX_FILTER_BYTES,
            });
        }
        Ok(filter)
    }

    /// The filter as given, for storing and for API responses.
    pub fn as_json(&self) -> &Value {
        &self.schema
    }

    /// Whether this is the empty filter, which matches everything.
    pub fn is_empty(&self) -> bool {
        self.schema
            .as_object()
            .is_none_or(serde_json::Map::is_empty)
    }

    /// Whether `input` (normally an event's filter input) matches. Never panics; a type
    /// mismatch anywhere is simply "no match".
    pub fn matches(&self, input: &Document) -> bool {
        self.is_empty() || matching::matches(input, &self.schema)
    }
}

/// `depth` counts the objects and arrays enclosing `schema`, plus one.
fn validate(schema: &Value, path: &mut String, depth: usize) -> Result<(), FilterError> {
    if (schema.is_object() || schema.is_array()) && depth > MAX_FILTER_DEPTH {
        return Err(FilterError::TooDeep {
            max: MAX_FILTER_DEPTH,
        });
    }
    match schema {
        Value::Object(members) => {
            for (key, operand) in members {
                let parent_len = path.len();
                if key.starts_with('$') {
                    validate_operator(key, operand, path, depth)?;
                } else {
                    push_segment(path, key);
                    validate(operand, path, depth + 1)?;
                }
                path.truncate(parent_len);
            }
            Ok(())
        }
        Value::Array(items) => validate_items(items, path, depth),
        _ => Ok(()),
    }
}

fn validate_items(items: &[Value], path: &mut String, depth: usize) -> Result<(), FilterError> {
    for (index, item) in items.iter().enumerate() {
        let parent_len = path.len();
        path.push_str(&format!("[{index}]"));
        validate(item, path, depth + 1)?;
        path.truncate(parent_len);
    }
    Ok(())
}

fn validate_operator(
    operator: &str,
    operand: &Value,
    path: &mut String,
    depth: usize,
) -> Result<(), FilterError> {
    let invalid = |expected: &'static str, path: &String| FilterError::InvalidOperand {
        path: path.clone(),
        operator: operator.to_owned(),
        expected,
        found: JsonKind::of_value(operand).to_string(),
    };
    let is_scalar = |v: &Value| !v.is_array() && !v.is_object();
    match operator {
        "$eq" | "$neq" => Ok(()),
        "$gt" | "$gte" | "$lt" | "$lte" => match operand {
            Value::Number(_) | Value::String(_) => Ok(()),
            _ => Err(invalid("a number or a string", path)),
        },
        "$in" | "$nin" => match operand {
            Value::Array(items) if items.iter().all(is_scalar) => Ok(()),
            Value::Array(_) => Err(FilterError::InvalidOperand {
                path: path.clone(),
                operator: operator.to_owned(),
                expected: "an array of strings, numbers, booleans or nulls",
                found: "an array holding an array or object".to_owned(),
            }),
            Value::Object(_) => Err(invalid("a string, number, boolean, null or an array", path)),
            _ => Ok(()),
        },
        "$startsWith" | "$endsWith" => match operand {
            Value::String(_) => Ok(()),
            Value::Array(items) if items.iter().all(Value::is_string) => Ok(()),
            _ => Err(invalid("a string or an array of strings", path)),
        },
        "$exist" => match operand {
            Value::Bool(_) => Ok(()),
            _ => Err(invalid("true or false", path)),
        },
        "$or" | "$and" => {
            let Value::Array(items) = operand else {
                return Err(invalid("an array of filters", path));
            };
            let parent_len = path.len();
            push_segment(path, operator);
            validate_items(items, path, depth)?;
            path.truncate(parent_len);
            Ok(())
        }
        "$not" => {
            let parent_len = path.len();
            push_segment(path, operator);
            validate(operand, path, depth + 1)?;
            path.truncate(parent_len);
            Ok(())
        }
        _ => Err(FilterError::UnknownOperator {
            path: path.clone(),
            operator: operator.to_owned(),
        }),
    }
}

fn push_segment(path: &mut String, segment: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(segment);
}
