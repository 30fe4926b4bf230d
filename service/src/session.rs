//! One connection to the broker: connect, find (or declare) the topology,
//! become the queue's one active consumer or stand by until it can, take
//! deliveries (each handled by a task of its own), and stop.
//!
//! **One active consumer.** archgate consumes its queue *exclusively*: the
//! broker lets one consumer at a time take from it, and refuses the others
//! (`ACCESS_REFUSED`, "in exclusive use"). That needs no right beyond
//! reading the queue. A replica that is refused stands by: it looks at the
//! queue's consumer count now and then (a passive declare, which the
//! broker logs nothing for) and tries again once the queue has none. So
//! two replicas never run at once, and when the active one dies (its
//! connection closes) a standby takes over by itself. Within the active
//! process, runs of one target go one at a time.
//!
//! **A session that breaks stops its runs.** When the connection, a
//! channel or the consumer breaks, the broker hands every unacknowledged
//! message to the next consumer. Every run of this session is then
//! stopped at once: its fence trips (no request of it reaches a registry
//! any more, one in flight is dropped) and its task is aborted, before
//! this process connects again. A consumer that takes over messages
//! another one had (delivered again) waits `takeover-grace` after it
//! became active before it runs anything: a consumer cut off from the
//! broker learns it from the missed heartbeats at about the time the
//! broker does, and stops writing then.
//!
//! A session ends with `Ok` on the shutdown, once the current messages
//! have ended, and with `Err` when the connection, a channel or the
//! consumer broke, or when a delivery could not be ended on its channel.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use archgate_native::Fence;
use futures_util::StreamExt;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::{mpsc, watch};

use crate::delivery::{Ctx, Takeover};
use crate::publisher::Publisher;
use crate::{redact_url, ConsumeSpec, Service};

/// How often a session looks at its channels, and a standby at the queue.
const TICK: Duration = Duration::from_secs(5);

pub(crate) fn tls_config(spec: &ConsumeSpec) -> Result<OwnedTLSConfig> {
    let read =
        |p: &PathBuf| std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()));
    let cert_chain = match &spec.ca_file {
        Some(p) => Some(
            String::from_utf8(read(p)?)
                .with_context(|| format!("{}: not PEM text", p.display()))?,
        ),
        None => None,
    };
    let identity = match (&spec.client_cert, &spec.client_key) {
        (Some(c), Some(k)) => Some(OwnedIdentity::PKCS8 {
            pem: read(c)?,
            key: read(k)?,
        }),
        (None, None) => None,
        _ => bail!("client-cert and client-key go together"),
    };
    Ok(OwnedTLSConfig {
        identity,
        cert_chain,
    })
}

