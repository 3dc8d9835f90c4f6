//! Topic rules with Outpost's semantics: which topics a destination may subscribe to (the
//! configured `topics` list, `"*"` for all, `*` patterns when `topics_allow_wildcards`), which
//! topic an event may carry, and whether an event's topic reaches a destination. The
//! characters a topic may hold are `ident::check_topic`'s.

use super::ident::{IdentError, check_topic};

/// Most topics one destination may list: each event of the tenant is matched against every one.
pub const MAX_DESTINATION_TOPICS: usize = 256;

/// A rejected topic or topic list; the message names the topic at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topics must be \"*\" or an array of topic strings")]
    InvalidFormat,
    #[error("topics must list at least one topic (use \"*\" for all topics)")]
    NoTopics,
    #[error("topics[{index}] is empty")]
    BlankTopic { index: usize },
    #[error("topics[{index}] {error}")]
    InvalidTopic { index: usize, error: IdentError },
    #[error("topics lists {count} topics; at most {max} are allowed (use a \"*\" pattern)")]
    TooMany { count: usize, max: usize },
    #[error(
        "topic \"{topic}\" contains \"*\" but wildcard topics are disabled \
         (use \"*\" alone for all topics, or set topics_allow_wildcards)"
    )]
    WildcardNotAllowed { topic: String },
    #[error("\"*\" (all topics) cannot be combined with other topics")]
    AllTopicsNotAlone,
    #[error("topic pattern \"{topic}\" matches none of the configured topics")]
    PatternMatchesNothing { topic: String },
    #[error("topic \"{topic}\" is not one of the configured topics")]
    UnknownTopic { topic: String },
    #[error("topic is required because this server has a list of topics configured")]
    TopicRequired,
}

/// The server's topic configuration (`topics`, `topics_allow_wildcards`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicRules {
    allowed: Vec<String>,
    allow_wildcards: bool,
}

impl TopicRules {
    /// Configured topics are trimmed; blank entries and repeats are dropped (so `TOPICS=" , "`
    /// means "no list": any topic is allowed).
    pub fn new<I, S>(allowed: I, allow_wildcards: bool) -> TopicRules
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut topics: Vec<String> = Vec::new();
        for topic in allowed {
            let topic = topic.as_ref().trim();
            if !topic.is_empty() && !topics.iter().any(|t| t == topic) {
                topics.push(topic.to_owned());
            }
        }
        TopicRules {
            allowed: topics,
            allow_wildcards,
        }
    }

    /// The configured topics (empty: any topic).
    pub fn allowed(&self) -> &[String] {
        &self.allowed
    }

    pub fn allow_wildcards(&self) -> bool {
        self.allow_wildcards
    }

    /// Validates a destination's topics and returns them normalised: trimmed, repeats removed,
    /// and entries folded away when a broader pattern in the same list covers them
    /// (`["user.*", "user.created"]` → `["user.*"]`), first-seen order kept. `["*"]` means all
    /// topics.
    ///
    /// As Outpost: without a configured list any exact topic is allowed; with one, exact topics
    /// must be in it and patterns must match at least one of its entries. Patterns need
    /// `topics_allow_wildcards` either way.
    pub fn validate_destination_topics(
        &self,
        topics: &[String],
    ) -> Result<Vec<String>, TopicError> {
        if topics.len() > MAX_DESTINATION_TOPICS {
            return Err(TopicError::TooMany {
                count: topics.len(),
                max: MAX_DESTINATION_TOPICS,
            });
        }
        let mut trimmed: Vec<String> = Vec::with_capacity(topics.len());
        for (index, topic) in topics.iter().enumerate() {
            let topic = topic.trim();
            if topic.is_empty() {
                return Err(TopicError::BlankTopic { index });
            }
            check_topic(topic).map_err(|error| TopicError::InvalidTopic { index, error })?;
            if !trimmed.iter().any(|t| t == topic) {
                trimmed.push(topic.to_owned());
            }
        }
        if trimmed.is_empty() {
            return Err(TopicError::NoTopics);
        }
        if is_all_topics(&trimmed) {
            return Ok(trimmed);
        }
        for topic in &trimmed {
            if !topic.contains('*') {
                if !self.allowed.is_empty() && !self.allowed.contains(topic) {
                    return Err(TopicError::UnknownTopic {
                        topic: topic.clone(),
                    });
                }
                continue;
            }
            if topic == "*" && !self.allowed.is_empty() {
                return Err(TopicError::AllTopicsNotAlone);
            }
            if !self.allow_wildcards {
                return Err(TopicError::WildcardNotAllowed {
                    topic: topic.clone(),
                });
            }
            if !self.allowed.is_empty() && !self.allowed.iter().any(|a| pattern_matches(topic, a)) {
                return Err(TopicError::PatternMatchesNothing {
                    topic: topic.clone(),
                });
            }
        }
        Ok(fold_covered(trimmed))
    }

    /// Checks the topic of a published event. Without a configured list anything goes; with
    /// one, the topic is required and must be in it (or be `"*"`, which reaches every
    /// destination), as Outpost.
    pub fn validate_event_topic(&self, topic: Option<&str>) -> Result<(), TopicError> {
        if self.allowed.is_empty() {
            return Ok(());
        }
        match topic {
            None | Some("") => Err(TopicError::TopicRequired),
            Some("*") => Ok(()),
            Some(topic) if self.allowed.iter().any(|a| a == topic) => Ok(()),
            Some(topic) => Err(TopicError::UnknownTopic {
                topic: topic.to_owned(),
            }),
        }
    }
}

