//! The records that flow from sources and registries into the gate.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::arch::{Arch, Platform};
use crate::order::{ComposeOrder, ComposeType};

/// The state a compose ended in (Pungi's `STATUS`, or what a source maps to it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComposeStatus {
    /// Pungi's `STARTED`: still running.
    Started,
    /// `FINISHED`: every deliverable built.
    Finished,
    /// `FINISHED_INCOMPLETE`: finished, some deliverable failed.
    FinishedIncomplete,
    /// `DOOMED`: the compose crashed.
    Doomed,
    /// `TERMINATED`: the compose was killed.
    Terminated,
    /// Any other word a source reports; never counts as finished.
    Other(String),
}

impl ComposeStatus {
    /// A status word (`FINISHED`, ...); any other word is kept as `Other`.
    pub fn parse(s: &str) -> ComposeStatus {
        match s.trim() {
            "STARTED" => ComposeStatus::Started,
            "FINISHED" => ComposeStatus::Finished,
            "FINISHED_INCOMPLETE" => ComposeStatus::FinishedIncomplete,
            "DOOMED" => ComposeStatus::Doomed,
            "TERMINATED" => ComposeStatus::Terminated,
            other => ComposeStatus::Other(other.to_string()),
        }
    }

    /// The status word.
    pub fn as_str(&self) -> &str {
        match self {
            ComposeStatus::Started => "STARTED",
            ComposeStatus::Finished => "FINISHED",
            ComposeStatus::FinishedIncomplete => "FINISHED_INCOMPLETE",
            ComposeStatus::Doomed => "DOOMED",
            ComposeStatus::Terminated => "TERMINATED",
            ComposeStatus::Other(s) => s,
        }
    }

    /// Only finished composes may be published (docs/gate.md, hard refusals).
    pub fn is_finished(&self) -> bool {
        matches!(
            self,
            ComposeStatus::Finished | ComposeStatus::FinishedIncomplete
        )
    }
}

impl fmt::Display for ComposeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ComposeStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ComposeStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(ComposeStatus::parse(&String::deserialize(deserializer)?))
    }
}

/// One compose: what the templates, the report and the compose order need
/// to know about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Compose {
    /// The compose id (`Fedora-41-20241101.n.0`, `koji-task-120000`).
    pub id: String,
    /// The state it ended in.
    pub status: ComposeStatus,
    /// Release version, lower case (`41`, `rawhide`), for `{release}`.
    pub release: Option<String>,
    /// `YYYYMMDD`, for `{date}` and the compose order.
    pub date: Option<String>,
    /// For `{respin}` and the compose order.
    pub respin: Option<u32>,
    /// productmd's compose type (nightly, production, ...), for the order.
    #[serde(skip)]
    pub kind: Option<ComposeType>,
    /// A Koji task id: the order of Koji composes.
    #[serde(skip)]
    pub task: Option<u64>,
    /// When the compose was made (RFC 3339), where the source knows it more
    /// precisely than its date.
    #[serde(skip)]
    pub created_at: Option<String>,
    /// A CI pipeline's build id (the `registry` source): the order of its
    /// builds.
    #[serde(skip)]
    pub build: Option<String>,
}

impl Compose {
    /// A compose known only by its id. Date, type and respin are taken from
    /// a productmd-style id (`Fedora-41-20241101.n.0`), the task from
    /// `koji-task-ID`, where the id has that shape.
    pub fn from_id(id: &str, status: ComposeStatus) -> Compose {
        let mut compose = Compose {
            id: id.to_string(),
            status,
            release: None,
            date: None,
            respin: None,
            kind: None,
            task: None,
            created_at: None,
            build: None,
        };
        match ComposeOrder::from_id(id) {
            Some(ComposeOrder::Dated { date, kind, respin }) => {
                compose.date = Some(date);
                compose.kind = kind;
                compose.respin = respin;
            }
            Some(ComposeOrder::Task(task)) => compose.task = Some(task),
            Some(ComposeOrder::Build(build)) => compose.build = Some(build),
            None => {}
        }
        compose
    }

