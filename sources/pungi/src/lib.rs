//! The `pungi` source: a Pungi compose, read from its productmd metadata
//! (docs/sources.md says which shapes are read).
//!
//! ```text
//! ROOT/STATUS                                 FINISHED, FINISHED_INCOMPLETE, DOOMED, ...
//! ROOT/compose/metadata/composeinfo.json      compose id, date, respin; release version
//! ROOT/compose/metadata/images.json           every image, per variant and arch
//! ROOT/logs/global/deliverables.json          (optional) what failed
//! ```
//!
//! `STATUS` is read first: an unfinished compose (STARTED, DOOMED, ...) is
//! refused by the gate whatever its metadata, so its metadata is optional
//! (a STARTED compose has no `images.json` yet, a DOOMED one may have none).
//!
//! A failed arch is simply absent from `images.json`; when
//! `deliverables.json` lists it as failed, that gives the reason. Pungi
//! writes its items as `[variant, arch, subvariant]`, with `null` for a
//! missing variant or subvariant and `"*"` for a phase that failed on every
//! arch; every shape is read, and items that match no image are ignored.
//!
//! The location may be the compose root or its `compose/` directory (as
//! Pungi's messages give it).
#![warn(missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use archgate_core::{
    AllowedLocations, Arch, ArchResult, Artifact, Checksum, Compose, ComposeResults, ComposeStatus,
    ImageQuery, Location, Outcome, Source, SourceError,
};
use serde::Deserialize;

/// Where the compose is read from.
pub trait Fetch {
    /// The bytes of a metadata file relative to the compose root, or `None`
    /// when it does not exist.
    fn fetch(&self, rel: &str) -> Result<Option<Vec<u8>>, SourceError>;
    /// Where an artifact (relative to the root) is read from.
    fn location(&self, rel: &str) -> Location;
    /// The file or URL, for messages.
    fn describe(&self, rel: &str) -> String;
    /// The last part of the root's path: the compose id, as Pungi names its
    /// directories. Used when no metadata gives the id.
    fn root_name(&self) -> String;
    /// Refuses an artifact that is not a regular file inside the compose
    /// (a link out of it, a FIFO, a device); one that is missing is left to
    /// the reader, which makes its arch failed.
    fn check(&self, _rel: &str) -> Result<(), SourceError> {
        Ok(())
    }
}

/// A compose on a local (or mounted) file system.
pub struct LocalCompose(pub PathBuf);

impl LocalCompose {
    /// The compose at `path`: its root, or its `compose/` directory.
    pub fn new(path: impl Into<PathBuf>) -> LocalCompose {
        let path: PathBuf = path.into();
        let is_compose_dir = path.file_name().is_some_and(|n| n == "compose")
            && !path.join("STATUS").exists()
            && path.parent().is_some_and(|p| p.join("STATUS").exists());
        match path.parent() {
            Some(parent) if is_compose_dir => LocalCompose(parent.to_path_buf()),
            _ => LocalCompose(path),
        }
    }
}

/// The largest metadata file archgate reads (images.json of a big compose
/// is a few MB).
pub const MAX_METADATA: u64 = 64 << 20;

impl LocalCompose {
    /// `rel` under the root, refused when it is not a regular file or when
    /// (through a symbolic link) it leads outside the compose.
    fn inside(&self, rel: &str) -> Result<Option<PathBuf>, SourceError> {
        let path = self.0.join(rel);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SourceError(format!("{}: cannot read: {e}", path.display()))),
        };
        let root = std::fs::canonicalize(&self.0)
            .map_err(|e| SourceError(format!("{}: cannot read: {e}", self.0.display())))?;
        let real = std::fs::canonicalize(&path)
            .map_err(|e| SourceError(format!("{}: cannot read: {e}", path.display())))?;
        if !real.starts_with(&root) {
            return Err(SourceError(format!(
                "{}: leads outside the compose (to {}); refused",
                path.display(),
                real.display()
            )));
        }
        if meta.is_dir() {
            return Err(SourceError(format!(
                "{}: a directory where an archive file should be (Pungi composes hold archives; an OCI layout directory is read by the dir source only); refused",
                path.display()
            )));
        }
        if !meta.is_file() {
            return Err(SourceError(format!(
                "{}: not a regular file (a FIFO, a device or a socket); refused",
                path.display()
            )));
        }
        Ok(Some(path))
    }
}

