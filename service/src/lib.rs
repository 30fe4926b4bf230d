//! `archgate consume`: the container part of fedora-image-uploader, as an
//! AMQP 0-9-1 consumer (RabbitMQ) on lapin. One [`Runner`] for the life of
//! the process; one run per message, exactly as `archgate publish
//! --compose LOCATION` would do it.
//!
//! - A message is acknowledged only after its run has finished: published,
//!   unchanged and refused are results. A run that ends in an error is
//!   retried: after `retry-delay` a copy goes back to the queue with its
//!   attempt count in the `x-archgate-attempts` header, and the original is
//!   acknowledged; after `max-attempts` the message goes to `QUEUE.failed`
//!   with its last error in `x-archgate-error`. A message that is not valid
//!   goes there at once. Nothing loops forever, and a consumer killed at any
//!   moment leaves its unacknowledged message to the broker, which delivers
//!   it again (a run done twice leaves the registry as one run would).
//! - For every registry repository a target was published to, a
//!   `ContainerPublishedV1` message (fedora-messaging's format and headers,
//!   persistent, with publisher confirms) on the same exchange.
//! - Several consumers on one queue share the work, `prefetch` messages at
//!   a time each. The shutdown signal stops taking messages, lets the
//!   current runs finish and be acknowledged, and returns.
#![warn(missing_docs)]

mod health;
mod lease;
mod messages;

pub use health::Metrics;
pub use lease::lease_queue;
pub use messages::{allowed, parse, ComposeMessage, Invalid, Published, RESULT_SCHEMA};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use archgate_core::{Decision, ErrorKind};
use archgate_runner::{Leases, RunError, RunSpec, Runner, SourceSpec};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::lease::BrokerLeases;

/// The `[consume]` table, checked.
#[derive(Debug, Clone)]
pub struct ConsumeSpec {
    /// `amqp://` or `amqps://` (may hold a password: never printed).
    pub amqp_url: String,
    /// `ca-file`: a PEM CA for `amqps://`.
    pub ca_file: Option<PathBuf>,
    /// `client-cert`: a PEM client certificate.
    pub client_cert: Option<PathBuf>,
    /// `client-key`: its PEM (PKCS#8) key.
    pub client_key: Option<PathBuf>,
    /// `exchange`: where the queue is bound and results go.
    pub exchange: String,
    /// `queue`: durable; `QUEUE.failed` beside it.
    pub queue: String,
    /// `routing-keys` bound to the queue.
    pub routing_keys: Vec<String>,
    /// `prefetch`: messages handled at once.
    pub prefetch: u16,
    /// `statuses` that are published; others are skipped.
    pub statuses: Vec<String>,
    /// `publish-topic-prefix` of result messages; none: no result messages.
    pub publish_topic_prefix: Option<String>,
    /// `max-attempts` before `QUEUE.failed`.
    pub max_attempts: u32,
    /// `retry-delay` before a failed message is tried again.
    pub retry_delay: Duration,
    /// `health`: where `/live`, `/ready`, `/metrics` are served.
    pub health: Option<SocketAddr>,
    /// How long a run waits for a target's lease that another consumer
    /// holds before its message goes back to the queue (not a failure).
    pub lease_wait: Duration,
    /// URL or path prefixes a message's location must start with; a
    /// message elsewhere is set aside at once.
    pub allowed_locations: Vec<String>,
}

/// The header that counts attempts on a copy sent back for a retry.
pub const ATTEMPTS_HEADER: &str = "x-archgate-attempts";
/// The header that says why a message was set aside.
pub const ERROR_HEADER: &str = "x-archgate-error";

/// The URL with its password, if any, replaced by `***`, for messages.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or("");
                if userinfo.contains(':') {
                    format!("{scheme}://{user}:***@{host}")
                } else {
                    format!("{scheme}://{user}@{host}")
                }
            }
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// Runs the consumer until `shutdown` turns true. Reconnects when the
/// broker goes away; returns after a shutdown once the current runs are
/// finished and acknowledged.
pub async fn consume(
    runner: Arc<Runner>,
    template: RunSpec,
    spec: ConsumeSpec,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let metrics = Metrics::new();
    if let Some(addr) = spec.health {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("health: cannot listen on {addr}"))?;
        tracing::info!(%addr, "health: /live, /ready, /metrics");
        tokio::spawn(health::serve(listener, metrics.clone()));
    }
    let tls = tls_config(&spec)?;
    let service = Arc::new(Service {
        runner,
        template,
        spec,
        metrics: metrics.clone(),
    });
    loop {
        match session(&service, tls.clone(), &mut shutdown).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                metrics.set_ready(false);
                tracing::warn!(
                    url = %redact_url(&service.spec.amqp_url),
                    "broker: {e:#}; connecting again in 5 s"
                );
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
            }
        }
    }
}

