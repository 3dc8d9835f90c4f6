//! The shape of what jetpost stores and later echoes: event, tenant and destination ids, topics,
//! and metadata that becomes webhook headers. Ids end up in HTTP headers, URL path segments and
//! log fields, topics in headers and logs, metadata in headers: these rules keep each usable in
//! all of them, so a value accepted once can always be delivered, addressed and logged.

use std::fmt;

/// Longest id (event, tenant, destination), in characters (all ASCII, so also bytes).
pub const MAX_ID_CHARS: usize = 255;
/// Longest topic, in characters.
pub const MAX_TOPIC_CHARS: usize = 255;
/// Most entries in a metadata map that becomes headers (event `metadata`, destination
/// `delivery_metadata`).
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Longest metadata key, in characters (it becomes a header name after the prefix).
pub const MAX_METADATA_KEY_CHARS: usize = 255;
/// Most bytes of keys and values together in one metadata map: they are sent as headers, and
/// common servers refuse requests whose headers pass 8–16 KiB in all (Node.js: 16 KiB).
pub const MAX_METADATA_BYTES: usize = 8 * 1024;

/// Why a string is not a valid id, topic or metadata entry. `Display` reads after the field
/// name: `id: has '\n' at character 4; ids use …`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentError {
    #[error("must not be empty")]
    Empty,
    #[error("is {len} characters long; at most {max} are allowed")]
    TooLong { len: usize, max: usize },
    #[error("must not be \".\" or \"..\" (URL paths would resolve it away)")]
    DotSegment,
    #[error("has {} at character {position}; {allowed}", Shown(*.found))]
    Character {
        found: char,
        /// 1-based, in characters.
        position: usize,
        allowed: &'static str,
    },
}

/// A rejected character, quoted and escaped so an error message never carries it raw.
struct Shown(char);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

const ID_RULE: &str = "ids use only letters A-Z a-z, digits and - _ . : @ + = ~";
const TOPIC_RULE: &str =
    "topics use only visible ASCII characters (no spaces or control characters)";
const KEY_RULE: &str =
    "metadata keys are header names: letters, digits and ! # $ % & ' * + - . ^ _ ` | ~";
const VALUE_RULE: &str = "metadata values are header values: no control characters other than tab";

/// An id (event, tenant or destination): 1–255 characters of `A-Z a-z 0-9 - _ . : @ + = ~`,
/// other than `.` and `..`. That covers UUIDs, `nats_…` derived ids, `order-42`,
/// `user@example.com`, `a:b`, and is safe unescaped in a header value, a URL path segment
/// (where `.` and `..` would be resolved away by clients) and a log field.
pub fn check_id(id: &str) -> Result<(), IdentError> {
    check(id, MAX_ID_CHARS, ID_RULE, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@' | '+' | '=' | '~')
    })?;
    if id == "." || id == ".." {
        return Err(IdentError::DotSegment);
    }
    Ok(())
}

/// A topic (an event's, or one a destination subscribes to, `*` patterns included): 1–255
/// visible ASCII characters (0x21–0x7E). Topics go into a header and logs, never into paths.
pub fn check_topic(topic: &str) -> Result<(), IdentError> {
    check(topic, MAX_TOPIC_CHARS, TOPIC_RULE, |c| c.is_ascii_graphic())
}

/// A metadata key, sent as the header `<prefix><key>`: 1–255 characters of an HTTP token
/// (RFC 9110 `tchar`).
fn check_metadata_key(key: &str) -> Result<(), IdentError> {
    check(key, MAX_METADATA_KEY_CHARS, KEY_RULE, is_token_char)
}

/// A metadata value, sent as a header value: anything but control characters (tab allowed),
/// which HTTP forbids in header values. May be empty.
fn check_metadata_value(value: &str) -> Result<(), IdentError> {
    if value.is_empty() {
        return Ok(());
    }
    check(value, usize::MAX, VALUE_RULE, |c| {
        c == '\t' || !(c.is_ascii_control())
    })
}

