//! What one run is asked to do ([`RunSpec`]), and what it is handed from
//! outside ([`Env`]). Both are plain values: validated, free of TOML, read
//! from no process global. The CLI builds them from `archgate.toml`; the
//! service builds one per message.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use archgate_core::Age;
use archgate_core::{Arch, Policy, Releases, Repository, TagRule, Template};
use archgate_native::Credentials;
use archgate_native::TlsFiles;

/// Where the compose comes from.
#[derive(Debug, Clone)]
pub enum SourceSpec {
    /// A compose root (or its `compose/` directory): a path or an http(s) URL.
    Pungi {
        /// The path or URL.
        location: String,
    },
    /// A Koji image task.
    Koji {
        /// The hub's XML-RPC URL.
        hub: String,
        /// The top URL of the hub's files.
        topurl: String,
        /// The parent task's id.
        task: String,
    },
    /// A directory of build outputs.
    Dir {
        /// The directory.
        location: PathBuf,
    },
    /// Images already in a registry (CI pipelines).
    Registry(archgate_source_registry::Settings),
    /// A source plugin.
    Plugin {
        /// The shared library.
        library: PathBuf,
        /// The location handed to it.
        location: Option<String>,
        /// `[source] settings`, as JSON.
        settings: serde_json::Value,
    },
}

/// Which engine writes registry targets (`oci:` targets are always native).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// archgate's own registry client.
    Native,
    /// skopeo copies each arch; archgate writes the index.
    Skopeo,
    /// skopeo copies each arch; buildah makes the list.
    Buildah,
}

impl Engine {
    /// The tool a tools engine runs; none for the native engine.
    pub fn tool(self) -> Option<archgate_tools::Tool> {
        match self {
            Engine::Native => None,
            Engine::Skopeo => Some(archgate_tools::Tool::Skopeo),
            Engine::Buildah => Some(archgate_tools::Tool::Buildah),
        }
    }
}

/// The gate settings shared by every image.
#[derive(Debug, Clone, Default)]
pub struct GateSpec {
    /// `[gate] policy`.
    pub policy: Policy,
    /// `required-arches`.
    pub required: Vec<Arch>,
    /// `retired-arches`.
    pub retired: Vec<Arch>,
    /// `max-carry-age` (hybrid only).
    pub max_carry_age: Option<Age>,
}

/// How one registry host is reached: resolved already (credentials read,
/// cert dir found and read).
#[derive(Debug, Clone)]
pub struct RegistrySpec {
    /// One operation (its tries included) gives up after this long.
    pub timeout: std::time::Duration,
    /// Verify TLS certificates (and allow plain HTTP when off).
    pub tls_verify: bool,
    /// Credentials, if any.
    pub credentials: Option<Credentials>,
    /// The cert dir in force, and what it holds.
    pub cert_dir: Option<PathBuf>,
    /// The CAs and client certificate of the cert dir.
    pub tls: TlsFiles,
    /// The configured auth file (for the tools engines).
    pub auth_file: Option<PathBuf>,
    /// The credentials came from environment variables (the tools engines
    /// then get an auth file written for the run).
    pub env_credentials: bool,
}

/// One repository of an image.
#[derive(Debug, Clone)]
pub struct RepoSpec {
    /// As configured: names the targets in reports.
    pub repository: Repository,
    /// For `oci:` repositories, the resolved directory.
    pub layout_dir: Option<PathBuf>,
}

/// One `[[image]]`.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// `name`.
    pub name: String,
    /// Where it was configured (`FILE:LINE`), for messages.
    pub origin: String,
    /// `match`: how the source finds it.
    pub matcher: BTreeMap<String, String>,
    /// `repositories`.
    pub repositories: Vec<RepoSpec>,
    /// `tags`.
    pub tags: Vec<TagRule>,
    /// `arch-tag`.
    pub arch_tag: Template,
    /// `annotations` of each index (templates).
    pub annotations: BTreeMap<String, Template>,
    /// `arches`: the expected arches.
    pub arches: Option<Vec<Arch>>,
    /// `policy`: overrides `[gate]`.
    pub policy: Option<Policy>,
    /// Sign what is written to its registry repositories (with `[sign]`).
    pub sign: bool,
}

