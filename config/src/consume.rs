//! `[consume]`: the service (docs/service.md), and what it gives: the
//! [`archgate_service::ConsumeSpec`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::values::{duration, socket_addr, some_duration};
use crate::{ConfigError, Loaded, Options, SourceKind};

/// `[consume]`: the service (docs/service.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct ConsumeConfig {
    pub amqp_url: String,
    pub ca_file: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    #[serde(default = "default_exchange")]
    pub exchange: String,
    #[serde(default = "default_queue")]
    pub queue: String,
    #[serde(default = "default_routing_keys")]
    pub routing_keys: Vec<String>,
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    #[serde(default = "default_statuses")]
    pub statuses: Vec<String>,
    pub publish_topic_prefix: Option<String>,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_retry_delay", deserialize_with = "duration")]
    pub retry_delay: std::time::Duration,
    #[serde(default, deserialize_with = "socket_addr")]
    pub health: Option<std::net::SocketAddr>,
    /// URL or absolute path prefixes a message's compose location must
    /// start with (required: a message names what archgate reads).
    pub allowed_locations: Vec<String>,
    /// No longer used (one consumer is active at a time): accepted, so
    /// that older files still load, and ignored.
    pub lease_wait: Option<toml::Value>,
    /// Runs at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// The longest wait between two tries.
    #[serde(default = "default_max_retry_delay", deserialize_with = "duration")]
    pub max_retry_delay: std::time::Duration,
    /// How long what another party mends is tried again.
    #[serde(default = "default_retry_horizon", deserialize_with = "duration")]
    pub retry_horizon: std::time::Duration,
    /// The broker's `consumer_timeout`.
    #[serde(default = "default_consumer_timeout", deserialize_with = "duration")]
    pub consumer_timeout: std::time::Duration,
    /// The wait after taking over another consumer's messages.
    #[serde(default, deserialize_with = "some_duration")]
    pub takeover_grace: Option<std::time::Duration>,
    /// Where the tries of messages are counted.
    pub state_dir: Option<String>,
    /// Errors after a mailed one wait this long, and go in one mail.
    #[serde(default = "default_mail_every", deserialize_with = "duration")]
    pub error_mail_every: std::time::Duration,
    /// The broker password, from a file (instead of in the URL).
    pub amqp_password_file: Option<String>,
    /// The broker password, from an environment variable.
    pub amqp_password_env: Option<String>,
    /// Connection properties the broker shows (`app`, ...).
    #[serde(default)]
    pub client_properties: BTreeMap<String, String>,
    /// The queue's arguments (`x-queue-type = "quorum"`, ...).
    #[serde(default)]
    pub queue_arguments: BTreeMap<String, toml::Value>,
    /// Declare nothing but the leases; check that the rest exists.
    #[serde(default)]
    pub passive_declares: bool,
}

/// Queue or exchange arguments from TOML values.
pub(crate) fn arguments(
    table: &BTreeMap<String, toml::Value>,
) -> Result<BTreeMap<String, archgate_service::ArgValue>, String> {
    use archgate_service::ArgValue;
    table
        .iter()
        .map(|(k, v)| {
            let v = match v {
                toml::Value::String(s) => ArgValue::Str(s.clone()),
                toml::Value::Integer(i) => ArgValue::Int(*i),
                toml::Value::Boolean(b) => ArgValue::Bool(*b),
                toml::Value::Float(f) => ArgValue::Float(*f),
                other => {
                    return Err(format!(
                        "`{k}` is a {}: only strings, numbers and booleans",
                        other.type_str()
                    ))
                }
            };
            Ok((k.clone(), v))
        })
        .collect()
}

fn default_exchange() -> String {
    "amq.topic".into()
}
fn default_queue() -> String {
    "archgate-containers".into()
}
fn default_routing_keys() -> Vec<String> {
    vec!["org.fedoraproject.prod.pungi.compose.status.change".into()]
}
fn default_prefetch() -> u16 {
    10
}
fn default_statuses() -> Vec<String> {
    vec!["FINISHED".into(), "FINISHED_INCOMPLETE".into()]
}
fn default_max_attempts() -> u32 {
    5
}
fn default_mail_every() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}
fn default_concurrency() -> usize {
    1
}
fn default_max_retry_delay() -> std::time::Duration {
    std::time::Duration::from_secs(3600)
}
fn default_retry_horizon() -> std::time::Duration {
    std::time::Duration::from_secs(12 * 3600)
}
fn default_consumer_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(30 * 60)
}
fn default_retry_delay() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}

