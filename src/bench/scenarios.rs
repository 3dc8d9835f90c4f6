//! The scenarios by name and the rows each one reports: what is compared with what, and the
//! issue's targets. A scenario that fails reports its error as a row; the others still run.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use super::bridge;
use super::destinations::Sink;
use super::flow::{self, FlowResult};
use super::limits::{self, Limits};
use super::replicas::{self, Cost, Failover, REPLICAS};
use super::report::{LatencySeries, Row, number};
use super::rig::BenchEnv;
use super::{Sizes, StoreChoice, accounts, store_ingest};
use crate::config::Ownership;

/// One benchmark scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Raw JetStream publish and pull + ack, raw HTTP POST: the machine's limits.
    Limits,
    /// `Ingest::accept` on SQLite and Postgres.
    Store,
    /// 1, 10 and 100 tenants publishing a burst: events/s to the last webhook.
    Throughput,
    /// Publish → webhook percentiles at half the throughput.
    Latency,
    /// A fresh tenant's latency beside another tenant's backlog.
    Fairness,
    /// Fast destinations' throughput beside one that answers after 2 s.
    SlowEndpoint,
    /// Thousands of idle accounts: memory, CPU, add → consume.
    Accounts,
    /// One tenant's burst to a webhook, to RabbitMQ, to SQS (moto) and to Kafka (tansu).
    Destinations,
    /// Events published through the HTTP API by 32 callers, to 1 and to 10 tenants.
    Publish,
    /// Latency at half load while a retention purge deletes an old log, beside it kept.
    Retention,
    /// Three `jetpost serve` replicas on one Postgres store: shared against exclusive account
    /// ownership, failover and join times, throughput on one replica and on three.
    Replicas,
}

/// The low steady rate whose CPU per event the latency scenario compares with saturation's.
const STEADY_RATE: f64 = 500.0;

/// Callers of `POST /api/v1/publish` at once in the publish scenario.
const PUBLISH_CALLERS: usize = 32;

impl Scenario {
    pub const ALL: [Scenario; 11] = [
        Scenario::Limits,
        Scenario::Store,
        Scenario::Throughput,
        Scenario::Latency,
        Scenario::Fairness,
        Scenario::SlowEndpoint,
        Scenario::Accounts,
        Scenario::Destinations,
        Scenario::Publish,
        Scenario::Retention,
        Scenario::Replicas,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Limits => "limits",
            Scenario::Store => "store",
            Scenario::Throughput => "throughput",
            Scenario::Latency => "latency",
            Scenario::Fairness => "fairness",
            Scenario::SlowEndpoint => "slow-endpoint",
            Scenario::Accounts => "accounts",
            Scenario::Destinations => "destinations",
            Scenario::Publish => "publish",
            Scenario::Retention => "retention",
            Scenario::Replicas => "replicas",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Scenario::ALL
            .into_iter()
            .find(|scenario| scenario.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                format!("unknown scenario \"{s}\"; choose from {}", names.join(", "))
            })
    }
}

/// A benchmark run in progress: results so far, which later scenarios compare with.
pub struct Run {
    env: BenchEnv,
    sizes: Sizes,
    progress: bool,
    limits: Limits,
    /// Events/s of the throughput run with `latency_tenants` tenants.
    latency_base_rate: Option<f64>,
    /// CPU µs per event of that run (at saturation).
    saturation_cpu_per_event: Option<f64>,
    rows: Vec<Row>,
    latencies: Vec<LatencySeries>,
}

impl Run {
    pub fn new(env: BenchEnv, sizes: Sizes, progress: bool) -> Run {
        Run {
            env,
            sizes,
            progress,
            limits: Limits::default(),
            latency_base_rate: None,
            saturation_cpu_per_event: None,
            rows: Vec::new(),
            latencies: Vec::new(),
        }
    }

    pub fn finish(self) -> (Vec<Row>, Vec<LatencySeries>) {
        (self.rows, self.latencies)
    }

    fn say(&self, line: impl fmt::Display) {
        if self.progress {
            eprintln!("[bench] {line}");
        }
    }