impl Fetch for LocalCompose {
    fn fetch(&self, rel: &str) -> Result<Option<Vec<u8>>, SourceError> {
        use std::io::Read;
        let Some(path) = self.inside(rel)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_METADATA + 1).read_to_end(&mut bytes))
            .map_err(|e| SourceError(format!("{}: cannot read: {e}", path.display())))?;
        if bytes.len() as u64 > MAX_METADATA {
            return Err(SourceError(format!(
                "{}: larger than {MAX_METADATA} bytes; refused",
                path.display()
            )));
        }
        Ok(Some(bytes))
    }

    fn check(&self, rel: &str) -> Result<(), SourceError> {
        self.inside(rel).map(|_| ())
    }

    fn location(&self, rel: &str) -> Location {
        Location::Path(self.0.join(rel))
    }

    fn describe(&self, rel: &str) -> String {
        self.0.join(rel).display().to_string()
    }

    fn root_name(&self) -> String {
        let root = std::fs::canonicalize(&self.0).unwrap_or_else(|_| self.0.clone());
        root.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// A compose served over HTTP(S), as Fedora's composes are.
pub struct HttpCompose {
    base: String,
    client: reqwest::blocking::Client,
    allowed: Option<AllowedLocations>,
}

impl HttpCompose {
    /// A compose at `base` (its root or its `compose/` URL). With
    /// `allowed`, every URL fetched, and every redirect at each hop, must be
    /// under one of its prefixes (the service's `allowed-locations`).
    pub fn new(base: &str, allowed: Option<AllowedLocations>) -> Result<HttpCompose, SourceError> {
        let redirects = match allowed.clone() {
            None => reqwest::redirect::Policy::default(),
            Some(allowed) => reqwest::redirect::Policy::custom(move |hop| {
                match allowed.redirect(hop.url().as_str(), hop.previous().len()) {
                    Ok(()) => hop.follow(),
                    Err(why) => hop.error(why),
                }
            }),
        };
        let client = reqwest::blocking::Client::builder()
            .redirect(redirects)
            .user_agent(concat!("archgate/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(30))
            .timeout(std::time::Duration::from_secs(300))
            .build()
            .map_err(|e| SourceError(format!("{base}: cannot set up an HTTP client: {e}")))?;
        let base = base.trim_end_matches('/');
        let base = base.strip_suffix("/compose").unwrap_or(base);
        Ok(HttpCompose {
            base: base.to_string(),
            client,
            allowed,
        })
    }

    fn url(&self, rel: &str) -> String {
        format!("{}/{rel}", self.base)
    }
}

impl Fetch for HttpCompose {
    fn fetch(&self, rel: &str) -> Result<Option<Vec<u8>>, SourceError> {
        let url = self.url(rel);
        if let Some(allowed) = &self.allowed {
            allowed
                .check_url(&url)
                .map_err(|why| SourceError(format!("{url}: refused: {why}")))?;
        }
        let resp = self.client.get(&url).send().map_err(|e| {
            let cause = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            SourceError(format!("{url}: cannot fetch: {e}{cause}"))
        })?;
        match resp.status() {
            reqwest::StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                use std::io::Read;
                let mut bytes = Vec::new();
                resp.take(MAX_METADATA + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|e| SourceError(format!("{url}: cannot read the answer: {e}")))?;
                if bytes.len() as u64 > MAX_METADATA {
                    return Err(SourceError(format!(
                        "{url}: larger than {MAX_METADATA} bytes; refused"
                    )));
                }
                Ok(Some(bytes))
            }
            s => Err(SourceError(format!("{url}: HTTP {s}"))),
        }
    }

    fn location(&self, rel: &str) -> Location {
        Location::Url(self.url(rel))
    }

    fn describe(&self, rel: &str) -> String {
        self.url(rel)
    }

    fn root_name(&self) -> String {
        self.base.rsplit('/').next().unwrap_or_default().to_string()
    }
}

/// Reads a Pungi compose through a [`Fetch`].
pub struct PungiSource<F> {
    fetch: F,
}

impl<F: Fetch> PungiSource<F> {
    /// A source reading through `fetch`.
    pub fn new(fetch: F) -> Self {
        PungiSource { fetch }
    }
}

impl PungiSource<LocalCompose> {
    /// A local compose: its root, or its `compose/` directory.
    pub fn local(root: impl Into<PathBuf>) -> Self {
        PungiSource::new(LocalCompose::new(root))
    }
}

#[derive(Deserialize)]
struct Header {
    #[serde(rename = "type")]
    kind: String,
    version: String,
}

#[derive(Deserialize)]
struct Document<P> {
    header: Header,
    payload: P,
}

#[derive(Deserialize)]
struct ComposeInfoPayload {
    compose: ComposePart,
    release: ReleasePart,
    #[serde(default)]
    variants: BTreeMap<String, VariantPart>,
}

#[derive(Deserialize)]
struct VariantPart {
    #[serde(default)]
    arches: Vec<String>,
}

#[derive(Deserialize)]
struct ComposePart {
    id: String,
    date: Option<String>,
    respin: Option<u32>,
    /// productmd's compose type: production, nightly, test, ci, development.
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct ReleasePart {
    version: String,
}

#[derive(Deserialize)]
struct ImagesPayload {
    images: BTreeMap<String, BTreeMap<String, Vec<ImageEntry>>>,
}

#[derive(Deserialize)]
struct ImageEntry {
    arch: String,
    path: String,
    #[serde(rename = "type")]
    kind: String,
    format: String,
    #[serde(default)]
    subvariant: String,
    #[serde(default)]
    checksums: BTreeMap<String, String>,
    size: Option<u64>,
}

/// One `failed` item of deliverables.json: `[variant, arch, subvariant]`
/// under a phase (`image-build`, `kiwibuild`, ...). `None` where Pungi wrote
/// `null`; arch `*` (or `null`) for a phase that failed on every arch.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FailedDeliverable {
    phase: String,
    variant: Option<String>,
    arch: Option<String>,
    subvariant: Option<String>,
}

impl FailedDeliverable {
    fn every_arch(&self) -> bool {
        self.arch.as_deref().is_none_or(|a| a == "*")
    }

    fn describe(&self) -> String {
        let part = |p: &Option<String>| {
            p.as_deref()
                .map(archgate_core::untrusted)
                .unwrap_or_else(|| "-".into())
        };
        format!(
            "{}/{}/{}",
            part(&self.variant),
            part(&self.arch),
            part(&self.subvariant)
        )
    }
}

/// The `failed` items of deliverables.json, in any shape Pungi writes;
/// items of another shape are skipped (they explain nothing archgate publishes).
fn failed_deliverables(doc: &serde_json::Value) -> Vec<FailedDeliverable> {
    let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_string);
    let mut out = Vec::new();
    let Some(phases) = doc.get("failed").and_then(|f| f.as_object()) else {
        return out;
    };
    for (phase, items) in phases {
        for item in items.as_array().map(Vec::as_slice).unwrap_or_default() {
            let Some(item) = item.as_array() else {
                continue;
            };
            out.push(FailedDeliverable {
                phase: phase.clone(),
                variant: text(item.first()),
                arch: text(item.get(1)),
                subvariant: text(item.get(2)),
            });
        }
    }
    out
}

const COMPOSEINFO: &str = "compose/metadata/composeinfo.json";
const IMAGES: &str = "compose/metadata/images.json";
const DELIVERABLES: &str = "logs/global/deliverables.json";

/// The container (type, format) pairs Pungi writes.
fn is_container(kind: &str, format: &str) -> bool {
    matches!(
        (kind, format),
        ("docker", "tar.gz" | "tar.xz")
            | ("ociarchive", "ociarchive")
            | ("container", "tar.xz" | "oci" | "ociarchive")
            | ("bootable-container", "ociarchive")
    )
}

impl<F: Fetch> PungiSource<F> {
    fn required(&self, rel: &str) -> Result<Vec<u8>, SourceError> {
        self.fetch
            .fetch(rel)?
            .ok_or_else(|| SourceError(format!("{}: not found", self.fetch.describe(rel))))
    }

    fn document<P: serde::de::DeserializeOwned>(
        &self,
        rel: &str,
        kind: &str,
    ) -> Result<P, SourceError> {
        let bytes = self.required(rel)?;
        let invalid = |e: serde_json::Error| {
            SourceError(format!(
                "{}: not valid {kind} metadata: {e}",
                self.fetch.describe(rel)
            ))
        };
        let doc: Document<serde_json::Value> = serde_json::from_slice(&bytes).map_err(invalid)?;
        if doc.header.kind != kind {
            return Err(SourceError(format!(
                "{}: header type is `{}`, expected `{kind}`",
                self.fetch.describe(rel),
                doc.header.kind
            )));
        }
        if doc.header.version.split('.').next() != Some("1") {
            return Err(SourceError(format!(
                "{}: header version {} is not one archgate reads (1.x)",
                self.fetch.describe(rel),
                doc.header.version
            )));
        }
        serde_json::from_value(doc.payload).map_err(invalid)
    }

    fn status(&self) -> Result<ComposeStatus, SourceError> {
        let raw = self.required("STATUS")?;
        let status = String::from_utf8_lossy(&raw).trim().to_string();
        let word = |c: char| c.is_ascii_uppercase() || c == '_';
        if status.is_empty() || status.len() > 64 || !status.chars().all(word) {
            return Err(SourceError(format!(
                "{}: {:?} is not a compose status",
                self.fetch.describe("STATUS"),
                status.chars().take(64).collect::<String>()
            )));
        }
        Ok(ComposeStatus::parse(&status))
    }

    /// The compose as composeinfo.json describes it, with the variants' arches.
    fn compose(
        &self,
        status: ComposeStatus,
    ) -> Result<(Compose, BTreeMap<String, Vec<String>>), SourceError> {
        let info: ComposeInfoPayload = self.document(COMPOSEINFO, "productmd.composeinfo")?;
        let mut compose = Compose::from_id(&info.compose.id, status);
        compose.release = Some(info.release.version.to_lowercase());
        if info.compose.date.is_some() {
            compose.date = info.compose.date;
        }
        if info.compose.respin.is_some() {
            compose.respin = info.compose.respin;
        }
        // The compose order is productmd's: date, type, respin.
        if let Some(kind) = info.compose.kind.as_deref() {
            compose.kind = archgate_core::ComposeType::parse(kind);
        }
        let variants = info
            .variants
            .into_iter()
            .map(|(uid, v)| (uid, v.arches))
            .collect();
        Ok((compose, variants))
    }

    /// An unfinished compose: the gate refuses it whatever it holds, so only
    /// what names it is read, and only where it is there and readable.
    fn unfinished(&self, status: ComposeStatus) -> Compose {
        match self.compose(status.clone()) {
            Ok((compose, _)) => compose,
            Err(e) => {
                tracing::debug!("unfinished compose without usable metadata: {e}");
                let id = self.fetch.root_name();
                let mut compose = Compose::from_id(&id, status);
                compose.release = release_from_id(&id);
                compose
            }
        }
    }
}

/// The release of a productmd compose id (`Fedora-41-20241101.n.0` gives
/// `41`, `Fedora-Rawhide-...` `rawhide`), when the id has that shape.
fn release_from_id(id: &str) -> Option<String> {
    let parts: Vec<&str> = id.split('-').collect();
    let dated = parts
        .last()
        .and_then(|p| p.split('.').next())
        .is_some_and(|d| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()));
    (parts.len() >= 3 && dated && !parts[1].is_empty()).then(|| parts[1].to_lowercase())
}

