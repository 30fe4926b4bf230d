//! `archgate.toml` (docs/configuration.md): the configuration model, its
//! parsing and validation, and what it gives: the [`archgate_runner::RunSpec`]
//! of a run and the [`archgate_service::ConsumeSpec`] of the service.
//! Everything is checked while it is read, so every error names the file,
//! the line and the key. The CLI parses flags and calls [`load`]; a program
//! that embeds the runner or the service loads the same file the same way:
//!
//! ```no_run
//! let loaded = archgate_config::load(std::path::Path::new("archgate.toml"))?;
//! let spec = loaded.run_spec(&archgate_config::Options::default())?;
//! # Ok::<(), archgate_config::ConfigError>(())
//! ```
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

mod fedora_messaging;

use archgate_core::Age;
use archgate_core::{Arch, Policy, Releases, Repository, TagRule, Template, When};
use serde::de::{self, Deserializer};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    pub source: SourceConfig,
    #[serde(default)]
    pub gate: GateConfig,
    #[serde(default)]
    pub publisher: PublisherConfig,
    /// Per-registry settings, keyed by `host[:port]`, for `docker://` targets.
    #[serde(default)]
    pub registry: BTreeMap<String, RegistryConfig>,
    /// What the release words mean for tags.
    #[serde(default)]
    pub release: ReleaseConfig,
    /// `archgate consume`: the service.
    pub consume: Option<ConsumeConfig>,
    /// Signing what is published (sigstore).
    pub sign: Option<SignConfig>,
    #[serde(default)]
    pub image: Vec<ImageConfig>,
}

/// `[sign]`: sigstore signatures of what is published (docs/configuration.md).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct SignConfig {
    /// An encrypted sigstore/cosign private key (PEM).
    pub sigstore_private_key: Option<String>,
    /// A file holding the key's passphrase (one line).
    pub passphrase_file: Option<String>,
    /// An environment variable holding the key's passphrase.
    pub passphrase_env: Option<String>,
    /// The public key `status` verifies with (PEM).
    pub public_key: Option<String>,
}

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
    /// How long a run waits for a target another consumer is publishing.
    #[serde(default = "default_lease_wait", deserialize_with = "duration")]
    pub lease_wait: std::time::Duration,
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
    1
}
fn default_statuses() -> Vec<String> {
    vec!["FINISHED".into(), "FINISHED_INCOMPLETE".into()]
}
fn default_max_attempts() -> u32 {
    5
}
fn default_lease_wait() -> std::time::Duration {
    std::time::Duration::from_secs(600)
}
fn default_retry_delay() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    let s = String::deserialize(d)?;
    let age: Age = s.parse().map_err(de::Error::custom)?;
    Ok(std::time::Duration::from_secs(age.seconds.max(0) as u64))
}

fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<std::net::SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map(Some).map_err(|_| {
        de::Error::custom(format!(
            "`{s}` is not an address and port, e.g. \"127.0.0.1:9464\""
        ))
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReleaseConfig {
    /// The newest stable release: the one the `latest` rule applies to.
    #[serde(default, deserialize_with = "release_number")]
    pub latest: Option<String>,
    /// The number a Rawhide compose stands for, for `{version}`.
    #[serde(default, deserialize_with = "release_number")]
    pub rawhide: Option<String>,
}

impl ReleaseConfig {
    pub fn releases(&self) -> Releases {
        Releases {
            latest: self.latest.clone(),
            rawhide: self.rawhide.clone(),
        }
    }
}

/// A release number, written as a string (`"42"`) or an integer (`42`).
fn release_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Text(String),
        Int(u64),
    }
    let n = match Number::deserialize(d)? {
        Number::Text(s) => s,
        Number::Int(n) => n.to_string(),
    };
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(de::Error::custom(format!(
            "`{n}` is not a release number, e.g. \"42\""
        )));
    }
    Ok(Some(n))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SourceKind {
    Pungi,
    Koji,
    Dir,
    Plugin,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct SourceConfig {
    pub kind: SourceKind,
    pub location: Option<String>,
    /// koji: the hub's XML-RPC URL and the top URL of its files.
    pub hub: Option<String>,
    pub topurl: Option<String>,
    /// plugin: the shared library, and the table handed to it.
    pub library: Option<String>,
    pub settings: Option<toml::Table>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct GateConfig {
    #[serde(default)]
    pub policy: Policy,
    #[serde(default)]
    pub required_arches: Vec<Arch>,
    #[serde(default)]
    pub retired_arches: Vec<Arch>,
    #[serde(default, deserialize_with = "age")]
    pub max_carry_age: Option<Age>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EngineKind {
    #[default]
    Native,
    Buildah,
    Skopeo,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublisherConfig {
    #[serde(default)]
    pub engine: EngineKind,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RegistryConfig {
    #[serde(default = "yes")]
    pub tls_verify: bool,
    pub auth_file: Option<String>,
    /// containers-certs.d(5): `*.crt` CAs, `NAME.cert` + `NAME.key` pairs.
    pub cert_dir: Option<String>,
    /// Environment variables holding the user name and password.
    pub username_env: Option<String>,
    pub password_env: Option<String>,
    /// How long one operation on this registry may take, tries included.
    #[serde(default, deserialize_with = "some_duration")]
    pub timeout: Option<std::time::Duration>,
}

fn some_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<std::time::Duration>, D::Error> {
    duration(d).map(Some)
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct ImageConfig {
    pub name: toml::Spanned<String>,
    #[serde(default, rename = "match")]
    pub matcher: BTreeMap<String, String>,
    #[serde(deserialize_with = "repositories")]
    pub repositories: Vec<Repository>,
    #[serde(deserialize_with = "tags")]
    pub tags: Vec<TagRule>,
    #[serde(default = "default_arch_tag", deserialize_with = "template")]
    pub arch_tag: Template,
    /// Written on each index published (values are templates).
    #[serde(default, deserialize_with = "annotations")]
    pub annotations: BTreeMap<String, Template>,
    pub arches: Option<Vec<Arch>>,
    pub policy: Option<Policy>,
    /// `false`: what is published for this image is not signed.
    pub sign: Option<bool>,
}

fn default_arch_tag() -> Template {
    Template::parse("{tag}-{arch}").expect("the default arch tag is valid")
}

fn age<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Age>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map(Some).map_err(de::Error::custom)
}

fn template<'de, D: Deserializer<'de>>(d: D) -> Result<Template, D::Error> {
    Template::parse(&String::deserialize(d)?).map_err(de::Error::custom)
}

/// `tags`: each a template, or `{ tag = TEMPLATE, when = CONDITION }`.
fn tags<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<TagRule>, D::Error> {
    let raw = Vec::<TagEntry>::deserialize(d)?;
    if raw.is_empty() {
        return Err(de::Error::custom(
            "`tags` is empty; name at least one tag, e.g. [\"{release}\", \"latest\"]",
        ));
    }
    Ok(raw.into_iter().map(|t| t.0).collect())
}

struct TagEntry(TagRule);

impl<'de> Deserialize<'de> for TagEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> de::Visitor<'de> for Visit {
            type Value = TagEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a tag template, or a table { tag = TEMPLATE, when = CONDITION }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TagEntry, E> {
                let template = Template::parse(v).map_err(E::custom)?;
                Ok(TagEntry(TagRule {
                    template,
                    when: None,
                }))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<TagEntry, A::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Table {
                    #[serde(deserialize_with = "template")]
                    tag: Template,
                    #[serde(default, deserialize_with = "when")]
                    when: Option<When>,
                }
                let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(TagEntry(TagRule {
                    template: t.tag,
                    when: t.when,
                }))
            }
        }
        d.deserialize_any(Visit)
    }
}

fn when<'de, D: Deserializer<'de>>(d: D) -> Result<Option<When>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map(Some).map_err(de::Error::custom)
}

fn annotations<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Template>, D::Error> {
    let raw = BTreeMap::<String, String>::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| {
            if k.is_empty() {
                return Err(de::Error::custom("an annotation key may not be empty"));
            }
            if archgate_core::ComposeStamp::is_stamp_key(&k) {
                return Err(de::Error::custom(format!(
                    "annotation `{k}` is written by archgate on every index (it names the compose the index came from); leave it out"
                )));
            }
            let t = Template::parse_text(&v).map_err(de::Error::custom)?;
            if t.uses("arch") {
                return Err(de::Error::custom(format!(
                    "annotation `{k}`: an index annotation cannot use {{arch}}"
                )));
            }
            Ok((k, t))
        })
        .collect()
}

