//! The tenant splice: stamps the tenant that the boundary proves (NATS account or subject) into
//! a raw event without re-encoding anything else, so `data` reaches webhooks byte for byte
//! (key order, big integers, escapes).

use super::object::{JsonKind, ObjectError, read_object};

/// Why a message could not take a tenant: it is not one JSON object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpliceError {
    #[error("message is not valid UTF-8 (first invalid byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("message is not valid JSON: {reason}")]
    NotJson { reason: String },
    #[error("message must be a JSON object, found {found}")]
    NotObject { found: JsonKind },
}

impl From<ObjectError> for SpliceError {
    fn from(e: ObjectError) -> Self {
        match e {
            ObjectError::NotUtf8 { offset } => SpliceError::NotUtf8 { offset },
            ObjectError::NotJson { reason } => SpliceError::NotJson { reason },
            ObjectError::NotObject { found } => SpliceError::NotObject { found },
        }
    }
}

/// Returns `raw` with its top-level `tenant_id` set to `tenant_id`.
///
/// The output is `{"tenant_id":"<tenant>",` followed by every other top-level member exactly as
/// written (key, whitespace inside the member, value), in input order, joined by `,`.
///
/// Every member that could be read as `tenant_id` is dropped, not only the exact spelling:
/// escaped spellings (`"tenant\u005fid"`) and duplicates, and also case variants such as
/// `"Tenant_ID"`. jetpost's own parser matches keys exactly, but Go's encoding/json (Outpost,
/// and likely some consumers of stored events) matches them case-insensitively, so a spoofed
/// variant left in place could win there. Go folds with `ToUpper(ToLower(r))`, under which
/// `ı` (U+0131) and `İ` (U+0130) also read as `I`; those are dropped too.
pub fn splice_tenant(raw: &[u8], tenant_id: &str) -> Result<Vec<u8>, SpliceError> {
    let top = read_object(raw)?;
    let tenant = serde_json::Value::String(tenant_id.to_owned()).to_string();

    let mut out = Vec::with_capacity(raw.len() + tenant.len() + 16);
    out.extend_from_slice(b"{\"tenant_id\":");
    out.extend_from_slice(tenant.as_bytes());
    for member in &top.members {
        if !reads_as_tenant_id(&member.key) {
            out.push(b',');
            out.extend_from_slice(&top.text.as_bytes()[member.span.clone()]);
        }
    }
    out.push(b'}');
    Ok(out)
}

