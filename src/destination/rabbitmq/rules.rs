//! The rabbitmq type's rules for API writes: `config` (`server_url` as host:port, `exchange`,
//! `tls`), `credentials` (`username`, `password`, both required) and its `/destination-types`
//! description, with Outpost's field keys and labels.

use serde_json::{Value, json};

use crate::destination::dial::{AddressProblem, literal_host_problem, split_host_port};
use crate::destination::{Fields, login};

/// The type name.
pub const TYPE: &str = "rabbitmq";

/// AMQP's port, and AMQP over TLS's, when `server_url` names none.
const AMQP_PORT: u16 = 5672;
const AMQPS_PORT: u16 = 5671;

fn get<'a>(map: &'a Fields, key: &str) -> &'a str {
    map.get(key).map(String::as_str).unwrap_or("")
}

/// `config.tls` as a flag: `"true"` (or Outpost's checkbox `"on"`); absent or `"false"` is
/// plain AMQP, as in Outpost.
pub fn tls(config: &Fields) -> Result<bool, String> {
    match get(config, "tls") {
        "true" | "on" => Ok(true),
        "" | "false" => Ok(false),
        _ => Err("config.tls must be \"true\" or \"false\"".to_owned()),
    }
}

/// `server_url` split into host and port (the AMQP default for `tls` when absent). Accepts
/// `host`, `host:port` and `[v6]:port`; refuses URLs, which Outpost's field does not take.
pub fn host_and_port(server_url: &str, tls: bool) -> Result<(String, u16), String> {
    if server_url.is_empty() {
        return Err("config.server_url is required".to_owned());
    }
    let default_port = if tls { AMQPS_PORT } else { AMQP_PORT };
    split_host_port(server_url, default_port).map_err(|problem| match problem {
        AddressProblem::NotAnAddress => "config.server_url must be host:port (e.g. \
                                         mq.example.com:5672), without a scheme, user or path"
            .to_owned(),
        AddressProblem::BadPort(port) => {
            format!("config.server_url has an invalid port {port:?}; use 1-65535")
        }
    })
}

/// Problems with `config`, each naming its field.
pub fn validate_config(config: &Fields, block_private_ips: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let tls = match tls(config) {
        Ok(tls) => tls,
        Err(problem) => {
            problems.push(problem);
            false
        }
    };
    match host_and_port(get(config, "server_url"), tls) {
        Ok((host, _)) => {
            problems.extend(literal_host_problem(
                "config.server_url",
                &host,
                block_private_ips,
            ));
        }
        Err(problem) => problems.push(problem),
    }
    if get(config, "exchange").is_empty() {
        problems.push("config.exchange is required".to_owned());
    } else if get(config, "exchange").len() > 255 {
        problems.push("config.exchange is longer than AMQP's 255 bytes".to_owned());
    }
    problems
}

/// Outpost's target text: `<exchange> -> <server_url>`.
pub fn target(config: &Fields) -> String {
    format!(
        "{} -> {}",
        get(config, "exchange"),
        get(config, "server_url")
    )
}

/// The `/destination-types` entry.
pub fn schema() -> Value {
    json!({
        "type": TYPE,
        "label": "RabbitMQ",
        "description": "Send events your RabbitMQ instance by provide a server url, exchange and credentials.",
        "icon": ICON,
        "instructions": INSTRUCTIONS,
        "config_fields": [
            {
                "key": "server_url",
                "type": "text",
                "label": "Server URL",
                "description": "The RabbitMQ server URL (e.g., myrabbitmq.com:5672)",
                "required": true,
                "pattern": "^[^\\s]+$"
            },
            {
                "key": "exchange",
                "type": "text",
                "label": "Exchange",
                "description": "The RabbitMQ exchange to publish messages to",
                "required": true
            },
            {
                "key": "tls",
                "type": "checkbox",
                "label": "TLS",
                "description": "Enable TLS for the connection",
                "required": false,
                "default": "on"
            }
        ],
        "credential_fields": [
            {
                "key": login::USERNAME,
                "type": "text",
                "label": "Username",
                "description": "RabbitMQ username",
                "required": true,
                "sensitive": false
            },
            {
                "key": login::PASSWORD,
                "type": "text",
                "label": "Password",
                "description": "RabbitMQ password",
                "required": true,
                "sensitive": true
            }
        ]
    })
}