fn repositories<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Repository>, D::Error> {
    let raw = Vec::<String>::deserialize(d)?;
    if raw.is_empty() {
        return Err(de::Error::custom(
            "`repositories` is empty; name at least one, e.g. \"oci:out/fedora\"",
        ));
    }
    raw.iter()
        .map(|s| Repository::parse(s).map_err(de::Error::custom))
        .collect()
}

/// A configuration error: exit code 2.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// A loaded configuration and where it came from.
#[derive(Debug)]
pub struct Loaded {
    pub(crate) config: Config,
    /// The file it was read from.
    pub path: PathBuf,
    text: String,
    /// A fedora-messaging file's topology (its `[consumer_config]` is
    /// `config`, and `text` was made from it: no line numbers then).
    fedora_messaging: Option<fedora_messaging::Topology>,
}

impl Loaded {
    /// Relative paths in the file are relative to the file's directory.
    pub fn resolve_path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            return p.to_path_buf();
        }
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.join(p),
            _ => p.to_path_buf(),
        }
    }

    /// `FILE:LINE: message` for a place in the file.
    pub fn error_at(&self, offset: usize, msg: impl fmt::Display) -> ConfigError {
        if self.fedora_messaging.is_some() {
            return ConfigError(format!("{} [consumer_config]: {msg}", self.path.display()));
        }
        ConfigError(format!(
            "{}:{}: {msg}",
            self.path.display(),
            line_of(&self.text, offset)
        ))
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The largest configuration file archgate reads.
const MAX_CONFIG: u64 = 16 << 20;

/// Reads, parses and checks the configuration file at `path`.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    use std::io::Read;
    let cannot = |e: std::io::Error| ConfigError(format!("{}: cannot read: {e}", path.display()));
    let meta = std::fs::metadata(path).map_err(cannot)?;
    if !meta.is_file() {
        return Err(ConfigError(format!(
            "{}: not a regular file",
            path.display()
        )));
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CONFIG + 1).read_to_string(&mut text))
        .map_err(cannot)?;
    if text.len() as u64 > MAX_CONFIG {
        return Err(ConfigError(format!(
            "{}: larger than {MAX_CONFIG} bytes",
            path.display()
        )));
    }
    let (config, text, fedora_messaging) = match fedora_messaging::is_fedora_messaging(&text) {
        false => (parse(path, &text)?, text, None),
        true => {
            let file = path.display().to_string();
            let (inner, topology) = fedora_messaging::translate(&file, &text)?;
            // Errors name the table, not a line of the text made from it.
            let config = parse(path, &inner).map_err(|ConfigError(e)| {
                let rest = e.strip_prefix(&format!("{file}:")).unwrap_or(&e);
                let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
                let rest = rest.strip_prefix(':').unwrap_or(rest).trim_start();
                ConfigError(format!("{file} [consumer_config]: {rest}"))
            })?;
            (config, inner, Some(topology))
        }
    };
    let loaded = Loaded {
        config,
        path: path.to_path_buf(),
        text,
        fedora_messaging,
    };
    check(&loaded)?;
    Ok(loaded)
}

fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let at = |span: Option<std::ops::Range<usize>>| match span {
        Some(s) => format!("{}:{}", path.display(), line_of(text, s.start)),
        None => path.display().to_string(),
    };
    let de = toml::Deserializer::parse(text)
        .map_err(|e| ConfigError(format!("{}: {}", at(e.span()), one_line(e.message()))))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let key = if key == "." || key.is_empty() {
            String::new()
        } else {
            format!(" (key `{key}`)")
        };
        ConfigError(format!(
            "{}: {}{key}",
            at(inner.span()),
            one_line(inner.message())
        ))
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Rules that span several keys.
fn check(loaded: &Loaded) -> Result<(), ConfigError> {
    let config = &loaded.config;
    let file = loaded.path.display();
    if config.image.is_empty() {
        return Err(ConfigError(format!(
            "{file}: no [[image]]: name at least one image to publish"
        )));
    }
    for (host, registry) in &config.registry {
        let at = format!("{file}: [registry.\"{host}\"]");
        if let Some(dir) = &registry.cert_dir {
            let path = loaded.resolve_path(dir);
            if !path.is_dir() {
                return Err(ConfigError(format!(
                    "{at} cert-dir `{}` is not a directory (key `registry.{host}.cert-dir`)",
                    path.display()
                )));
            }
        }
        match (&registry.username_env, &registry.password_env) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(ConfigError(format!(
                    "{at} username-env and password-env go together; set both"
                )))
            }
            _ => {}
        }
    }
    one_image_per_target(loaded)?;
    let mut seen = BTreeMap::new();
    for image in &config.image {
        let name = image.name.get_ref();
        if let Some(first) = seen.insert(name.clone(), image.name.span().start) {
            return Err(loaded.error_at(
                image.name.span().start,
                format!(
                    "image `{name}` is named twice (first on line {})",
                    line_of(&loaded.text, first)
                ),
            ));
        }
        if name.is_empty() {
            return Err(loaded.error_at(image.name.span().start, "image name is empty"));
        }
        if config.release.latest.is_none() {
            if let Some((i, rule)) = image
                .tags
                .iter()
                .enumerate()
                .find(|(_, r)| r.when.is_some_and(When::needs_latest))
            {
                let when = rule.when.expect("found by its condition");
                return Err(loaded.error_at(
                    image.name.span().start,
                    format!(
                        "image `{name}`: tag `{}` has `when = \"{when}\"`, which needs `[release] latest` (the newest stable release) (key `image.tags[{i}].when`)",
                        rule.template.as_str()
                    ),
                ));
            }
        }
        if !image.arch_tag.as_str().contains("{arch}") {
            return Err(loaded.error_at(
                image.name.span().start,
                format!(
                    "image `{name}`: arch-tag `{}` must contain {{arch}}",
                    image.arch_tag.as_str()
                ),
            ));
        }
    }
    Ok(())
}

