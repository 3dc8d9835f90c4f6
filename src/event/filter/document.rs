//! The document a filter reads: JSON decoded for matching, from any text jetpost accepts.
//! Numbers are f64 as in Outpost, but a number beyond f64's range reads as ±infinity (as
//! JavaScript, where the filter language comes from, reads it) and a lone UTF-16 surrogate in a
//! string as U+FFFD (as Go reads it), where `serde_json::Value` would refuse the whole document.

use std::collections::BTreeMap;

use serde_json::Value;

/// A decoded JSON value. Objects keep the last of duplicated keys, as serde_json and Go do.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    Null,
    Bool(bool),
    /// Infinite when the text's number is beyond f64's range (`1e400`, a 400-digit integer).
    Number(f64),
    String(String),
    Array(Vec<Document>),
    Object(BTreeMap<String, Document>),
}

/// Deepest nesting decoded; deeper text is refused (`None`). Event data is at most 127 levels
/// (`MAX_DATA_DEPTH`) and sits one level down in the filter input.
const MAX_DEPTH: usize = 160;

impl Document {
    /// Decodes JSON text; `None` for text that is not JSON or nests deeper than 160 levels.
    /// Costs one pass over the text.
    pub fn parse(text: &str) -> Option<Document> {
        let mut reader = Reader {
            text: text.as_bytes(),
            pos: 0,
        };
        let value = reader.value(1)?;
        reader.skip_whitespace();
        (reader.pos == reader.text.len()).then_some(value)
    }

    /// A member of an object.
    pub fn get(&self, key: &str) -> Option<&Document> {
        match self {
            Document::Object(members) => members.get(key),
            _ => None,
        }
    }

    pub fn is_primitive(&self) -> bool {
        !matches!(self, Document::Array(_) | Document::Object(_))
    }
}

impl From<&Value> for Document {
    fn from(value: &Value) -> Document {
        match value {
            Value::Null => Document::Null,
            Value::Bool(b) => Document::Bool(*b),
            // Always `Some` without serde_json's arbitrary_precision.
            Value::Number(n) => Document::Number(n.as_f64().unwrap_or(f64::NAN)),
            Value::String(s) => Document::String(s.clone()),
            Value::Array(items) => Document::Array(items.iter().map(Document::from).collect()),
            Value::Object(members) => Document::Object(
                members
                    .iter()
                    .map(|(k, v)| (k.clone(), Document::from(v)))
                    .collect(),
            ),
        }
    }
}

