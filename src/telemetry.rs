//! Logs and metrics set-up: `tracing` to stderr (text or JSON lines, each event exactly one line
//! whatever its values hold) and the Prometheus recorder behind `/metrics`. Called once by
//! `main`; tests running the service in-process share one.

use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// Installs the tracing subscriber. `level` is a tracing filter (`info`, `jetpost=debug,info`).
/// A second call (tests) is a no-op.
///
/// Both formats write through [`OneLine`], so no value can start a forged line or drive the
/// terminal; the text format is therefore written without ANSI colours (their escape codes
/// would be escaped too).
pub fn init_logging(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(OneLine(io::stderr));
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Makes writers that turn each formatted event into exactly one line: every control
/// character in it (CR, LF, tab, ESC and the rest of C0, DEL, C1) and the Unicode line and
/// paragraph separators are written as JSON-style escapes (`\n`, `\r`, `\t`, `\u001b`, …),
/// except the newline that ends the event. Fields, and the message, which often interpolates
/// errors and payload snippets, can then never forge a line or carry terminal escapes.
///
/// The escapes are valid inside JSON strings and mean the same character there, so a JSON
/// line stays valid and decodes to the same values (serde already escapes C0; this adds DEL,
/// C1 and the separators). Backslashes are left alone: a literal `\n` in a text-format value
/// reads like an escaped newline, but it cannot break the line.
#[derive(Debug, Clone, Copy)]
pub struct OneLine<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for OneLine<M> {
    type Writer = OneLineWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        OneLineWriter {
            inner: self.0.make_writer(),
            event: Vec::new(),
        }
    }
}

/// Collects one event's bytes and writes them escaped when dropped (tracing-subscriber makes
/// one writer per event), so the event's final newline is known however the bytes arrive.
pub struct OneLineWriter<W: Write> {
    inner: W,
    event: Vec<u8>,
}

impl<W: Write> Write for OneLineWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.event.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for OneLineWriter<W> {
    fn drop(&mut self) {
        if self.event.is_empty() {
            return;
        }
        let line = one_line(&self.event);
        // A log line that cannot be written has nowhere to be reported.
        let _ = self.inner.write_all(&line);
        let _ = self.inner.flush();
    }
}

/// `event` with every control character escaped and exactly one final newline.
fn one_line(event: &[u8]) -> Cow<'_, [u8]> {
    let body = event.strip_suffix(b"\n").unwrap_or(event);
    // Almost every event has nothing to escape: no C0 byte, no DEL, and no lead byte of a C1
    // character (0xC2) or of U+2028/U+2029 (0xE2). Those are written as they are.
    if body.len() < event.len()
        && !body
            .iter()
            .any(|&b| b < 0x20 || matches!(b, 0x7f | 0xc2 | 0xe2))
    {
        return Cow::Borrowed(event);
    }
    let text = String::from_utf8_lossy(body);
    let mut out = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('\n');
    Cow::Owned(out.into_bytes())
}

/// The process-wide Prometheus recorder; installed on first use.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let latency = [
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            60.0,
        ];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (tests); then this handle renders nothing
        // of it, which only affects `/metrics` in that process.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// Everything written, shared with the test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    const HOSTILE: &str =
        "evt\r\n2026-01-01T00:00:00Z  INFO jetpost: forged\x1b[2J\x07\x7f\u{85}\u{2028}end";

    #[test]
    fn escapes_every_control_character_but_the_final_newline() {
        let line =
            String::from_utf8(one_line(format!("a={HOSTILE} \t\n").as_bytes()).to_vec()).unwrap();
        assert_eq!(
            line,
            "a=evt\\r\\n2026-01-01T00:00:00Z  INFO jetpost: forged\\u001b[2J\\u0007\\u007f\\u0085\\u2028end \\t\n"
        );
        assert_eq!(&*one_line(b"plain\n"), b"plain\n");
        assert_eq!(&*one_line(b"no newline"), b"no newline\n");
        assert_eq!(&*one_line(b"two\n\n"), b"two\\n\n");
        assert_eq!(
            &*one_line("ünïcode ✓ €\n".as_bytes()),
            "ünïcode ✓ €\n".as_bytes()
        );
        assert_eq!(
            &*one_line("\u{85}\u{2029}\n".as_bytes()),
            b"\\u0085\\u2029\n"
        );
    }

    #[test]
    fn writer_emits_one_line_per_event_however_it_is_written() {
        let captured = Captured::default();
        let make = OneLine(captured.clone());
        {
            let mut writer = make.make_writer();
            writer.write_all(b"first part\n").unwrap();
            writer.write_all(b"second part\n").unwrap();
        }
        {
            let _unused = make.make_writer();
        }
        assert_eq!(captured.text(), "first part\\nsecond part\n");
    }

    fn log_hostile(format: LogFormat) -> String {
        let captured = Captured::default();
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(OneLine(captured.clone()));
        let emit = || {
            tracing::warn!(event_id = %HOSTILE, topic = ?HOSTILE, "rejected: {HOSTILE}");
            tracing::info!("next");
        };
        match format {
            LogFormat::Text => tracing::subscriber::with_default(builder.finish(), emit),
            LogFormat::Json => {
                tracing::subscriber::with_default(builder.json().flatten_event(true).finish(), emit)
            }
        }
        captured.text()
    }

    #[test]
    fn text_logs_keep_hostile_values_on_their_line() {
        let out = log_hostile(LogFormat::Text);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(lines[0].contains("WARN"), "{out}");
        assert!(lines[0].contains("evt\\r\\n2026-01-01T00:00:00Z  INFO jetpost: forged"));
        assert!(
            lines[1].contains("INFO") && lines[1].ends_with("next"),
            "{out}"
        );
        assert!(!out.contains('\x1b') && !out.contains('\r') && !out.contains('\u{2028}'));
    }

    #[test]
    fn json_logs_stay_valid_and_keep_the_values() {
        let out = log_hostile(LogFormat::Json);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(first["event_id"], HOSTILE);
        assert_eq!(first["message"], format!("rejected: {HOSTILE}"));
        assert!(out.chars().all(|c| c == '\n' || !c.is_control()), "{out}");
        assert!(!out.contains('\u{2028}'));
    }
}