/// A path from images.json, checked to stay inside `compose/`.
fn inside_compose(path: &str) -> Option<String> {
    let p = Path::new(path);
    p.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        .then(|| format!("compose/{path}"))
}

/// How an image is matched: `subvariant`, `variant`, `type`.
struct Matcher<'a> {
    subvariant: Option<&'a str>,
    variant: Option<&'a str>,
    kind: Option<&'a str>,
}

impl<'a> Matcher<'a> {
    fn new(query: &'a ImageQuery) -> Result<Matcher<'a>, SourceError> {
        let mut m = Matcher {
            subvariant: None,
            variant: None,
            kind: None,
        };
        for (k, v) in &query.matcher {
            match k.as_str() {
                "subvariant" => m.subvariant = Some(v),
                "variant" => m.variant = Some(v),
                "type" => m.kind = Some(v),
                other => {
                    return Err(SourceError(format!(
                        "image {}: the pungi source has no match key `{other}` (it knows `subvariant`, `variant`, `type`)",
                        query.name
                    )))
                }
            }
        }
        if m.subvariant.is_none() && m.variant.is_none() && m.kind.is_none() {
            return Err(SourceError(format!(
                "image {}: the pungi source needs `match` with `subvariant`, `variant` or `type`",
                query.name
            )));
        }
        Ok(m)
    }

    fn entry(&self, variant: &str, e: &ImageEntry) -> bool {
        self.subvariant.is_none_or(|s| s == e.subvariant)
            && self.variant.is_none_or(|v| v == variant)
            && self.kind.is_none_or(|t| t == e.kind)
    }

    /// Whether a failed deliverable is about this image: its variant is one
    /// the image lives in (`variants`; any when nothing tells), and its
    /// subvariant is the image's, or none (the whole variant failed).
    /// Phases are not image types, so `type` plays no part.
    fn failed(&self, item: &FailedDeliverable, variants: &BTreeSet<&str>) -> bool {
        let variant_ok = match (&item.variant, self.variant) {
            (None, _) => true,
            (Some(v), Some(mine)) => v == mine,
            (Some(v), None) => variants.is_empty() || variants.contains(v.as_str()),
        };
        let subvariant_ok = match (&item.subvariant, self.subvariant) {
            (None, _) | (_, None) => true,
            (Some(s), Some(mine)) => s == mine,
        };
        variant_ok && subvariant_ok
    }
}

impl<F: Fetch> Source for PungiSource<F> {
    fn load(&self, images: &[ImageQuery]) -> Result<ComposeResults, SourceError> {
        let status = self.status()?;
        let matchers = images
            .iter()
            .map(Matcher::new)
            .collect::<Result<Vec<_>, _>>()?;
        if !status.is_finished() {
            return Ok(ComposeResults {
                compose: self.unfinished(status),
                images: images
                    .iter()
                    .map(|q| (q.name.clone(), Vec::new()))
                    .collect(),
            });
        }
        let (compose, variant_arches) = self.compose(status)?;
        let payload: ImagesPayload = self.document(IMAGES, "productmd.images")?;
        let failed = match self.fetch.fetch(DELIVERABLES)? {
            Some(bytes) => {
                let doc: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
                    SourceError(format!(
                        "{}: not valid JSON: {e}",
                        self.fetch.describe(DELIVERABLES)
                    ))
                })?;
                failed_deliverables(&doc)
            }
            None => Vec::new(),
        };
        let container_variants: BTreeSet<&str> = payload
            .images
            .iter()
            .filter(|(_, arches)| {
                arches
                    .values()
                    .flatten()
                    .any(|e| is_container(&e.kind, &e.format))
            })
            .map(|(v, _)| v.as_str())
            .collect();
        let found = Found {
            payload: &payload,
            failed: &failed,
            variant_arches: &variant_arches,
            container_variants: &container_variants,
        };
        let mut out = BTreeMap::new();
        for (query, matcher) in images.iter().zip(&matchers) {
            out.insert(query.name.clone(), self.image(query, matcher, &found)?);
        }
        Ok(ComposeResults {
            compose,
            images: out,
        })
    }
}