    /// Runs one scenario; an error becomes a row saying what failed.
    pub async fn scenario(&mut self, scenario: Scenario, postgres_url: Option<&str>) {
        self.say(format_args!("{scenario}: starting"));
        let started = std::time::Instant::now();
        let result = match scenario {
            Scenario::Limits => self.limits().await,
            Scenario::Store => self.store(postgres_url).await,
            Scenario::Throughput => self.throughput().await,
            Scenario::Latency => self.latency().await,
            Scenario::Fairness => self.fairness().await,
            Scenario::SlowEndpoint => self.slow_endpoint().await,
            Scenario::Accounts => self.accounts().await,
            Scenario::Destinations => self.destinations().await,
            Scenario::Publish => self.publish().await,
            Scenario::Retention => self.retention().await,
            Scenario::Replicas => self.replicas(postgres_url).await,
        };
        if let Err(err) = result {
            self.say(format_args!("{scenario}: failed: {err:#}"));
            self.rows.push(
                Row::new(scenario.name(), "scenario failed", None, "")
                    .note(format!("{err:#}").replace('|', "/")),
            );
        }
        self.say(format_args!(
            "{scenario}: done in {:.0} s",
            started.elapsed().as_secs_f64()
        ));
    }

    /// The same burst from one tenant to one destination of each type; the broker types are
    /// compared with the webhook run. A broker that cannot be reached fails its row only.
    async fn destinations(&mut self) -> anyhow::Result<()> {
        let events = self.sizes.destination_events;
        self.say("destinations: webhook");
        let webhook = flow::throughput(&self.env, 1, events).await?;
        let webhook_rate = webhook.throughput.map(|t| t.per_second);
        self.push_destination("webhook (the bench receiver)", events, Ok(webhook), None);
        for (label, sink) in [
            (
                "rabbitmq (the machine's RabbitMQ, publisher confirms)",
                "rabbitmq",
            ),
            ("aws_sqs (moto's standalone server)", "aws_sqs"),
            ("kafka (tansu, SQLite storage, debug build)", "kafka"),
        ] {
            self.say(format_args!("destinations: {sink}"));
            let result = match sink {
                "rabbitmq" => match Sink::rabbitmq().await {
                    Ok(sink) => flow::to_sink(&self.env, sink, "dest-rabbitmq", events).await,
                    Err(err) => Err(err),
                },
                "kafka" => match Sink::kafka().await {
                    Ok(sink) => flow::to_sink(&self.env, sink, "dest-kafka", events / 4).await,
                    Err(err) => Err(err),
                },
                _ => self.sqs(events / 4).await,
            };
            // The test brokers behind SQS (moto) and Kafka (tansu, a debug build committing
            // every record to SQLite) take far fewer messages per second than RabbitMQ.
            let events = if sink == "rabbitmq" {
                events
            } else {
                events / 4
            };
            self.push_destination(label, events, result, webhook_rate);
        }
        Ok(())
    }

    /// Events through `POST /api/v1/publish` with 32 callers, to 1 and to 10 tenants. The
    /// targets are 3× what the store issue measured before its work (2,000 and 3,400 /s).
    async fn publish(&mut self) -> anyhow::Result<()> {
        let events = self.sizes.publish_events;
        for (tenants, before) in [(1, 2_000.0), (10, 3_400.0)] {
            self.say(format_args!("publish: {tenants} tenant(s)"));
            let result = flow::http_publish(&self.env, tenants, events, PUBLISH_CALLERS).await?;
            let goal = before * 3.0;
            let mut row = Row::new(
                "publish",
                format!(
                    "HTTP publish, {PUBLISH_CALLERS} in flight, {tenants} tenant{}, {events} \
                     events, first publish → last webhook",
                    if tenants == 1 { "" } else { "s" }
                ),
                result.throughput.map(|t| t.per_second),
                "events/s",
            )
            .target(format!("≥ {goal:.0} events/s (3× {before:.0})"), |r| {
                r.value.map(|v| v >= goal)
            });
            if let Some(note) = result.shortfall() {
                row = row.note(note);
            }
            self.rows.push(row);
        }
        Ok(())
    }

    /// The SQS run: a quarter of the events, since moto (a Python mock of AWS) takes far
    /// fewer messages per second than a broker.
    async fn sqs(&mut self, events: u64) -> anyhow::Result<FlowResult> {
        let sink = Sink::sqs().await?;
        flow::to_sink(&self.env, sink, "dest-sqs", events).await
    }

