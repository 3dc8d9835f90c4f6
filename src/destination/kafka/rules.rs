//! The kafka type's rules for API writes: `config` (`brokers`, `topic`, `sasl_mechanism`,
//! `tls`, `partition_key_template`), `credentials` (`username`, `password`, both required),
//! the config as stored (Outpost's normalisation) and its `/destination-types` description,
//! with Outpost's field keys and labels.

use serde_json::{Value, json};

use crate::destination::dial::{AddressProblem, literal_host_problem, split_host_port};
use crate::destination::template::Template;
use crate::destination::{Fields, login};

/// The type name.
pub const TYPE: &str = "kafka";

/// Kafka's port when a broker address names none.
const KAFKA_PORT: u16 = 9092;

/// Kafka's longest topic name.
const TOPIC_MAX: usize = 249;

fn get<'a>(map: &'a Fields, key: &str) -> &'a str {
    map.get(key).map(String::as_str).unwrap_or("")
}

/// How the client logs in (`config.sasl_mechanism`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

/// `config.sasl_mechanism`: how the client logs in. Required, as in Outpost.
pub fn mechanism(config: &Fields) -> Result<Mechanism, String> {
    match get(config, "sasl_mechanism") {
        "plain" => Ok(Mechanism::Plain),
        "scram-sha-256" => Ok(Mechanism::ScramSha256),
        "scram-sha-512" => Ok(Mechanism::ScramSha512),
        "" => Err(
            "config.sasl_mechanism is required (plain, scram-sha-256 or scram-sha-512)".to_owned(),
        ),
        other => Err(format!(
            "config.sasl_mechanism {other:?} is not supported; use plain, scram-sha-256 or \
             scram-sha-512"
        )),
    }
}

/// `config.tls` as a flag: `"true"` (or the checkbox's `"on"`); absent, empty or `"false"`
/// is a plain connection, as in Outpost.
pub fn tls(config: &Fields) -> Result<bool, String> {
    match get(config, "tls") {
        "true" | "on" => Ok(true),
        "" | "false" => Ok(false),
        _ => Err("config.tls must be \"true\" or \"false\"".to_owned()),
    }
}

/// One broker of `config.brokers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub host: String,
    pub port: u16,
}