/// `[sign]`: the keys, read and checked.
#[derive(Debug, Clone, Default)]
pub struct SignSpec {
    /// Signs every manifest and index written to a registry target.
    pub key: Option<Arc<archgate_sign::SigningKey>>,
    /// The signing key still to be decrypted, when `key` is none: a run
    /// decrypts it while it reads the compose and the current indexes,
    /// and stops (a configuration error) before anything is written when
    /// it cannot.
    pub decrypt: Option<DecryptKey>,
    /// `status` verifies indexes with it.
    pub public: Option<archgate_sign::VerifyingKey>,
}

impl SignSpec {
    /// The key that signs: `key`, or the one a run decrypted.
    pub fn signing_key(&self) -> Option<&Arc<archgate_sign::SigningKey>> {
        self.key
            .as_ref()
            .or_else(|| self.decrypt.as_ref().and_then(|d| d.decrypted.get()))
    }

    /// Whether anything is signed (a key, or one to decrypt).
    pub fn signs(&self) -> bool {
        self.key.is_some() || self.decrypt.is_some()
    }
}

/// A signing key to decrypt (scrypt: about 0.1 s): how, with an error
/// that names the key's file, never the passphrase; and the key once a run
/// has decrypted it (shared by the spec's clones).
#[derive(Clone)]
pub struct DecryptKey {
    /// Decrypts it.
    pub read: Arc<dyn Fn() -> Result<archgate_sign::SigningKey, String> + Send + Sync>,
    /// The key, once decrypted.
    pub decrypted: Arc<std::sync::OnceLock<Arc<archgate_sign::SigningKey>>>,
}

impl DecryptKey {
    /// A key that `read` decrypts.
    pub fn new(
        read: impl Fn() -> Result<archgate_sign::SigningKey, String> + Send + Sync + 'static,
    ) -> DecryptKey {
        DecryptKey {
            read: Arc::new(read),
            decrypted: Default::default(),
        }
    }
}

impl std::fmt::Debug for DecryptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DecryptKey(..)")
    }
}

/// One run: which compose, which images, where, how.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// `[source]`.
    pub source: SourceSpec,
    /// `[publisher] engine`.
    pub engine: Engine,
    /// `[gate]`.
    pub gate: GateSpec,
    /// `--policy`: overrides every image's policy.
    pub policy_override: Option<Policy>,
    /// `[release]`.
    pub releases: Releases,
    /// By `host[:port]`; every registry the images name is here.
    pub registries: BTreeMap<String, RegistrySpec>,
    /// The `[[image]]` tables, in order.
    pub images: Vec<ImageSpec>,
    /// Read and decide, write nothing.
    pub dry_run: bool,
    /// `--allow-older`: publish even where a target holds a newer compose
    /// (an intended rollback).
    pub allow_older: bool,
    /// `[sign]`.
    pub sign: SignSpec,
    /// Where the compose and its artifacts may be read from, at every
    /// request and redirect (the service's `allowed-locations`); none:
    /// anywhere.
    pub allowed_locations: Option<archgate_core::AllowedLocations>,
    /// Once tripped, the run sends nothing more to any registry (the
    /// service trips it when it loses the message the run is for).
    pub fence: Option<archgate_native::Fence>,
    /// `[source] read-timeout`: how long a fetch over HTTP waits for its
    /// next bytes (none: the default).
    pub read_timeout: Option<std::time::Duration>,
    /// `[source] spool-limit`: how many bytes the run may keep of
    /// artifacts from servers without Range requests (none: the default).
    pub spool_limit: Option<u64>,
}

/// What a [`crate::Runner`] is handed from outside, once.
#[derive(Clone)]
pub struct Env {
    /// Where what checked archives hold is cached between runs.
    pub cache_dir: Option<PathBuf>,
    /// Where each run makes its own temp dir (spool, tools' storage).
    pub temp_root: PathBuf,
    /// Unix seconds now, for `max-carry-age`.
    pub clock: Arc<dyn Fn() -> i64 + Send + Sync>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("cache_dir", &self.cache_dir)
            .field("temp_root", &self.temp_root)
            .finish()
    }
}

impl Env {
    /// The system clock.
    pub fn system_clock() -> Arc<dyn Fn() -> i64 + Send + Sync> {
        Arc::new(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        })
    }
}
