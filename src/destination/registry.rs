//! The registry: the destination types this server knows, and the publishers opened for the
//! destinations being delivered to, one per destination version (tenant, id, `updated_at`),
//! reused by every attempt and closed when the destination changes, is deleted, or goes unused
//! (`close_idle`: how a replica lets go of destinations deleted through another one).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::aws::{self, AwsSettings, KinesisType, S3Type, SqsType};
use super::hookdeck::{self, HookdeckType};
use super::kafka::{self, KafkaType};
use super::nats::{self, NatsType};
use super::rabbitmq::{self, RabbitMqType};
use super::webhook::{self, WebhookProvider, WebhookType};
use super::{DestinationType, Publisher};
use crate::config::DestinationsConfig;
use crate::store::Destination;

/// The names of the built-in types (those `builtin` registers), for checks that run before a
/// registry is at hand: parsing a request body.
pub const BUILTIN_TYPES: &[&str] = &[
    webhook::TYPE,
    hookdeck::TYPE,
    rabbitmq::TYPE,
    nats::TYPE,
    aws::sqs::TYPE,
    aws::s3::TYPE,
    aws::kinesis::TYPE,
    kafka::TYPE,
];

/// Outpost's types this build does not ship, with why: a type ships only with tests against a
/// real instance of its service, and these have none that installs from the registries this
/// project's CI reaches. The API refuses them by name.
pub const UNAVAILABLE_TYPES: &[(&str, &str)] = &[
    (
        "gcp_pubsub",
        "Google's Pub/Sub emulator comes only with the Google Cloud SDK, which no registry \
         this build is tested with provides",
    ),
    (
        "azure_servicebus",
        "Azure's Service Bus emulator is a container image only, which no registry this \
         build is tested with provides",
    ),
];

/// The types and the opened publishers. Cheap to clone; the API and the dispatcher share one.
#[derive(Clone)]
pub struct Registry(Arc<Inner>);

struct Inner {
    types: Vec<Arc<dyn DestinationType>>,
    /// Keyed by (tenant, destination id).
    opened: Mutex<HashMap<(String, String), Opened>>,
}

struct Opened {
    updated_at: DateTime<Utc>,
    publisher: Arc<dyn Publisher>,
    last_used: Instant,
}

/// How long an opened publisher stays open without an attempt. Long enough that a destination
/// retried on the usual schedule keeps its client; short enough that clients of deleted or
/// quiet destinations do not pile up.
pub const IDLE_CLOSE: Duration = Duration::from_secs(600);

impl Registry {
    /// A registry of `types` (names are unique; the first of a name wins).
    pub fn new(types: Vec<Arc<dyn DestinationType>>) -> Registry {
        Registry(Arc::new(Inner {
            types,
            opened: Mutex::new(HashMap::new()),
        }))
    }

    /// The types this build delivers to, with the webhook client and the server's
    /// destination settings.
    pub fn builtin(webhook: WebhookProvider, config: &DestinationsConfig) -> Registry {
        // Types that dial tenant-chosen hosts do so under the same SSRF rule and timeout.
        let block_private_ips = webhook.settings().block_private_ips;
        let timeout = webhook.timeout();
        let aws = AwsSettings {
            block_private_ips,
            timeout,
        };
        Registry::new(vec![
            Arc::new(WebhookType::new(webhook.clone())),
            Arc::new(HookdeckType::new(&config.hookdeck, webhook)),
            Arc::new(RabbitMqType::new(block_private_ips, timeout)),
            Arc::new(NatsType::new(block_private_ips, timeout)),
            Arc::new(SqsType::new(aws)),
            Arc::new(S3Type::new(aws)),
            Arc::new(KinesisType::new(aws)),
            Arc::new(KafkaType::new(block_private_ips, timeout)),
        ])
    }

    /// The type named `name`.
    pub fn get(&self, name: &str) -> Option<&dyn DestinationType> {
        self.0
            .types
            .iter()
            .find(|t| t.name() == name)
            .map(|t| t.as_ref())
    }

    /// Every type, in the order given.
    pub fn types(&self) -> impl Iterator<Item = &dyn DestinationType> {
        self.0.types.iter().map(|t| t.as_ref())
    }

