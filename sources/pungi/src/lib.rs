//! The `pungi` source: a Pungi compose, read from its productmd metadata
//! (SPEC section 6, `../shared/reference/formats.md`).
//!
//! ```text
//! ROOT/STATUS                                 FINISHED, FINISHED_INCOMPLETE, DOOMED, ...
//! ROOT/compose/metadata/composeinfo.json      compose id, date, respin; release version
//! ROOT/compose/metadata/images.json           every image, per variant and arch
//! ROOT/logs/global/deliverables.json          (optional) what failed
//! ```
//!
//! A failed arch is simply absent from `images.json`; when
//! `deliverables.json` lists it as failed, that gives the reason.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use archgate_core::{
    Arch, ArchResult, Artifact, Compose, ComposeResults, ComposeStatus, ImageQuery, Location,
    Outcome, Source, SourceError,
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
}

/// A compose on a local (or mounted) file system.
pub struct LocalCompose(pub PathBuf);

impl Fetch for LocalCompose {
    fn fetch(&self, rel: &str) -> Result<Option<Vec<u8>>, SourceError> {
        let path = self.0.join(rel);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SourceError(format!("{}: cannot read: {e}", path.display()))),
        }
    }

    fn location(&self, rel: &str) -> Location {
        Location::Path(self.0.join(rel))
    }

    fn describe(&self, rel: &str) -> String {
        self.0.join(rel).display().to_string()
    }
}

/// A compose served over HTTP(S), as Fedora's composes are.
pub struct HttpCompose {
    base: String,
    client: reqwest::blocking::Client,
}

impl HttpCompose {
    pub fn new(base: &str) -> Result<HttpCompose, SourceError> {
        let client = reqwest::blocking::Client::builder()
            .user_agent(concat!("archgate/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(30))
            .timeout(std::time::Duration::from_secs(300))
            .build()
            .map_err(|e| SourceError(format!("{base}: cannot set up an HTTP client: {e}")))?;
        Ok(HttpCompose {
            base: base.trim_end_matches('/').to_string(),
            client,
        })
    }

    fn url(&self, rel: &str) -> String {
        format!("{}/{rel}", self.base)
    }
}

impl Fetch for HttpCompose {
    fn fetch(&self, rel: &str) -> Result<Option<Vec<u8>>, SourceError> {
        let url = self.url(rel);
        let resp = self.client.get(&url).send().map_err(|e| {
            let cause = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            SourceError(format!("{url}: cannot fetch: {e}{cause}"))
        })?;
        match resp.status() {
            reqwest::StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => resp
                .bytes()
                .map(|b| Some(b.to_vec()))
                .map_err(|e| SourceError(format!("{url}: cannot read the answer: {e}"))),
            s => Err(SourceError(format!("{url}: HTTP {s}"))),
        }
    }

    fn location(&self, rel: &str) -> Location {
        Location::Url(self.url(rel))
    }

    fn describe(&self, rel: &str) -> String {
        self.url(rel)
    }
}

/// Reads a Pungi compose through a [`Fetch`].
pub struct PungiSource<F> {
    fetch: F,
}

impl<F: Fetch> PungiSource<F> {
    pub fn new(fetch: F) -> Self {
        PungiSource { fetch }
    }
}

impl PungiSource<LocalCompose> {
    pub fn local(root: impl Into<PathBuf>) -> Self {
        PungiSource::new(LocalCompose(root.into()))
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
}

#[derive(Deserialize)]
struct ComposePart {
    id: String,
    date: Option<String>,
    respin: Option<u32>,
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

#[derive(Deserialize, Default)]
struct Deliverables {
    #[serde(default)]
    failed: BTreeMap<String, Vec<Vec<String>>>,
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

    fn compose(&self) -> Result<Compose, SourceError> {
        let status = String::from_utf8_lossy(&self.required("STATUS")?)
            .trim()
            .to_string();
        if status.is_empty() || status.contains(char::is_whitespace) {
            return Err(SourceError(format!(
                "{}: `{status}` is not a compose status",
                self.fetch.describe("STATUS")
            )));
        }
        let info: ComposeInfoPayload = self.document(COMPOSEINFO, "productmd.composeinfo")?;
        let mut compose = Compose::from_id(&info.compose.id, ComposeStatus::parse(&status));
        compose.release = Some(info.release.version.to_lowercase());
        if info.compose.date.is_some() {
            compose.date = info.compose.date;
        }
        if info.compose.respin.is_some() {
            compose.respin = info.compose.respin;
        }
        Ok(compose)
    }
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

    /// A deliverables.json item: [variant, arch, subvariant].
    fn failed(&self, kind: &str, item: &[String]) -> bool {
        let [variant, _arch, subvariant, ..] = item else {
            return false;
        };
        self.variant.is_none_or(|v| v == variant)
            && self.subvariant.is_none_or(|s| s == subvariant)
            && self.kind.is_none_or(|t| t == kind)
    }
}

impl<F: Fetch> Source for PungiSource<F> {
    fn load(&self, images: &[ImageQuery]) -> Result<ComposeResults, SourceError> {
        let compose = self.compose()?;
        let payload: ImagesPayload = self.document(IMAGES, "productmd.images")?;
        let deliverables: Deliverables = match self.fetch.fetch(DELIVERABLES)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                SourceError(format!(
                    "{}: not valid JSON: {e}",
                    self.fetch.describe(DELIVERABLES)
                ))
            })?,
            None => Deliverables::default(),
        };
        let mut out = BTreeMap::new();
        for query in images {
            let matcher = Matcher::new(query)?;
            let mut results: BTreeMap<Arch, ArchResult> = BTreeMap::new();
            for (variant, arches) in &payload.images {
                for entries in arches.values() {
                    for e in entries
                        .iter()
                        .filter(|e| is_container(&e.kind, &e.format) && matcher.entry(variant, e))
                    {
                        let arch: Arch = e.arch.parse().map_err(|err| {
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
                        if let Some(other) = results.get(&arch) {
                            return Err(SourceError(format!(
                                "{}: image {} matches more than one {arch} entry ({} and {}); narrow its `match`",
                                self.fetch.describe(IMAGES),
                                query.name,
                                describe_outcome(&other.outcome),
                                e.path
                            )));
                        }
                        let artifact = Artifact {
                            location: self.fetch.location(&rel),
                            sha256: e.checksums.get("sha256").cloned(),
                            size: e.size,
                        };
                        results.insert(
                            arch,
                            ArchResult {
                                arch,
                                outcome: Outcome::Built(artifact),
                            },
                        );
                    }
                }
            }
            for (kind, items) in &deliverables.failed {
                for item in items.iter().filter(|i| matcher.failed(kind, i)) {
                    let Ok(arch) = item[1].parse::<Arch>() else {
                        continue;
                    };
                    results.entry(arch).or_insert_with(|| ArchResult {
                        arch,
                        outcome: Outcome::Failed {
                            reason: format!(
                                "Pungi lists the {kind} deliverable {}/{}/{} as failed ({DELIVERABLES})",
                                item[0], item[1], item[2]
                            ),
                        },
                    });
                }
            }
            out.insert(query.name.clone(), results.into_values().collect());
        }
        Ok(ComposeResults {
            compose,
            images: out,
        })
    }
}

fn describe_outcome(o: &Outcome) -> String {
    match o {
        Outcome::Built(a) => a.location.to_string(),
        Outcome::Failed { reason } => reason.clone(),
    }
}
