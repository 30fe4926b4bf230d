//! fedora-messaging's own configuration file, as Fedora's deployment writes
//! them for each consumer (recognized by its top-level `amqp_url`).
//! `archgate consume -c` reads it: the broker, TLS, client properties,
//! exchanges, the one queue, its bindings, prefetch, passive declares and
//! where results go come from fedora-messaging's keys; archgate's own tables
//! sit under `[consumer_config]` (`[consumer_config.source]`,
//! `[[consumer_config.image]]`, `[consumer_config.consume]`, ...). Keys
//! fedora-messaging defines that archgate has no use for (`callback`,
//! `log_config`, ...) are accepted and ignored.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::ConfigError;

#[derive(Debug, Deserialize)]
struct FmFile {
    amqp_url: String,
    #[serde(default)]
    tls: FmTls,
    #[serde(default)]
    client_properties: BTreeMap<String, toml::Value>,
    #[serde(default)]
    exchanges: BTreeMap<String, FmExchange>,
    #[serde(default)]
    queues: BTreeMap<String, FmQueue>,
    #[serde(default)]
    bindings: Vec<FmBinding>,
    #[serde(default)]
    qos: FmQos,
    #[serde(default)]
    passive_declares: bool,
    topic_prefix: Option<String>,
    publish_exchange: Option<String>,
    consumer_config: Option<toml::Table>,
    /// Python's logging configuration: its SMTPHandler is honoured.
    log_config: Option<toml::Table>,
    /// Everything else fedora-messaging knows (callback, ...).
    #[serde(flatten)]
    _ignored: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
struct FmTls {
    ca_cert: Option<String>,
    keyfile: Option<String>,
    certfile: Option<String>,
}

#[derive(Debug, Deserialize)]
struct FmExchange {
    #[serde(rename = "type", default = "topic")]
    kind: String,
    #[serde(default = "yes")]
    durable: bool,
    #[serde(default)]
    auto_delete: bool,
    #[serde(default)]
    arguments: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Deserialize)]
struct FmQueue {
    #[serde(default = "yes")]
    durable: bool,
    #[serde(default)]
    auto_delete: bool,
    #[serde(default)]
    exclusive: bool,
    #[serde(default)]
    arguments: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Deserialize)]
struct FmBinding {
    exchange: String,
    queue: String,
    #[serde(default)]
    routing_keys: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct FmQos {
    prefetch_count: Option<u16>,
}

fn topic() -> String {
    "topic".into()
}

fn yes() -> bool {
    true
}

/// What a fedora-messaging file says of the broker's topology, beyond what
/// archgate's `[consume]` keys hold: applied to the service's settings.
#[derive(Debug)]
pub(crate) struct Topology {
    exchanges: Vec<archgate_service::ExchangeSpec>,
    queue: archgate_service::QueueSpec,
    bindings: Vec<archgate_service::BindingSpec>,
    client_properties: BTreeMap<String, String>,
    /// `[log_config]`'s SMTPHandler, if a logger uses one.
    pub(crate) mail: Option<Mail>,
}

/// An SMTPHandler of `[log_config]`: all of the mail's settings but how
/// often (an archgate key).
#[derive(Debug, Clone)]
pub(crate) struct Mail {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) from: String,
    pub(crate) to: Vec<String>,
    pub(crate) subject: String,
    pub(crate) level: tracing::Level,
}

impl Topology {
    pub(crate) fn apply(&self, spec: &mut archgate_service::ConsumeSpec) {
        spec.exchanges = self.exchanges.clone();
        spec.queue = self.queue.clone();
        spec.bindings = self.bindings.clone();
        spec.client_properties
            .extend(self.client_properties.clone());
    }
}

/// Whether `text` is a fedora-messaging file: it has a top-level `amqp_url`.
pub(crate) fn is_fedora_messaging(text: &str) -> bool {
    text.parse::<toml::Table>()
        .is_ok_and(|t| t.contains_key("amqp_url"))
}

