//! Fuzzes what every NATS message and publish body goes through: the event parser, the tenant
//! splice and the destination filter. Nothing may panic; a spliced body must always be valid
//! JSON carrying exactly the new tenant.
#![no_main]

use jetpost::event::{Event, Filter, splice_tenant};
use libfuzzer_sys::fuzz_target;

/// The top level of a spliced body; every other member is skipped by syntax only.
#[derive(serde::Deserialize)]
struct TopLevel {
    tenant_id: String,
}

fuzz_target!(|data: &[u8]| {
    let _ = Event::parse(data);

    if let Ok(spliced) = splice_tenant(data, "fuzz-tenant") {
        // JSON's grammar, not serde_json::Value's range: a number like 1e999 is valid JSON
        // that jetpost keeps byte for byte although no f64 can hold it.
        let top: TopLevel = serde_json::from_slice(&spliced).expect("a spliced body is valid JSON");
        assert_eq!(
            top.tenant_id, "fuzz-tenant",
            "the spliced tenant is the only tenant"
        );
        if let Ok(event) = Event::parse(&spliced) {
            assert_eq!(event.tenant_id, "fuzz-tenant");
        }
    }

    // `<filter JSON> \0 <event JSON>`: the filter engine on arbitrary filters and events.
    if let Some(split) = data.iter().position(|b| *b == 0) {
        let (filter, event) = (&data[..split], &data[split + 1..]);
        if let Ok(filter) = serde_json::from_slice::<serde_json::Value>(filter)
            && let Ok(filter) = Filter::from_json(&filter)
            && let Ok(event) = splice_tenant(event, "fuzz-tenant")
            && let Ok(event) = Event::parse(&event)
        {
            let _ = filter.matches(&event.filter_input());
        }
    }
});