/// A recursive-descent reader over JSON text (recursion bounded by `MAX_DEPTH`).
struct Reader<'a> {
    text: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.pos += 1;
        }
        found
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn literal(&mut self, word: &[u8], value: Document) -> Option<Document> {
        let found = self.text.get(self.pos..self.pos + word.len()) == Some(word);
        found.then(|| {
            self.pos += word.len();
            value
        })
    }

    fn value(&mut self, depth: usize) -> Option<Document> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.skip_whitespace();
        match self.peek()? {
            b'{' => {
                self.pos += 1;
                let mut members = BTreeMap::new();
                self.skip_whitespace();
                if self.eat(b'}') {
                    return Some(Document::Object(members));
                }
                loop {
                    self.skip_whitespace();
                    let key = self.string()?;
                    self.skip_whitespace();
                    if !self.eat(b':') {
                        return None;
                    }
                    let value = self.value(depth + 1)?;
                    members.insert(key, value);
                    self.skip_whitespace();
                    if self.eat(b'}') {
                        return Some(Document::Object(members));
                    }
                    if !self.eat(b',') {
                        return None;
                    }
                }
            }
            b'[' => {
                self.pos += 1;
                let mut items = Vec::new();
                self.skip_whitespace();
                if self.eat(b']') {
                    return Some(Document::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.skip_whitespace();
                    if self.eat(b']') {
                        return Some(Document::Array(items));
                    }
                    if !self.eat(b',') {
                        return None;
                    }
                }
            }
            b'"' => self.string().map(Document::String),
            b't' => self.literal(b"true", Document::Bool(true)),
            b'f' => self.literal(b"false", Document::Bool(false)),
            b'n' => self.literal(b"null", Document::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// JSON's number grammar, read as the nearest f64 (±infinity beyond its range).
    fn number(&mut self) -> Option<Document> {
        let start = self.pos;
        self.eat(b'-');
        if self.eat(b'0') {
            if matches!(self.peek(), Some(b'0'..=b'9')) {
                return None;
            }
        } else if self.digits() == 0 {
            return None;
        }
        if self.eat(b'.') && self.digits() == 0 {
            return None;
        }
        if self.eat(b'e') || self.eat(b'E') {
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if self.digits() == 0 {
                return None;
            }
        }
        let text = std::str::from_utf8(&self.text[start..self.pos]).ok()?;
        text.parse::<f64>().ok().map(Document::Number)
    }

    /// A string with its escapes decoded; a lone surrogate escape reads as U+FFFD.
    fn string(&mut self) -> Option<String> {
        if !self.eat(b'"') {
            return None;
        }
        let mut out = Vec::new();
        loop {
            let run = self.pos;
            while let Some(byte) = self.peek() {
                if byte == b'"' || byte == b'\\' || byte < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.extend_from_slice(&self.text[run..self.pos]);
            match self.peek()? {
                b'"' => {
                    self.pos += 1;
                    // Runs end at ASCII bytes, so they split the text on character boundaries.
                    return String::from_utf8(out).ok();
                }
                b'\\' => {
                    self.pos += 1;
                    let escaped = match self.peek()? {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            self.pos += 1;
                            let unit = self.hex4()?;
                            self.pos -= 1;
                            self.code_point(unit)?
                        }
                        _ => return None,
                    };
                    self.pos += 1;
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(escaped.encode_utf8(&mut buf).as_bytes());
                }
                // A raw control character: not JSON.
                _ => return None,
            }
        }
    }

    /// Four hex digits at the current position (consumed).
    fn hex4(&mut self) -> Option<u16> {
        let digits = self.text.get(self.pos..self.pos + 4)?;
        let text = std::str::from_utf8(digits).ok()?;
        if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.pos += 4;
        u16::from_str_radix(text, 16).ok()
    }

    /// The character a `\u` escape stands for, joining a surrogate pair written as two escapes;
    /// a surrogate without its partner is U+FFFD. Leaves `pos` on the escape's last digit.
    fn code_point(&mut self, unit: u16) -> Option<char> {
        if (0xD800..0xDC00).contains(&unit) {
            let after = self.pos + 1;
            if self.text.get(after..after + 2) == Some(b"\\u") {
                let saved = self.pos;
                self.pos = after + 2;
                if let Some(low) = self.hex4()
                    && (0xDC00..0xE000).contains(&low)
                {
                    self.pos -= 1;
                    let c =
                        0x10000 + ((u32::from(unit) - 0xD800) << 10) + (u32::from(low) - 0xDC00);
                    return char::from_u32(c);
                }
                self.pos = saved;
            }
            return Some(char::REPLACEMENT_CHARACTER);
        }
        Some(char::from_u32(u32::from(unit)).unwrap_or(char::REPLACEMENT_CHARACTER))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same_as_serde(text: &str) {
        let expected = Document::from(&serde_json::from_str::<Value>(text).unwrap());
        assert_eq!(Document::parse(text), Some(expected), "{text}");
    }

    #[test]
    fn reads_what_serde_json_reads_alike() {
        for text in [
            r#"{"a":1,"b":[true,false,null],"c":{"d":"e"},"f":-0.5e-3,"g":12345678901234567890}"#,
            r#" [ 1 , 2.5E+3 , "x\"y\\z\/\b\f\n\r\t" , {} , [] ] "#,
            r#""\u00e9\ud83d\ude00 ünï""#,
            r#"{"dup":1,"dup":2}"#,
            "-0",
            "0.1",
            "1.7976931348623157e308",
        ] {
            same_as_serde(text);
        }
    }

    #[test]
    fn out_of_range_numbers_read_as_infinity() {
        let doc = Document::parse(r#"{"a":1e400,"b":-1e400,"c":1e-400,"d":1}"#).unwrap();
        assert_eq!(doc.get("a"), Some(&Document::Number(f64::INFINITY)));
        assert_eq!(doc.get("b"), Some(&Document::Number(f64::NEG_INFINITY)));
        assert_eq!(doc.get("c"), Some(&Document::Number(0.0)));
        assert_eq!(doc.get("d"), Some(&Document::Number(1.0)));
        let long = format!("[{}]", "9".repeat(5000));
        assert_eq!(
            Document::parse(&long),
            Some(Document::Array(vec![Document::Number(f64::INFINITY)]))
        );
    }

    #[test]
    fn lone_surrogates_read_as_replacement_characters() {
        let s = |text: &str| match Document::parse(text) {
            Some(Document::String(s)) => s,
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(s(r#""\ud800""#), "\u{fffd}");
        assert_eq!(s(r#""\udc00x""#), "\u{fffd}x");
        assert_eq!(s(r#""\ud800\u0041""#), "\u{fffd}A");
        assert_eq!(s(r#""\ud800\ud800\udc00""#), "\u{fffd}\u{10000}");
    }

    #[test]
    fn refuses_what_is_not_json() {
        for text in [
            "",
            "{",
            "[1,]",
            "{\"a\"}",
            "01",
            "1.",
            "-",
            "1e",
            "tru",
            "\"a",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\u{1}\"",
            "1 2",
            "{'a':1}",
            "NaN",
        ] {
            assert_eq!(Document::parse(text), None, "{text:?}");
        }
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(Document::parse(&deep), None);
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(Document::parse(&ok).is_some());
    }
}