/// Reads a `topics` JSON value as the API receives it: the string `"*"` or an array of strings.
pub fn topics_from_json(value: &serde_json::Value) -> Result<Vec<String>, TopicError> {
    match value {
        serde_json::Value::String(s) if s == "*" => Ok(vec!["*".to_owned()]),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or(TopicError::InvalidFormat)
            })
            .collect(),
        _ => Err(TopicError::InvalidFormat),
    }
}

/// Whether an event with `event_topic` reaches a destination subscribed to
/// `destination_topics`. As Outpost: an event without a topic, or with topic `"*"`, reaches
/// every destination; otherwise some destination topic must equal it or, as a pattern, match
/// it.
pub fn topics_match(destination_topics: &[String], event_topic: Option<&str>) -> bool {
    match event_topic {
        None | Some("") | Some("*") => true,
        Some(topic) => destination_topics.iter().any(|p| pattern_matches(p, topic)),
    }
}

fn is_all_topics(topics: &[String]) -> bool {
    topics.len() == 1 && topics[0] == "*"
}

/// Drops entries covered by a strictly broader sibling pattern; mutually covering entries
/// and patterns that overlap without covering each other (`*.created`, `user.*`) all stay.
fn fold_covered(topics: Vec<String>) -> Vec<String> {
    let covered = |entry: &String| {
        topics
            .iter()
            .any(|p| p != entry && pattern_matches(p, entry) && !pattern_matches(entry, p))
    };
    topics.iter().filter(|t| !covered(t)).cloned().collect()
}