/// Why a metadata map cannot become headers. `Display` reads after the map's field name
/// (`metadata: …`); [`MetadataError::field`] names the entry at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("has {count} entries; at most {max} are allowed")]
    TooManyEntries { count: usize, max: usize },
    #[error(
        "has {bytes} bytes of keys and values; at most {max} are allowed (they are sent as headers)"
    )]
    TooLarge { bytes: usize, max: usize },
    #[error("key {}: {error}", Escaped(.key))]
    Key { key: String, error: IdentError },
    #[error("{error}")]
    Value { key: String, error: IdentError },
}

impl MetadataError {
    /// The field at fault under the map named `map`: `metadata.region` for a bad value,
    /// `metadata` otherwise (a bad key is named in the message, escaped).
    pub fn field(&self, map: &str) -> String {
        match self {
            MetadataError::Value { key, .. } => format!("{map}.{key}"),
            _ => map.to_owned(),
        }
    }
}

/// A string shown with control characters escaped (for keys that failed the check).
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A metadata map that becomes headers: at most [`MAX_METADATA_ENTRIES`] entries and
/// [`MAX_METADATA_BYTES`] of keys and values, every key a header name and every value a header
/// value. The first problem is reported.
pub fn check_metadata<'a, I>(entries: I) -> Result<(), MetadataError>
where
    I: IntoIterator<Item = (&'a String, &'a String)>,
{
    let (mut count, mut bytes) = (0usize, 0usize);
    for (key, value) in entries {
        check_metadata_key(key).map_err(|error| MetadataError::Key {
            key: key.clone(),
            error,
        })?;
        check_metadata_value(value).map_err(|error| MetadataError::Value {
            key: key.clone(),
            error,
        })?;
        count += 1;
        bytes += key.len() + value.len();
    }
    if count > MAX_METADATA_ENTRIES {
        return Err(MetadataError::TooManyEntries {
            count,
            max: MAX_METADATA_ENTRIES,
        });
    }
    if bytes > MAX_METADATA_BYTES {
        return Err(MetadataError::TooLarge {
            bytes,
            max: MAX_METADATA_BYTES,
        });
    }
    Ok(())
}

/// RFC 9110 `tchar`: the characters of a header name.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '!' | '#'
                | '$'
                | '%'
                | '&'
                | '\''
                | '*'
                | '+'
                | '-'
                | '.'
                | '^'
                | '_'
                | '`'
                | '|'
                | '~'
        )
}

