//! The registry: the destination types this server knows, and the publishers opened for the
//! destinations being delivered to, one per destination version (tenant, id, `updated_at`),
//! reused by every attempt and closed when the destination changes or is deleted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::webhook::{self, WebhookProvider, WebhookType};
use super::{DestinationType, Publisher};
use crate::store::Destination;

/// The names of the built-in types (those `builtin` registers), for checks that run before a
/// registry is at hand: parsing a request body.
pub const BUILTIN_TYPES: &[&str] = &[webhook::TYPE];

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
}

impl Registry {
    /// A registry of `types` (names are unique; the first of a name wins).
    pub fn new(types: Vec<Arc<dyn DestinationType>>) -> Registry {
        Registry(Arc::new(Inner {
            types,
            opened: Mutex::new(HashMap::new()),
        }))
    }

    /// The types this build delivers to, their clients given.
    pub fn builtin(webhook: WebhookProvider) -> Registry {
        Registry::new(vec![Arc::new(WebhookType::new(webhook))])
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
        if let Some(opened) = self.opened().get(&key)
            && opened.updated_at == destination.updated_at
        {
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
        let mut closed = Vec::new();
        self.opened().retain(|(tenant, _), opened| {
            let keep = tenant != tenant_id;
            if !keep {
                closed.push(opened.publisher.clone());
            }
            keep
        });
        for publisher in closed {
            publisher.close();
        }
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
        Registry::builtin(webhook)
    }
}
