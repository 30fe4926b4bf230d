//! What archgate needs on the broker, and the check that it has it, before
//! it takes a message: its exchanges, its queue and `QUEUE.failed` beside
//! it (docs/service.md, "Permissions"). Where archgate may declare
//! (`passive-declares` off) it declares them; with passive declares, as on
//! Fedora's broker where an app has no configure right at all, it only
//! checks that they are there. Either way it binds its queue (its routing
//! keys, and the replay key) and `QUEUE.failed` (its own key) to the
//! exchange, as fedora-messaging binds even with passive declares: binding
//! needs write on the queue and read on the exchange, which Fedora's roles
//! give an app on the queues named after it. Each step names what it
//! needs: a refusal (`ACCESS_REFUSED`, or something that does not exist)
//! is a [`Refused`] error, which `archgate consume` ends with exit code 2,
//! having taken nothing.

use anyhow::Result;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ExchangeKind};

use crate::{ArgValue, ConsumeSpec};

/// A permission archgate lacks, or (passive declares) something that is
/// not there: the service cannot run as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// AMQP's reply codes for a refused access and a missing resource.
const ACCESS_REFUSED: u16 = 403;
const NOT_FOUND: u16 = 404;

fn reply_code(e: &anyhow::Error) -> Option<u16> {
    match e.downcast_ref::<lapin::Error>()?.kind() {
        lapin::ErrorKind::ProtocolError(p) => Some(p.get_id()),
        _ => None,
    }
}

/// One step of the set-up: `Err(Refused)` names the permission (or the
/// missing resource); any other failure is the broker's (connect again).
pub(crate) fn step(what: &str, needs: &str, e: impl Into<anyhow::Error>) -> anyhow::Error {
    let e = e.into();
    match reply_code(&e) {
        Some(ACCESS_REFUSED) => Refused(format!(
            "the broker refused to {what}: archgate needs {needs} (docs/service.md, \"Permissions\"); the broker said: {e}"
        ))
        .into(),
        Some(NOT_FOUND) => Refused(format!(
            "cannot {what}: it does not exist, and passive_declares lets archgate declare nothing (docs/service.md, \"Permissions\", says how an operator makes it); the broker said: {e}"
        ))
        .into(),
        _ => anyhow::anyhow!("cannot {what}: {e}"),
    }
}

pub(crate) fn table(args: &std::collections::BTreeMap<String, ArgValue>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in args {
        let v = match v {
            ArgValue::Str(s) => AMQPValue::LongString(LongString::from(s.as_str())),
            ArgValue::Int(i) => AMQPValue::LongLongInt(*i),
            ArgValue::Bool(b) => AMQPValue::Boolean(*b),
            ArgValue::Float(f) => AMQPValue::Double(*f),
        };
        t.insert(k.as_str().into(), v);
    }
    t
}

/// `QUEUE.failed`'s arguments: the queue type of the main queue, if any.
fn failed_arguments(spec: &ConsumeSpec) -> FieldTable {
    match spec.queue.arguments.get("x-queue-type") {
        Some(kind) => {
            let one =
                std::collections::BTreeMap::from([("x-queue-type".to_string(), kind.clone())]);
            table(&one)
        }
        None => FieldTable::default(),
    }
}

/// Declares `QUEUE.failed` (durable), or with passive declares checks
/// that it is there.
pub(crate) async fn declare_failed(channel: &Channel, spec: &ConsumeSpec) -> Result<()> {
    let name = spec.failed_queue();
    let options = QueueDeclareOptions {
        durable: true,
        passive: spec.passive_declares,
        ..Default::default()
    };
    channel
        .queue_declare(name.as_str().into(), options, failed_arguments(spec))
        .await
        .map_err(|e| {
            step(
                &format!("declare the queue {name}"),
                &format!("configure on `{name}`"),
                e,
            )
        })?;
    Ok(())
}

/// Declares (or with `passive_declares` finds) everything archgate uses,
/// and binds its queues. Each step on a channel of its own: a refusal
/// closes the channel it came on.
pub(crate) async fn prepare(conn: &Connection, spec: &ConsumeSpec) -> Result<()> {
    let passive = spec.passive_declares;
    for x in &spec.exchanges {
        if x.name.starts_with("amq.") || x.name.is_empty() {
            continue;
        }
        let channel = conn.create_channel().await?;
        let options = ExchangeDeclareOptions {
            passive,
            durable: x.durable,
            auto_delete: x.auto_delete,
            ..Default::default()
        };
        let kind = match x.kind.as_str() {
            "direct" => ExchangeKind::Direct,
            "fanout" => ExchangeKind::Fanout,
            "headers" => ExchangeKind::Headers,
            "topic" => ExchangeKind::Topic,
            other => ExchangeKind::Custom(other.into()),
        };
        let what = format!("declare the exchange {}", x.name);
        channel
            .exchange_declare(x.name.as_str().into(), kind, options, table(&x.arguments))
            .await
            .map_err(|e| step(&what, &format!("configure on `{}`", x.name), e))?;
        let _ = channel.close(200, "declared".into()).await;
    }
    let q = &spec.queue;
    let channel = conn.create_channel().await?;
    let options = QueueDeclareOptions {
        passive,
        durable: q.durable,
        auto_delete: q.auto_delete,
        exclusive: q.exclusive,
        nowait: false,
    };
    channel
        .queue_declare(q.name.as_str().into(), options, table(&q.arguments))
        .await
        .map_err(|e| {
            let needs = format!("configure on `{}`", q.name);
            step(&format!("declare the queue {}", q.name), &needs, e)
        })?;
    let _ = channel.close(200, "declared".into()).await;
    let channel = conn.create_channel().await?;
    declare_failed(&channel, spec).await?;
    let _ = channel.close(200, "declared".into()).await;
    bind(conn, spec).await?;
    if passive {
        tracing::info!(
            queue = %q.name,
            failed = %spec.failed_queue(),
            "passive_declares: the exchanges and queues are there; archgate declares nothing"
        );
    }
    Ok(())
}

/// Every binding archgate's queues need: the queue's routing keys and the
/// replay key, `QUEUE.failed`'s own key.
async fn bind(conn: &Connection, spec: &ConsumeSpec) -> Result<()> {
    let q = spec.queue.name.clone();
    let mut wanted: Vec<(String, String, String)> = Vec::new();
    for b in &spec.bindings {
        for key in &b.routing_keys {
            wanted.push((q.clone(), b.exchange.clone(), key.clone()));
        }
    }
    wanted.push((q.clone(), spec.exchange.clone(), spec.replay_key()));
    wanted.push((
        spec.failed_queue(),
        spec.exchange.clone(),
        spec.failed_key(),
    ));
    let channel = conn.create_channel().await?;
    for (queue, exchange, key) in wanted {
        let what = format!("bind the queue {queue} to {exchange} with {key}");
        let needs = format!("write on `{queue}` and read on `{exchange}`");
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| step(&what, &needs, e))?;
    }
    let _ = channel.close(200, "bound".into()).await;
    Ok(())
}
