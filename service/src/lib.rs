//! `archgate consume`: the container part of fedora-image-uploader, as an
//! AMQP 0-9-1 consumer (RabbitMQ) on lapin. One [`Runner`] for the life of
//! the process; one run per message, exactly as `archgate publish
//! --compose LOCATION` would do it.
//!
//! A delivery goes through these modules, in order:
//! - `session`: the connection, the topology (the queue, `QUEUE.failed`,
//!   the delay queue `QUEUE.retry`), taking deliveries, reconnecting, and
//!   the shutdown;
//! - `delivery`: one message: parsed, its location checked against
//!   `allowed-locations`, run, and ended: acknowledged, sent back (through
//!   the delay queue), set aside, or handed back to the broker, on every
//!   path, also when one of those steps fails or the run panics;
//! - `retry`: what an ending is worth by the error's kind (a 401 or a
//!   configuration error is set aside at once, a transient one tried
//!   again), attempts counted (redeliveries too), and the copies archgate
//!   publishes (`mandatory`, confirmed, the original acknowledged only once
//!   its copy was routed);
//! - `results`: the `ContainerPublishedV1` announcements: every target a
//!   try wrote is announced in that try, and a retried or redelivered
//!   message announces again the targets whose index names its compose;
//! - `lease`: one writer per target across consumers;
//! - `health`: `/live`, `/ready`, `/metrics`.
#![warn(missing_docs)]

mod delivery;
mod health;
mod lease;
mod messages;
mod notify;
mod results;
mod retry;
mod session;
mod topology;

pub use health::Metrics;
pub use lease::lease_queue;
pub use messages::{parse, ComposeMessage, Invalid, Published, RESULT_SCHEMA};
pub use retry::{ATTEMPTS_HEADER, BUSY_HEADER, ERROR_HEADER};
pub use topology::Refused;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use archgate_core::AllowedLocations;
use archgate_runner::{RunSpec, Runner};

/// The `[consume]` table (or a fedora-messaging configuration file), checked.
#[derive(Debug, Clone)]
pub struct ConsumeSpec {
    /// `amqp://` or `amqps://` (may hold a password: never printed).
    pub amqp_url: String,
    /// The broker password from `amqp-password-file` or
    /// `amqp-password-env`, which takes the place of one in the URL.
    pub amqp_password: Option<String>,
    /// `ca-file`: a PEM CA for `amqps://` (beside the system's roots).
    pub ca_file: Option<PathBuf>,
    /// `client-cert`: a PEM client certificate. With no password, archgate
    /// authenticates with SASL EXTERNAL (the broker takes the user from it).
    pub client_cert: Option<PathBuf>,
    /// `client-key`: its PEM key.
    pub client_key: Option<PathBuf>,
    /// Connection properties the broker's management shows (`app`, ...).
    pub client_properties: BTreeMap<String, String>,
    /// `exchange`: where result messages go.
    pub exchange: String,
    /// The queue messages come from; `QUEUE.failed` and `QUEUE.retry` beside it.
    pub queue: QueueSpec,
    /// Exchanges declared (unless `amq.*` or passive).
    pub exchanges: Vec<ExchangeSpec>,
    /// What the queue is bound to.
    pub bindings: Vec<BindingSpec>,
    /// Declare nothing but the leases: only check that the exchanges and
    /// queues exist.
    pub passive_declares: bool,
    /// `prefetch`: messages handled at once.
    pub prefetch: u16,
    /// `statuses` that are published; others are skipped.
    pub statuses: Vec<String>,
    /// `publish-topic-prefix` of result messages; none: no result messages.
    pub publish_topic_prefix: Option<String>,
    /// `max-attempts` before `QUEUE.failed` (also for waits on leases).
    pub max_attempts: u32,
    /// `retry-delay` before a failed message is tried again.
    pub retry_delay: Duration,
    /// `health`: where `/live`, `/ready`, `/metrics` are served.
    pub health: Option<SocketAddr>,
    /// How long a run waits, in all, for the leases of targets that other
    /// consumers hold before its message goes back (`busy`).
    pub lease_wait: Duration,
    /// Where a message's location may lead; a message elsewhere is set
    /// aside at once.
    pub allowed_locations: AllowedLocations,
}

/// The queue archgate consumes from.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSpec {
    /// Its name.
    pub name: String,
    /// Survives a broker restart (default true).
    pub durable: bool,
    /// Deleted when its last consumer goes (default false).
    pub auto_delete: bool,
    /// Only this connection may use it (default false).
    pub exclusive: bool,
    /// `x-queue-type = "quorum"` and the like.
    pub arguments: BTreeMap<String, ArgValue>,
}

impl QueueSpec {
    /// A durable, shared queue with no arguments.
    pub fn durable(name: &str) -> QueueSpec {
        QueueSpec {
            name: name.to_string(),
            durable: true,
            auto_delete: false,
            exclusive: false,
            arguments: BTreeMap::new(),
        }
    }
}

/// An exchange archgate declares.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeSpec {
    /// Its name.
    pub name: String,
    /// `topic`, `direct`, `fanout` or `headers`.
    pub kind: String,
    /// Survives a broker restart.
    pub durable: bool,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Its arguments.
    pub arguments: BTreeMap<String, ArgValue>,
}

/// The queue bound to an exchange with these routing keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingSpec {
    /// The exchange.
    pub exchange: String,
    /// The routing keys (topics).
    pub routing_keys: Vec<String>,
}

/// A queue or exchange argument's value.
#[derive(Debug, Clone, PartialEq)]
pub enum ArgValue {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// A floating-point number.
    Float(f64),
}

/// The URL with its password, if any, replaced by `***`, for messages. The
/// user information ends at the last `@` (a password may hold one).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some(at) = rest.rfind('@') else {
        return url.to_string();
    };
    let (userinfo, host) = (&rest[..at], &rest[at + 1..]);
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://{userinfo}@{host}"),
    }
}

/// Runs the consumer until `shutdown` turns true. Reconnects when the
/// broker goes away; returns after a shutdown once the current runs are
/// finished and their messages ended.
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
    if let Some(every) = notify::watchdog_interval() {
        // The watchdog hears from a process that makes progress only, so
        // a stalled one is restarted (the same test as `/live`).
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if metrics.live() {
                    notify::notify("WATCHDOG=1");
                }
            }
        });
    }
    let tls = session::tls_config(&spec)?;
    let service = Arc::new(Service {
        runner,
        template,
        spec,
        metrics: metrics.clone(),
    });
    loop {
        metrics.progress();
        match session::session(&service, tls.clone(), &mut shutdown).await {
            Ok(()) => return Ok(()),
            // A permission missing: connecting again would not mend it.
            Err(e) if e.downcast_ref::<Refused>().is_some() => return Err(e),
            Err(e) => {
                metrics.set_connected(false);
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

/// This machine's name, for the broker's connection list and lease names.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// What every part of the service shares for the life of the process.
pub(crate) struct Service {
    pub(crate) runner: Arc<Runner>,
    pub(crate) template: RunSpec,
    pub(crate) spec: ConsumeSpec,
    pub(crate) metrics: Arc<Metrics>,
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
        assert_eq!(
            redact_url("amqps://user:p@ss@w0rd@rabbit.example/%2Fpubsub"),
            "amqps://user:***@rabbit.example/%2Fpubsub"
        );
        assert_eq!(redact_url("amqp://user@h/"), "amqp://user@h/");
        assert_eq!(redact_url("amqp://h:5672/"), "amqp://h:5672/");
    }
}