impl Loaded {
    /// The service's settings, and the run every message is a copy of (its
    /// compose is the message's).
    pub fn consume_spec(
        &self,
    ) -> Result<(archgate_service::ConsumeSpec, archgate_runner::RunSpec), ConfigError> {
        let file = self.path.display();
        let c = self.config.consume.as_ref().ok_or_else(|| {
            ConfigError(format!(
                "{file}: no [consume] table: archgate consume needs one (docs/service.md)"
            ))
        })?;
        let allowed_locations = self.check_consume(c)?;
        let path = |p: &Option<String>| -> Result<Option<PathBuf>, ConfigError> {
            match p {
                Some(p) => {
                    let path = self.resolve_path(p);
                    if !path.is_file() {
                        return Err(ConfigError(format!(
                            "{file}: [consume] {} does not exist",
                            path.display()
                        )));
                    }
                    Ok(Some(path))
                }
                None => Ok(None),
            }
        };
        let amqp_password = self.amqp_password(c)?;
        let mut queue = archgate_service::QueueSpec::durable(&c.queue);
        queue.arguments = arguments(&c.queue_arguments).map_err(|why| {
            ConfigError(format!(
                "{file}: [consume] queue-arguments: {why} (key `consume.queue-arguments`)"
            ))
        })?;
        let spec = archgate_service::ConsumeSpec {
            amqp_url: c.amqp_url.clone(),
            amqp_password,
            ca_file: path(&c.ca_file)?,
            client_cert: path(&c.client_cert)?,
            client_key: path(&c.client_key)?,
            client_properties: c.client_properties.clone(),
            exchange: c.exchange.clone(),
            queue,
            exchanges: vec![archgate_service::ExchangeSpec {
                name: c.exchange.clone(),
                kind: "topic".into(),
                durable: true,
                auto_delete: false,
                arguments: BTreeMap::new(),
            }],
            bindings: vec![archgate_service::BindingSpec {
                exchange: c.exchange.clone(),
                routing_keys: c.routing_keys.clone(),
            }],
            passive_declares: c.passive_declares,
            prefetch: c.prefetch,
            statuses: c.statuses.clone(),
            publish_topic_prefix: c.publish_topic_prefix.clone(),
            max_attempts: c.max_attempts,
            retry_delay: c.retry_delay,
            health: c.health,
            concurrency: c.concurrency,
            max_retry_delay: c.max_retry_delay,
            retry_horizon: c.retry_horizon,
            consumer_timeout: c.consumer_timeout,
            takeover_grace: c.takeover_grace,
            state_dir: self.state_dir(c)?,
            allowed_locations,
        };
        let mut spec = spec;
        if let Some(fm) = &self.fedora_messaging {
            fm.apply(&mut spec);
        }
        let run = self.run_spec(&Options {
            compose: Some("(from each message)".into()),
            ..Options::default()
        })?;
        Ok((spec, run))
    }

    /// The checks of `[consume]` that no type makes: a Pungi source, an
    /// AMQP URL, allowed locations (given: what it gives), counts of one
    /// or more.
    fn check_consume(
        &self,
        c: &ConsumeConfig,
    ) -> Result<archgate_core::AllowedLocations, ConfigError> {
        let file = self.path.display();
        if self.config.source.kind != SourceKind::Pungi {
            return Err(ConfigError(format!(
                "{file}: archgate consume publishes Pungi composes: [source] kind must be \"pungi\""
            )));
        }
        if !(c.amqp_url.starts_with("amqp://") || c.amqp_url.starts_with("amqps://")) {
            return Err(ConfigError(format!(
                "{file}: [consume] amqp-url must start with amqp:// or amqps:// (key `consume.amqp-url`)"
            )));
        }
        if c.allowed_locations.is_empty() {
            return Err(ConfigError(format!(
                "{file}: [consume] allowed-locations is empty: name the URL or path prefixes of the composes archgate may read (key `consume.allowed-locations`)"
            )));
        }
        let allowed =
            archgate_core::AllowedLocations::new(&c.allowed_locations).map_err(|why| {
                ConfigError(format!(
                    "{file}: [consume] allowed-locations: {why} (key `consume.allowed-locations`)"
                ))
            })?;
        if c.max_attempts == 0 || c.prefetch == 0 || c.concurrency == 0 {
            return Err(ConfigError(format!(
                "{file}: [consume] max-attempts, prefetch and concurrency must be at least 1"
            )));
        }
        if c.lease_wait.is_some() {
            tracing::warn!("{file}: [consume] lease-wait no longer applies (one consumer is active at a time; docs/service.md): ignored");
        }
        Ok(allowed)
    }

    /// Where errors are mailed: a fedora-messaging file's `[log_config]`
    /// SMTPHandler (docs/service.md, "Errors by mail"); none without one.
    pub fn mail_spec(&self) -> Option<archgate_service::MailSpec> {
        let mail = self.fedora_messaging.as_ref()?.mail.clone()?;
        let every = self.config.consume.as_ref().map(|c| c.error_mail_every)?;
        Some(archgate_service::MailSpec {
            host: mail.host,
            port: mail.port,
            from: mail.from,
            to: mail.to,
            subject: mail.subject,
            level: mail.level,
            every,
        })
    }

    /// `state-dir`, else systemd's `$STATE_DIRECTORY`, else
    /// `$XDG_STATE_HOME/archgate`, else `~/.local/state/archgate`.
    fn state_dir(&self, c: &ConsumeConfig) -> Result<PathBuf, ConfigError> {
        if let Some(d) = &c.state_dir {
            return Ok(self.resolve_path(d));
        }
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        if let Some(dirs) = var("STATE_DIRECTORY") {
            // systemd gives one per StateDirectory=, colon-separated.
            let first = dirs
                .to_string_lossy()
                .split(':')
                .next()
                .unwrap_or("")
                .to_string();
            return Ok(PathBuf::from(first));
        }
        if let Some(d) = var("XDG_STATE_HOME") {
            return Ok(PathBuf::from(d).join("archgate"));
        }
        match var("HOME") {
            Some(h) => Ok(PathBuf::from(h).join(".local/state/archgate")),
            None => Err(ConfigError(format!(
                "{}: [consume] state-dir: no default (no STATE_DIRECTORY, XDG_STATE_HOME or HOME): set one (key `consume.state-dir`)",
                self.path.display()
            ))),
        }
    }

    /// The broker password of `amqp-password-file` or `amqp-password-env`.
    fn amqp_password(&self, c: &ConsumeConfig) -> Result<Option<String>, ConfigError> {
        let (file, env) = (&c.amqp_password_file, &c.amqp_password_env);
        self.secret("consume", "amqp-password", file, env)
    }
}
