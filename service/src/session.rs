//! One connection to the broker: connect, declare the topology, take
//! deliveries (each handled by a task of its own), and stop. A session ends
//! with `Ok` on the shutdown, once the current messages have ended, and
//! with `Err` when the connection, a channel or the consumer broke, or when
//! a delivery could not be ended on its channel: the connection is then
//! closed, so that the broker hands every unacknowledged message to
//! another consumer (or to this one, connected again).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::{mpsc, watch};

use crate::delivery::Taken;
use crate::lease::BrokerLeases;
use crate::{redact_url, ConsumeSpec, Service};

/// How often a session looks at its channels and says it makes progress.
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

/// One connection: declare, consume, handle, until a shutdown (`Ok`) or a
/// broken connection, channel or delivery (`Err`).
pub(crate) async fn session(
    service: &Arc<Service>,
    tls: OwnedTLSConfig,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<()> {
    let spec = &service.spec;
    let conn = Arc::new(
        Connection::connect_uri_with_config(
            amqp_uri(spec)?,
            connection_properties(spec),
            tls,
            async_rs::Runtime::tokio_current(),
        )
        .await
        .map_err(|e| anyhow!("cannot connect to {}: {e}", redact_url(&spec.amqp_url)))?,
    );
    let result = match crate::topology::prepare(&conn, spec).await {
        Ok(()) => consume_on(service, &conn, shutdown).await,
        Err(e) => Err(e),
    };
    // Whatever ended the session, the connection goes: what it still had
    // unacknowledged goes back to the broker, and the leases with it.
    let _ = conn.close(200, "archgate consume stopping".into()).await;
    result
}

async fn consume_on(
    service: &Arc<Service>,
    conn: &Arc<Connection>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<()> {
    let spec = &service.spec;
    let channel = conn.create_channel().await?;
    channel
        .basic_qos(spec.prefetch, BasicQosOptions::default())
        .await?;
    let publisher = conn.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let tag = format!("archgate-{}", std::process::id());
    let consumer = channel
        .basic_consume(
            spec.queue.name.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    service.metrics.set_connected(true);
    crate::notify::notify("READY=1\nSTATUS=consuming");
    tracing::info!(queue = %spec.queue.name, prefetch = spec.prefetch, "consuming");
    // Leases live on this connection: if it dies, the broker frees them.
    let leases = Arc::new(BrokerLeases {
        conn: conn.clone(),
        wait: spec.lease_wait,
        metrics: service.metrics.clone(),
        shutdown: shutdown.clone(),
    });
    let (broken_tx, broken) = mpsc::unbounded_channel();
    let mut running = tokio::task::JoinSet::new();
    let taking = Taking {
        service,
        channels: [&channel, &publisher],
        publisher: &publisher,
        leases: &leases,
        broken_tx,
        broken,
        running: &mut running,
    };
    let stopped = take_messages(taking, consumer, shutdown).await;
    service.metrics.set_connected(false);
    match stopped {
        // The messages of the runs still going are handed back with the
        // connection; the runs stop here.
        Err(_) => running.abort_all(),
        Ok(()) => {
            crate::notify::notify("STOPPING=1\nSTATUS=finishing the current messages");
            // Stop taking messages; let the current runs finish and end theirs.
            tracing::info!(
                running = running.len(),
                "stopping: no new messages; finishing the current ones"
            );
            let _ = channel
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await;
            while running.join_next().await.is_some() {}
        }
    }
    // Closed here, before the connection: a channel left to close itself
    // when dropped would race the connection's close.
    for c in [&publisher, &channel] {
        let _ = c.close(200, "archgate consume stopping".into()).await;
    }
    stopped
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
    service: &'a Arc<Service>,
    /// Watched at every tick: a closed one ends the session.
    channels: [&'a Channel; 2],
    publisher: &'a Channel,
    leases: &'a Arc<BrokerLeases>,
    /// Given to each delivery's task, to say its channel broke.
    broken_tx: mpsc::UnboundedSender<String>,
    broken: mpsc::UnboundedReceiver<String>,
    running: &'a mut tokio::task::JoinSet<()>,
}

/// Hands every delivery to a task of its own, until the shutdown (`Ok`) or
/// a broken consumer, channel or delivery (`Err`).
async fn take_messages(
    taking: Taking<'_>,
    mut consumer: lapin::Consumer,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<()> {
    let Taking {
        service,
        channels,
        publisher,
        leases,
        broken_tx,
        mut broken,
        running,
    } = taking;
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            _ = tick.tick() => {
                service.metrics.progress();
                if let Some(c) = channels.iter().find(|c| !c.status().connected()) {
                    bail!("channel {} is closed", c.id());
                }
            }
            Some(why) = broken.recv() => bail!("{why}"),
            delivery = consumer.next() => match delivery {
                Some(Ok(delivery)) => {
                    service.metrics.progress();
                    let taken = Taken {
                        service: service.clone(),
                        publisher: publisher.clone(),
                        leases: leases.clone(),
                        shutdown: shutdown.clone(),
                        broken: broken_tx.clone(),
                    };
                    running.spawn(taken.handle(delivery));
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