    fn push_destination(
        &mut self,
        label: &str,
        events: u64,
        result: anyhow::Result<FlowResult>,
        webhook_rate: Option<f64>,
    ) {
        let metric = format!("1 tenant, {events} events → {label}");
        let row = match result {
            Ok(result) => {
                let mut row = Row::new(
                    "destinations",
                    metric,
                    result.throughput.map(|t| t.per_second),
                    "events/s",
                );
                if webhook_rate.is_some() {
                    row = row.against("webhook, same run", webhook_rate, "events/s");
                }
                match result.shortfall() {
                    Some(note) => row.note(note),
                    None => row,
                }
            }
            Err(err) => Row::new("destinations", metric, None, "events/s")
                .note(format!("{err:#}").replace('|', "/")),
        };
        self.rows.push(row);
    }

    async fn limits(&mut self) -> anyhow::Result<()> {
        let n = self.sizes.limit_messages;
        let (publish, pull) = limits::jetstream(&self.env, n).await?;
        self.limits.publish_per_second = Some(publish);
        self.limits.pull_ack_per_second = Some(pull);
        self.rows.push(Row::new(
            "limits",
            format!("JetStream publish, async acks (window 1024), {n} msgs"),
            Some(publish),
            "msgs/s",
        ));
        self.rows.push(Row::new(
            "limits",
            format!("JetStream pull + ack, plain async-nats loop, {n} msgs"),
            Some(pull),
            "msgs/s",
        ));
        let http = limits::http(n).await?;
        self.limits.http_per_second = Some(http);
        self.rows.push(Row::new(
            "limits",
            format!(
                "HTTP POST to the receiver, {} in flight, {n} requests",
                limits::HTTP_IN_FLIGHT
            ),
            Some(http),
            "req/s",
        ));
        let events = self.sizes.throughput_events;
        for tenants in self.sizes.tenant_counts.clone() {
            self.say(format_args!("limits: bridge, {tenants} tenant(s)"));
            let result = bridge::throughput(&self.env, tenants, events).await?;
            let mut row = Row::new(
                "limits",
                format!(
                    "bridge: NATS pull → signed POST → ack, no store, {tenants} tenant{}, \
                     {events} events",
                    if tenants == 1 { "" } else { "s" }
                ),
                result.throughput.map(|t| t.per_second),
                "events/s",
            );
            if let Some(note) = result.shortfall() {
                row = row.note(note);
            }
            if let Some(rate) = result.throughput.map(|t| t.per_second) {
                self.limits.bridge_per_second.insert(tenants, rate);
            }
            self.rows.push(row);
        }
        Ok(())
    }

    async fn store(&mut self, postgres_url: Option<&str>) -> anyhow::Result<()> {
        let (events, tasks) = (self.sizes.store_events, self.sizes.store_tasks);
        let mut backends = vec![StoreChoice::Sqlite];
        if let Some(url) = postgres_url {
            backends.push(StoreChoice::Postgres(url.to_owned()));
        }
        for backend in backends {
            let metric = format!("Ingest::accept on {backend}, {tasks} tasks, {events} events");
            let row = match store_ingest::ingest_rate(&backend, events, tasks).await {
                Ok(rate) => Row::new("store", metric, Some(rate), "events/s").against(
                    "JetStream pull + ack",
                    self.limits.pull_ack_per_second,
                    "msgs/s",
                ),
                Err(err) => Row::new("store", metric, None, "events/s")
                    .note(format!("{err:#}").replace('|', "/")),
            };
            self.rows.push(row);
        }
        Ok(())
    }

    async fn throughput(&mut self) -> anyhow::Result<()> {
        let events = self.sizes.throughput_events;
        for tenants in self.sizes.tenant_counts.clone() {
            self.say(format_args!("throughput: {tenants} tenant(s)"));
            let result = flow::throughput(&self.env, tenants, events).await?;
            if tenants == self.sizes.latency_tenants {
                self.latency_base_rate = result.throughput.map(|t| t.per_second);
                self.saturation_cpu_per_event = result.cpu_per_event_us();
            }
            self.push_throughput(tenants, events, &result);
        }
        Ok(())
    }

