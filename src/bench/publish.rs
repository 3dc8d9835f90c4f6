//! Publishing benchmark events into a tenant's JetStream stream: as fast as acks allow (a window
//! of outstanding acks) or paced at a fixed rate, stamping each event's publish time in the
//! [`Tally`]. Every event carries a 300-byte `data` object and an id naming its sequence number.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, context::PublishAckFuture};
use bytes::Bytes;

use super::tally::{Tally, event_id};

/// The subject benchmark events are published to (the streams take `events.>`).
pub const SUBJECT: &str = "events.bench";
/// The topic of every benchmark event.
pub const TOPIC: &str = "bench.event";
/// Size of the `data` object of every event, in bytes.
pub const DATA_BYTES: usize = 300;
/// Outstanding publish acks per publisher in a burst.
pub const ACK_WINDOW: usize = 1024;

/// The event JSON for `seq`: `{"id":…,"topic":…,"data":{"pad":"…"}}` with a 300-byte `data`.
pub fn event_body(seq: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"id":"{}","topic":"{TOPIC}","data":{}}}"#,
        event_id(seq),
        data_object()
    ))
}

/// The same event with a `tenant_id`, as the HTTP publish API and `Ingest::accept` take it.
pub fn event_body_for(tenant: &str, seq: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"id":"{}","tenant_id":"{tenant}","topic":"{TOPIC}","data":{}}}"#,
        event_id(seq),
        data_object()
    ))
}

/// A 300-byte JSON object.
pub fn data_object() -> &'static str {
    static DATA: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DATA.get_or_init(|| {
        // `{"pad":"` + pad + `"}`
        let pad = "x".repeat(DATA_BYTES - 10);
        format!(r#"{{"pad":"{pad}"}}"#)
    })
}

/// Publishes `seqs` as fast as JetStream acks them (at most [`ACK_WINDOW`] outstanding).
pub async fn burst(js: &jetstream::Context, tally: &Tally, seqs: Range<u64>) -> anyhow::Result<()> {
    let mut acks: VecDeque<PublishAckFuture> = VecDeque::with_capacity(ACK_WINDOW);
    for seq in seqs {
        if acks.len() >= ACK_WINDOW
            && let Some(ack) = acks.pop_front()
        {
            ack.await.context("JetStream refused a benchmark event")?;
        }
        tally.published(seq);
        let ack = js
            .publish(SUBJECT, event_body(seq))
            .await
            .context("publishing a benchmark event")?;
        acks.push_back(ack);
    }
    for ack in acks {
        ack.await.context("JetStream refused a benchmark event")?;
    }
    Ok(())
}

/// Publishes `seqs` at `per_second`, each at its scheduled instant (acks awaited on the side, so
/// a slow ack does not delay the next event).
pub async fn paced(
    js: &jetstream::Context,
    tally: Arc<Tally>,
    seqs: Range<u64>,
    per_second: f64,
) -> anyhow::Result<()> {
    let (ack_tx, mut ack_rx) = tokio::sync::mpsc::channel::<PublishAckFuture>(ACK_WINDOW);
    let acks = tokio::spawn(async move {
        while let Some(ack) = ack_rx.recv().await {
            ack.await.context("JetStream refused a benchmark event")?;
        }
        anyhow::Ok(())
    });
    let interval = Duration::from_secs_f64(1.0 / per_second.max(0.001));
    let start = tokio::time::Instant::now();
    for (i, seq) in seqs.enumerate() {
        tokio::time::sleep_until(start + interval.mul_f64(i as f64)).await;
        tally.published(seq);
        let ack = js
            .publish(SUBJECT, event_body(seq))
            .await
            .context("publishing a benchmark event")?;
        if ack_tx.send(ack).await.is_err() {
            break;
        }
    }
    drop(ack_tx);
    acks.await.context("the ack task failed")??;
    Ok(())
}

/// `total` sequence numbers starting at `first`, split into `parts` contiguous ranges whose
/// sizes differ by at most one.
pub fn split(first: u64, total: u64, parts: usize) -> Vec<Range<u64>> {
    let parts = parts.max(1) as u64;
    let (base, extra) = (total / parts, total % parts);
    let mut start = first;
    (0..parts)
        .map(|i| {
            let len = base + u64::from(i < extra);
            let range = start..start + len;
            start += len;
            range
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_a_300_byte_data_object_and_their_id() {
        assert_eq!(data_object().len(), DATA_BYTES);
        let body: serde_json::Value = serde_json::from_slice(&event_body(7)).unwrap();
        assert_eq!(body["id"], "bench-7");
        assert_eq!(body["topic"], TOPIC);
        let with_tenant: serde_json::Value =
            serde_json::from_slice(&event_body_for("t1", 8)).unwrap();
        assert_eq!(with_tenant["tenant_id"], "t1");
    }

    #[test]
    fn split_covers_every_sequence_once() {
        let parts = split(10, 11, 3);
        assert_eq!(parts, vec![10..14, 14..18, 18..21]);
        assert_eq!(split(0, 5, 1), vec![0..5]);
        assert_eq!(
            split(0, 2, 4).iter().map(|r| r.end - r.start).sum::<u64>(),
            2
        );
    }
}
