//! End-to-end runs through jetpost: tenants publish into their own accounts, jetpost ingests
//! and delivers, the receiver stamps arrivals. Throughput (bursts), latency (a paced rate),
//! fairness (a fresh tenant beside another's backlog), a slow endpoint beside fast ones, and
//! events published through the HTTP API instead of NATS.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;

use super::destinations::Sink;
use super::procstat;
use super::publish::{self, split};
use super::rig::{BenchEnv, Rig, RigOptions, TenantPlan};
use super::tally::{Latencies, Throughput};

/// What one end-to-end run saw.
#[derive(Debug, Clone)]
pub struct FlowResult {
    pub expected: u64,
    pub delivered: u64,
    pub duplicates: u64,
    pub throughput: Option<Throughput>,
    pub latencies: Latencies,
    pub waited: Duration,
    /// CPU time of this process (jetpost and the bench's publishers and receiver) from
    /// jetpost's start until the last delivery or the end of the wait.
    pub cpu: Option<Duration>,
}

impl FlowResult {
    /// CPU microseconds per delivered event.
    pub fn cpu_per_event_us(&self) -> Option<f64> {
        let cpu = self.cpu?;
        (self.delivered > 0).then(|| cpu.as_secs_f64() * 1e6 / self.delivered as f64)
    }

    /// A note when not everything arrived, or something arrived twice.
    pub fn shortfall(&self) -> Option<String> {
        let mut notes = Vec::new();
        if self.delivered < self.expected {
            notes.push(format!(
                "only {} of {} delivered within {:.0} s",
                self.delivered,
                self.expected,
                self.waited.as_secs_f64()
            ));
        }
        if self.duplicates > 0 {
            notes.push(format!("{} duplicate deliveries", self.duplicates));
        }
        (!notes.is_empty()).then(|| notes.join("; "))
    }
}

/// How long to wait for `events` deliveries: generous, so a slow run is reported, not aborted.
fn patience(events: u64) -> Duration {
    Duration::from_secs(60 + events / 500)
}

pub(super) async fn wait(rig: &Rig, seqs: Range<u64>) -> (u64, Duration) {
    let expected = seqs.end - seqs.start;
    let started = tokio::time::Instant::now();
    let delivered = rig.tally.wait_for(seqs, expected, patience(expected)).await;
    (delivered, started.elapsed())
}

pub(super) fn result(rig: &Rig, seqs: Range<u64>, delivered: u64, waited: Duration) -> FlowResult {
    FlowResult {
        expected: seqs.end - seqs.start,
        delivered,
        duplicates: rig.tally.duplicates(),
        throughput: rig.tally.throughput(seqs.clone()),
        latencies: rig.tally.latencies(seqs),
        waited,
        cpu: None,
    }
}

/// CPU time this process used since `before` (`procstat::cpu_time(None)` then).
fn cpu_since(before: Option<Duration>) -> Option<Duration> {
    Some(procstat::cpu_time(None)?.saturating_sub(before?))
}

/// Publishes each range into its tenant's stream as fast as acks allow, all tenants at once.
pub(super) async fn burst_all(rig: &Rig, parts: &[(String, Range<u64>)]) -> anyhow::Result<()> {
    let mut contexts = Vec::with_capacity(parts.len());
    for (tenant, seqs) in parts {
        contexts.push((rig.jetstream(tenant).await?, seqs.clone()));
    }
    let tasks: Vec<_> = contexts
        .into_iter()
        .map(|(js, seqs)| {
            let tally = rig.tally.clone();
            tokio::spawn(async move { publish::burst(&js, &tally, seqs).await })
        })
        .collect();
    for task in tasks {
        task.await.context("a publisher panicked")??;
    }
    Ok(())
}

/// Publishes each range into its tenant's stream at `per_second` per tenant.
async fn pace_all(
    rig: &Rig,
    parts: &[(String, Range<u64>)],
    per_second: f64,
) -> anyhow::Result<()> {
    let mut contexts = Vec::with_capacity(parts.len());
    for (tenant, seqs) in parts {
        contexts.push((rig.jetstream(tenant).await?, seqs.clone()));
    }
    let tasks: Vec<_> = contexts
        .into_iter()
        .map(|(js, seqs)| {
            let tally = rig.tally.clone();
            tokio::spawn(async move { publish::paced(&js, tally, seqs, per_second).await })
        })
        .collect();
    for task in tasks {
        task.await.context("a publisher panicked")??;
    }
    Ok(())
}

pub(super) fn assign(tenants: &[TenantPlan], first: u64, events: u64) -> Vec<(String, Range<u64>)> {
    tenants
        .iter()
        .map(|t| t.name.clone())
        .zip(split(first, events, tenants.len()))
        .collect()
}

