//! `archgate replay`: what was set aside in `QUEUE.failed`, listed, or
//! moved back to `QUEUE` once its cause is mended, with the rights the
//! consumer itself has (docs/service.md, "Replaying what was set aside").
//!
//! The messages are taken from `QUEUE.failed` one by one and kept
//! unacknowledged; each one chosen is published to the exchange under the
//! replay key (which only `QUEUE` is bound to: archgate binds it), routed
//! and confirmed, and only then acknowledged in `QUEUE.failed`. The others
//! go back there when the channel closes. A crash in the middle leaves a
//! message in both queues at worst, never in neither.

use std::sync::Arc;

use anyhow::{bail, Result};
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Connection;

use crate::publisher::{Fate, Publisher};
use crate::ConsumeSpec;

/// What `archgate replay` is asked.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Only the messages of these composes (their `compose_id`); none: all.
    pub composes: Vec<String>,
    /// List them, move nothing.
    pub list: bool,
}

/// One message of `QUEUE.failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    /// Its `compose_id` (escaped), or `-` when its body has none.
    pub compose: String,
    /// Why it was set aside (`x-archgate-error`).
    pub reason: String,
    /// Moved back to the queue by this call.
    pub replayed: bool,
}

/// Lists, or moves back, what `QUEUE.failed` holds.
pub async fn replay(spec: &ConsumeSpec, opts: &ReplayOptions) -> Result<Vec<SetAside>> {
    let conn = crate::session::connect(spec, crate::session::tls_config(spec)?).await?;
    let result = move_back(&conn, spec, opts).await;
    let _ = conn.close(200, "archgate replay done".into()).await;
    result
}

async fn move_back(
    conn: &Arc<Connection>,
    spec: &ConsumeSpec,
    opts: &ReplayOptions,
) -> Result<Vec<SetAside>> {
    let failed = spec.failed_queue();
    let channel = conn.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let found = channel
        .queue_declare(failed.as_str().into(), passive, FieldTable::default())
        .await
        .map_err(|e| {
            crate::topology::step(
                &format!("find the queue {failed}"),
                &format!("read on `{failed}`"),
                e,
            )
        })?;
    let publisher = Publisher::open(conn).await?;
    if !opts.list {
        publisher
            .bind(&spec.queue.name, &spec.exchange, &spec.replay_key())
            .await?;
    }
    let mut out = Vec::new();
    // Every message there now, each once: those taken stay unacknowledged
    // on this channel until it closes.
    for _ in 0..found.message_count() {
        let Some(got) = channel
            .basic_get(failed.as_str().into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        let d = got.delivery;
        let compose = crate::messages::parse(&d.data)
            .map(|m| archgate_core::untrusted(&m.compose_id))
            .unwrap_or_else(|_| "-".into());
        let reason = match crate::retry::header(&d, crate::ERROR_HEADER) {
            Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            _ => String::new(),
        };
        let chosen = !opts.list && (opts.composes.is_empty() || opts.composes.contains(&compose));
        if chosen {
            let props = crate::retry::replay_properties(&d);
            match publisher
                .publish(&spec.exchange, &spec.replay_key(), &d.data, props)
                .await?
            {
                Fate::Routed => {
                    d.ack(BasicAckOptions::default()).await?;
                }
                Fate::Returned => bail!(
                    "no queue took the replay of {compose}: {} is not bound to {} with {}",
                    spec.queue.name,
                    spec.exchange,
                    spec.replay_key()
                ),
            }
        }
        out.push(SetAside {
            compose,
            reason,
            replayed: chosen,
        });
    }
    // What was not chosen goes back to QUEUE.failed with the channel.
    let _ = channel.close(200, "replay done".into()).await;
    publisher.close().await;
    Ok(out)
}
