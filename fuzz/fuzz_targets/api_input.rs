//! Fuzzes what the API reads from requests and what it serves from the store: JSON request
//! bodies (destination create and update, tenant metadata), query strings (list and metrics
//! parameters), and, for any bytes `Event::parse` accepts, every view a listing serves the
//! stored event through, which must carry its `data` byte for byte. Nothing may panic.
#![no_main]

use jetpost::api::fuzz::{query_string, request_body, served_event};
use jetpost::event::{Document, Event};
use libfuzzer_sys::fuzz_target;

/// Equal documents, numbers within a rounding step (serde_json's float parsing is not always
/// correctly rounded; the filter document's is).
fn alike(a: &Document, b: &Document) -> bool {
    match (a, b) {
        (Document::Number(x), Document::Number(y)) => {
            x == y || (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs())
        }
        (Document::Array(x), Document::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| alike(a, b))
        }
        (Document::Object(x), Document::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, va), (kb, vb))| ka == kb && alike(va, vb))
        }
        _ => a == b,
    }
}

fuzz_target!(|data: &[u8]| {
    request_body(data);
    if let Ok(text) = std::str::from_utf8(data) {
        query_string(text);
    }

    let Ok(event) = Event::parse(data) else {
        return;
    };
    let raw = event.data.get();
    let served = served_event(raw).expect("every listing view serves data Event::parse accepts");
    let member = format!("\"data\":{raw}");
    for text in served {
        assert!(text.contains(&member), "data not served byte for byte: {text}");
    }
    // Filters read any accepted data, and read it as serde_json does wherever serde_json can.
    let document = Document::parse(raw).expect("filters read data Event::parse accepts");
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(raw) {
        assert!(
            alike(&document, &Document::from(&value)),
            "filter document differs from serde_json's reading of {raw}"
        );
    }
});
