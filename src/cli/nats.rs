//! `jetpost nats …` and `jetpost accounts check`: the operator's helpers around NATS.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::source::nats::{accounts_dir, topology};

/// Connects to `server` (comma-separated URLs) as the user of `creds`, if given.
pub async fn connect(server: &str, creds: Option<&Path>) -> anyhow::Result<async_nats::Client> {
    let mut options = async_nats::ConnectOptions::new()
        .name("jetpost-cli")
        .connection_timeout(Duration::from_secs(5));
    if let Some(path) = creds {
        options = options.credentials_file(path).await.with_context(|| {
            format!(
                "--creds {}: cannot be read as a NATS credentials file",
                path.display()
            )
        })?;
    }
    let servers: Vec<&str> = server
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    options
        .connect(servers.as_slice())
        .await
        .with_context(|| format!("cannot connect to {server}"))
}

pub async fn declare(
    client: async_nats::Client,
    declaration: topology::Declaration,
) -> anyhow::Result<ExitCode> {
    let js = async_nats::jetstream::new(client);
    let report = topology::declare(&js, &declaration)
        .await
        .map_err(anyhow::Error::msg)?;
    for line in report {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Where `jetpost nats publish` takes the event from.
pub enum Body {
    Inline(String),
    File(PathBuf),
    Stdin,
}

impl Body {
    pub fn read(self) -> anyhow::Result<Vec<u8>> {
        Ok(match self {
            Body::Inline(text) => text.into_bytes(),
            Body::File(path) => {
                std::fs::read(&path).with_context(|| format!("--file {}", path.display()))?
            }
            Body::Stdin => {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                    .context("reading standard input")?;
                buf
            }
        })
    }
}

/// Publishes `count` copies of `body`, waiting for every JetStream ack, at most `rate` per second.
pub async fn publish(
    client: async_nats::Client,
    subject: &str,
    body: Vec<u8>,
    count: u64,
    rate: Option<u64>,
) -> anyhow::Result<ExitCode> {
    const WINDOW: usize = 1024;
    let js = async_nats::jetstream::new(client);
    let body = bytes::Bytes::from(body);
    let progress = (count >= 1000).then(|| {
        let bar = indicatif::ProgressBar::new(count);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut pacer = rate
        .filter(|r| *r > 0)
        .map(|r| tokio::time::interval(Duration::from_secs_f64(1.0 / r as f64)));
    let started = Instant::now();
    let mut acks = FuturesUnordered::new();
    let (mut acked, mut last_seq, mut stream) = (0u64, 0u64, String::new());
    let mut record = |ack: async_nats::jetstream::publish::PublishAck| {
        acked += 1;
        last_seq = ack.sequence;
        stream = ack.stream;
        if let Some(bar) = &progress {
            bar.inc(1);
        }
    };
    for _ in 0..count {
        if let Some(pacer) = pacer.as_mut() {
            pacer.tick().await;
        }
        let ack = js
            .publish(subject.to_owned(), body.clone())
            .await
            .with_context(|| format!("publishing to {subject}"))?;
        acks.push(ack.into_future());
        while acks.len() >= WINDOW {
            if let Some(ack) = acks.next().await {
                record(ack.with_context(|| {
                    format!("no JetStream ack for {subject}: is a stream bound to it?")
                })?);
            }
        }
    }
    while let Some(ack) = acks.next().await {
        record(ack.with_context(|| {
            format!("no JetStream ack for {subject}: is a stream bound to it?")
        })?);
    }
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    println!(
        "published {acked} message(s) to {subject} (stream {stream}, last sequence {last_seq}) in {elapsed:.2}s, {:.0} msgs/s",
        acked as f64 / elapsed
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn aggregate(
    client: async_nats::Client,
    stream: &str,
    source: topology::TenantSource,
    add: bool,
) -> anyhow::Result<ExitCode> {
    let js = async_nats::jetstream::new(client);
    let line = if add {
        topology::add_tenant_source(&js, stream, &source).await
    } else {
        topology::remove_tenant_source(&js, stream, &source).await
    };
    println!("{}", line.map_err(anyhow::Error::msg)?);
    Ok(ExitCode::SUCCESS)
}

/// Prints the accounts directory as `serve` would load it; exit 1 if any account is invalid.
pub fn check_accounts(dir: &Path) -> anyhow::Result<ExitCode> {
    let scan = accounts_dir::scan(dir).map_err(anyhow::Error::msg)?;
    if scan.accounts.is_empty() && scan.problems.is_empty() {
        bail!(
            "{}: no account directories (each needs a meta.yaml)",
            dir.display()
        );
    }
    let mut rows =
        vec![["NAME", "TENANT", "STREAM", "CONSUMER", "CREDS", "PROBLEMS"].map(String::from)];
    for a in &scan.accounts {
        let creds = a
            .credentials_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "-".into());
        rows.push([
            a.name.clone(),
            a.tenant_label(),
            a.stream.clone(),
            a.consumer.clone(),
            creds,
            "-".into(),
        ]);
    }
    for p in &scan.problems {
        rows.push([
            p.dir.clone(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            p.error.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
    if scan.problems.is_empty() {
        println!("{} account(s), all valid", scan.accounts.len());
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "{} valid, {} invalid",
            scan.accounts.len(),
            scan.problems.len()
        );
        Ok(ExitCode::from(1))
    }
}