/// One target, one image: a repository and tag rule named twice (by two
/// images, or twice by one) is refused before anything is read. Rules
/// that differ only once rendered (`41` and `{version}`) are refused by the
/// run, once the compose names them, before any target is read.
fn one_image_per_target(loaded: &Loaded) -> Result<(), ConfigError> {
    let mut seen: BTreeMap<(String, Option<String>), &str> = BTreeMap::new();
    for image in &loaded.config.image {
        let name = image.name.get_ref().as_str();
        for repo in &image.repositories {
            for rule in &image.tags {
                let target = repo.tagged(rule.template.as_str());
                let when = rule.when.map(|w| w.to_string());
                if let Some(first) = seen.insert((target.clone(), when), name) {
                    let why = match first == name {
                        true => format!("image `{name}` names the target {target} twice"),
                        false => format!(
                            "the target {target} is named by images `{first}` and `{name}`: one target, one image"
                        ),
                    };
                    return Err(loaded.error_at(image.name.span().start, why));
                }
            }
        }
    }
    Ok(())
}

/// What the command line adds to the configuration.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// `--compose`: overrides `[source] location`.
    pub compose: Option<String>,
    /// `--policy`: overrides every image's policy.
    pub policy: Option<Policy>,
    /// `plan`, `publish --dry-run`: write nothing.
    pub dry_run: bool,
    /// `--allow-older`: roll a tag back to an older compose on purpose.
    pub allow_older: bool,
    /// Read `[sign] public-key` only, not the private key (`status`
    /// verifies, it never signs).
    pub verify_only: bool,
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
        let allowed_locations = archgate_core::AllowedLocations::new(&c.allowed_locations)
            .map_err(|why| {
                ConfigError(format!(
                    "{file}: [consume] allowed-locations: {why} (key `consume.allowed-locations`)"
                ))
            })?;
        if c.max_attempts == 0 || c.prefetch == 0 {
            return Err(ConfigError(format!(
                "{file}: [consume] max-attempts and prefetch must be at least 1"
            )));
        }
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
            lease_wait: c.lease_wait,
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

    /// The broker password of `amqp-password-file` or `amqp-password-env`.
    fn amqp_password(&self, c: &ConsumeConfig) -> Result<Option<String>, ConfigError> {
        let (file, env) = (&c.amqp_password_file, &c.amqp_password_env);
        self.secret("consume", "amqp-password", file, env)
    }

    /// A secret from `[SECTION] BASE-file` (its first line) or `BASE-env`
    /// (an environment variable), one of the two at most; none without.
    fn secret(
        &self,
        section: &str,
        base: &str,
        file: &Option<String>,
        env: &Option<String>,
    ) -> Result<Option<String>, ConfigError> {
        let at = format!("{}: [{section}] {base}", self.path.display());
        match (file, env) {
            (Some(_), Some(_)) => Err(ConfigError(format!(
                "{at}-file and {base}-env: set one, not both"
            ))),
            (Some(p), None) => {
                let path = self.resolve_path(p);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    ConfigError(format!(
                        "{at}-file {}: cannot read: {e} (key `{section}.{base}-file`)",
                        path.display()
                    ))
                })?;
                Ok(Some(text.lines().next().unwrap_or("").to_string()))
            }
            (None, Some(var)) => std::env::var(var).map(Some).map_err(|_| {
                ConfigError(format!(
                    "{at}-env: the environment variable {var} is not set (key `{section}.{base}-env`)"
                ))
            }),
            (None, None) => Ok(None),
        }
    }

    /// The run this configuration and these options ask for: every path
    /// resolved, every registry's credentials and cert dir read.
    pub fn run_spec(&self, opts: &Options) -> Result<archgate_runner::RunSpec, ConfigError> {
        use archgate_runner::{Engine, GateSpec, ImageSpec, RepoSpec, RunSpec};
        let config = &self.config;
        let mut registries = BTreeMap::new();
        for image in &config.image {
            for repo in &image.repositories {
                if let Repository::Registry { host, .. } = repo {
                    if !registries.contains_key(host) {
                        registries.insert(host.clone(), self.registry_spec(host)?);
                    }
                }
            }
        }
        let images = config
            .image
            .iter()
            .map(|i| ImageSpec {
                name: i.name.get_ref().clone(),
                origin: format!(
                    "{}:{}",
                    self.path.display(),
                    line_of(&self.text, i.name.span().start)
                ),
                matcher: i.matcher.clone(),
                repositories: i
                    .repositories
                    .iter()
                    .map(|r| RepoSpec {
                        repository: r.clone(),
                        layout_dir: match r {
                            Repository::Layout { dir } => Some(self.resolve_path(dir)),
                            Repository::Registry { .. } => None,
                        },
                    })
                    .collect(),
                tags: i.tags.clone(),
                arch_tag: i.arch_tag.clone(),
                annotations: i.annotations.clone(),
                arches: i.arches.clone(),
                policy: i.policy,
                sign: i.sign.unwrap_or(true),
            })
            .collect();
        Ok(RunSpec {
            source: self.source_spec(opts)?,
            engine: match config.publisher.engine {
                EngineKind::Native => Engine::Native,
                EngineKind::Skopeo => Engine::Skopeo,
                EngineKind::Buildah => Engine::Buildah,
            },
            gate: GateSpec {
                policy: config.gate.policy,
                required: config.gate.required_arches.clone(),
                retired: config.gate.retired_arches.clone(),
                max_carry_age: config.gate.max_carry_age,
            },
            policy_override: opts.policy,
            releases: config.release.releases(),
            registries,
            images,
            dry_run: opts.dry_run,
            allow_older: opts.allow_older,
            allowed_locations: None,
            sign: self.sign_spec(opts.verify_only)?,
        })
    }

    fn source_spec(&self, opts: &Options) -> Result<archgate_runner::SourceSpec, ConfigError> {
        use archgate_runner::SourceSpec;
        let source = &self.config.source;
        let file = self.path.display();
        let location = match (&opts.compose, &source.location) {
            (Some(cli), _) => Some(cli.clone()),
            (None, Some(loc)) if loc.contains("://") => Some(loc.clone()),
            (None, Some(loc)) if source.kind == SourceKind::Koji => Some(loc.clone()),
            (None, Some(loc)) => Some(self.resolve_path(loc).to_string_lossy().into_owned()),
            (None, None) => None,
        };
        let need_location = || {
            location.clone().ok_or_else(|| {
                ConfigError(format!(
                    "{file}: [source] location is not set and --compose was not given"
                ))
            })
        };
        Ok(match source.kind {
            SourceKind::Dir => SourceSpec::Dir {
                location: PathBuf::from(need_location()?),
            },
            SourceKind::Pungi => SourceSpec::Pungi {
                location: need_location()?,
            },
            SourceKind::Koji => {
                let missing = |key: &str| {
                    ConfigError(format!("{file}: [source] kind \"koji\" needs `{key}`"))
                };
                SourceSpec::Koji {
                    hub: source.hub.clone().ok_or_else(|| missing("hub"))?,
                    topurl: source.topurl.clone().ok_or_else(|| missing("topurl"))?,
                    task: location.ok_or_else(|| {
                        ConfigError(format!("{file}: [source] location (the Koji task id) is not set and --compose was not given"))
                    })?,
                }
            }
            SourceKind::Plugin => SourceSpec::Plugin {
                library: self.resolve_path(source.library.as_deref().ok_or_else(|| {
                    ConfigError(format!("{file}: [source] kind \"plugin\" needs `library`"))
                })?),
                location,
                settings: serde_json::to_value(source.settings.clone().unwrap_or_default())
                    .map_err(|e| ConfigError(format!("{file}: [source] settings: {e}")))?,
            },
        })
    }

    /// `[sign] public-key`, read; `None` without one.
    pub fn public_key(&self) -> Result<Option<archgate_sign::VerifyingKey>, ConfigError> {
        self.sign_spec(true).map(|s| s.public)
    }

    /// `[sign]`, the keys read: the private key decrypted (unless
    /// `verify_only`), the public key parsed. A key that cannot be read or
    /// decrypted is an error naming its file; the passphrase is never shown.
    fn sign_spec(&self, verify_only: bool) -> Result<archgate_runner::SignSpec, ConfigError> {
        let Some(c) = &self.config.sign else {
            return Ok(Default::default());
        };
        let file = self.path.display();
        let err = |key: &str, e: archgate_sign::KeyError| {
            ConfigError(format!("{file}: [sign] {key}: {e} (key `sign.{key}`)"))
        };
        let public = match &c.public_key {
            Some(p) => Some(
                archgate_sign::VerifyingKey::read(&self.resolve_path(p))
                    .map_err(|e| err("public-key", e))?,
            ),
            None => None,
        };
        let key = match (&c.sigstore_private_key, verify_only) {
            (Some(k), false) => {
                let passphrase = self.passphrase(c)?;
                let key = archgate_sign::SigningKey::read(&self.resolve_path(k), &passphrase)
                    .map_err(|e| err("sigstore-private-key", e))?;
                Some(std::sync::Arc::new(key))
            }
            _ => None,
        };
        Ok(archgate_runner::SignSpec { key, public })
    }

    /// The passphrase of `[sign]`'s key: from `passphrase-file` (its first
    /// line) or `passphrase-env`; empty without either.
    fn passphrase(&self, c: &SignConfig) -> Result<archgate_sign::Passphrase, ConfigError> {
        let (file, env) = (&c.passphrase_file, &c.passphrase_env);
        let secret = self.secret("sign", "passphrase", file, env)?;
        Ok(archgate_sign::Passphrase::new(
            secret.as_deref().unwrap_or(""),
        ))
    }

    /// How `host` is reached: `[registry."HOST"]` with the credentials
    /// (environment variables first, then auth files) and the cert dir read.
    pub fn registry_spec(&self, host: &str) -> Result<archgate_runner::RegistrySpec, ConfigError> {
        registry_spec(Some(self), host)
    }
}