/// Whether a decoded key matches `tenant_id` under Go's encoding/json key folding.
fn reads_as_tenant_id(key: &str) -> bool {
    const TARGET: &[u8] = b"TENANT_ID";
    let mut folded = key.chars().map(|c| match c {
        'ı' | 'İ' => Some(b'I'),
        'ſ' => Some(b'S'),
        '\u{212A}' => Some(b'K'),
        c if c.is_ascii() => Some(c.to_ascii_uppercase() as u8),
        _ => None,
    });
    TARGET.iter().all(|t| folded.next() == Some(Some(*t))) && folded.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn splice(raw: &str, tenant: &str) -> String {
        String::from_utf8(splice_tenant(raw.as_bytes(), tenant).unwrap()).unwrap()
    }

    #[test]
    fn adds_tenant_first_and_keeps_members_byte_for_byte() {
        let raw = r#"{ "topic" : "a.b",
            "data": { "z" : 12345678901234567890, "s":"\u003c<&>\n", "f":1.50e3, "o":{ } } }"#;
        assert_eq!(
            splice(raw, "acme"),
            r#"{"tenant_id":"acme","topic" : "a.b","data": { "z" : 12345678901234567890, "s":"\u003c<&>\n", "f":1.50e3, "o":{ } }}"#
        );
    }

    /// Found by the fuzzer: JSON allows numbers no f64 holds. They are kept as written, in the
    /// splice and in the parsed event's `data` (filters then see such data as `{}`).
    #[test]
    fn keeps_numbers_beyond_f64_range() {
        let raw = r#"{"x":222.43e22222,"data":{"n":-1e999}}"#;
        let spliced = splice(raw, "t");
        assert_eq!(
            spliced,
            r#"{"tenant_id":"t","x":222.43e22222,"data":{"n":-1e999}}"#
        );
        let event = crate::event::Event::parse(spliced.as_bytes()).unwrap();
        assert_eq!(event.data.get(), r#"{"n":-1e999}"#);
        let _ = event.filter_input();
    }

    #[test]
    fn replaces_existing_tenant_wherever_it_is() {
        assert_eq!(
            splice(r#"{"a":1,"tenant_id":"evil","b":[2]}"#, "t"),
            r#"{"tenant_id":"t","a":1,"b":[2]}"#
        );
        assert_eq!(
            splice(r#"{"tenant_id":{"nested":"x"}}"#, "t"),
            r#"{"tenant_id":"t"}"#
        );
    }

    #[test]
    fn removes_duplicates_escaped_and_case_variants() {
        let raw = r#"{"tenant_id":"a","x":1,"tenant_id":"b","tenant\u005fid":"c","\u0054enant_ID":"d",
            "Tenant_Id":"e","TENANT_ID":"f","tenant_ıd":"g","tenant_İd":"h","data":{"tenant_id":"keep"}}"#;
        assert_eq!(
            splice(raw, "t"),
            r#"{"tenant_id":"t","x":1,"data":{"tenant_id":"keep"}}"#
        );
    }

    #[test]
    fn keeps_keys_that_only_resemble_tenant_id() {
        let raw = r#"{"tenant_id ":1,"tenantid":2,"tenant_idx":3,"xtenant_id":4,"tenant-id":5}"#;
        assert_eq!(
            splice(raw, "t"),
            r#"{"tenant_id":"t","tenant_id ":1,"tenantid":2,"tenant_idx":3,"xtenant_id":4,"tenant-id":5}"#
        );
    }

    #[test]
    fn escapes_the_tenant() {
        let out = splice("{}", "a\"b\\c\u{1}é</script>");
        assert_eq!(out, r#"{"tenant_id":"a\"b\\c\u0001é</script>"}"#);
        let value: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value, json!({"tenant_id": "a\"b\\c\u{1}é</script>"}));
    }

    #[test]
    fn empty_and_whitespace_objects() {
        assert_eq!(splice("{}", "t"), r#"{"tenant_id":"t"}"#);
        assert_eq!(splice(" \n{ \t}\r\n", "t"), r#"{"tenant_id":"t"}"#);
        assert_eq!(splice(r#"{"tenant_id":1}"#, "t"), r#"{"tenant_id":"t"}"#);
    }

    #[test]
    fn rejects_non_objects_precisely() {
        let err = |raw: &[u8]| splice_tenant(raw, "t").unwrap_err().to_string();
        assert_eq!(err(b"null"), "message must be a JSON object, found null");
        assert_eq!(err(b"[{}]"), "message must be a JSON object, found array");
        assert_eq!(
            err(b"\"{}\""),
            "message must be a JSON object, found string"
        );
        assert_eq!(err(b"-1.5"), "message must be a JSON object, found number");
        assert_eq!(
            err(b"false"),
            "message must be a JSON object, found boolean"
        );
        assert_eq!(
            err(b"\xfe{}"),
            "message is not valid UTF-8 (first invalid byte at offset 0)"
        );
        for raw in [
            &b""[..],
            b"{",
            b"{\"a\"}",
            b"{\"a\":1,}",
            b"{} {}",
            b"{'a':1}",
            b"nan",
        ] {
            assert!(
                err(raw).starts_with("message is not valid JSON: "),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn go_key_folding() {
        for key in [
            "tenant_id",
            "TENANT_ID",
            "tEnAnT_iD",
            "tenant_ıd",
            "tenant_İd",
        ] {
            assert!(reads_as_tenant_id(key), "{key}");
        }
        for key in [
            "tenant_i",
            "tenant_idd",
            "tenant id",
            "tenänt_id",
            "tenant_іd",
            "",
        ] {
            assert!(!reads_as_tenant_id(key), "{key}");
        }
    }
}