    /// The publisher for this version of `destination`: the one opened before while the
    /// destination is unchanged, else a new one (closing the one it replaces). An error says
    /// why the destination cannot be published to.
    pub fn publisher(&self, destination: &Destination) -> Result<Arc<dyn Publisher>, String> {
        let key = (destination.tenant_id.clone(), destination.id.clone());
        if let Some(opened) = self.opened().get_mut(&key)
            && opened.updated_at == destination.updated_at
        {
            opened.last_used = Instant::now();
            return Ok(opened.publisher.clone());
        }
        let kind = self.get(&destination.kind).ok_or_else(|| {
            format!(
                "destination type {:?} is not supported; this server delivers to {}",
                destination.kind,
                self.names()
            )
        })?;
        // Opened outside the lock: a type may take a while to open its client.
        let publisher = kind.open(destination)?;
        let replaced = self.opened().insert(
            key,
            Opened {
                updated_at: destination.updated_at,
                publisher: publisher.clone(),
                last_used: Instant::now(),
            },
        );
        if let Some(replaced) = replaced
            && !Arc::ptr_eq(&replaced.publisher, &publisher)
        {
            replaced.publisher.close();
        }
        Ok(publisher)
    }

    /// Closes the publisher of a deleted destination, if one is open.
    pub fn close(&self, tenant_id: &str, destination_id: &str) {
        let removed = self
            .opened()
            .remove(&(tenant_id.to_owned(), destination_id.to_owned()));
        if let Some(removed) = removed {
            removed.publisher.close();
        }
    }

    /// Closes the publishers of a deleted tenant's destinations.
    pub fn close_tenant(&self, tenant_id: &str) {
        self.close_where(|(tenant, _), _| tenant == tenant_id);
    }

    /// Closes the publishers no attempt used for `idle`; returns how many.
    pub fn close_idle(&self, idle: Duration) -> usize {
        self.close_where(|_, opened| opened.last_used.elapsed() >= idle)
    }

    /// Closes (outside the lock) the publishers `close` picks.
    fn close_where(&self, close: impl Fn(&(String, String), &Opened) -> bool) -> usize {
        let mut closed = Vec::new();
        self.opened().retain(|key, opened| {
            let keep = !close(key, opened);
            if !keep {
                closed.push(opened.publisher.clone());
            }
            keep
        });
        for publisher in &closed {
            publisher.close();
        }
        closed.len()
    }

