//! Trying again, and setting aside: attempts counted, the error's kind
//! weighed, and the copies archgate publishes of a message.
//!
//! - A retry is a copy published to the delay queue `QUEUE.retry`, whose
//!   messages expire after `retry-delay` and are dead-lettered back to
//!   `QUEUE`: the original is acknowledged at once, so the consumer's
//!   prefetch slot is free meanwhile.
//! - Setting aside is a copy published to `QUEUE.failed`, with the reason.
//! - Every copy is `mandatory` and confirmed; the original is acknowledged
//!   only once its copy was routed. A copy the broker returns (its queue
//!   is gone) makes archgate declare the queue again and publish once more;
//!   if that fails too, the original is handed back to the broker.

use std::time::Duration;

use anyhow::{bail, Result};
use archgate_core::ErrorKind;
use lapin::message::Delivery;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel};

use crate::ConsumeSpec;

/// The header that counts failed attempts on a copy sent back for a retry.
pub const ATTEMPTS_HEADER: &str = "x-archgate-attempts";
/// The header that counts the times a message found its targets' leases
/// held by other consumers for longer than `lease-wait`.
pub const BUSY_HEADER: &str = "x-archgate-busy";
/// The header that says why a message was set aside.
pub const ERROR_HEADER: &str = "x-archgate-error";
/// The routing key the message first came with.
const ROUTING_KEY_HEADER: &str = "x-archgate-routing-key";

/// Where failed messages are set aside.
pub(crate) fn failed_queue(spec: &ConsumeSpec) -> String {
    format!("{}.failed", spec.queue.name)
}

/// Where retries wait for `retry-delay`.
pub(crate) fn delay_queue(spec: &ConsumeSpec) -> String {
    format!("{}.retry", spec.queue.name)
}

/// Whether an error of this kind can be mended by trying again: not a
/// registry that refuses the credentials or the push, not a bad
/// configuration.
pub(crate) fn worth_retrying(kind: ErrorKind) -> bool {
    !matches!(kind, ErrorKind::Auth | ErrorKind::Config)
}

fn header<'a>(delivery: &'a Delivery, name: &str) -> Option<&'a AMQPValue> {
    delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name))
}

fn count(delivery: &Delivery, name: &str) -> u32 {
    match header(delivery, name) {
        Some(AMQPValue::LongLongInt(n)) => (*n).clamp(0, i64::from(u32::MAX)) as u32,
        Some(AMQPValue::LongInt(n)) => (*n).max(0) as u32,
        Some(AMQPValue::LongUInt(n)) => *n,
        Some(AMQPValue::ShortInt(n)) => (*n).max(0) as u32,
        Some(AMQPValue::ShortShortInt(n)) => (*n).max(0) as u32,
        _ => 0,
    }
}

/// The attempts a message has had before this one: those its header
/// counts, and those the broker delivered it again for (a consumer died,
/// or the broker's `consumer_timeout` took it back, in the middle of one):
/// a quorum queue counts them (`x-delivery-count`); a classic queue only
/// says it was (`redelivered`), which counts one.
pub(crate) fn attempts_so_far(delivery: &Delivery) -> u32 {
    let again = count(delivery, "x-delivery-count").max(u32::from(delivery.redelivered));
    count(delivery, ATTEMPTS_HEADER).saturating_add(again)
}

/// The times this message waited too long for leases before.
pub(crate) fn busy_so_far(delivery: &Delivery) -> u32 {
    count(delivery, BUSY_HEADER)
}

/// A copy of the message for the delay queue: it comes back to the queue
/// after `retry-delay`, counting `attempts` and `busy`.
pub(crate) async fn send_back(
    channel: &Channel,
    spec: &ConsumeSpec,
    delivery: &Delivery,
    attempts: u32,
    busy: u32,
) -> Result<()> {
    let props = copy_properties(
        delivery,
        vec![
            (ATTEMPTS_HEADER, AMQPValue::LongLongInt(i64::from(attempts))),
            (BUSY_HEADER, AMQPValue::LongLongInt(i64::from(busy))),
        ],
    )
    .with_expiration(spec.retry_delay.as_millis().max(1).to_string().into());
    let queue = delay_queue(spec);
    copy(channel, spec, &queue, delivery, props).await
}

/// A copy of the message in `QUEUE.failed`, saying why.
pub(crate) async fn set_aside(
    channel: &Channel,
    spec: &ConsumeSpec,
    delivery: &Delivery,
    why: &str,
) -> Result<()> {
    let props = copy_properties(
        delivery,
        vec![(ERROR_HEADER, AMQPValue::LongString(LongString::from(why)))],
    );
    let queue = failed_queue(spec);
    copy(channel, spec, &queue, delivery, props).await
}

/// Publishes a copy to `queue`, routed and confirmed; a copy returned for
/// want of its queue declares the queue again and goes once more.
async fn copy(
    channel: &Channel,
    spec: &ConsumeSpec,
    queue: &str,
    delivery: &Delivery,
    props: BasicProperties,
) -> Result<()> {
    for last in [false, true] {
        let routed = publish_mandatory(channel, "", queue, &delivery.data, props.clone()).await?;
        if routed {
            return Ok(());
        }
        if last {
            break;
        }
        tracing::warn!(queue, "the queue is gone; declaring it again");
        crate::topology::declare_side_queue(channel, spec, queue).await?;
    }
    bail!("the broker could not route a copy to {queue}")
}

/// Publishes `mandatory` and waits for the broker's confirmation: `true`
/// routed, `false` returned (no queue took it); `Err` when the broker
/// refused it or the channel broke.
pub(crate) async fn publish_mandatory(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<bool> {
    let options = BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            options,
            body,
            properties,
        )
        .await?
        .await?;
    match confirm {
        Confirmation::Ack(None) => Ok(true),
        Confirmation::Ack(Some(_)) => Ok(false),
        Confirmation::Nack(_) => bail!("the broker refused a message to {routing_key}"),
        Confirmation::NotRequested => bail!("internal error: no publisher confirms"),
    }
}

/// The original's properties with `extra` headers, persistent; the
/// broker's own dead-letter history and delivery count dropped (the count
/// is archgate's, in `x-archgate-attempts`).
fn copy_properties(delivery: &Delivery, extra: Vec<(&str, AMQPValue)>) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(h) = delivery.properties.headers() {
        for (k, v) in h.inner() {
            let broker_kept = [
                "x-death",
                "x-first-death",
                "x-last-death",
                "x-delivery-count",
            ];
            if !broker_kept.iter().any(|p| k.as_str().starts_with(p)) {
                headers.insert(k.clone(), v.clone());
            }
        }
    }
    if header(delivery, ROUTING_KEY_HEADER).is_none() {
        headers.insert(
            ShortString::from(ROUTING_KEY_HEADER),
            AMQPValue::LongString(LongString::from(delivery.routing_key.as_str())),
        );
    }
    for (k, v) in extra {
        headers.insert(ShortString::from(k), v);
    }
    delivery
        .properties
        .clone()
        .with_headers(headers)
        .with_delivery_mode(2)
}

/// `retry-delay` for messages.
pub(crate) fn delay_text(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
