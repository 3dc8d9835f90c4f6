//! `jetpost filter check`: evaluates a destination filter against an event, as delivery would.

use std::process::ExitCode;

use crate::cli::Failure;
use crate::event::{Event, Filter};

pub fn run(filter: &str, event: &str) -> Result<ExitCode, Failure> {
    let filter: serde_json::Value = serde_json::from_str(filter)
        .map_err(|err| Failure::Usage(format!("--filter is not valid JSON: {err}")))?;
    let filter = Filter::from_json(&filter)
        .map_err(|err| Failure::Usage(format!("--filter is not a valid filter: {err}")))?;
    let event = parse_event(event)?;
    if filter.matches(&event.filter_input()) {
        println!("match");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("no match");
        Ok(ExitCode::from(1))
    }
}

/// The event may omit `tenant_id`: a filter never looks at it.
fn parse_event(event: &str) -> Result<Event, Failure> {
    Event::parse_for_filter_check(event.as_bytes())
        .map_err(|err| Failure::Usage(format!("--event is not a valid event: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_with_numbers_beyond_f64_are_checked_on_their_other_fields() {
        let event = r#"{"topic":"t","data":{"a":1e400,"b":1}}"#;
        assert_eq!(
            run(r#"{"data":{"b":1}}"#, event).unwrap(),
            ExitCode::SUCCESS
        );
        assert_eq!(
            run(r#"{"data":{"a":{"$gt":1e308}}}"#, event).unwrap(),
            ExitCode::SUCCESS
        );
        assert_eq!(
            run(r#"{"data":{"b":2}}"#, event).unwrap(),
            ExitCode::from(1)
        );
    }
}
