//! `archgate consume`: the container part of fedora-image-uploader, as an
//! AMQP 0-9-1 consumer (RabbitMQ) on lapin, within the rights Fedora's
//! broker roles give an app (no configure at all: archgate declares
//! nothing on such a broker; it only binds its own queues, as
//! fedora-messaging does). One [`Runner`] for the life of the process; one
//! run per message, exactly as `archgate publish --compose LOCATION` would
//! do it.
//!
//! A delivery goes through these modules, in order:
//! - `session`: the connection, the topology (`topology`: the queue and
//!   `QUEUE.failed` found or declared, and bound), one *active* consumer
//!   per queue (an exclusive consumer; other replicas stand by and take
//!   over when it goes), taking deliveries, reconnecting, the shutdown, and
//!   the fence that stops every run of a session that broke;
//! - `delivery`: one message: parsed (its size bounded), its location
//!   checked against `allowed-locations`, run, and ended: acknowledged,
//!   set aside, or handed back to the broker, on every path, also when
//!   one of those steps fails or the run panics. A retry is the same
//!   delivery tried again in this process after a delay; the attempts are
//!   counted on disk (`attempts`), so that a run that kills the process
//!   is capped too;
//! - `retry`: what an ending is worth by the error's kind (what only our
//!   operator mends is set aside at once; what another party or time
//!   mends is retried with backoff over a long horizon);
//! - `publisher`: everything archgate publishes (set-aside copies, result
//!   messages), one at a time on a confirm channel, each learning its own
//!   fate;
//! - `results`: the `ContainerPublishedV1` announcements: every target a
//!   try wrote is announced in that try, and a retried or redelivered
//!   message announces again the targets whose index names its compose;
//! - `replay`: `archgate replay`, which moves what was set aside back;
//! - `health`: `/live`, `/ready`, `/metrics`; `mail`: errors mailed as
//!   fedora-messaging's `[log_config]` SMTPHandler says.
#![warn(missing_docs)]

mod attempts;
mod clock;
mod delivery;
mod health;
mod mail;
mod messages;
mod notify;
mod publisher;
mod replay;
mod results;
mod retry;
mod session;
mod topology;

pub use health::Metrics;
pub use mail::{MailLayer, MailSpec};
pub use messages::{parse, ComposeMessage, Invalid, Published, MAX_BODY, RESULT_SCHEMA};
pub use replay::{replay, ReplayOptions};
pub use retry::{ATTEMPTS_HEADER, ERROR_HEADER, ROUTING_KEY_HEADER};
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
    /// `exchange`: where result messages go, and where `QUEUE.failed` and
    /// the replays are routed.
    pub exchange: String,
    /// The queue messages come from; `QUEUE.failed` beside it.
    pub queue: QueueSpec,
    /// Exchanges declared (unless `amq.*` or passive).
    pub exchanges: Vec<ExchangeSpec>,
    /// What the queue is bound to.
    pub bindings: Vec<BindingSpec>,
    /// Declare nothing: only check that the exchanges and queues exist
    /// (and bind the queues, which needs no configure right).
    pub passive_declares: bool,
    /// `prefetch`: messages the active consumer holds at once (running,
    /// or waiting for their next try).
    pub prefetch: u16,
    /// `concurrency`: runs at once (whatever the prefetch).
    pub concurrency: usize,
    /// `statuses` that are published; others are skipped.
    pub statuses: Vec<String>,
    /// `publish-topic-prefix` of result messages; none: no result messages.
    pub publish_topic_prefix: Option<String>,
    /// `max-attempts`: runs of one message (counted on disk, also those
    /// that killed the process) before it is set aside.
    pub max_attempts: u32,
    /// `retry-delay`: the wait before the second try; it doubles at each
    /// try, up to `max-retry-delay`.
    pub retry_delay: Duration,
    /// `max-retry-delay`: the longest wait between two tries.
    pub max_retry_delay: Duration,
    /// `retry-horizon`: how long what another party mends (their
    /// certificate, their quota, our disk filling up) is tried again.
    pub retry_horizon: Duration,
    /// `consumer-timeout`: the broker's; a message is never held unacked
    /// longer than half of it (it goes back, and comes again).
    pub consumer_timeout: Duration,
    /// `takeover-grace`: after taking over from a consumer that may still
    /// run (a message delivered again), how long to wait before running;
    /// none: the connection's heartbeat timeout.
    pub takeover_grace: Option<Duration>,
    /// `state-dir`: where the attempts of messages are counted.
    pub state_dir: PathBuf,
    /// `health`: where `/live`, `/ready`, `/metrics` are served.
    pub health: Option<SocketAddr>,
    /// Where a message's location may lead; a message elsewhere is set
    /// aside at once.
    pub allowed_locations: AllowedLocations,
}

impl ConsumeSpec {
    /// `QUEUE.failed`: where messages are set aside.
    pub fn failed_queue(&self) -> String {
        format!("{}.failed", self.queue.name)
    }

    /// The routing key that reaches `QUEUE.failed` (on `exchange`): its
    /// name, which no other consumer binds.
    pub fn failed_key(&self) -> String {
        self.failed_queue()
    }

    /// The routing key that reaches `QUEUE` alone (on `exchange`), for
    /// `archgate replay`.
    pub fn replay_key(&self) -> String {
        format!("{}.replay", self.queue.name)
    }
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
/// finished and their messages ended. `metrics` is what the health
/// listener serves (the caller may feed it progress, see [`Metrics`]).
pub async fn consume(
    runner: Arc<Runner>,
    template: RunSpec,
    spec: ConsumeSpec,
    metrics: Arc<Metrics>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
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
    let attempts = attempts::Attempts::open(&spec.state_dir)
        .map_err(|e| topology::Refused(format!("[consume] state-dir: {e:#}")))?;
    let tls = session::tls_config(&spec)?;
    let service = Arc::new(Service {
        runner,
        template,
        permits: Arc::new(tokio::sync::Semaphore::new(spec.concurrency.max(1))),
        spec,
        metrics: metrics.clone(),
        attempts,
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

/// This machine's name, for the broker's connection list.
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
    /// `concurrency` runs at once, across sessions.
    pub(crate) permits: Arc<tokio::sync::Semaphore>,
    /// The messages' attempts, on disk.
    pub(crate) attempts: attempts::Attempts,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A spec with the defaults `[consume]` gives.
    pub(crate) fn spec() -> ConsumeSpec {
        ConsumeSpec {
            amqp_url: "amqp://localhost/%2f".into(),
            amqp_password: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            client_properties: BTreeMap::new(),
            exchange: "amq.topic".into(),
            queue: QueueSpec::durable("archgate-containers"),
            exchanges: vec![],
            bindings: vec![],
            passive_declares: false,
            prefetch: 1,
            concurrency: 1,
            statuses: vec!["FINISHED".into()],
            publish_topic_prefix: None,
            max_attempts: 5,
            retry_delay: Duration::from_secs(30),
            max_retry_delay: Duration::from_secs(3600),
            retry_horizon: Duration::from_secs(12 * 3600),
            consumer_timeout: Duration::from_secs(1800),
            takeover_grace: None,
            state_dir: PathBuf::from("/nonexistent"),
            health: None,
            allowed_locations: AllowedLocations::new(&["/srv/composes/".to_string()]).unwrap(),
        }
    }

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