    /// Its place among composes (docs/gate.md, "Compose order"): a Koji
    /// task's id, else its date, type and respin; `None` without a date.
    pub fn order(&self) -> Option<ComposeOrder> {
        if let Some(build) = &self.build {
            return Some(ComposeOrder::Build(build.clone()));
        }
        if let Some(task) = self.task {
            return Some(ComposeOrder::Task(task));
        }
        let date = self.date.as_ref()?;
        let dated = date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit());
        dated.then(|| ComposeOrder::Dated {
            date: date.clone(),
            kind: self.kind,
            respin: self.respin,
        })
    }

    /// When it was made, RFC 3339: what the source said, else midnight UTC
    /// of its date.
    pub fn created(&self) -> Option<String> {
        if let Some(at) = &self.created_at {
            return Some(at.clone());
        }
        let d = self.date.as_ref().filter(|d| d.len() == 8)?;
        Some(format!("{}-{}-{}T00:00:00Z", &d[..4], &d[4..6], &d[6..8]))
    }
}

/// Where an artifact can be read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A file or directory.
    Path(PathBuf),
    /// An `http(s)://` URL.
    Url(String),
    /// An image already in a registry (the `registry` source).
    Image(ImageRef),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Path(p) => write!(f, "{}", p.display()),
            Location::Url(u) => f.write_str(u),
            Location::Image(i) => write!(f, "{i}"),
        }
    }
}

/// An image manifest in a registry, by digest, and the attestation
/// manifests that came with it (buildx's `unknown/unknown` entries whose
/// `vnd.docker.reference.digest` names it), in the same repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `host[:port]`.
    pub host: String,
    /// The repository's path on it.
    pub repository: String,
    /// The image manifest's digest.
    pub digest: String,
    /// Its attestation manifests, as the index that came with it lists them.
    pub attestations: Vec<Entry>,
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.host, self.repository, self.digest)
    }
}

/// A checksum algorithm a compose may record for an artifact file, weakest
/// first (the order [`Checksum::strongest`] picks by).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChecksumAlgo {
    /// MD5 (the weakest).
    Md5,
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-512 (the strongest).
    Sha512,
}

impl ChecksumAlgo {
    /// The name productmd and Koji use (`md5`, `sha1`, `sha256`, `sha512`).
    pub fn as_str(self) -> &'static str {
        match self {
            ChecksumAlgo::Md5 => "md5",
            ChecksumAlgo::Sha1 => "sha1",
            ChecksumAlgo::Sha256 => "sha256",
            ChecksumAlgo::Sha512 => "sha512",
        }
    }

    /// An algorithm by its name (`md5`, `sha1`, `sha256`, `sha512`; any case).
    pub fn parse(name: &str) -> Option<ChecksumAlgo> {
        match name.trim().to_ascii_lowercase().as_str() {
            "md5" => Some(ChecksumAlgo::Md5),
            "sha1" => Some(ChecksumAlgo::Sha1),
            "sha256" => Some(ChecksumAlgo::Sha256),
            "sha512" => Some(ChecksumAlgo::Sha512),
            _ => None,
        }
    }

    /// Length of the hex digest.
    pub fn hex_len(self) -> usize {
        match self {
            ChecksumAlgo::Md5 => 32,
            ChecksumAlgo::Sha1 => 40,
            ChecksumAlgo::Sha256 => 64,
            ChecksumAlgo::Sha512 => 128,
        }
    }
}

impl fmt::Display for ChecksumAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The checksum a compose recorded for an artifact file: algorithm and hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Checksum {
    /// The algorithm.
    pub algo: ChecksumAlgo,
    /// Lower-case hex, without an `algo:` prefix.
    pub hex: String,
}

impl Checksum {
    /// A checksum from an algorithm name and a hex value (an `algo:` prefix
    /// is allowed). `None` for an unknown algorithm; an `Err` for a value
    /// that is not hex of the algorithm's length.
    pub fn new(algo: &str, value: &str) -> Option<Result<Checksum, String>> {
        let algo = ChecksumAlgo::parse(algo)?;
        let hex = value
            .trim()
            .trim_start_matches(&format!("{}:", algo.as_str()))
            .to_ascii_lowercase();
        if hex.len() != algo.hex_len() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Some(Err(format!("`{value}` is not a {algo} checksum")));
        }
        Some(Ok(Checksum { algo, hex }))
    }

    /// The strongest of the checksums given as (algorithm, value) pairs
    /// (sha512, then sha256, sha1, md5); unknown algorithms are skipped.
    pub fn strongest<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Option<Checksum>, String> {
        let mut best: Option<Checksum> = None;
        for (algo, value) in pairs {
            if let Some(c) = Checksum::new(algo, value) {
                let c = c?;
                if best.as_ref().is_none_or(|b| c.algo > b.algo) {
                    best = Some(c);
                }
            }
        }
        Ok(best)
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algo, self.hex)
    }
}

