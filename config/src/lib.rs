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

mod consume;
mod fedora_messaging;
mod image;
mod registry;
mod source_registry;
mod values;

pub(crate) use consume::{arguments, ConsumeConfig};
pub(crate) use image::ImageConfig;
pub use registry::registry_spec;
pub(crate) use registry::RegistryConfig;
pub(crate) use values::age;

use archgate_core::Age;
use archgate_core::{Arch, Policy, Releases, Repository, When};
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
    Registry,
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
    /// How long a fetch over HTTP waits for its next bytes.
    #[serde(default, deserialize_with = "values::some_duration")]
    pub read_timeout: Option<std::time::Duration>,
    /// How many bytes the run may keep of artifacts from a server that
    /// offers no Range requests.
    #[serde(default, deserialize_with = "values::some_size")]
    pub spool_limit: Option<u64>,
    /// registry: the repository a digests directory's images were pushed
    /// to, a template of per-arch references, or a reference per arch.
    pub repository: Option<String>,
    pub template: Option<String>,
    pub references: Option<BTreeMap<String, String>>,
    /// registry: the arches that should be there.
    pub arches: Option<Vec<String>>,
    /// registry: the build id (`--build-id` overrides it), `{version}`.
    pub build: Option<String>,
    pub version: Option<String>,
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
    /// `--build-id`: overrides `[source] build` (the `registry` source).
    pub build: Option<String>,
    /// Leave `[sign]`'s private key for the run to decrypt while it reads
    /// the compose (`SignSpec::decrypt`): one run of the CLI. Its file and
    /// passphrase are still read and checked here.
    pub defer_key: bool,
}

impl Loaded {
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
        for host in self.source_hosts(opts)? {
            if !registries.contains_key(&host) {
                registries.insert(host.clone(), self.registry_spec(&host)?);
            }
        }
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
            fence: None,
            read_timeout: self.config.source.read_timeout,
            spool_limit: self.config.source.spool_limit,
            sign: self.sign_spec(opts.verify_only, opts.defer_key)?,
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
            SourceKind::Registry => SourceSpec::Registry(self.registry_source(opts, location)?),
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
        self.sign_spec(true, false).map(|s| s.public)
    }

    /// `[sign]`, the keys read: the private key decrypted (unless
    /// `verify_only`; left for the run to decrypt with `defer`), the public
    /// key parsed. A key that cannot be read or decrypted is an error
    /// naming its file; the passphrase is never shown.
    fn sign_spec(
        &self,
        verify_only: bool,
        defer: bool,
    ) -> Result<archgate_runner::SignSpec, ConfigError> {
        let Some(c) = &self.config.sign else {
            return Ok(Default::default());
        };
        let file = self.path.display().to_string();
        let err = |key: &str, e: archgate_sign::KeyError| ConfigError(sign_error(&file, key, e));
        let public = match &c.public_key {
            Some(p) => Some(
                archgate_sign::VerifyingKey::read(&self.resolve_path(p))
                    .map_err(|e| err("public-key", e))?,
            ),
            None => None,
        };
        let (mut key, mut deferred) = (None, None);
        if let (Some(k), false) = (&c.sigstore_private_key, verify_only) {
            let passphrase = self.passphrase(c)?;
            let name = "sigstore-private-key";
            let encrypted = archgate_sign::EncryptedKey::read(&self.resolve_path(k))
                .map_err(|e| err(name, e))?;
            let file = file.clone();
            let decrypt = move || {
                encrypted
                    .decrypt(&passphrase)
                    .map_err(|e| sign_error(&file, name, e))
            };
            match defer {
                true => deferred = Some(archgate_runner::DecryptKey::new(decrypt)),
                false => key = Some(std::sync::Arc::new(decrypt().map_err(ConfigError)?)),
            }
        }
        Ok(archgate_runner::SignSpec {
            key,
            decrypt: deferred,
            public,
        })
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
}

/// A `[sign]` key of the configuration `file` that cannot be used.
fn sign_error(file: &str, key: &str, e: archgate_sign::KeyError) -> String {
    format!("{file}: [sign] {key}: {e} (key `sign.{key}`)")
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
        insta::assert_snapshot!(err(&GOOD.replace("kind = \"dir\"", "kind = \"svn\"")), @"DIR/archgate.toml:2: unknown variant `svn`, expected one of `pungi`, `koji`, `dir`, `plugin`, `registry` (key `source.kind`)");
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
