//! What archgate needs on the broker, and the check that it has it, before
//! it takes a message: its exchanges, its queue and the two beside it
//! (`QUEUE.failed`, `QUEUE.retry`), the bindings, and the right to take
//! leases (docs/service.md, "Permissions"). Each step names what it needs:
//! a refusal (`ACCESS_REFUSED`, or with `passive_declares` something that
//! does not exist) is a [`Refused`] error, which `archgate consume` ends
//! with exit code 2, having taken nothing.

use anyhow::Result;
use lapin::options::{
    BasicConsumeOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ExchangeKind};

use crate::retry::{delay_queue, failed_queue};
use crate::{lease, ArgValue, ConsumeSpec};

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
fn step(what: &str, needs: &str, e: impl Into<anyhow::Error>) -> anyhow::Error {
    let e = e.into();
    match reply_code(&e) {
        Some(ACCESS_REFUSED) => Refused(format!(
            "the broker refused to {what}: archgate needs {needs} (docs/service.md, \"Permissions\"); the broker said: {e}"
        ))
        .into(),
        Some(NOT_FOUND) => Refused(format!(
            "cannot {what}: it does not exist, and passive_declares lets archgate declare nothing; the broker said: {e}"
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

/// The arguments of a queue beside the main one: its queue type, and for
/// the delay queue the way back.
pub(crate) fn side_arguments(spec: &ConsumeSpec, name: &str) -> FieldTable {
    let mut args = FieldTable::default();
    if let Some(kind) = spec.queue.arguments.get("x-queue-type") {
        let one = std::collections::BTreeMap::from([("x-queue-type".to_string(), kind.clone())]);
        args = table(&one);
    }
    if name == delay_queue(spec) {
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from("")),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(LongString::from(spec.queue.name.as_str())),
        );
    }
    args
}

/// Declares `QUEUE.failed` or `QUEUE.retry` (again, when a copy to it came
/// back): durable.
pub(crate) async fn declare_side_queue(
    channel: &Channel,
    spec: &ConsumeSpec,
    name: &str,
) -> Result<()> {
    let options = QueueDeclareOptions {
        durable: true,
        passive: spec.passive_declares,
        ..Default::default()
    };
    let needs = match name == delay_queue(spec) {
        true => {
            format!("configure on `{name}` and write on `amq.default` (its dead-letter exchange)")
        }
        false => format!("configure on `{name}`"),
    };
    channel
        .queue_declare(name.into(), options, side_arguments(spec, name))
        .await
        .map_err(|e| step(&format!("declare the queue {name}"), &needs, e))?;
    Ok(())
}

/// Declares (or with `passive_declares` finds) everything archgate uses,
/// and checks that it may take leases. Each step on a channel of its own:
/// a refusal closes the channel it came on.
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
    for name in [failed_queue(spec), delay_queue(spec)] {
        let channel = conn.create_channel().await?;
        declare_side_queue(&channel, spec, &name).await?;
        let _ = channel.close(200, "declared".into()).await;
    }
    if passive {
        tracing::info!(
            queue = %q.name,
            "passive_declares: exchanges and queues found; bindings are the broker's (AMQP cannot check them)"
        );
    } else {
        bind(conn, spec).await?;
    }
    check_leases(conn).await
}

async fn bind(conn: &Connection, spec: &ConsumeSpec) -> Result<()> {
    let channel = conn.create_channel().await?;
    let q = &spec.queue.name;
    for b in &spec.bindings {
        for key in &b.routing_keys {
            let what = format!("bind the queue {q} to {} with {key}", b.exchange);
            let needs = format!("write on `{q}` and read on `{}`", b.exchange);
            channel
                .queue_bind(
                    q.as_str().into(),
                    b.exchange.as_str().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| step(&what, &needs, e))?;
        }
    }
    let _ = channel.close(200, "bound".into()).await;
    Ok(())
}

/// A lease queue of its own declared, consumed from, given a token, and
/// deleted: what taking a lease needs (configure and read on
/// `archgate.lease.*`, write on `amq.default`).
async fn check_leases(conn: &Connection) -> Result<()> {
    let target = format!(
        "permission-check.{}.{}",
        crate::hostname(),
        std::process::id()
    );
    let name = lease::lease_queue(&target);
    let channel = conn.create_channel().await?;
    let needs_configure = "configure on `archgate.lease.*` (the lease queues)";
    lease::declare(&channel, &name).await.map_err(|e| {
        step(
            &format!("declare the lease queue {name}"),
            needs_configure,
            e,
        )
    })?;
    channel
        .basic_consume(
            name.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            step(
                &format!("consume from the lease queue {name}"),
                "read on `archgate.lease.*`",
                e,
            )
        })?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    lease::publish_token(&channel, &name).await.map_err(|e| {
        step(
            &format!("publish a lease token to {name}"),
            "write on `amq.default` (the default exchange)",
            e,
        )
    })?;
    channel
        .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await
        .map_err(|e| {
            step(
                &format!("delete the lease queue {name}"),
                needs_configure,
                e,
            )
        })?;
    let _ = channel.close(200, "checked".into()).await;
    Ok(())
}
