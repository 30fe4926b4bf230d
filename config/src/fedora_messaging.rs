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
    /// Everything else fedora-messaging knows (callback, log_config, ...).
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
    let topology = topology(&fm, &name, queue).map_err(err)?;
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
    })
}
