//! The service assembled: store, ingest, NATS source, delivery, retention and the HTTP API,
//! started in dependency order and stopped in reverse (stop pulling, settle in-flight work,
//! close).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::api::{self, ApiState, ServeLimits};
use crate::config::Config;
use crate::config::Ownership;
use crate::delivery::{Dispatcher, DispatcherOptions, Inbox};
use crate::destination::Registry;
use crate::destination::webhook::WebhookProvider;
use crate::event::TopicRules;
use crate::ingest::{Ingest, IngestOptions};
use crate::retention::RetentionHealth;
use crate::routing::{RoutingCache, follow_replicas};
use crate::source::IngestSink;
use crate::source::nats::leases::{Beat, Exclusive, LeaseBook, new_replica_id};
use crate::source::nats::{NatsSource, NatsSourceConfig};
use crate::store::{BackendKind, PurgeOptions, Store};

/// How `run` treats the store's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migrations {
    /// Apply pending migrations at start (`jetpost serve`).
    Apply,
    /// Refuse to start while migrations are pending (`jetpost serve --no-migrate`).
    Require,
}

/// Runs the service on `listener` until `shutdown` is cancelled, then stops cleanly.
pub async fn run(
    config: Config,
    listener: TcpListener,
    migrations: Migrations,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let store = connect_store(&config, migrations).await?;
    let background = CancellationToken::new();
    // Routing follows this process's writes by itself; other replicas' need a listener.
    let routing = Arc::new(RoutingCache::new(store.clone()));
    let routing_feed = tokio::spawn(follow_replicas(routing.clone(), background.clone()));
    let metrics = crate::telemetry::metrics().clone();
    tokio::spawn(metrics_upkeep(metrics.clone(), background.clone()));
    let retention = RetentionHealth::new(config.log_retention_ttl_days);
    let purger = tokio::spawn(crate::retention::run(
        store.clone(),
        retention.clone(),
        PurgeOptions::default(),
        crate::retention::PURGE_EVERY,
        background.clone(),
    ));

    // The dispatcher's inbound side first, so ingest and the API can hold on to it.
    let inbox = Inbox::new(DispatcherOptions::from_config(&config));
    let deliveries_ready = inbox.deliveries_queued();
    let ingest = Arc::new(Ingest::new(
        store.clone(),
        IngestOptions {
            topics: TopicRules::new(&config.topics, config.topics_allow_wildcards),
            committers: match store.backend() {
                BackendKind::Sqlite => 1,
                BackendKind::Postgres => 4,
            },
            max_batch: 256,
        },
        routing,
        inbox.handoff(),
    ));
    let destinations = Registry::builtin(
        WebhookProvider::new(
            &config.destinations.webhook,
            config.delivery_timeout(),
            env!("CARGO_PKG_VERSION"),
        )?,
        &config.destinations,
    );
    let dispatcher = Dispatcher::start(store.clone(), destinations.clone(), inbox)?;

    let ownership = config
        .publishmq
        .nats
        .ownership_on(config.database_url.backend());
    let exclusive = (ownership == Ownership::Exclusive).then(|| Exclusive {
        replica_id: new_replica_id(),
        book: Arc::new(StoreLeases(store.clone())) as Arc<dyn LeaseBook>,
    });
    let replica_id = exclusive.as_ref().map(|e| e.replica_id.clone());
    let source = match NatsSourceConfig::from_config(&config).map_err(anyhow::Error::msg)? {
        Some(nats) => {
            info!(servers = ?nats.servers, accounts = nats.accounts.len(), accounts_dir = ?nats.accounts_dir, %ownership, "starting the NATS source");
            Some(NatsSource::start_with(
                nats,
                ingest.clone() as Arc<dyn IngestSink>,
                exclusive,
            ))
        }
        None => None,
    };

    let state = ApiState {
        config: config.clone(),
        store: store.clone(),
        ingest: ingest.clone(),
        accounts: source.as_ref().map(|s| s.status().clone()),
        replica_id: source.as_ref().and(replica_id),
        metrics,
        deliveries_ready,
        dispatcher: dispatcher.health(),
        retention,
        destinations,
    };
    info!(address = %listener.local_addr()?, "HTTP API listening");
    let mut server = tokio::spawn(api::serve(
        listener,
        api::router(state),
        ServeLimits::from_config(&config),
        shutdown.clone(),
    ));
    // Until asked to stop (or the server task dies).
    let failed_early = tokio::select! {
        _ = shutdown.cancelled() => None,
        ended = &mut server => Some(ended),
    };

    // The API drains its requests while the NATS source stops pulling and settles in flight.
    info!("shutting down: stopping the NATS source");
    let stop_source = async {
        if let Some(source) = source {
            source.stop().await;
        }
    };
    let drain_api = async {
        match failed_early {
            Some(ended) => ended,
            None => server.await,
        }
    };
    let (served, ()) = tokio::join!(drain_api, stop_source);
    let served = served.context("HTTP server task panicked");
    info!("shutting down: letting delivery attempts in flight finish");
    dispatcher.stop().await;
    background.cancel();
    // The change feed holds a store connection: let it end before the pool closes under it.
    let _ = routing_feed.await;
    // A purge batch in progress is rolled back, not left holding a connection.
    let _ = purger.await;
    store.close().await;
    info!("stopped");
    served
}

async fn connect_store(config: &Config, migrations: Migrations) -> anyhow::Result<Store> {
    let secret = Some(config.aes_encryption_secret.expose()).filter(|s| !s.is_empty());
    let store = Store::connect(config.database_url.expose(), secret)
        .await
        .with_context(|| {
            format!(
                "cannot open the store at {}",
                config.database_url.redacted()
            )
        })?;
    match migrations {
        Migrations::Apply => store.migrate().await.context("applying store migrations")?,
        Migrations::Require => store.check_migrated().await?,
    }
    Ok(store)
}

async fn metrics_upkeep(
    handle: metrics_exporter_prometheus::PrometheusHandle,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
}

/// Exclusive ownership's leases, kept in the store.
struct StoreLeases(Store);

impl LeaseBook for StoreLeases {
    fn heartbeat<'a>(
        &'a self,
        replica: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Beat, String>> {
        Box::pin(async move {
            let beat = self.0.replica_heartbeat(replica, lease).await;
            beat.map(|b| Beat {
                live: b.live,
                first_expiry: b.first_expiry,
            })
            .map_err(|e| e.to_string())
        })
    }

    fn leaving<'a>(&'a self, replica: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let marked = self.0.replica_leaving(replica).await;
            marked.map_err(|e| e.to_string())
        })
    }

    fn hold<'a>(
        &'a self,
        replica: &'a str,
        accounts: &'a [String],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async move {
            let held = self.0.hold_accounts(replica, accounts, lease).await;
            held.map_err(|e| e.to_string())
        })
    }

    fn release<'a>(
        &'a self,
        replica: &'a str,
        accounts: &'a [String],
    ) -> BoxFuture<'a, Result<u64, String>> {
        Box::pin(async move {
            let released = self.0.release_accounts(replica, accounts).await;
            released.map_err(|e| e.to_string())
        })
    }
}