/// archgate's configuration inside a fedora-messaging file, as an
/// archgate.toml text (its `[consumer_config]`, with `[consume]` gaining
/// what fedora-messaging's keys say), and the topology to apply.
pub(crate) fn translate(file: &str, text: &str) -> Result<(String, Topology), ConfigError> {
    let err = |msg: String| ConfigError(format!("{file}: {msg}"));
    let de = toml::Deserializer::parse(text).map_err(|e| err(e.message().to_string()))?;
    let fm: FmFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        err(format!("{} (key `{key}`)", e.into_inner().message()))
    })?;
    let mut config = fm.consumer_config.clone().ok_or_else(|| {
        err("a fedora-messaging file with no [consumer_config]: archgate's settings ([consumer_config.source], [[consumer_config.image]], [consumer_config.consume], ...) go there".into())
    })?;
    let (name, queue) = match fm.queues.iter().collect::<Vec<_>>()[..] {
        [(name, queue)] => (name.clone(), queue),
        _ => {
            return Err(err(format!(
                "archgate consumes from exactly one queue; [queues] names {}",
                fm.queues.len()
            )))
        }
    };
    if let Some(other) = fm.bindings.iter().find(|b| b.queue != name) {
        return Err(err(format!(
            "[[bindings]] binds the queue {:?}, which is not the one in [queues] ({name})",
            other.queue
        )));
    }
    let consume = match config.remove("consume") {
        Some(toml::Value::Table(t)) => t,
        Some(_) => return Err(err("[consumer_config] consume must be a table".into())),
        None => toml::Table::new(),
    };
    let consume = consume_table(&fm, &name, consume).map_err(err)?;
    config.insert("consume".into(), toml::Value::Table(consume));
    let text = toml::to_string(&config).map_err(|e| err(format!("[consumer_config]: {e}")))?;
    let mut topology = topology(&fm, &name, queue).map_err(err)?;
    if let Some(log_config) = &fm.log_config {
        topology.mail = mail(log_config).map_err(|e| err(format!("[log_config] {e}")))?;
    }
    Ok((text, topology))
}

/// The keys of `[consume]` that a fedora-messaging file gives by its own
/// keys (and `[consumer_config.consume]` must not repeat).
const FROM_FEDORA_MESSAGING: [&str; 12] = [
    "amqp-url",
    "ca-file",
    "client-cert",
    "client-key",
    "queue",
    "routing-keys",
    "exchange",
    "prefetch",
    "publish-topic-prefix",
    "queue-arguments",
    "passive-declares",
    "client-properties",
];

/// `[consumer_config.consume]` with what fedora-messaging's own keys say.
fn consume_table(
    fm: &FmFile,
    queue: &str,
    mut consume: toml::Table,
) -> Result<toml::Table, String> {
    if let Some(key) = FROM_FEDORA_MESSAGING
        .iter()
        .find(|k| consume.contains_key(**k))
    {
        return Err(format!(
            "[consumer_config.consume] {key}: in a fedora-messaging file this comes from fedora-messaging's own keys (docs/service.md)"
        ));
    }
    let mut set = |k: &str, v: toml::Value| {
        consume.insert(k.to_string(), v);
    };
    set("amqp-url", fm.amqp_url.clone().into());
    for (k, v) in [
        ("ca-file", &fm.tls.ca_cert),
        ("client-cert", &fm.tls.certfile),
        ("client-key", &fm.tls.keyfile),
    ] {
        if let Some(v) = v {
            set(k, v.clone().into());
        }
    }
    set("queue", queue.into());
    let keys: Vec<toml::Value> = fm
        .bindings
        .iter()
        .flat_map(|b| b.routing_keys.iter().cloned().map(toml::Value::from))
        .collect();
    set("routing-keys", toml::Value::Array(keys));
    let exchange = fm.publish_exchange.clone();
    set(
        "exchange",
        exchange.unwrap_or_else(|| "amq.topic".into()).into(),
    );
    if let Some(n) = fm.qos.prefetch_count {
        set("prefetch", i64::from(n).into());
    }
    if let Some(prefix) = fm.topic_prefix.as_ref().filter(|p| !p.is_empty()) {
        set("publish-topic-prefix", prefix.clone().into());
    }
    set("passive-declares", fm.passive_declares.into());
    Ok(consume)
}

/// The exchanges, the queue, its bindings and the client properties a
/// fedora-messaging file names.
fn topology(fm: &FmFile, name: &str, queue: &FmQueue) -> Result<Topology, String> {
    let arguments = |t: &BTreeMap<String, toml::Value>, at: &str| {
        crate::arguments(t).map_err(|why| format!("{at}: {why}"))
    };
    let mut exchanges = Vec::new();
    for (x_name, x) in &fm.exchanges {
        exchanges.push(archgate_service::ExchangeSpec {
            name: x_name.clone(),
            kind: x.kind.clone(),
            durable: x.durable,
            auto_delete: x.auto_delete,
            arguments: arguments(&x.arguments, &format!("[exchanges.{x_name}] arguments"))?,
        });
    }
    let bindings = fm
        .bindings
        .iter()
        .map(|b| archgate_service::BindingSpec {
            exchange: b.exchange.clone(),
            routing_keys: b.routing_keys.clone(),
        })
        .collect();
    let queue = archgate_service::QueueSpec {
        name: name.to_string(),
        durable: queue.durable,
        auto_delete: queue.auto_delete,
        exclusive: queue.exclusive,
        arguments: arguments(&queue.arguments, &format!("[queues.\"{name}\"] arguments"))?,
    };
    let client_properties = fm
        .client_properties
        .iter()
        .map(|(k, v)| {
            let v = match v {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), v)
        })
        .collect();
    Ok(Topology {
        exchanges,
        queue,
        bindings,
        client_properties,
        mail: None,
    })
}

