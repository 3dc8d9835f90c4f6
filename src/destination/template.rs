//! JMESPath templates over an event, as Outpost evaluates them: the S3 object key
//! (`key_template`, over `{data, metadata, time}`) and the Kinesis and Kafka partition keys
//! (`partition_key_template`, over `{data, metadata}`). Compiled once, at API write to
//! check them and when a destination is opened; evaluated per attempt.

use std::fmt;

use chrono::{DateTime, Datelike, Timelike, Utc};
use jmespath::{Expression, Variable};
use serde_json::{Value, json};

/// A compiled JMESPath expression.
pub struct Template {
    expression: Expression<'static>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Template({})", self.expression.as_str())
    }
}

impl Template {
    /// Compiles `text`; the error names `config.<field>`.
    pub fn compile(field: &str, text: &str) -> Result<Template, String> {
        jmespath::compile(text)
            .map(|expression| Template { expression })
            .map_err(|e| {
                format!(
                    "config.{field} is not a valid JMESPath expression ({}); see \
                     https://jmespath.org for the syntax",
                    e.to_string().lines().next().unwrap_or_default()
                )
            })
    }

    /// The expression's result over `data` as a key: strings as they are, numbers and
    /// booleans printed, arrays and objects as JSON. `None` for null or an empty string;
    /// an error when the expression fails on this data (a function given the wrong type).
    pub fn evaluate(&self, data: Value) -> Result<Option<String>, String> {
        let result = self.expression.search(data).map_err(|e| {
            format!(
                "{} failed: {}",
                self.expression.as_str(),
                e.to_string().lines().next().unwrap_or_default()
            )
        })?;
        Ok(match &*result {
            Variable::Null => None,
            Variable::String(s) if s.is_empty() => None,
            Variable::String(s) => Some(s.clone()),
            Variable::Bool(b) => Some(b.to_string()),
            Variable::Number(n) => Some(n.to_string()),
            other => Some(serde_json::to_string(other).unwrap_or_default()),
        })
    }
}

/// The event's `data` parsed for templates; data that is not JSON counts as an empty object
/// (jetpost stores only JSON objects, so this is a safety net, not a path).
pub fn parsed_data(data: &str) -> Value {
    serde_json::from_str(data).unwrap_or_else(|_| json!({}))
}

/// Outpost's `time` fields of an event for S3 key templates, in UTC: `year`, `month`, `day`,
/// `hour`, `minute`, `second` (zero-padded), `date`, `datetime`, `unix`, `rfc3339` and
/// `rfc3339_nano` (Go's layout: fractional seconds without trailing zeros).
pub fn time_fields(time: DateTime<Utc>) -> Value {
    json!({
        "year": format!("{:04}", time.year()),
        "month": format!("{:02}", time.month()),
        "day": format!("{:02}", time.day()),
        "hour": format!("{:02}", time.hour()),
        "minute": format!("{:02}", time.minute()),
        "second": format!("{:02}", time.second()),
        "date": time.format("%Y-%m-%d").to_string(),
        "datetime": time.format("%Y-%m-%dT%H:%M:%S").to_string(),
        "unix": time.timestamp().to_string(),
        "rfc3339": time.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "rfc3339_nano": rfc3339_nano(time),
    })
}

fn rfc3339_nano(time: DateTime<Utc>) -> String {
    let fraction = format!("{:09}", time.nanosecond() % 1_000_000_000);
    let fraction = fraction.trim_end_matches('0');
    let seconds = time.format("%Y-%m-%dT%H:%M:%S");
    if fraction.is_empty() {
        format!("{seconds}Z")
    } else {
        format!("{seconds}.{fraction}Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    proptest::proptest! {
        /// Templates come from tenants: any text is compiled or refused, never a panic.
        #[test]
        fn any_text_compiles_or_is_refused(text in "[\\PC\\[\\]\\.()'\"`@&|!<>=*,:{}0-9a-z-]{0,40}") {
            if let Ok(template) = Template::compile("key_template", &text) {
                let _ = template.evaluate(json!({"data": {"a": [1, "x"]}, "metadata": {}}));
            }
        }
    }

    #[test]
    fn time_fields_match_outposts_formats() {
        let fields = time_fields(at("2026-03-04T05:06:07.120Z"));
        assert_eq!(fields["year"], "2026");
        assert_eq!(fields["month"], "03");
        assert_eq!(fields["day"], "04");
        assert_eq!(fields["hour"], "05");
        assert_eq!(fields["second"], "07");
        assert_eq!(fields["date"], "2026-03-04");
        assert_eq!(fields["datetime"], "2026-03-04T05:06:07");
        assert_eq!(fields["rfc3339"], "2026-03-04T05:06:07Z");
        assert_eq!(fields["rfc3339_nano"], "2026-03-04T05:06:07.12Z");
        assert_eq!(
            time_fields(at("2026-03-04T05:06:07Z"))["rfc3339_nano"],
            "2026-03-04T05:06:07Z"
        );
    }

    #[test]
    fn results_become_keys_and_bad_expressions_name_their_field() {
        let data = json!({"data": {"user": "u1", "n": 42, "ok": true, "list": [1, 2]},
                          "metadata": {"event-id": "e1"}});
        let key = |text: &str| {
            Template::compile("key_template", text)
                .unwrap()
                .evaluate(data.clone())
        };
        assert_eq!(key("data.user"), Ok(Some("u1".into())));
        assert_eq!(key("data.n"), Ok(Some("42".into())));
        assert_eq!(key("data.ok"), Ok(Some("true".into())));
        assert_eq!(key("data.list"), Ok(Some("[1,2]".into())));
        assert_eq!(key("data.missing"), Ok(None));
        assert_eq!(
            key(r#"join('/', [metadata."event-id", 'x.json'])"#),
            Ok(Some("e1/x.json".into()))
        );
        assert!(key("join('/', data.user)").is_err());
        let bad = Template::compile("key_template", "join(").unwrap_err();
        assert!(
            bad.starts_with("config.key_template is not a valid JMESPath expression"),
            "{bad}"
        );
    }
}