    /// The type names, quoted, for messages: `"webhook"`.
    pub fn names(&self) -> String {
        self.0
            .types
            .iter()
            .map(|t| format!("{:?}", t.name()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn opened(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Opened>> {
        self.0.opened.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl From<WebhookProvider> for Registry {
    fn from(webhook: WebhookProvider) -> Registry {
        Registry::builtin(webhook, &DestinationsConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use chrono::TimeDelta;
    use futures::future::BoxFuture;

    use super::*;
    use crate::destination::{AttemptCode, CredentialsWrite, Fields, Outcome};
    use crate::store::{Credentials, Event};

    /// A type that counts the publishers it opens and the ones the registry closes.
    #[derive(Default)]
    struct Counting {
        opened: AtomicUsize,
        closed: Arc<AtomicUsize>,
    }

    struct CountingPublisher(Arc<AtomicUsize>);

    impl Publisher for CountingPublisher {
        fn publish<'a>(&'a self, _event: &'a Event) -> BoxFuture<'a, Outcome> {
            Box::pin(async { Outcome::not_sent(AttemptCode::NetworkError, "test".into()) })
        }

        fn close(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    impl DestinationType for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        fn metadata(&self) -> serde_json::Value {
            serde_json::json!({"type": "counting"})
        }
        fn validate_config(&self, _: &Fields) -> Vec<String> {
            Vec::new()
        }
        fn validate_credentials(&self, _: &Fields) -> Vec<String> {
            Vec::new()
        }
        fn prepare_credentials(&self, write: CredentialsWrite<'_>) -> Result<Fields, Vec<String>> {
            Ok(write.merged.clone())
        }
        fn target(&self, _: &Fields) -> String {
            String::new()
        }
        fn open(&self, destination: &Destination) -> Result<Arc<dyn Publisher>, String> {
            if destination.config.contains_key("broken") {
                return Err("config.broken is set".into());
            }
            self.opened.fetch_add(1, Ordering::Relaxed);
            Ok(Arc::new(CountingPublisher(self.closed.clone())))
        }
    }

    fn destination(tenant: &str, id: &str, kind: &str) -> Destination {
        Destination {
            tenant_id: tenant.into(),
            id: id.into(),
            kind: kind.into(),
            topics: vec!["*".into()],
            filter: None,
            config: BTreeMap::new(),
            credentials: Credentials(BTreeMap::new()),
            delivery_metadata: None,
            metadata: None,
            disabled_at: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn counting() -> (Registry, Arc<Counting>) {
        let kind = Arc::new(Counting::default());
        (Registry::new(vec![kind.clone()]), kind)
    }

    #[test]
    fn a_destination_is_opened_once_per_version_and_closed_when_it_changes() {
        let (registry, kind) = counting();
        let mut d = destination("t", "d", "counting");
        let first = registry.publisher(&d).unwrap();
        let again = registry.publisher(&d).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(kind.opened.load(Ordering::Relaxed), 1);
        assert_eq!(kind.closed.load(Ordering::Relaxed), 0);

        d.updated_at += TimeDelta::seconds(1);
        let changed = registry.publisher(&d).unwrap();
        assert!(!Arc::ptr_eq(&first, &changed));
        assert_eq!(kind.opened.load(Ordering::Relaxed), 2);
        assert_eq!(kind.closed.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn deleting_a_destination_or_its_tenant_closes_its_publisher() {
        let (registry, kind) = counting();
        registry
            .publisher(&destination("t", "a", "counting"))
            .unwrap();
        registry
            .publisher(&destination("t", "b", "counting"))
            .unwrap();
        registry
            .publisher(&destination("u", "a", "counting"))
            .unwrap();
        registry.close("t", "a");
        assert_eq!(kind.closed.load(Ordering::Relaxed), 1);
        registry.close("t", "a");
        assert_eq!(kind.closed.load(Ordering::Relaxed), 1, "closed once");
        registry.close_tenant("t");
        assert_eq!(kind.closed.load(Ordering::Relaxed), 2);
        registry.close_tenant("u");
        assert_eq!(kind.closed.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn idle_publishers_are_closed_and_reopened_on_demand() {
        let (registry, kind) = counting();
        let d = destination("t", "d", "counting");
        registry.publisher(&d).unwrap();
        assert_eq!(registry.close_idle(Duration::from_secs(3600)), 0);
        assert_eq!(kind.closed.load(Ordering::Relaxed), 0);
        assert_eq!(registry.close_idle(Duration::ZERO), 1);
        assert_eq!(kind.closed.load(Ordering::Relaxed), 1);
        registry.publisher(&d).unwrap();
        assert_eq!(kind.opened.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn unknown_types_and_unusable_destinations_say_why() {
        let (registry, kind) = counting();
        let other = registry
            .publisher(&destination("t", "d", "aws_sqs"))
            .err()
            .unwrap();
        assert!(other.contains("aws_sqs"), "{other}");
        assert!(other.contains("\"counting\""), "{other}");
        let mut broken = destination("t", "d", "counting");
        broken.config.insert("broken".into(), "1".into());
        assert_eq!(
            registry.publisher(&broken).err().unwrap(),
            "config.broken is set"
        );
        assert_eq!(kind.opened.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn builtin_types_are_the_ones_request_parsing_accepts() {
        let provider = WebhookProvider::new(&Default::default(), Duration::from_secs(1), "test")
            .expect("webhook client");
        let registry = Registry::builtin(provider, &Default::default());
        let names: Vec<&str> = registry.types().map(|t| t.name()).collect();
        assert_eq!(names, BUILTIN_TYPES);
        let refused = registry
            .publisher(&destination("t", "d", "gcp_pubsub"))
            .err()
            .unwrap();
        assert!(
            refused.starts_with(
                "destination type \"gcp_pubsub\" is not supported; this server delivers to \"webhook\""
            ),
            "{refused}"
        );
    }
}