/// What the compose's metadata holds, for finding each image in it.
struct Found<'a> {
    payload: &'a ImagesPayload,
    failed: &'a [FailedDeliverable],
    variant_arches: &'a BTreeMap<String, Vec<String>>,
    /// Variants that hold any container image: where an image with no
    /// entry of its own (every arch failed) would have been.
    container_variants: &'a BTreeSet<&'a str>,
}

impl<F: Fetch> PungiSource<F> {
    /// One image's results: its images.json entries (one per arch), then
    /// the failed deliverables that are about it, for arches it has no
    /// entry for.
    fn image(
        &self,
        query: &ImageQuery,
        matcher: &Matcher<'_>,
        found: &Found<'_>,
    ) -> Result<Vec<ArchResult>, SourceError> {
        let mut results: BTreeMap<Arch, ArchResult> = BTreeMap::new();
        let mut variants = BTreeSet::new();
        for (variant, arches) in &found.payload.images {
            for e in arches
                .values()
                .flatten()
                .filter(|e| is_container(&e.kind, &e.format) && matcher.entry(variant, e))
            {
                variants.insert(variant.as_str());
                let arch = self.entry_arch(e)?;
                if let Some(other) = results.get(&arch) {
                    return Err(SourceError(format!(
                        "{}: image {} matches more than one {arch} entry ({} and {}); narrow its `match`",
                        self.fetch.describe(IMAGES),
                        query.name,
                        describe_outcome(&other.outcome),
                        e.path
                    )));
                }
                let outcome = self.outcome(e)?;
                results.insert(arch, ArchResult { arch, outcome });
            }
        }
        if variants.is_empty() {
            variants = found.container_variants.clone();
        }
        for item in found.failed.iter().filter(|i| matcher.failed(i, &variants)) {
            for arch in item_arches(item, &variants, found.variant_arches) {
                results.entry(arch).or_insert_with(|| ArchResult {
                    arch,
                    outcome: Outcome::Failed {
                        reason: failed_reason(item),
                    },
                });
            }
        }
        Ok(results.into_values().collect())
    }
}