/// [`Loaded::registry_spec`], or the defaults for a host without a
/// configuration (`archgate inspect` without `-c`).
pub fn registry_spec(
    loaded: Option<&Loaded>,
    host: &str,
) -> Result<archgate_runner::RegistrySpec, ConfigError> {
    let configured = loaded.and_then(|l| l.config.registry.get(host));
    let resolve = |f: &str| match loaded {
        Some(l) => l.resolve_path(f),
        None => PathBuf::from(f),
    };
    let error = |e: anyhow::Error| {
        let place = loaded
            .map(|l| format!("{}: ", l.path.display()))
            .unwrap_or_default();
        ConfigError(format!("{place}[registry.\"{host}\"]: {e:#}"))
    };
    let auth_file = configured.and_then(|c| c.auth_file.as_deref()).map(resolve);
    let env_credentials = match configured
        .and_then(|c| c.username_env.as_deref().zip(c.password_env.as_deref()))
    {
        Some((user, pass)) => Some(archgate_native::env_credentials(user, pass).map_err(error)?),
        None => None,
    };
    let from_env = env_credentials.is_some();
    let credentials = match env_credentials {
        Some(c) => Some(c),
        None => archgate_native::lookup_credentials(host, auth_file.as_deref()).map_err(error)?,
    };
    let configured_dir = configured.and_then(|c| c.cert_dir.as_deref()).map(resolve);
    let cert_dir = archgate_native::cert_dir(host, configured_dir.as_deref()).map_err(error)?;
    let tls = match &cert_dir {
        Some(dir) => archgate_native::load_cert_dir(dir).map_err(error)?,
        None => Default::default(),
    };
    if let Some(dir) = &cert_dir {
        tracing::debug!(host, dir = %dir.display(), cas = tls.cas.len(), client_certificate = tls.identity.is_some(), "cert dir");
    }
    Ok(archgate_runner::RegistrySpec {
        timeout: configured
            .and_then(|c| c.timeout)
            .unwrap_or(std::time::Duration::from_secs(60)),
        tls_verify: configured.is_none_or(|c| c.tls_verify),
        credentials,
        cert_dir,
        tls,
        auth_file,
        env_credentials: from_env,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("archgate.toml");
        std::fs::write(&path, text).unwrap();
        load(&path)
            .unwrap_err()
            .0
            .replace(&tmp.path().display().to_string(), "DIR")
    }

    const GOOD: &str = "[source]\nkind = \"dir\"\nlocation = \"c\"\n\n[[image]]\nname = \"fedora\"\nrepositories = [\"oci:out/fedora\"]\ntags = [\"{release}\"]\n";

    #[test]
    fn a_good_config_loads() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("archgate.toml");
        std::fs::write(&path, GOOD).unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.config.image[0].arch_tag.as_str(), "{tag}-{arch}");
        assert_eq!(loaded.config.gate.policy, Policy::Refuse);
        assert_eq!(loaded.resolve_path("out"), tmp.path().join("out"));
    }

    #[test]
    fn errors_name_file_line_and_key() {
        insta::assert_snapshot!(err(&GOOD.replace("tags =", "tagz =")), @"DIR/archgate.toml:8: unknown field `tagz`, expected one of `name`, `match`, `repositories`, `tags`, `arch-tag`, `annotations`, `arches`, `policy`, `sign` (key `image[0].tagz`)");
        insta::assert_snapshot!(err(&format!("{GOOD}\n[gate]\npolicy = \"yolo\"\n")), @"DIR/archgate.toml:11: unknown variant `yolo`, expected one of `refuse`, `lose`, `hybrid` (key `gate.policy`)");
        insta::assert_snapshot!(err(&format!("{GOOD}arches = [\"x86_64\", \"arm64\"]\n")), @"DIR/archgate.toml:9: unknown arch `arm64`; known arches: x86_64, aarch64, ppc64le, s390x, armhfp, i686, riscv64 (key `image[0].arches[1]`)");
        insta::assert_snapshot!(err(&GOOD.replace("[\"{release}\"]", "[]")), @"DIR/archgate.toml:8: `tags` is empty; name at least one tag, e.g. [\"{release}\", \"latest\"] (key `image[0].tags`)");
        insta::assert_snapshot!(err(&GOOD.replace("{release}", "{relase}")), @"DIR/archgate.toml:8: unknown placeholder `{relase}` in `{relase}`; known: {release}, {version}, {compose_id}, {date}, {respin}, {tag}, {arch} (key `image[0].tags[0]`)");
        insta::assert_snapshot!(err(&GOOD.replace("oci:out/fedora", "fedora")), @"DIR/archgate.toml:7: `fedora` names no registry host; write docker://HOST/PATH (key `image[0].repositories`)");
        insta::assert_snapshot!(err(&format!("{GOOD}\n[gate]\nmax-carry-age = \"two weeks\"\n")), @"DIR/archgate.toml:11: bad duration `two weeks`: write a number and a unit (s, m, h, d, w), e.g. `14d` or `1d12h` (key `gate.max-carry-age`)");
        insta::assert_snapshot!(err(&GOOD.replace("kind = \"dir\"", "kind = \"svn\"")), @"DIR/archgate.toml:2: unknown variant `svn`, expected one of `pungi`, `koji`, `dir`, `plugin` (key `source.kind`)");
        insta::assert_snapshot!(err("[source\nkind = 1"), @"DIR/archgate.toml:1: unclosed table, expected `]`");
        insta::assert_snapshot!(err(&format!("{GOOD}\n[[image]]\nname = \"fedora\"\nrepositories = [\"oci:x\"]\ntags = [\"a\"]\n")), @"DIR/archgate.toml:11: image `fedora` is named twice (first on line 6)");
        insta::assert_snapshot!(err("[source]\nkind = \"dir\"\n"), @"DIR/archgate.toml: no [[image]]: name at least one image to publish");
        assert!(err("").contains("missing field `source`"));
    }

    #[test]
    fn missing_file() {
        let e = load(Path::new("/nonexistent/archgate.toml")).unwrap_err();
        assert!(
            e.0.starts_with("/nonexistent/archgate.toml: cannot read:"),
            "{e}"
        );
    }
}