    fn push_throughput(&mut self, tenants: usize, events: u64, result: &FlowResult) {
        // Compared with the bridge of the same tenant count: the same path without a store.
        let (baseline, label) = match self.limits.bridge_per_second.get(&tenants) {
            Some(rate) => (Some(*rate), "bridge, same tenants".to_owned()),
            None => (None, "bridge (run `limits`)".to_owned()),
        };
        // The store issue's targets: half the bridge at 10 tenants, 40 % at 1 and 100.
        let goal = if tenants == 10 { 50.0 } else { 40.0 };
        let complete = result.delivered == result.expected;
        let mut row = Row::new(
            "throughput",
            format!(
                "{tenants} tenant{}, {events} events, first publish → last webhook",
                if tenants == 1 { "" } else { "s" }
            ),
            result.throughput.map(|t| t.per_second),
            "events/s",
        )
        .against(label, baseline, "events/s")
        .target(format!("≥ {goal:.0} % of the bridge"), |r| {
            r.percent_of_baseline.map(|p| p >= goal && complete)
        });
        if let Some(note) = result.shortfall() {
            row = row.note(note);
        }
        self.rows.push(row);
    }

    /// Half the `latency_tenants` throughput (measured first unless a throughput run did), or
    /// `JETPOST_BENCH_LATENCY_RATE` events/s when set (to compare builds at one rate: half of
    /// a faster build's throughput is a heavier load).
    async fn half_load(&mut self) -> anyhow::Result<f64> {
        let tenants = self.sizes.latency_tenants;
        let fixed = std::env::var("JETPOST_BENCH_LATENCY_RATE")
            .ok()
            .and_then(|r| r.parse::<f64>().ok())
            .filter(|r| *r > 0.0);
        let base = match fixed.map(|r| r * 2.0).or(self.latency_base_rate) {
            Some(rate) => rate,
            None => {
                self.say("measuring the throughput half load halves first");
                let events = self.sizes.throughput_events;
                let result = flow::throughput(&self.env, tenants, events).await?;
                self.push_throughput(tenants, events, &result);
                let rate = result
                    .throughput
                    .map(|t| t.per_second)
                    .ok_or_else(|| anyhow::anyhow!("the throughput run delivered nothing"))?;
                self.latency_base_rate = Some(rate);
                self.saturation_cpu_per_event = result.cpu_per_event_us();
                rate
            }
        };
        Ok(base / 2.0)
    }

    async fn latency(&mut self) -> anyhow::Result<()> {
        let tenants = self.sizes.latency_tenants;
        let rate = self.half_load().await?;
        self.say(format_args!("latency: {rate:.0} events/s"));
        let result = flow::latency(&self.env, tenants, rate, self.sizes.latency_duration).await?;
        let context = format!(
            "{rate:.0} events/s from {tenants} tenants (half the {tenants}-tenant throughput), {} s",
            self.sizes.latency_duration.as_secs()
        );
        let l = &result.latencies;
        let mut p99 = Row::new(
            "latency",
            "publish → webhook p99",
            l.percentile_ms(99.0),
            "ms",
        )
        .target("≤ 10 ms", |r| {
            r.value
                .map(|v| v <= 10.0 && result.delivered == result.expected)
        });
        if let Some(note) = result.shortfall() {
            p99 = p99.note(note);
        }
        self.rows.push(
            Row::new(
                "latency",
                "publish → webhook p50",
                l.percentile_ms(50.0),
                "ms",
            )
            .note(context),
        );
        self.rows.push(p99);
        self.rows.push(Row::new(
            "latency",
            "publish → webhook max",
            l.max_ms(),
            "ms",
        ));
        self.latencies
            .extend(LatencySeries::from("publish → webhook at half load", l));

        self.say(format_args!(
            "latency: CPU per event at {STEADY_RATE} events/s"
        ));
        let steady =
            flow::latency(&self.env, tenants, STEADY_RATE, self.sizes.latency_duration).await?;
        let complete = steady.delivered == steady.expected;
        self.rows.push(
            Row::new(
                "latency",
                format!("CPU per event at a steady {STEADY_RATE} events/s"),
                steady.cpu_per_event_us(),
                "µs",
            )
            .against(
                "at saturation (the throughput run)",
                self.saturation_cpu_per_event,
                "µs",
            )
            .target("≤ 1.5× saturation", |r| {
                r.percent_of_baseline.map(|p| p <= 150.0 && complete)
            })
            .note("the bench process: jetpost with its publishers and receiver"),
        );
        Ok(())
    }