impl<F: Fetch> PungiSource<F> {
    fn entry_arch(&self, e: &ImageEntry) -> Result<Arch, SourceError> {
        e.arch.parse().map_err(|err| {
            SourceError(format!(
                "{}: entry {}: {err}",
                self.fetch.describe(IMAGES),
                e.path
            ))
        })
    }

    /// What an images.json entry gives: its artifact, with the strongest
    /// checksum it records; or, for a file that is not safe to read (a link
    /// leading out of the compose, a FIFO or device, a directory where an
    /// archive file should be), its arch failed with the reason
    /// (docs/sources.md). Metadata that makes no sense (a path that leaves
    /// the compose, a checksum that cannot be read) is an error.
    fn outcome(&self, e: &ImageEntry) -> Result<Outcome, SourceError> {
        let checksum = Checksum::strongest(
            e.checksums
                .iter()
                .map(|(algo, value)| (algo.as_str(), value.as_str())),
        )
        .map_err(|err| {
            SourceError(format!(
                "{}: entry {}: {err}",
                self.fetch.describe(IMAGES),
                e.path
            ))
        })?;
        let rel = inside_compose(&e.path).ok_or_else(|| {
            SourceError(format!(
                "{}: entry path `{}` leaves the compose; refused",
                self.fetch.describe(IMAGES),
                e.path
            ))
        })?;
        if let Err(unsafe_file) = self.fetch.check(&rel) {
            tracing::warn!(path = %e.path, "{unsafe_file}");
            return Ok(Outcome::Failed {
                reason: unsafe_file.0,
            });
        }
        let unverified = checksum.is_none().then(|| {
            format!(
                "{} gives no checksum archgate knows (md5, sha1, sha256, sha512) for {}",
                IMAGES, e.path
            )
        });
        Ok(Outcome::Built(Artifact {
            location: self.fetch.location(&rel),
            checksum,
            size: e.size,
            unverified,
        }))
    }
}