impl Broker {
    /// `host:port`, brackets around an IPv6 address, as Kafka clients take it.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `config.brokers`: comma-separated `host:port` addresses (port 9092 when none is given).
pub fn brokers(config: &Fields) -> Result<Vec<Broker>, String> {
    let listed: Vec<&str> = get(config, "brokers")
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .collect();
    if listed.is_empty() {
        return Err("config.brokers is required (host:port, comma-separated)".to_owned());
    }
    listed
        .into_iter()
        .map(|broker| match split_host_port(broker, KAFKA_PORT) {
            Ok((host, port)) => Ok(Broker { host, port }),
            Err(AddressProblem::NotAnAddress) => Err(format!(
                "config.brokers: {broker:?} is not a broker address; use host:port (e.g. \
                 kafka1.example.com:9092), comma-separated, without a scheme"
            )),
            Err(AddressProblem::BadPort(port)) => Err(format!(
                "config.brokers: {broker:?} has an invalid port {port:?}; use 1-65535"
            )),
        })
        .collect()
}

/// Problems with `config.topic`: Kafka's topic names are 1 to 249 of `a-z A-Z 0-9 . _ -`,
/// and not `.` or `..`.
fn topic_problem(topic: &str) -> Option<String> {
    if topic.is_empty() {
        return Some("config.topic is required".to_owned());
    }
    let legal = topic
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !legal || topic.len() > TOPIC_MAX || topic == "." || topic == ".." {
        return Some(format!(
            "config.topic {topic:?} is not a Kafka topic name: use 1 to {TOPIC_MAX} letters, \
             digits, '.', '_' or '-'"
        ));
    }
    None
}

/// `config.partition_key_template` compiled, `None` when absent (the event id is the key).
pub fn partition_key_template(config: &Fields) -> Result<Option<Template>, String> {
    match get(config, "partition_key_template") {
        "" => Ok(None),
        text => Template::compile("partition_key_template", text).map(Some),
    }
}

/// Problems with `config`, each naming its field.
pub fn validate_config(config: &Fields, block_private_ips: bool) -> Vec<String> {
    let mut problems = Vec::new();
    match brokers(config) {
        Ok(brokers) => {
            for broker in brokers {
                problems.extend(literal_host_problem(
                    "config.brokers",
                    &broker.host,
                    block_private_ips,
                ));
            }
        }
        Err(problem) => problems.push(problem),
    }
    problems.extend(topic_problem(get(config, "topic")));
    problems.extend(mechanism(config).err());
    problems.extend(tls(config).err());
    problems.extend(partition_key_template(config).err());
    problems
}

/// The config as stored, normalised as Outpost stores it: `tls` always `"true"` or `"false"`,
/// the brokers without spaces around them. Called on a config that passed `validate_config`.
pub fn normalized(mut config: Fields) -> Fields {
    let tls = tls(&config).unwrap_or(false);
    config.insert("tls".to_owned(), tls.to_string());
    if let Some(brokers) = config.get_mut("brokers") {
        *brokers = brokers
            .split(',')
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .collect::<Vec<_>>()
            .join(",");
    }
    config
}

/// Outpost's target text: `<first broker> / <topic>`.
pub fn target(config: &Fields) -> String {
    let first = get(config, "brokers")
        .split(',')
        .next()
        .unwrap_or("")
        .trim();
    let topic = get(config, "topic");
    if first.is_empty() {
        topic.to_owned()
    } else {
        format!("{first} / {topic}")
    }
}

/// The `/destination-types` entry.
pub fn schema() -> Value {
    json!({
        "type": TYPE,
        "label": "Apache Kafka",
        "description": "Send events to Apache Kafka topics for real-time event streaming",
        "icon": ICON,
        "instructions": INSTRUCTIONS,
        "config_fields": [
            {
                "key": "brokers",
                "type": "text",
                "label": "Brokers",
                "description": "Comma-separated list of Kafka broker addresses (e.g., broker1:9092,broker2:9092)",
                "required": true
            },
            {
                "key": "topic",
                "type": "text",
                "label": "Topic",
                "description": "The Kafka topic to publish messages to",
                "required": true
            },
            {
                "key": "tls",
                "type": "checkbox",
                "label": "TLS",
                "description": "Enable TLS for the connection",
                "required": false,
                "default": "true"
            },
            {
                "key": "partition_key_template",
                "type": "text",
                "label": "Partition Key Template",
                "description": "JMESPath template to extract the partition key from the event payload (e.g., metadata.\"event-id\"). Default is event ID, which is also used as fallback if template evaluation fails or returns empty.",
                "required": false
            },
            {
                "key": "sasl_mechanism",
                "type": "select",
                "label": "SASL Mechanism",
                "description": "SASL authentication mechanism",
                "required": true,
                "options": [
                    {"label": "PLAIN", "value": "plain"},
                    {"label": "SCRAM-SHA-256", "value": "scram-sha-256"},
                    {"label": "SCRAM-SHA-512", "value": "scram-sha-512"}
                ]
            }
        ],
        "credential_fields": [
            {
                "key": login::USERNAME,
                "type": "text",
                "label": "Username",
                "description": "SASL username for authentication",
                "required": true,
                "sensitive": false
            },
            {
                "key": login::PASSWORD,
                "type": "text",
                "label": "Password",
                "description": "SASL password for authentication",
                "required": true,
                "sensitive": true
            }
        ]
    })
}

const INSTRUCTIONS: &str = "# Apache Kafka\n\n\
Events are produced to a topic of your Kafka cluster, one record per event: the value is the \
event's data (JSON), the key is the event id (or what the partition key template picks), and \
the event id, topic, timestamp and metadata travel as record headers, with \
`content-type: application/json`. A record counts as delivered once every in-sync replica \
has it (`acks=all`).\n\n\
## How to configure Kafka as an event destination\n\n\
- **Brokers**: comma-separated `host:port` addresses, e.g. `broker1:9092,broker2:9092`\n\
- **Topic**: an existing topic\n\
- **SASL Mechanism**: `plain`, `scram-sha-256` or `scram-sha-512`\n\
- **Username** and **Password** of a user that may write to the topic\n\n\
### Optional settings\n\n\
- **TLS**: encrypt the connection (use it with `plain`, which sends the password as is)\n\
- **Partition Key Template**: a JMESPath expression over `{data, metadata}` picking the \
record key, e.g. `data.customer_id`; records with the same key go to the same partition";

/// Outpost's Kafka glyph.
const ICON: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 128 128\"><path d=\"M86.758 70.89c-4.992 0-9.465 2.208-12.528 5.68l-7.851-5.547a21.275 21.275 0 001.312-7.32c0-2.531-.46-4.95-1.27-7.203l7.837-5.488c3.062 3.457 7.523 5.652 12.5 5.652 9.207 0 16.703-7.48 16.703-16.672 0-9.195-7.496-16.672-16.703-16.672-9.211 0-16.707 7.477-16.707 16.672 0 1.645.25 3.23.699 4.735l-7.84 5.488a21.578 21.578 0 00-13.36-7.746v-9.43c7.567-1.586 13.27-8.293 13.27-16.312C62.82 7.53 55.324.055 46.117.055c-9.21 0-16.707 7.476-16.707 16.672 0 7.91 5.555 14.539 12.969 16.238v9.547c-10.117 1.773-17.84 10.59-17.84 21.191 0 10.652 7.797 19.5 17.992 21.211V95c-7.492 1.64-13.12 8.309-13.12 16.273 0 9.196 7.495 16.672 16.706 16.672 9.207 0 16.703-7.476 16.703-16.672 0-7.964-5.629-14.632-13.117-16.273V84.914a21.592 21.592 0 0013.133-7.625l7.902 5.586a16.45 16.45 0 00-.687 4.688c0 9.195 7.496 16.671 16.707 16.671 9.207 0 16.703-7.476 16.703-16.671 0-9.196-7.496-16.672-16.703-16.672zm0-38.984c4.465 0 8.097 3.63 8.097 8.086 0 4.453-3.632 8.082-8.097 8.082-4.469 0-8.102-3.629-8.102-8.082 0-4.457 3.633-8.086 8.102-8.086zm-48.742-15.18c0-4.456 3.632-8.081 8.101-8.081 4.465 0 8.098 3.625 8.098 8.082 0 4.457-3.633 8.082-8.098 8.082-4.469 0-8.101-3.625-8.101-8.082zm16.199 94.547c0 4.457-3.633 8.082-8.098 8.082-4.469 0-8.101-3.625-8.101-8.082 0-4.457 3.632-8.082 8.101-8.082 4.465 0 8.098 3.625 8.098 8.082zm-8.102-36.296c-6.226 0-11.293-5.059-11.293-11.274 0-6.219 5.067-11.277 11.293-11.277 6.23 0 11.297 5.058 11.297 11.277 0 6.215-5.066 11.274-11.297 11.274zm40.645 20.668c-4.469 0-8.102-3.625-8.102-8.082 0-4.458 3.633-8.083 8.102-8.083 4.465 0 8.097 3.625 8.097 8.082 0 4.458-3.632 8.083-8.097 8.083zm0 0\" fill=\"currentColor\"/></svg>";

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn good() -> Fields {
        map(&[
            ("brokers", "k1.example.com:9093, k2.example.com"),
            ("topic", "orders.v1"),
            ("sasl_mechanism", "scram-sha-256"),
        ])
    }