fn tls_config(spec: &ConsumeSpec) -> Result<OwnedTLSConfig> {
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

struct Service {
    runner: Arc<Runner>,
    template: RunSpec,
    spec: ConsumeSpec,
    metrics: Arc<Metrics>,
}

/// One connection: declare, consume, handle, until a shutdown (`Ok`) or a
/// broken connection (`Err`).
async fn session(
    service: &Arc<Service>,
    tls: OwnedTLSConfig,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let spec = &service.spec;
    let conn = Arc::new(
        Connection::connect_with_config(
            &spec.amqp_url,
            ConnectionProperties::default(),
            tls,
            async_rs::Runtime::tokio_current(),
        )
        .await
        .map_err(|e| anyhow!("cannot connect to {}: {e}", redact_url(&spec.amqp_url)))?,
    );
    let channel = conn.create_channel().await?;
    declare(&channel, spec).await?;
    let publisher = conn.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let tag = format!("archgate-{}", std::process::id());
    let consumer = channel
        .basic_consume(
            spec.queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    service.metrics.set_ready(true);
    tracing::info!(queue = %spec.queue, prefetch = spec.prefetch, "consuming");
    // Leases live on this connection: if it dies, the broker frees them,
    // and the runs holding them are stopped (the task set is dropped).
    let leases = Arc::new(BrokerLeases {
        conn: conn.clone(),
        wait: spec.lease_wait,
        metrics: service.metrics.clone(),
    });
    let mut running = tokio::task::JoinSet::new();
    let taking = Taking {
        service,
        publisher: &publisher,
        leases: &leases,
        running: &mut running,
    };
    let stopped = take_messages(taking, consumer, shutdown).await;
    service.metrics.set_ready(false);
    stopped?;
    // Stop taking messages; let the current runs finish and be acknowledged.
    tracing::info!(
        running = running.len(),
        "stopping: no new messages; finishing the current ones"
    );
    let _ = channel
        .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
        .await;
    while let Some(done) = running.join_next().await {
        if let Err(e) = done {
            tracing::error!("a message's task stopped: {e}");
        }
    }
    let _ = conn.close(200, "archgate consume stopping".into()).await;
    Ok(())
}

/// The topology: prefetch, the exchange (unless `amq.`), the durable queue
/// bound to the routing keys, and `QUEUE.failed`.
async fn declare(channel: &Channel, spec: &ConsumeSpec) -> Result<()> {
    channel
        .basic_qos(spec.prefetch, BasicQosOptions::default())
        .await?;
    if !spec.exchange.starts_with("amq.") {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let (name, kind) = (spec.exchange.as_str().into(), ExchangeKind::Topic);
        channel
            .exchange_declare(name, kind, durable, FieldTable::default())
            .await?;
    }
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(spec.queue.as_str().into(), durable, FieldTable::default())
        .await?;
    for key in &spec.routing_keys {
        channel
            .queue_bind(
                spec.queue.as_str().into(),
                spec.exchange.as_str().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    let failed = failed_queue(spec);
    channel
        .queue_declare(failed.as_str().into(), durable, FieldTable::default())
        .await?;
    Ok(())
}

/// What taking messages needs.
struct Taking<'a> {
    service: &'a Arc<Service>,
    publisher: &'a Channel,
    leases: &'a Arc<BrokerLeases>,
    running: &'a mut tokio::task::JoinSet<()>,
}

/// Hands every delivery to a task of its own, until the shutdown (`Ok`) or
/// a broken consumer (`Err`).
async fn take_messages(
    taking: Taking<'_>,
    mut consumer: lapin::Consumer,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let Taking {
        service,
        publisher,
        leases,
        running,
    } = taking;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            delivery = consumer.next() => match delivery {
                Some(Ok(delivery)) => {
                    let (service, publisher) = (service.clone(), publisher.clone());
                    let (shutdown, leases) = (shutdown.clone(), leases.clone());
                    running.spawn(async move {
                        if let Err(e) = handle(&service, &publisher, &*leases, delivery, shutdown).await {
                            tracing::error!("handling a message: {e:#}");
                        }
                    });
                }
                Some(Err(e)) => return Err(e.into()),
                None => bail!("the broker cancelled the consumer"),
            },
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Err(e) = done {
                    tracing::error!("a message's task stopped: {e}");
                }
            }
        }
    }
}