/// The arches a failed deliverable stands for: its own, or for `*` every
/// arch of its variant (of the image's variants, when it names none) that
/// composeinfo.json lists.
fn item_arches(
    item: &FailedDeliverable,
    variants: &BTreeSet<&str>,
    variant_arches: &BTreeMap<String, Vec<String>>,
) -> Vec<Arch> {
    if !item.every_arch() {
        return item
            .arch
            .as_deref()
            .and_then(|a| a.parse().ok())
            .into_iter()
            .collect();
    }
    let mut arches = BTreeSet::new();
    for (variant, list) in variant_arches {
        let about = match &item.variant {
            Some(v) => v == variant,
            None => variants.is_empty() || variants.contains(variant.as_str()),
        };
        if about {
            arches.extend(list.iter().filter_map(|a| a.parse::<Arch>().ok()));
        }
    }
    arches.into_iter().collect()
}

fn failed_reason(item: &FailedDeliverable) -> String {
    if item.every_arch() {
        format!(
            "Pungi lists the {} phase as failed on every arch for {} ({DELIVERABLES})",
            archgate_core::untrusted(&item.phase),
            item.describe()
        )
    } else {
        format!(
            "Pungi lists the {} deliverable {} as failed ({DELIVERABLES})",
            archgate_core::untrusted(&item.phase),
            item.describe()
        )
    }
}

fn describe_outcome(o: &Outcome) -> String {
    match o {
        Outcome::Built(a) => a.location.to_string(),
        Outcome::Failed { reason } => reason.clone(),
    }
}