    /// The same half load twice beside an old log of finished events: kept, then purged by
    /// retention (`log_retention_ttl_days` 1) while the events are paced.
    async fn retention(&mut self) -> anyhow::Result<()> {
        let tenants = self.sizes.latency_tenants;
        let old = self.sizes.retention_old_events;
        let duration = self.sizes.latency_duration;
        let rate = self.half_load().await?;
        self.say(format_args!(
            "retention: {rate:.0} events/s beside {old} old events kept"
        ));
        let (kept, _) =
            flow::latency_beside_old_log(&self.env, tenants, rate, duration, old, 0).await?;
        self.say("retention: the same while they are purged");
        let (purging, left) =
            flow::latency_beside_old_log(&self.env, tenants, rate, duration, old, 1).await?;
        let complete = purging.delivered == purging.expected && kept.delivered == kept.expected;
        let context = format!(
            "{rate:.0} events/s from {tenants} tenants for {} s; {} of {old} old events purged \
             by the end",
            duration.as_secs(),
            old.saturating_sub(left)
        );
        let mut p99 = Row::new(
            "retention",
            "publish → webhook p99 while the purge runs",
            purging.latencies.percentile_ms(99.0),
            "ms",
        )
        .against("the old log kept", kept.latencies.percentile_ms(99.0), "ms")
        .target("≤ 1.5× kept", |r| {
            r.percent_of_baseline.map(|p| p <= 150.0 && complete)
        })
        .note(context);
        for shortfall in [kept.shortfall(), purging.shortfall()]
            .into_iter()
            .flatten()
        {
            p99 = p99.note(shortfall);
        }
        self.rows.push(
            Row::new(
                "retention",
                "publish → webhook p50 while the purge runs",
                purging.latencies.percentile_ms(50.0),
                "ms",
            )
            .against("the old log kept", kept.latencies.percentile_ms(50.0), "ms"),
        );
        self.rows.push(p99);
        self.latencies.extend(LatencySeries::from(
            "retention: beside the old log kept",
            &kept.latencies,
        ));
        self.latencies.extend(LatencySeries::from(
            "retention: while the purge runs",
            &purging.latencies,
        ));
        Ok(())
    }

    async fn fairness(&mut self) -> anyhow::Result<()> {
        let s = &self.sizes;
        let result = flow::fairness(
            &self.env,
            s.fairness_backlog,
            s.fairness_rate,
            s.fairness_duration,
        )
        .await?;
        let alone = &result.alone.latencies;
        let beside = &result.beside_backlog.latencies;
        let backlog_note = format!(
            "{} of A's {} backlog delivered when B's last event arrived",
            result.backlog_delivered, result.backlog
        );
        let complete = result.beside_backlog.delivered == result.beside_backlog.expected;
        let mut p99 = Row::new(
            "fairness",
            format!(
                "tenant B ({} events/s) p99 beside A's {} backlog",
                s.fairness_rate, s.fairness_backlog
            ),
            beside.percentile_ms(99.0),
            "ms",
        )
        .against("B alone", alone.percentile_ms(99.0), "ms")
        .target("≤ 1.5× alone", |r| {
            r.percent_of_baseline.map(|p| p <= 150.0 && complete)
        })
        .note(backlog_note);
        if let Some(note) = result.beside_backlog.shortfall() {
            p99 = p99.note(note);
        }
        self.rows.push(
            Row::new(
                "fairness",
                "tenant B p50 beside the backlog",
                beside.percentile_ms(50.0),
                "ms",
            )
            .against("B alone", alone.percentile_ms(50.0), "ms"),
        );
        self.rows.push(p99);
        self.latencies
            .extend(LatencySeries::from("fairness: B alone", alone));
        self.latencies.extend(LatencySeries::from(
            "fairness: B beside A's backlog",
            beside,
        ));
        Ok(())
    }

    async fn slow_endpoint(&mut self) -> anyhow::Result<()> {
        let s = &self.sizes;
        let result = flow::isolation(
            &self.env,
            s.isolation_tenants,
            s.isolation_events,
            s.slow_delay,
        )
        .await?;
        let complete = result.with_slow.delivered == result.with_slow.expected;
        let mut row = Row::new(
            "slow endpoint",
            format!(
                "{} fast tenants, {} events, beside one endpoint answering after {:.1} s ({} events)",
                s.isolation_tenants,
                s.isolation_events,
                s.slow_delay.as_secs_f64(),
                result.slow_events
            ),
            result.with_slow.throughput.map(|t| t.per_second),
            "events/s",
        )
        .against(
            "same without the slow one",
            result.without_slow.throughput.map(|t| t.per_second),
            "events/s",
        )
        .target("costs the fast ones ≤ 10 %", |r| {
            r.percent_of_baseline.map(|p| p >= 90.0 && complete)
        });
        if let Some(note) = result.with_slow.shortfall() {
            row = row.note(note);
        }
        self.rows.push(row);
        self.latencies.extend(LatencySeries::from(
            "fast tenants beside a slow endpoint (a burst: includes queueing)",
            &result.with_slow.latencies,
        ));
        Ok(())
    }