fn failed_queue(spec: &ConsumeSpec) -> String {
    format!("{}.failed", spec.queue)
}

fn header<'a>(delivery: &'a Delivery, name: &str) -> Option<&'a AMQPValue> {
    delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name))
}

fn attempts_so_far(delivery: &Delivery) -> u32 {
    match header(delivery, ATTEMPTS_HEADER) {
        Some(AMQPValue::LongLongInt(n)) => (*n).max(0) as u32,
        Some(AMQPValue::LongInt(n)) => (*n).max(0) as u32,
        Some(AMQPValue::LongUInt(n)) => *n,
        Some(AMQPValue::ShortInt(n)) => (*n).max(0) as u32,
        Some(AMQPValue::ShortShortInt(n)) => (*n).max(0) as u32,
        _ => 0,
    }
}

/// What happened to one message, for the log line and the metrics.
enum Outcome {
    /// published, unchanged or refused; and the counts.
    Done(&'static str, String),
    Skipped(String),
    Retried(String),
    /// A target's lease was held by another consumer too long: sent back,
    /// not counted as an attempt.
    Busy(String),
    Failed(String),
    Invalid(String),
}

async fn handle(
    service: &Service,
    publisher: &Channel,
    leases: &dyn Leases,
    delivery: Delivery,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let spec = &service.spec;
    let parsed = messages::parse(&delivery.data).and_then(|m| {
        messages::allowed(&m.root, &spec.allowed_locations)?;
        Ok(m)
    });
    let message = match parsed {
        Ok(m) => m,
        Err(messages::Invalid(why)) => {
            set_aside(publisher, spec, &delivery, &why).await?;
            delivery.ack(BasicAckOptions::default()).await?;
            log(service, None, Outcome::Invalid(why));
            return Ok(());
        }
    };
    if !spec.statuses.contains(&message.status) {
        delivery.ack(BasicAckOptions::default()).await?;
        let why = format!(
            "status {} is not one of {}",
            message.status,
            spec.statuses.join(", ")
        );
        log(service, Some(&message.compose_id), Outcome::Skipped(why));
        return Ok(());
    }
    let mut run = service.template.clone();
    run.source = SourceSpec::Pungi {
        location: message.root.clone(),
    };
    let started = Instant::now();
    let result = service.runner.run_with(&run, leases).await;
    service.metrics.run_took(started.elapsed().as_secs_f64());
    let outcome = match RunEnd::of(service, result) {
        RunEnd::Done(report) => {
            send_results(publisher, spec, &message.compose_id, &report).await?;
            delivery.ack(BasicAckOptions::default()).await?;
            Outcome::Done(outcome_of(&report), summary(&report))
        }
        RunEnd::Busy(why) => match later(spec, publisher, &delivery, None, shutdown).await? {
            true => Outcome::Busy(why),
            false => Outcome::Retried(format!("stopped by the shutdown while busy: {why}")),
        },
        RunEnd::Failed(error) => {
            let attempt = attempts_so_far(&delivery) + 1;
            if attempt >= spec.max_attempts {
                let why = format!("failed {attempt} times; last error: {error}");
                set_aside(publisher, spec, &delivery, &why).await?;
                delivery.ack(BasicAckOptions::default()).await?;
                Outcome::Failed(why)
            } else if later(spec, publisher, &delivery, Some(attempt), shutdown).await? {
                Outcome::Retried(format!(
                    "attempt {attempt} of {}: {error}",
                    spec.max_attempts
                ))
            } else {
                Outcome::Retried(format!(
                    "attempt {attempt} stopped by the shutdown: {error}"
                ))
            }
        }
    };
    log(service, Some(&message.compose_id), outcome);
    Ok(())
}

/// How a run ended, for the message: a report to acknowledge, a target
/// another consumer held too long (not a failure), or an error to retry.
enum RunEnd {
    Done(archgate_core::Report),
    Busy(String),
    Failed(String),
}

impl RunEnd {
    fn of(service: &Service, result: Result<archgate_core::Report, RunError>) -> RunEnd {
        let report = match result {
            Ok(report) => report,
            Err(e) if e.kind == ErrorKind::Busy => return RunEnd::Busy(e.message),
            Err(e) => return RunEnd::Failed(format!("{} error: {e}", e.kind.as_str())),
        };
        for t in &report.targets {
            service.metrics.target(t.decision.as_str());
        }
        let errors: Vec<String> = report
            .targets
            .iter()
            .filter(|t| t.decision == Decision::Error)
            .map(|t| format!("{}: {}", t.reference, t.reasons.join("; ")))
            .collect();
        match errors.is_empty() {
            true => RunEnd::Done(report),
            false => RunEnd::Failed(errors.join(" | ")),
        }
    }
}

/// Result messages for what a finished run published (none for a stale,
/// refused or unchanged target).
async fn send_results(
    publisher: &Channel,
    spec: &ConsumeSpec,
    compose_id: &str,
    report: &archgate_core::Report,
) -> Result<()> {
    let Some(prefix) = &spec.publish_topic_prefix else {
        return Ok(());
    };
    let release = report
        .compose
        .version
        .as_deref()
        .and_then(|v| v.parse().ok());
    let Some(release) = release else {
        tracing::warn!(
            compose = compose_id,
            "the release is not a number: no result messages"
        );
        return Ok(());
    };
    for body in messages::published(report, release) {
        publish_result(publisher, spec, prefix, &body).await?;
    }
    Ok(())
}

/// After `retry-delay`, a copy of the message goes back to the queue
/// (counting `attempt`, or keeping its count when `None`) and the original
/// is acknowledged. `false` when the shutdown came first: the message was
/// handed back to the broker untouched.
async fn later(
    spec: &ConsumeSpec,
    publisher: &Channel,
    delivery: &Delivery,
    attempt: Option<u32>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<bool> {
    tokio::select! {
        _ = tokio::time::sleep(spec.retry_delay) => {}
        _ = shutdown.changed() => {
            delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await?;
            return Ok(false);
        }
    }
    let count = attempt.unwrap_or_else(|| attempts_so_far(delivery));
    send_back(publisher, spec, delivery, count).await?;
    delivery.ack(BasicAckOptions::default()).await?;
    Ok(true)
}

/// What a run came to, in one word: published if any target was, else
/// stale if any target holds a newer compose (a late retry, an old compose
/// again), else refused if any was, else unchanged.
fn outcome_of(report: &archgate_core::Report) -> &'static str {
    let any = |d: Decision| report.targets.iter().any(|t| t.decision == d);
    if any(Decision::Published) {
        "published"
    } else if report.targets.iter().any(|t| t.stale) {
        "stale"
    } else if any(Decision::Refused) {
        "refused"
    } else {
        "unchanged"
    }
}

/// `published 2, unchanged 4, refused 0` and the like.
fn summary(report: &archgate_core::Report) -> String {
    let count = |d: Decision| report.targets.iter().filter(|t| t.decision == d).count();
    format!(
        "published {}, unchanged {}, refused {}",
        count(Decision::Published),
        count(Decision::Unchanged),
        count(Decision::Refused)
    )
}

/// One log line per message, with its compose id and outcome; counted.
fn log(service: &Service, compose: Option<&str>, outcome: Outcome) {
    let compose = compose.unwrap_or("-");
    match outcome {
        Outcome::Done(word, what) => {
            service.metrics.message(word);
            tracing::info!(compose, outcome = word, "{what}");
        }
        Outcome::Skipped(why) => {
            service.metrics.message("skipped");
            tracing::info!(compose, outcome = "skipped", "{why}");
        }
        Outcome::Retried(why) => {
            service.metrics.message("retried");
            tracing::warn!(compose, outcome = "retried", "{why}");
        }
        Outcome::Busy(why) => {
            service.metrics.message("busy");
            tracing::warn!(compose, outcome = "busy", "{why}");
        }
        Outcome::Failed(why) => {
            service.metrics.message("failed");
            tracing::error!(compose, outcome = "failed", "{why}");
        }
        Outcome::Invalid(why) => {
            service.metrics.message("invalid");
            tracing::error!(compose, outcome = "invalid", "{why}");
        }
    }
}

/// Publishes and waits for the broker's confirmation.
async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<()> {
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await?
        .await?;
    if !confirm.is_ack() {
        bail!("the broker did not confirm a message to {routing_key}");
    }
    Ok(())
}

/// The original's properties with `extra` headers added, persistent.
fn copy_properties(delivery: &Delivery, extra: Vec<(&str, AMQPValue)>) -> BasicProperties {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    for (k, v) in extra {
        headers.insert(ShortString::from(k), v);
    }
    delivery
        .properties
        .clone()
        .with_headers(headers)
        .with_delivery_mode(2)
}

async fn send_back(
    channel: &Channel,
    spec: &ConsumeSpec,
    delivery: &Delivery,
    attempt: u32,
) -> Result<()> {
    let props = copy_properties(
        delivery,
        vec![
            (ATTEMPTS_HEADER, AMQPValue::LongLongInt(i64::from(attempt))),
            (
                "x-archgate-routing-key",
                AMQPValue::LongString(LongString::from(delivery.routing_key.as_str())),
            ),
        ],
    );
    publish_confirmed(channel, "", &spec.queue, &delivery.data, props).await
}

async fn set_aside(
    channel: &Channel,
    spec: &ConsumeSpec,
    delivery: &Delivery,
    why: &str,
) -> Result<()> {
    let props = copy_properties(
        delivery,
        vec![
            (ERROR_HEADER, AMQPValue::LongString(LongString::from(why))),
            (
                "x-archgate-routing-key",
                AMQPValue::LongString(LongString::from(delivery.routing_key.as_str())),
            ),
        ],
    );
    publish_confirmed(channel, "", &failed_queue(spec), &delivery.data, props).await
}

/// A `ContainerPublishedV1` in fedora-messaging's wire format.
async fn publish_result(
    channel: &Channel,
    spec: &ConsumeSpec,
    prefix: &str,
    body: &messages::Published,
) -> Result<()> {
    let topic = format!("{prefix}.{}", messages::RESULT_SCHEMA);
    let json = serde_json::to_vec(body)?;
    let mut headers = FieldTable::default();
    headers.insert(
        "fedora_messaging_schema".into(),
        AMQPValue::LongString(LongString::from(messages::RESULT_SCHEMA)),
    );
    headers.insert(
        "fedora_messaging_severity".into(),
        AMQPValue::LongLongInt(messages::SEVERITY_INFO),
    );
    headers.insert(
        "sent-at".into(),
        AMQPValue::LongString(LongString::from(now_rfc3339())),
    );
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_delivery_mode(2)
        .with_message_id(uuid4().as_str().into())
        .with_headers(headers);
    publish_confirmed(channel, &spec.exchange, &topic, &json, props).await?;
    tracing::info!(topic, repository = %body.repository, registries = ?body.registries, tags = ?body.tags, "result message sent");
    Ok(())
}

/// A random (version 4) UUID, from the system's randomness.
fn uuid4() -> String {
    let mut b = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        // No /dev/urandom: the time and pid, still unique enough for an id.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = (t ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

/// Now, as fedora-messaging writes `sent-at`: `2024-11-01T10:00:00+00:00`.
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}+00:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_never_show_a_password() {
        assert_eq!(
            redact_url("amqps://user:s3cret@rabbit.example/%2Fpubsub"),
            "amqps://user:***@rabbit.example/%2Fpubsub"
        );
        assert_eq!(redact_url("amqp://user@h/"), "amqp://user@h/");
        assert_eq!(redact_url("amqp://h:5672/"), "amqp://h:5672/");
    }

    #[test]
    fn ids_and_times_have_their_shapes() {
        let id = uuid4();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(uuid4(), id);
        let t = now_rfc3339();
        assert!(archgate_core::parse_rfc3339(&t).is_some(), "{t}");
    }
}