const INSTRUCTIONS: &str = "# RabbitMQ\n\n\
Events are published to an exchange of your RabbitMQ server over AMQP 0-9-1, one message per \
event: the routing key is the event's topic, the body is the event's data (JSON), and the \
event id, topic, timestamp and metadata travel as message headers. Messages are persistent and \
each is confirmed by the broker before it counts as delivered.\n\n\
## How to configure RabbitMQ as an event destination\n\n\
- **Server URL**: host and port, e.g. `mq.example.com:5672` (`5671` with TLS)\n\
- **Exchange**: an existing exchange; bind your queues to it by topic\n\
- **TLS**: connect with `amqps`\n\
- **Username** and **Password** of a user that may write to the exchange\n\n\
Messages the exchange cannot route to any queue are dropped by the broker.";

/// Outpost's RabbitMQ glyph.
const ICON: &str = "<svg width=\"20\" height=\"20\" viewBox=\"0 0 20 20\" fill=\"none\" xmlns=\"http://www.w3.org/2000/svg\"><rect width=\"20\" height=\"20\" rx=\"4\" fill=\"#FF6600\" /><path d=\"M15.505 9.07694H11.5164C11.4203 9.0769 11.3281 9.03869 11.2601 8.97072C11.1921 8.90274 11.1539 8.81055 11.1538 8.71441V4.55753C11.1538 4.2497 10.9042 4 10.5965 4H9.1727C8.86483 4 8.61536 4.2497 8.61536 4.55753V8.68923C8.61536 8.90359 8.44206 9.07783 8.2277 9.07877L6.92059 9.085C6.70441 9.08617 6.52877 8.91077 6.52919 8.69477L6.5373 4.55847C6.538 4.25017 6.2883 4 5.98 4H4.55734C4.24942 4 4 4.2497 4 4.55753V16.1973C4 16.4708 4.22153 16.6923 4.49477 16.6923H15.505C15.7785 16.6923 16 16.4708 16 16.1973V9.57194C16 9.29847 15.7785 9.07694 15.505 9.07694ZM13.6346 13.4472C13.6346 13.8056 13.3441 14.0962 12.9857 14.0962H11.8605C11.5021 14.0962 11.2115 13.8056 11.2115 13.4472V12.322C11.2115 11.9636 11.5021 11.6731 11.8605 11.6731H12.9857C13.3441 11.6731 13.6346 11.9636 13.6346 12.322V13.4472Z\" fill=\"white\"/></svg>";

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn server_url_is_host_and_optional_port() {
        assert_eq!(
            host_and_port("mq.example.com:5673", false),
            Ok(("mq.example.com".into(), 5673))
        );
        assert_eq!(
            host_and_port("mq.example.com", false),
            Ok(("mq.example.com".into(), 5672))
        );
        assert_eq!(
            host_and_port("mq.example.com", true),
            Ok(("mq.example.com".into(), 5671))
        );
        assert_eq!(host_and_port("[::1]:5672", false), Ok(("::1".into(), 5672)));
        for bad in [
            "amqp://mq:5672",
            "user@mq:5672",
            "mq:0",
            "mq:x",
            ":5672",
            "::1:5672",
            "mq 1",
        ] {
            let problem = host_and_port(bad, false).unwrap_err();
            assert!(problem.starts_with("config.server_url"), "{bad}: {problem}");
        }
    }

    #[test]
    fn config_needs_server_url_and_exchange() {
        assert_eq!(
            validate_config(&Fields::new(), false),
            vec![
                "config.server_url is required",
                "config.exchange is required"
            ]
        );
        let good = map(&[("server_url", "mq.example.com:5672"), ("exchange", "ev")]);
        assert!(validate_config(&good, true).is_empty());
        let mut bad_tls = good.clone();
        bad_tls.insert("tls".into(), "yes".into());
        assert_eq!(
            validate_config(&bad_tls, true),
            vec!["config.tls must be \"true\" or \"false\""]
        );
        let local = map(&[("server_url", "127.0.0.1:5672"), ("exchange", "ev")]);
        assert_eq!(validate_config(&local, true).len(), 1);
        assert!(validate_config(&local, false).is_empty());
    }
}