    async fn accounts(&mut self) -> anyhow::Result<()> {
        let jetpost = self.env.jetpost_exe.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "the accounts scenario runs `jetpost serve`, but no jetpost executable was given"
            )
        })?;
        for idle in self.sizes.idle_accounts.clone() {
            self.say(format_args!("accounts: {idle} idle accounts"));
            let s = accounts::scale(
                &self.env,
                idle,
                self.sizes.added_accounts,
                self.sizes.idle_window,
                &jetpost,
                &|line| self.say(line),
            )
            .await?;
            let n = crate::bench::report::number(idle as f64);
            self.rows.push(Row::new(
                "accounts",
                format!("{n} accounts: nats-server start + streams and consumers created"),
                Some(s.provisioning.as_secs_f64()),
                "s",
            ));
            let mut connected = Row::new(
                "accounts",
                format!("{n} accounts: written to accounts_dir → all connected"),
                s.connecting.map(|d| d.as_secs_f64()),
                "s",
            );
            if s.connecting.is_none() {
                connected = connected.note("not all connected in time");
            }
            self.rows.push(connected);
            self.rows.push(
                Row::new(
                    "accounts",
                    format!("{n} idle accounts: jetpost RSS per account"),
                    s.rss_per_account.map(|b| b / 1024.0),
                    "KiB",
                )
                .target("≤ 48 KiB", |r| r.value.map(|v| v <= 48.0)),
            );
            let scaled_target = 5.0 * idle as f64 / 10_000.0;
            let cpu_target = if idle == 10_000 {
                "≤ 5 % of a core".to_owned()
            } else {
                format!("≤ 5 % at 10,000 (≤ {scaled_target:.2} % at {n})")
            };
            self.rows.push(
                Row::new(
                    "accounts",
                    format!(
                        "{n} idle accounts: jetpost CPU over {} s",
                        self.sizes.idle_window.as_secs()
                    ),
                    s.idle_cpu_percent,
                    "% of a core",
                )
                .target(cpu_target, |r| r.value.map(|v| v <= scaled_target)),
            );
            self.rows.push(Row::new(
                "accounts",
                format!("{n} idle accounts: nats-server RSS"),
                s.server_rss.map(|b| b as f64 / (1024.0 * 1024.0)),
                "MiB",
            ));
            self.rows.push(Row::new(
                "accounts",
                format!("{n} idle accounts: nats-server CPU"),
                s.server_idle_cpu_percent,
                "% of a core",
            ));
            let l = &s.add_to_consume;
            let missed = s.adds_missed;
            let mut p99 = Row::new(
                "accounts",
                format!(
                    "accounts_dir add → first event consumed p99 ({} adds beside {n})",
                    s.adds
                ),
                l.percentile_ms(99.0),
                "ms",
            )
            .target("≤ 1 s", |r| r.value.map(|v| v <= 1000.0 && missed == 0));
            if missed > 0 {
                p99 = p99.note(format!("{missed} adds not consumed within 30 s"));
            }
            self.rows.push(Row::new(
                "accounts",
                "accounts_dir add → first event consumed p50",
                l.percentile_ms(50.0),
                "ms",
            ));
            self.rows.push(p99);
            self.latencies.extend(LatencySeries::from(
                format!("accounts_dir add → consumed ({n} idle)"),
                l,
            ));
        }
        Ok(())
    }

    /// Replicas on one Postgres store, whatever `--store` says (exclusive ownership keeps its
    /// leases there): the cost of shared against exclusive ownership, failover and join times,
    /// and throughput on one replica and on three. A part that fails reports its error as a
    /// row; the others still run.
    async fn replicas(&mut self, postgres_url: Option<&str>) -> anyhow::Result<()> {
        let jetpost = self.env.jetpost_exe.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "the replicas scenario runs `jetpost serve`, but no jetpost executable was given"
            )
        })?;
        let url = postgres_url.ok_or_else(|| {
            anyhow::anyhow!(
                "the replicas scenario needs Postgres (replicas share their accounts through \
                 it); run it without --no-postgres"
            )
        })?;
        let postgres = StoreChoice::Postgres(url.to_owned());
        let result = self.replica_cost(&postgres, &jetpost).await;
        self.push_part("connections and nats-server cost", result);
        let result = self.replica_failover(&postgres, &jetpost).await;
        self.push_part("failover", result);
        let result = self.replica_throughput(&postgres, &jetpost).await;
        self.push_part("throughput", result);
        Ok(())
    }

    /// A row saying that a part of the replicas scenario failed, and why.
    fn push_part(&mut self, part: &str, result: anyhow::Result<()>) {
        if let Err(err) = result {
            self.say(format_args!("replicas: {part} failed: {err:#}"));
            self.rows.push(
                Row::new("replicas", format!("{part}: failed"), None, "")
                    .note(format!("{err:#}").replace('|', "/")),
            );
        }
    }

    /// The same idle accounts on three replicas, shared and then exclusive.
    async fn replica_cost(&mut self, postgres: &StoreChoice, jetpost: &Path) -> anyhow::Result<()> {
        let (accounts, window) = (self.sizes.replica_accounts, self.sizes.idle_window);
        let mut shared: Option<Cost> = None;
        for ownership in [Ownership::Shared, Ownership::Exclusive] {
            self.say(format_args!(
                "replicas: {REPLICAS} replicas, {accounts} idle accounts, {ownership}"
            ));
            let cost = replicas::cost(
                &self.env,
                postgres,
                accounts,
                ownership,
                window,
                jetpost,
                &|line| self.say(line),
            )
            .await?;
            self.push_cost(&cost, shared.as_ref());
            shared.get_or_insert(cost);
        }
        Ok(())
    }

    /// One cost run's rows; the exclusive run's beside the shared one's.
    fn push_cost(&mut self, c: &Cost, shared: Option<&Cost>) {
        let what = format!(
            "{} replicas × {} idle accounts, {}",
            c.replicas,
            count(c.accounts),
            c.ownership
        );
        let window = self.sizes.idle_window.as_secs();
        let beside = |row: Row, value: fn(&Cost) -> Option<f64>, unit: &str| match shared {
            Some(shared) => row.against("shared, same accounts", value(shared), unit),
            None => row,
        };
        let (expected, each) = match c.ownership {
            Ownership::Shared => (c.replicas * c.accounts, "one per replica and account"),
            Ownership::Exclusive => (c.accounts, "one per account"),
        };
        let expected = expected as f64;
        let connections = Row::new(
            "replicas",
            format!("{what}: nats-server connections"),
            Some(c.connections as f64),
            "connections",
        )
        .target(format!("= {} ({each})", count(expected as usize)), |r| {
            r.value.map(|v| v == expected)
        });
        self.rows.push(beside(
            connections,
            |s| Some(s.connections as f64),
            "connections",
        ));
        let mut connected = Row::new(
            "replicas",
            format!("{what}: written to accounts_dir → all connected"),
            c.connecting.map(|d| d.as_secs_f64()),
            "s",
        );
        if c.connecting.is_none() {
            connected = connected.note("not all connected in time");
        } else if c.ownership == Ownership::Exclusive {
            connected = connected.note("and each consuming on its rendezvous owner only");
        }
        self.rows.push(connected);
        let mib = |bytes: Option<u64>| bytes.map(|b| b as f64 / (1024.0 * 1024.0));
        let rows = [
            (
                "nats-server RSS".to_owned(),
                mib(c.server_rss),
                "MiB",
                (|s: &Cost| s.server_rss.map(|b| b as f64 / (1024.0 * 1024.0)))
                    as fn(&Cost) -> Option<f64>,
            ),
            (
                format!("nats-server CPU over {window} s"),
                c.server_idle_cpu_percent,
                "% of a core",
                |s: &Cost| s.server_idle_cpu_percent,
            ),
            (
                format!("jetpost RSS, {} processes summed", c.replicas),
                mib(c.jetpost_rss),
                "MiB",
                |s: &Cost| s.jetpost_rss.map(|b| b as f64 / (1024.0 * 1024.0)),
            ),
            (
                format!(
                    "jetpost CPU over {window} s, {} processes summed",
                    c.replicas
                ),
                c.jetpost_idle_cpu_percent,
                "% of a core",
                |s: &Cost| s.jetpost_idle_cpu_percent,
            ),
        ];
        for (metric, value, unit, of_shared) in rows {
            let row = Row::new("replicas", format!("{what}: {metric}"), value, unit);
            self.rows.push(beside(row, of_shared, unit));
        }
    }

    /// Kills and replacements among three exclusive replicas.
    async fn replica_failover(
        &mut self,
        postgres: &StoreChoice,
        jetpost: &Path,
    ) -> anyhow::Result<()> {
        let (accounts, kills) = (self.sizes.failover_accounts, self.sizes.failover_kills);
        self.say(format_args!(
            "replicas: failover, {REPLICAS} replicas, {accounts} accounts, {kills} kills"
        ));
        let failover = replicas::failover(&self.env, postgres, accounts, kills, jetpost, &|line| {
            self.say(line)
        })
        .await?;
        self.push_failover(&failover);
        Ok(())
    }

    /// The failover percentiles and the mean join, against the bounds.
    fn push_failover(&mut self, f: &Failover) {
        let settled = f.failovers.count();
        let complete = settled == f.kills && f.unsettled.is_none();
        let seconds = |ms: Option<f64>| ms.map(|ms| ms / 1000.0);
        let context = format!(
            "{REPLICAS} exclusive replicas, {} accounts; {settled} of {} kills settled; polled \
             every 250 ms",
            count(f.accounts),
            f.kills
        );
        let what = "SIGKILL one replica → every account consuming on a survivor";
        self.rows.push(
            Row::new(
                "replicas",
                format!("{what}, p50"),
                seconds(f.failovers.percentile_ms(50.0)),
                "s",
            )
            .note(context),
        );
        let mut p99 = Row::new(
            "replicas",
            format!("{what}, p99"),
            seconds(f.failovers.percentile_ms(99.0)),
            "s",
        )
        .target("≤ 10 s", |r| r.value.map(|v| v <= 10.0 && complete));
        if let Some(why) = &f.unsettled {
            p99 = p99.note(why.replace('|', "/"));
        }
        self.rows.push(p99);
        self.rows.push(Row::new(
            "replicas",
            format!("{what}, max"),
            seconds(f.failovers.max_ms()),
            "s",
        ));
        self.rows.push(
            Row::new(
                "replicas",
                "accounts seen with two jetpost connections at once (kills and joins)",
                Some(f.doubled as f64),
                "accounts",
            )
            .target("0", |r| r.value.map(|v| v == 0.0))
            .note("/connz polled every 250 ms: a shorter overlap is not seen"),
        );
        let joins = &f.joins;
        let mean = (!joins.is_empty())
            .then(|| joins.iter().map(Duration::as_secs_f64).sum::<f64>() / joins.len() as f64);
        let max = joins.iter().max().map_or(0.0, Duration::as_secs_f64);
        self.rows.push(
            Row::new(
                "replicas",
                "replacement started → its share consuming (balanced again), mean",
                mean,
                "s",
            )
            .target("≤ 30 s", |r| r.value.map(|v| v <= 30.0 && complete))
            .note(format!(
                "{} joins, max {max:.1} s; includes the process's start",
                joins.len()
            )),
        );
    }

    /// The same burst over the same tenants on one exclusive replica, then on three.
    async fn replica_throughput(
        &mut self,
        postgres: &StoreChoice,
        jetpost: &Path,
    ) -> anyhow::Result<()> {
        let (tenants, events) = (self.sizes.replica_tenants, self.sizes.replica_events);
        let mut one_replica = None;
        for size in [1, REPLICAS] {
            self.say(format_args!(
                "replicas: throughput, {tenants} tenants on {size} replica(s)"
            ));
            let result =
                replicas::throughput(&self.env, postgres, tenants, events, size, jetpost).await?;
            let rate = result.throughput.map(|t| t.per_second);
            let mut row = Row::new(
                "replicas",
                format!(
                    "{tenants} tenants, {} events on {size} exclusive replica{} \
                     (Postgres), first publish → last webhook",
                    count(events as usize),
                    if size == 1 { "" } else { "s" }
                ),
                rate,
                "events/s",
            );
            if size == 1 {
                one_replica = rate;
            } else {
                row = row.against("1 replica", one_replica, "events/s");
            }
            if let Some(note) = result.shortfall() {
                row = row.note(note);
            }
            self.rows.push(row);
        }
        Ok(())
    }
}

/// A count for a metric's words: thousands separated, no decimals.
fn count(n: usize) -> String {
    if n >= 1000 {
        number(n as f64)
    } else {
        n.to_string()
    }
}