/// SMTPHandler's `mailhost`: `"HOST"` (port 25) or `["HOST", PORT]`.
fn mailhost(v: Option<&toml::Value>) -> Result<(String, u16), String> {
    let want = || "\"HOST\" or [\"HOST\", PORT]".to_string();
    match v {
        Some(toml::Value::String(host)) => Ok((host.clone(), 25)),
        Some(toml::Value::Array(a)) => match &a[..] {
            [toml::Value::String(host), toml::Value::Integer(port)] => {
                let port = u16::try_from(*port).map_err(|_| format!("no such port {port}"))?;
                Ok((host.clone(), port))
            }
            _ => Err(want()),
        },
        _ => Err(want()),
    }
}

/// Python's level names, as `tracing`'s levels (`NOTSET`: everything).
fn level(name: &str) -> Result<tracing::Level, String> {
    Ok(match name.to_ascii_uppercase().as_str() {
        "CRITICAL" | "FATAL" | "ERROR" => tracing::Level::ERROR,
        "WARNING" | "WARN" => tracing::Level::WARN,
        "INFO" => tracing::Level::INFO,
        "DEBUG" | "NOTSET" => tracing::Level::DEBUG,
        other => {
            return Err(format!(
                "level {other:?} is not one of Python's logging levels"
            ))
        }
    })
}

/// The SMTPHandler that a logger of `[log_config]` uses (the root logger
/// or a named one): where errors are mailed, as Python's
/// `logging.handlers.SMTPHandler` would mail them.
fn mail(log_config: &toml::Table) -> Result<Option<Mail>, String> {
    let table = |v: Option<&toml::Value>| {
        v.and_then(toml::Value::as_table)
            .cloned()
            .unwrap_or_default()
    };
    let handlers = table(log_config.get("handlers"));
    let mut loggers: Vec<toml::Table> = table(log_config.get("loggers"))
        .values()
        .filter_map(|v| v.as_table().cloned())
        .collect();
    loggers.extend(log_config.get("root").and_then(|v| v.as_table()).cloned());
    let used = |name: &str| {
        loggers.iter().any(|l| {
            l.get("handlers")
                .and_then(|h| h.as_array())
                .is_some_and(|h| h.iter().any(|n| n.as_str() == Some(name)))
        })
    };
    let smtp: Vec<(&String, &toml::Value)> = handlers
        .iter()
        .filter(|(name, h)| {
            h.get("class").and_then(|c| c.as_str()) == Some("logging.handlers.SMTPHandler")
                && used(name)
        })
        .collect();
    let (name, h) = match smtp[..] {
        [] => return Ok(None),
        [one] => one,
        _ => return Err("more than one SMTPHandler is used: archgate mails through one".into()),
    };
    let at = |key: &str| format!("handlers.{name}.{key}");
    for unsupported in ["credentials", "secure"] {
        if h.get(unsupported).is_some() {
            return Err(format!(
                "{}: archgate mails over plain SMTP, without login or TLS (as Fedora's mail host takes it); remove it or mail through a relay that needs neither",
                at(unsupported)
            ));
        }
    }
    let text = |key: &str| -> Result<String, String> {
        h.get(key)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("{}: a string is needed", at(key)))
    };
    let (host, port) =
        mailhost(h.get("mailhost")).map_err(|e| format!("{}: {e}", at("mailhost")))?;
    let to = match h.get("toaddrs") {
        Some(toml::Value::String(one)) => vec![one.clone()],
        Some(toml::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    if to.is_empty() {
        return Err(format!("{}: no address to mail to", at("toaddrs")));
    }
    let level = match h.get("level").and_then(|v| v.as_str()) {
        Some(l) => level(l).map_err(|e| format!("{}: {e}", at("level")))?,
        None => tracing::Level::DEBUG,
    };
    Ok(Some(Mail {
        host,
        port,
        from: text("fromaddr")?,
        to,
        subject: text("subject")?,
        level,
    }))
}