/// A built image for one arch, as the compose delivered it: an OCI layout, an
/// oci-archive or a docker-archive, possibly compressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Where it is.
    pub location: Location,
    /// The strongest checksum the compose recorded for the artifact file.
    pub checksum: Option<Checksum>,
    /// Its size in bytes, when the compose records it.
    pub size: Option<u64>,
    /// Set by a source whose metadata should give a checksum but does not
    /// for this file: why the file cannot be checked against the compose.
    /// The report says so; the artifact is still read and its blobs verified.
    pub unverified: Option<String>,
}

impl Artifact {
    /// An artifact with no checksum or size to check (an OCI layout, whose
    /// blobs are content-addressed and checked one by one).
    pub fn at(location: Location) -> Artifact {
        Artifact {
            location,
            checksum: None,
            size: None,
            unverified: None,
        }
    }
}

/// What a source reports for one (image, arch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Built, with the artifact.
    Built(Artifact),
    /// Failed, with the reason.
    Failed {
        /// Why, in a sentence.
        reason: String,
    },
}

/// One (image, arch) result of a compose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchResult {
    /// The arch.
    pub arch: Arch,
    /// Built or failed.
    pub outcome: Outcome,
}

/// What a source found in a compose for the configured images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeResults {
    /// The compose.
    pub compose: Compose,
    /// Per image name, one result per arch the source knows of.
    pub images: BTreeMap<String, Vec<ArchResult>>,
}

/// An entry of an index: one arch's manifest, as a descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The platform the index lists (or the config gives).
    pub platform: Platform,
    /// The manifest digest.
    pub digest: String,
    /// The manifest size in bytes.
    pub size: u64,
    /// The manifest media type.
    pub media_type: String,
    /// The descriptor's annotations.
    pub annotations: BTreeMap<String, String>,
    /// The image config's `created`, RFC 3339, when known. Not part of the
    /// descriptor: used only for `max-carry-age`.
    pub created: Option<String>,
}

impl Entry {
    /// Whether two entries would be written as the same descriptor.
    pub fn same_descriptor(&self, other: &Entry) -> bool {
        self.platform == other.platform
            && self.digest == other.digest
            && self.size == other.size
            && self.media_type == other.media_type
            && self.annotations == other.annotations
    }
}

/// What a target points to right now. A single image manifest counts as an
/// index with one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentIndex {
    /// Digest of the index (or of the single manifest) the tag points to.
    pub digest: String,
    /// Its media type (an index, or a single manifest).
    pub media_type: String,
    /// Its entries.
    pub entries: Vec<Entry>,
    /// The index's own annotations (none for a single manifest).
    pub annotations: BTreeMap<String, String>,
}

/// One arch as the gate sees it: built (its manifest, read from the artifact)
/// or failed with a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchInput {
    /// Built: the entry its manifest makes.
    Built(Entry),
    /// Failed: why.
    Failed(String),
}

/// What kind of error ended a run or a target: what the service decides by
/// (retry a message, or set it aside) and what the CLI turns into an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// Bad configuration or usage (exit 2).
    Config,
    /// Input that cannot be read or makes no sense: metadata, a plugin.
    InvalidInput,
    /// The network, a 5xx or 429 after retries, a registry that is down:
    /// worth another try later.
    Transient,
    /// Credentials or certificates refused.
    Auth,
    /// The tag moved between planning and writing (another publisher).
    MovedTag,
    /// Another party's fault that it mends in hours, or time does: a
    /// registry's expired or unknown certificate, its quota, our disk
    /// filling up. Worth trying again over a long horizon; not ours to mend.
    External,
    /// The run was stopped from outside before it ended (the service lost
    /// the message it was running for): it writes nothing more.
    Cancelled,
    /// archgate's own fault.
    Internal,
}

impl ErrorKind {
    /// The word logs and metrics use (`transient`, `moved-tag`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::InvalidInput => "invalid-input",
            ErrorKind::Transient => "transient",
            ErrorKind::Auth => "auth",
            ErrorKind::MovedTag => "moved-tag",
            ErrorKind::External => "external",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Internal => "internal",
        }
    }
}

/// An error that says its kind. Carried inside `anyhow` chains by the
/// publishers, so that whoever reports it can tell the kinds apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindedError {
    /// What kind of error.
    pub kind: ErrorKind,
    /// What went wrong, for people.
    pub message: String,
}

impl fmt::Display for KindedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for KindedError {}