/// Resolves once the shutdown has come (or can no longer come).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// One connection: prepare, consume, handle, until a shutdown (`Ok`) or a
/// broken connection, channel or delivery (`Err`). The shutdown is
/// watched from the first moment: while connecting and preparing too.
pub(crate) async fn session(
    service: &Arc<Service>,
    tls: OwnedTLSConfig,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<()> {
    let spec = &service.spec;
    let mut watch = shutdown.clone();
    let connecting = async {
        let conn = connect(spec, tls).await?;
        crate::topology::prepare(&conn, spec).await?;
        Ok::<_, anyhow::Error>(conn)
    };
    let conn = tokio::select! {
        conn = connecting => conn?,
        _ = stopped(&mut watch) => return Ok(()),
    };
    let result = consume_on(service, &conn, shutdown).await;
    // Whatever ended the session, the connection goes: what it still had
    // unacknowledged goes back to the broker.
    let _ = conn.close(200, "archgate consume stopping".into()).await;
    result
}

/// A connection to the broker, as `spec` says (URL, TLS, client
/// properties).
pub(crate) async fn connect(spec: &ConsumeSpec, tls: OwnedTLSConfig) -> Result<Arc<Connection>> {
    let conn = Connection::connect_uri_with_config(
        amqp_uri(spec)?,
        connection_properties(spec),
        tls,
        async_rs::Runtime::tokio_current(),
    )
    .await
    .map_err(|e| anyhow!("cannot connect to {}: {e}", redact_url(&spec.amqp_url)))?;
    Ok(Arc::new(conn))
}

/// Whether the broker refused a consumer because another one consumes the
/// queue exclusively.
fn exclusive_use(e: &lapin::Error) -> bool {
    e.to_string().contains("in exclusive use")
}

/// The queue's consumer, exclusive: `Ok(None)` after a shutdown that came
/// while standing by.
async fn become_active(
    service: &Arc<Service>,
    conn: &Connection,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<(Channel, lapin::Consumer, String)>> {
    let spec = &service.spec;
    let q = spec.queue.name.as_str();
    let tag = format!("archgate-{}-{}", crate::hostname(), std::process::id());
    let mut told = false;
    loop {
        let channel = conn.create_channel().await?;
        channel
            .basic_qos(spec.prefetch, BasicQosOptions::default())
            .await?;
        let exclusive = BasicConsumeOptions {
            exclusive: true,
            ..Default::default()
        };
        match channel
            .basic_consume(
                q.into(),
                tag.as_str().into(),
                exclusive,
                FieldTable::default(),
            )
            .await
        {
            Ok(consumer) => return Ok(Some((channel, consumer, tag))),
            Err(e) if exclusive_use(&e) => {}
            Err(e) => {
                return Err(crate::topology::step(
                    &format!("consume from the queue {q}"),
                    &format!("read on `{q}`"),
                    e,
                ))
            }
        }
        service.metrics.set_standby();
        if !told {
            tracing::info!(
                queue = q,
                "standing by: another consumer is active on {q}; taking over when it goes"
            );
            told = true;
        }
        // Stand by until the queue has no consumer: a passive declare,
        // which the broker answers without an error.
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = stopped(shutdown) => return Ok(None),
            }
            service.metrics.progress();
            let channel = conn.create_channel().await?;
            let passive = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            let found = channel
                .queue_declare(q.into(), passive, FieldTable::default())
                .await?;
            let _ = channel.close(200, "looked".into()).await;
            if found.consumer_count() == 0 {
                break;
            }
        }
    }
}