    #[test]
    fn brokers_are_host_port_lists() {
        assert_eq!(
            brokers(&good()).unwrap(),
            vec![
                Broker {
                    host: "k1.example.com".into(),
                    port: 9093
                },
                Broker {
                    host: "k2.example.com".into(),
                    port: 9092
                },
            ]
        );
        let v6 = Broker {
            host: "::1".into(),
            port: 9092,
        };
        assert_eq!(v6.address(), "[::1]:9092");
        for (bad, says) in [
            ("", "config.brokers is required"),
            (" , ", "config.brokers is required"),
            ("kafka://k1:9092", "is not a broker address"),
            ("k1:99999", "invalid port \"99999\""),
        ] {
            let problem = brokers(&map(&[("brokers", bad)])).unwrap_err();
            assert!(problem.contains(says), "{bad}: {problem}");
        }
    }

    #[test]
    fn config_is_checked_field_by_field() {
        assert!(validate_config(&good(), true).is_empty());
        assert_eq!(
            validate_config(&Fields::new(), false),
            vec![
                "config.brokers is required (host:port, comma-separated)",
                "config.topic is required",
                "config.sasl_mechanism is required (plain, scram-sha-256 or scram-sha-512)",
            ]
        );
        let mut bad = good();
        bad.insert("topic".into(), "orders/v1".into());
        bad.insert("sasl_mechanism".into(), "gssapi".into());
        bad.insert("tls".into(), "yes".into());
        bad.insert("partition_key_template".into(), "[[".into());
        let problems = validate_config(&bad, true);
        let fields: Vec<&str> = problems
            .iter()
            .map(|p| p.split(' ').next().unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "config.topic",
                "config.sasl_mechanism",
                "config.tls",
                "config.partition_key_template"
            ],
            "{problems:?}"
        );
        assert!(topic_problem(&"t".repeat(250)).is_some());
        assert!(topic_problem("..").is_some());
        assert!(topic_problem("a_b-c.D9").is_none());
    }

    #[test]
    fn private_brokers_are_refused_only_when_blocking() {
        let local = map(&[
            ("brokers", "kafka.example.com:9092,127.0.0.1:9092"),
            ("topic", "t"),
            ("sasl_mechanism", "plain"),
        ]);
        let problems = validate_config(&local, true);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("config.brokers: 127.0.0.1"),
            "{problems:?}"
        );
        assert!(validate_config(&local, false).is_empty());
    }

    #[test]
    fn stored_config_is_normalised_as_outpost_stores_it() {
        let mut sent = good();
        sent.insert("tls".into(), "on".into());
        let stored = normalized(sent);
        assert_eq!(stored["tls"], "true");
        assert_eq!(stored["brokers"], "k1.example.com:9093,k2.example.com");
        assert_eq!(normalized(good())["tls"], "false");
        assert_eq!(target(&stored), "k1.example.com:9093 / orders.v1");
    }
}