/// `tenants` accounts publish `events` in total as fast as they can; one webhook each.
pub async fn throughput(env: &BenchEnv, tenants: usize, events: u64) -> anyhow::Result<FlowResult> {
    let plans = TenantPlan::many(&format!("tp{tenants}"), tenants);
    let parts = assign(&plans, 0, events);
    let mut rig = Rig::prepare(env, RigOptions::webhooks(plans, events)).await?;
    rig.start_service().await?;
    let cpu = procstat::cpu_time(None);
    burst_all(&rig, &parts).await?;
    let (delivered, waited) = wait(&rig, 0..events).await;
    let result = FlowResult {
        cpu: cpu_since(cpu),
        ..result(&rig, 0..events, delivered, waited)
    };
    rig.stop().await?;
    Ok(result)
}

/// `events` published through `POST /api/v1/publish` by `in_flight` callers at once (each
/// sends its next event when the previous one is answered), spread over `tenants` tenants with
/// one webhook each.
pub async fn http_publish(
    env: &BenchEnv,
    tenants: usize,
    events: u64,
    in_flight: usize,
) -> anyhow::Result<FlowResult> {
    let plans = TenantPlan::many(&format!("hp{tenants}"), tenants);
    let names: Vec<String> = plans.iter().map(|t| t.name.clone()).collect();
    let mut rig = Rig::prepare(env, RigOptions::webhooks(plans, events)).await?;
    rig.start_service().await?;
    let (api, key) = rig.api()?;
    let url = format!("{api}/api/v1/publish");
    let client = super::http_client()?;
    let next = Arc::new(AtomicU64::new(0));
    let names = Arc::new(names);
    let callers: Vec<_> = (0..in_flight)
        .map(|_| {
            let (client, url, next) = (client.clone(), url.clone(), next.clone());
            let (names, tally) = (names.clone(), rig.tally.clone());
            tokio::spawn(async move {
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    if seq >= events {
                        return anyhow::Ok(());
                    }
                    let tenant = &names[seq as usize % names.len()];
                    tally.published(seq);
                    let response = client
                        .post(&url)
                        .bearer_auth(key)
                        .header("content-type", "application/json")
                        .body(publish::event_body_for(tenant, seq))
                        .send()
                        .await
                        .context("POST /api/v1/publish")?;
                    let status = response.status();
                    anyhow::ensure!(
                        status.is_success(),
                        "POST /api/v1/publish answered {status}"
                    );
                    response.bytes().await?;
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.context("a publish caller panicked")??;
    }
    let (delivered, waited) = wait(&rig, 0..events).await;
    let result = result(&rig, 0..events, delivered, waited);
    rig.stop().await?;
    Ok(result)
}

/// `tenants` accounts publish `per_second` events in total for `duration`, evenly paced.
pub async fn latency(
    env: &BenchEnv,
    tenants: usize,
    per_second: f64,
    duration: Duration,
) -> anyhow::Result<FlowResult> {
    let (result, _) = latency_beside_old_log(env, tenants, per_second, duration, 0, 0).await?;
    Ok(result)
}

/// `latency`, with `old_events` finished events stored three days ago and jetpost's
/// `log_retention_ttl_days` at `retention_ttl_days` (1: the old log is purged from the start,
/// while the events are paced; 0: it is kept). Also returns the old events left at the end.
pub async fn latency_beside_old_log(
    env: &BenchEnv,
    tenants: usize,
    per_second: f64,
    duration: Duration,
    old_events: u64,
    retention_ttl_days: u32,
) -> anyhow::Result<(FlowResult, u64)> {
    let events = ((per_second * duration.as_secs_f64()) as u64).max(tenants as u64);
    let plans = TenantPlan::many("lat", tenants);
    let parts = assign(&plans, 0, events);
    let options = RigOptions {
        old_events,
        retention_ttl_days,
        ..RigOptions::webhooks(plans, events)
    };
    let mut rig = Rig::prepare(env, options).await?;
    rig.start_service().await?;
    let cpu = procstat::cpu_time(None);
    pace_all(&rig, &parts, per_second / tenants as f64).await?;
    let (delivered, waited) = wait(&rig, 0..events).await;
    let result = FlowResult {
        cpu: cpu_since(cpu),
        ..result(&rig, 0..events, delivered, waited)
    };
    let left = if old_events > 0 {
        super::db::count_old_events(rig.db.url()).await?
    } else {
        0
    };
    rig.stop().await?;
    Ok((result, left))
}

/// What the fairness scenario saw.
#[derive(Debug, Clone)]
pub struct Fairness {
    /// Tenant B alone.
    pub alone: FlowResult,
    /// Tenant B beside A's backlog.
    pub beside_backlog: FlowResult,
    /// How much of A's backlog had been delivered when B's last event arrived.
    pub backlog_delivered: u64,
    pub backlog: u64,
}

/// Tenant B publishes `per_second` for `duration`, first alone, then while tenant A's
/// `backlog` (published before jetpost starts) is being delivered.
pub async fn fairness(
    env: &BenchEnv,
    backlog: u64,
    per_second: f64,
    duration: Duration,
) -> anyhow::Result<Fairness> {
    let b_events = ((per_second * duration.as_secs_f64()) as u64).max(1);
    let plans = vec![TenantPlan::fast("tenant-a"), TenantPlan::fast("tenant-b")];

    let mut rig = Rig::prepare(env, RigOptions::webhooks(plans.clone(), b_events)).await?;
    rig.start_service().await?;
    pace_all(&rig, &[("tenant-b".into(), 0..b_events)], per_second).await?;
    let (delivered, waited) = wait(&rig, 0..b_events).await;
    let alone = result(&rig, 0..b_events, delivered, waited);
    rig.stop().await?;

    let b_seqs = backlog..backlog + b_events;
    let mut rig = Rig::prepare(env, RigOptions::webhooks(plans, backlog + b_events)).await?;
    burst_all(&rig, &[("tenant-a".into(), 0..backlog)]).await?;
    rig.start_service().await?;
    pace_all(&rig, &[("tenant-b".into(), b_seqs.clone())], per_second).await?;
    let (delivered, waited) = wait(&rig, b_seqs.clone()).await;
    let backlog_delivered = rig.tally.arrived_among(0..backlog);
    let beside_backlog = result(&rig, b_seqs, delivered, waited);
    rig.stop().await?;
    Ok(Fairness {
        alone,
        beside_backlog,
        backlog_delivered,
        backlog,
    })
}

/// What the slow-endpoint scenario saw: the fast tenants' deliveries without and with a slow
/// destination beside them.
#[derive(Debug, Clone)]
pub struct Isolation {
    pub without_slow: FlowResult,
    pub with_slow: FlowResult,
    pub slow_events: u64,
}

/// `fast_tenants` publish `events` in total, first alone, then with one more tenant whose
/// destination answers after `slow_delay` publishing its share alongside.
pub async fn isolation(
    env: &BenchEnv,
    fast_tenants: usize,
    events: u64,
    slow_delay: Duration,
) -> anyhow::Result<Isolation> {
    let fast = TenantPlan::many("fast", fast_tenants);
    let fast_parts = assign(&fast, 0, events);

    let mut rig = Rig::prepare(
        env,
        RigOptions {
            slow_delay,
            ..RigOptions::webhooks(fast.clone(), events)
        },
    )
    .await?;
    rig.start_service().await?;
    burst_all(&rig, &fast_parts).await?;
    let (delivered, waited) = wait(&rig, 0..events).await;
    let without_slow = result(&rig, 0..events, delivered, waited);
    rig.stop().await?;

    let slow_events = (events / fast_tenants.max(1) as u64).max(1);
    let mut tenants = fast;
    tenants.push(TenantPlan {
        name: "slow".into(),
        slow: true,
    });
    let mut parts = fast_parts;
    parts.push(("slow".into(), events..events + slow_events));
    let mut rig = Rig::prepare(
        env,
        RigOptions {
            slow_delay,
            ..RigOptions::webhooks(tenants, events + slow_events)
        },
    )
    .await?;
    rig.start_service().await?;
    burst_all(&rig, &parts).await?;
    let (delivered, waited) = wait(&rig, 0..events).await;
    let with_slow = result(&rig, 0..events, delivered, waited);
    rig.stop().await?;
    Ok(Isolation {
        without_slow,
        with_slow,
        slow_events,
    })
}

/// One tenant publishes `events` as fast as it can to one destination of `sink`'s type, read
/// back by the sink's consumer.
pub async fn to_sink(
    env: &BenchEnv,
    mut sink: Sink,
    name: &str,
    events: u64,
) -> anyhow::Result<FlowResult> {
    let plans = vec![TenantPlan::fast(name)];
    let parts = assign(&plans, 0, events);
    let mut rig = Rig::prepare(
        env,
        RigOptions {
            destination: Some(sink.destination()),
            ..RigOptions::webhooks(plans, events)
        },
    )
    .await?;
    sink.consume(rig.tally.clone());
    rig.start_service().await?;
    burst_all(&rig, &parts).await?;
    let (delivered, waited) = wait(&rig, 0..events).await;
    let result = result(&rig, 0..events, delivered, waited);
    rig.stop().await?;
    sink.stop().await;
    Ok(result)
}