async fn consume_on(
    service: &Arc<Service>,
    conn: &Arc<Connection>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<()> {
    let spec = &service.spec;
    let publisher = Arc::new(Publisher::open(conn).await?);
    let Some((channel, consumer, tag)) = become_active(service, conn, shutdown).await? else {
        publisher.close().await;
        return Ok(());
    };
    let heartbeat = Duration::from_secs(u64::from(conn.configuration().heartbeat()));
    let takeover = Arc::new(Takeover::new(spec.takeover_grace.unwrap_or(heartbeat)));
    service.metrics.set_active();
    crate::notify::notify("READY=1\nSTATUS=consuming");
    tracing::info!(queue = %spec.queue.name, prefetch = spec.prefetch, concurrency = spec.concurrency, "consuming (the active consumer)");
    // Every run of this session is fenced: a broken session trips it.
    let fence = Fence::new();
    let (broken_tx, broken) = mpsc::unbounded_channel();
    let mut running = tokio::task::JoinSet::new();
    let taking = Taking {
        ctx: Ctx {
            service: service.clone(),
            publisher: publisher.clone(),
            fence: fence.clone(),
            shutdown: shutdown.clone(),
            takeover,
            broken: broken_tx,
        },
        channel: &channel,
        events: conn.events_listener().boxed(),
        broken,
        running: &mut running,
    };
    let stopped = take_messages(taking, consumer, shutdown).await;
    match stopped {
        Err(_) => {
            // The broker hands this session's messages to the next
            // consumer: their runs stop here and now, before anything
            // else happens in this process.
            fence.trip();
            service.metrics.set_connected(false);
            running.abort_all();
            while running.join_next().await.is_some() {}
        }
        Ok(()) => {
            crate::notify::notify("STOPPING=1\nSTATUS=finishing the current messages");
            // Stop taking messages; let the current runs finish and end
            // theirs (those waiting for their next try go back now).
            tracing::info!(
                running = running.len(),
                "stopping: no new messages; finishing the current ones"
            );
            let _ = channel
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await;
            drain(service, conn, &channel, &fence, &mut running).await;
            service.metrics.set_connected(false);
        }
    }
    // Closed here, before the connection: a channel left to close itself
    // when dropped would race the connection's close.
    publisher.close().await;
    let _ = channel.close(200, "archgate consume stopping".into()).await;
    stopped
}

/// Waits for the current runs to end their messages; if the connection
/// breaks meanwhile, their messages went back to the broker, and the runs
/// stop as in a session that broke.
async fn drain(
    service: &Arc<Service>,
    conn: &Connection,
    channel: &Channel,
    fence: &Fence,
    running: &mut tokio::task::JoinSet<()>,
) {
    let mut events = conn.events_listener().boxed();
    let mut tick = tokio::time::interval(TICK);
    loop {
        let broke = tokio::select! {
            done = running.join_next() => match done {
                None => return,
                Some(_) => false,
            },
            _ = tick.tick() => {
                service.metrics.idle_tick();
                !conn.status().connected() || !channel.status().connected()
            }
            Some(event) = events.next() => matches!(event, lapin::Event::Error(_)),
        };
        if broke {
            tracing::warn!("the connection broke while stopping: the current runs stop");
            fence.trip();
            running.abort_all();
        }
    }
}

/// The broker URL as lapin takes it: the password from
/// `amqp-password-file`/`-env` in place of one in the URL, and SASL
/// EXTERNAL where a client certificate is given and no password (as
/// fedora-messaging does: Fedora's broker takes the user from the
/// certificate).
fn amqp_uri(spec: &ConsumeSpec) -> Result<lapin::uri::AMQPUri> {
    use lapin::uri::{AMQPUri, SASLMechanism};
    let redacted = redact_url(&spec.amqp_url);
    let mut uri: AMQPUri = spec
        .amqp_url
        .parse()
        .map_err(|e| anyhow!("amqp-url {redacted}: {e}"))?;
    let in_url = url::Url::parse(&spec.amqp_url)
        .map(|u| u.password().is_some())
        .unwrap_or(false);
    if let Some(password) = &spec.amqp_password {
        uri.authority.userinfo.password = password.clone();
    }
    let password = in_url || spec.amqp_password.is_some();
    if spec.client_cert.is_some() && !password && uri.query.auth_mechanism.is_none() {
        uri.query.auth_mechanism = Some(SASLMechanism::External);
    }
    Ok(uri)
}

/// The client properties the broker shows: `app` (default `archgate`),
/// `app_version`, `hostname`, `connection_name`, and those configured.
fn connection_properties(spec: &ConsumeSpec) -> ConnectionProperties {
    let host = crate::hostname();
    let mut props = BTreeMap::from([
        ("app".to_string(), "archgate".to_string()),
        (
            "app_version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        ("hostname".to_string(), host.clone()),
        (
            "connection_name".to_string(),
            format!("archgate consume on {host} (pid {})", std::process::id()),
        ),
    ]);
    props.extend(spec.client_properties.clone());
    let mut out = ConnectionProperties::default();
    for (k, v) in props {
        out = out.with_client_property(k.as_str().into(), v.as_str().into());
    }
    out
}

/// What taking messages needs.
struct Taking<'a> {
    /// What each delivery's task is handed (cloned).
    ctx: Ctx,
    /// Watched at every tick: a closed one ends the session.
    channel: &'a Channel,
    /// The connection's events: an error ends the session at once.
    events: futures_util::stream::BoxStream<'static, lapin::Event>,
    broken: mpsc::UnboundedReceiver<String>,
    running: &'a mut tokio::task::JoinSet<()>,
}

/// Hands every delivery to a task of its own, until the shutdown (`Ok`) or
/// a broken connection, consumer, channel or delivery (`Err`).
async fn take_messages(
    taking: Taking<'_>,
    mut consumer: lapin::Consumer,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<()> {
    let Taking {
        ctx,
        channel,
        mut events,
        mut broken,
        running,
    } = taking;
    let metrics = ctx.service.metrics.clone();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = stopped(shutdown) => return Ok(()),
            _ = tick.tick() => {
                metrics.idle_tick();
                if !channel.status().connected() || !ctx.publisher.connected() {
                    bail!("a channel to the broker is closed");
                }
            }
            Some(event) = events.next() => {
                if let lapin::Event::Error(e) = event {
                    bail!("the connection broke: {e}");
                }
            }
            Some(why) = broken.recv() => bail!("{why}"),
            delivery = consumer.next() => match delivery {
                Some(Ok(delivery)) => {
                    metrics.progress();
                    running.spawn(crate::delivery::handle(ctx.clone(), delivery));
                }
                Some(Err(e)) => return Err(e.into()),
                None => bail!("the broker cancelled the consumer"),
            },
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Err(e) = done {
                    // `handle` catches panics: this is a task aborted.
                    tracing::error!("a message's task stopped: {e}");
                }
            }
        }
    }
}