/// Glob match where `*` stands for any run of bytes, dots included; everything else matches
/// itself. Linear backtracking on the last `*`, as Outpost's `matchTopicPattern`. Working on
/// bytes is safe for UTF-8: a literal always starts on a character boundary.
fn pattern_matches(pattern: &str, topic: &str) -> bool {
    if pattern == topic {
        return true;
    }
    let (p, t) = (pattern.as_bytes(), topic.as_bytes());
    if !p.contains(&b'*') {
        return false;
    }
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((star_pi, star_ti)) = star {
            pi = star_pi + 1;
            ti = star_ti + 1;
            star = Some((star_pi, star_ti + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    const CONFIGURED: &[&str] = &[
        "user.created",
        "user.updated",
        "user.deleted",
        "user.profile.updated",
    ];

    #[test]
    fn destination_topics_as_outposts_validate() {
        // (topics, configured, wildcards, ok) — Outpost's TestDestinationTopics_Validate.
        let cases: &[(&[&str], &[&str], bool, bool)] = &[
            (&["user.created"], CONFIGURED, false, true),
            (&["user.created", "user.updated"], CONFIGURED, false, true),
            (&["user.*"], CONFIGURED, false, false),
            (&["user.*"], CONFIGURED, true, true),
            (&["order.*"], CONFIGURED, true, false),
            (&["user.created", "order.*"], CONFIGURED, true, false),
            (&["order.*"], &["order.created", "user.created"], true, true),
            (&["*"], CONFIGURED, false, true),
            (&["*", "user.created"], CONFIGURED, false, false),
            (&["*", "user.created"], CONFIGURED, true, false),
            (&["user.invalid"], CONFIGURED, false, false),
            (&["user.created", "user.invalid"], CONFIGURED, false, false),
            (&[], CONFIGURED, false, false),
            (&["any.topic"], &[], false, true),
            (&["any.topic", "another.topic"], &[], false, true),
            (&["*"], &[], false, true),
            (&["user.*"], &[], false, false),
            (&["user.*"], &[], true, true),
            (&[], &[], false, false),
        ];
        for (topics, configured, wildcards, ok) in cases {
            let rules = TopicRules::new(configured.iter(), *wildcards);
            let result = rules.validate_destination_topics(&strings(topics));
            assert_eq!(
                result.is_ok(),
                *ok,
                "{topics:?} {configured:?} {wildcards}: {result:?}"
            );
        }
    }

    #[test]
    fn destination_errors_name_the_topic() {
        let rules = TopicRules::new(CONFIGURED, false);
        let err = |topics: &[&str]| {
            rules
                .validate_destination_topics(&strings(topics))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(&["user.created", "user.nope"]),
            "topic \"user.nope\" is not one of the configured topics"
        );
        assert!(err(&["user.*"]).starts_with("topic \"user.*\" contains \"*\""));
        assert_eq!(err(&["a", " "]), "topics[1] is empty");
        assert_eq!(
            err(&[]),
            "topics must list at least one topic (use \"*\" for all topics)"
        );
        let wild = TopicRules::new(CONFIGURED, true);
        assert_eq!(
            wild.validate_destination_topics(&strings(&["order.*"]))
                .unwrap_err()
                .to_string(),
            "topic pattern \"order.*\" matches none of the configured topics"
        );
        assert_eq!(
            wild.validate_destination_topics(&strings(&["*", "user.created"])),
            Err(TopicError::AllTopicsNotAlone)
        );
    }

    #[test]
    fn destination_topics_are_trimmed_deduplicated_and_folded() {
        let rules = TopicRules::new(Vec::<String>::new(), true);
        let ok = |topics: &[&str]| rules.validate_destination_topics(&strings(topics)).unwrap();
        assert_eq!(
            ok(&[" user.created ", "user.created"]),
            strings(&["user.created"])
        );
        assert_eq!(ok(&["*", "*"]), strings(&["*"]));
        // Outpost's TestDestinationTopics_Normalize.
        assert_eq!(
            ok(&["user.created", "user.created"]),
            strings(&["user.created"])
        );
        assert_eq!(ok(&["user.*", "user.created"]), strings(&["user.*"]));
        assert_eq!(
            ok(&["*.created", "user.created", "user.*"]),
            strings(&["*.created", "user.*"])
        );
        assert_eq!(
            ok(&["*.created", "user.*"]),
            strings(&["*.created", "user.*"])
        );
        assert_eq!(
            ok(&["user.created", "user.updated"]),
            strings(&["user.created", "user.updated"])
        );
        assert_eq!(
            ok(&["user.updated", "user.created", "user.updated"]),
            strings(&["user.updated", "user.created"])
        );
        // Without a configured list, "*" among others is a pattern covering the rest.
        assert_eq!(ok(&["user.created", "*"]), strings(&["*"]));
    }

    #[test]
    fn destination_topics_must_be_visible_ascii_and_few() {
        let rules = TopicRules::new(Vec::<String>::new(), true);
        assert_eq!(
            rules
                .validate_destination_topics(&strings(&["ok", "order paid"]))
                .unwrap_err()
                .to_string(),
            "topics[1] has ' ' at character 6; topics use only visible ASCII characters (no \
             spaces or control characters)"
        );
        assert!(matches!(
            rules.validate_destination_topics(&strings(&["a\nb"])),
            Err(TopicError::InvalidTopic { index: 0, .. })
        ));
        let many: Vec<String> = (0..=MAX_DESTINATION_TOPICS)
            .map(|i| format!("t{i}"))
            .collect();
        assert_eq!(
            rules.validate_destination_topics(&many),
            Err(TopicError::TooMany {
                count: MAX_DESTINATION_TOPICS + 1,
                max: MAX_DESTINATION_TOPICS
            })
        );
        assert_eq!(
            rules.validate_destination_topics(&many[1..]).unwrap().len(),
            MAX_DESTINATION_TOPICS
        );
    }

    #[test]
    fn configured_topics_are_normalised() {
        let rules = TopicRules::new([" a ", "", "b", "a", "  "], false);
        assert_eq!(rules.allowed(), strings(&["a", "b"]));
        assert!(TopicRules::new([" ", ""], false).allowed().is_empty());
        assert!(!rules.allow_wildcards());
    }

    #[test]
    fn event_topic_validation_as_outpost() {
        let open = TopicRules::default();
        assert_eq!(open.validate_event_topic(None), Ok(()));
        assert_eq!(open.validate_event_topic(Some("anything")), Ok(()));

        let rules = TopicRules::new(CONFIGURED, true);
        assert_eq!(rules.validate_event_topic(Some("user.created")), Ok(()));
        assert_eq!(rules.validate_event_topic(Some("*")), Ok(()));
        assert_eq!(
            rules.validate_event_topic(None),
            Err(TopicError::TopicRequired)
        );
        assert_eq!(
            rules.validate_event_topic(Some("")),
            Err(TopicError::TopicRequired)
        );
        assert_eq!(
            rules
                .validate_event_topic(Some("user.*"))
                .unwrap_err()
                .to_string(),
            "topic \"user.*\" is not one of the configured topics"
        );
    }

    #[test]
    fn topics_match_as_outposts_match_topic() {
        // (destination topics, event topic, expected) — Outpost's TestTopics_MatchTopic.
        let cases: &[(&[&str], Option<&str>, bool)] = &[
            (&["user.created"], Some(""), true),
            (&["user.created"], None, true),
            (&["user.created"], Some("*"), true),
            (&["*"], Some("user.created"), true),
            (
                &["user.created", "user.updated"],
                Some("user.created"),
                true,
            ),
            (&["user.*"], Some("user.created"), true),
            (&["user.*"], Some("user.profile.updated"), true),
            (&["*.created"], Some("order.created"), true),
            (
                &["order.*.completed"],
                Some("order.payment.completed"),
                true,
            ),
            (&["user.*.created"], Some("user..created"), true),
            (&["user.*"], Some("order.created"), false),
            (&["*.created"], Some("user.deleted"), false),
            (&["order.*.completed"], Some("order.payment.failed"), false),
            (
                &["user.created", "user.updated"],
                Some("user.deleted"),
                false,
            ),
            (&[], Some("user.created"), false),
            (&[], Some("*"), true),
            (&[], Some(""), true),
            (&["a*b*c"], Some("aXbYbZc"), true),
            (&["a*b*c"], Some("aXbYbZ"), false),
            (&["**"], Some("x"), true),
            (&["é.*"], Some("é.ü"), true),
            (&["user.created"], Some("user.created.extra"), false),
        ];
        for (topics, event, expected) in cases {
            assert_eq!(
                topics_match(&strings(topics), *event),
                *expected,
                "{topics:?} {event:?}"
            );
        }
    }

    #[test]
    fn topics_from_json_accepts_star_string_or_array() {
        use serde_json::json;
        assert_eq!(topics_from_json(&json!("*")), Ok(strings(&["*"])));
        assert_eq!(topics_from_json(&json!(["*"])), Ok(strings(&["*"])));
        assert_eq!(
            topics_from_json(&json!(["a", "b"])),
            Ok(strings(&["a", "b"]))
        );
        assert_eq!(topics_from_json(&json!([])), Ok(vec![]));
        for bad in [
            json!("a"),
            json!(["a", 1]),
            json!(null),
            json!({"a": 1}),
            json!(3),
        ] {
            assert_eq!(
                topics_from_json(&bad),
                Err(TopicError::InvalidFormat),
                "{bad}"
            );
        }
    }
}