fn check(
    value: &str,
    max: usize,
    allowed: &'static str,
    ok: impl Fn(char) -> bool,
) -> Result<(), IdentError> {
    if value.is_empty() {
        return Err(IdentError::Empty);
    }
    let mut len = 0;
    for (i, c) in value.chars().enumerate() {
        if !ok(c) {
            return Err(IdentError::Character {
                found: c,
                position: i + 1,
                allowed,
            });
        }
        len += 1;
    }
    if len > max {
        return Err(IdentError::TooLong { len, max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn ids_in_use_are_valid() {
        for id in [
            "order-42",
            "evt_1",
            "nats_p65nykgdgd5mm32sk4vttyurwn",
            "0b8e2f7c-3d5a-4e4b-9a51-2f0c7b1d9e11",
            "user@example.com",
            "acme+co",
            "a:b=c~d.e",
            "t",
        ] {
            assert_eq!(check_id(id), Ok(()), "{id}");
        }
        assert_eq!(check_id(&"x".repeat(MAX_ID_CHARS)), Ok(()));
    }

    #[test]
    fn ids_refuse_what_breaks_headers_paths_or_logs() {
        assert_eq!(check_id(""), Err(IdentError::Empty));
        assert_eq!(check_id("."), Err(IdentError::DotSegment));
        assert_eq!(check_id(".."), Err(IdentError::DotSegment));
        assert_eq!(check_id("..."), Ok(()));
        assert_eq!(
            check_id(&"x".repeat(MAX_ID_CHARS + 1)),
            Err(IdentError::TooLong { len: 256, max: 255 })
        );
        for (id, found, position) in [
            ("a\nb", '\n', 2),
            ("a\rb", '\r', 2),
            ("a b", ' ', 2),
            ("a/b", '/', 2),
            ("a?b", '?', 2),
            ("a%0A", '%', 2),
            ("é", 'é', 1),
            ("x\u{1b}[31m", '\u{1b}', 2),
            ("a\u{0}", '\u{0}', 2),
        ] {
            match check_id(id) {
                Err(IdentError::Character {
                    found: f,
                    position: p,
                    ..
                }) => assert_eq!((f, p), (found, position), "{id:?}"),
                other => panic!("{id:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn messages_escape_the_character() {
        let message = check_id("evt\r\nINFO forged").unwrap_err().to_string();
        assert_eq!(
            message,
            "has '\\r' at character 4; ids use only letters A-Z a-z, digits and - _ . : @ + = ~"
        );
        assert!(!message.contains('\r') && !message.contains('\n'));
    }

    #[test]
    fn topics_are_visible_ascii() {
        for topic in ["order.paid", "user.*", "*", "a/b#c", "~!$%"] {
            assert_eq!(check_topic(topic), Ok(()), "{topic}");
        }
        assert_eq!(check_topic(""), Err(IdentError::Empty));
        for topic in ["a b", "a\nb", "a\tb", "é.x", "a\u{7f}"] {
            assert!(
                matches!(check_topic(topic), Err(IdentError::Character { .. })),
                "{topic:?}"
            );
        }
        assert_eq!(check_topic(&"t".repeat(MAX_TOPIC_CHARS)), Ok(()));
        assert!(matches!(
            check_topic(&"t".repeat(MAX_TOPIC_CHARS + 1)),
            Err(IdentError::TooLong { .. })
        ));
    }

    fn map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn metadata_must_fit_in_headers() {
        assert_eq!(
            check_metadata(&map(&[
                ("region", "eu"),
                ("k", ""),
                ("X-Trace_ID", "a\tb é")
            ])),
            Ok(())
        );
        let err = check_metadata(&map(&[("bad key", "v")])).unwrap_err();
        assert_eq!(err.field("metadata"), "metadata");
        assert!(
            err.to_string()
                .starts_with("key \"bad key\": has ' ' at character 4"),
            "{err}"
        );
        let err = check_metadata(&map(&[("a\nb", "v")])).unwrap_err();
        assert!(err.to_string().starts_with("key \"a\\nb\""), "{err}");
        let err = check_metadata(&map(&[("empty", ""), ("", "v")])).unwrap_err();
        assert!(
            err.to_string().starts_with("key \"\": must not be empty"),
            "{err}"
        );
        let err = check_metadata(&map(&[("region", "eu\r\nx-forged: 1")])).unwrap_err();
        assert_eq!(err.field("metadata"), "metadata.region");
        assert!(
            err.to_string().starts_with("has '\\r' at character 3"),
            "{err}"
        );
        let err = check_metadata(&map(&[("d", "\u{7f}")])).unwrap_err();
        assert_eq!(err.field("delivery_metadata"), "delivery_metadata.d");
    }

    #[test]
    fn metadata_is_bounded() {
        let many: BTreeMap<String, String> = (0..=MAX_METADATA_ENTRIES)
            .map(|i| (format!("k{i}"), "v".to_owned()))
            .collect();
        assert_eq!(
            check_metadata(&many),
            Err(MetadataError::TooManyEntries {
                count: MAX_METADATA_ENTRIES + 1,
                max: MAX_METADATA_ENTRIES
            })
        );
        let enough: BTreeMap<String, String> = many.into_iter().skip(1).collect();
        assert_eq!(check_metadata(&enough), Ok(()));
        let big = map(&[("k", &"v".repeat(MAX_METADATA_BYTES))]);
        assert!(matches!(
            check_metadata(&big),
            Err(MetadataError::TooLarge { bytes, .. }) if bytes == MAX_METADATA_BYTES + 1
        ));
        let fits = map(&[("k", &"v".repeat(MAX_METADATA_BYTES - 1))]);
        assert_eq!(check_metadata(&fits), Ok(()));
        assert!(matches!(
            check_metadata(&map(&[(&"k".repeat(256), "v")])),
            Err(MetadataError::Key {
                error: IdentError::TooLong { .. },
                ..
            })
        ));
    }
}
