//! The `registry` source (docs/sources.md): per-arch results read from
//! images already pushed to a registry, as CI pipelines that build each
//! platform in its own job leave them.
//!
//! Three ways to name the images:
//! - a directory of digest files, as docker/build-push-action's
//!   multi-runner pattern writes it (one empty file per pushed image, named
//!   by the hex of its digest), with the repository they were pushed to;
//! - a template giving each expected arch's reference (`{arch}`,
//!   `{goarch}`, `{docker_arch}`, `{version}`): an arch tag
//!   (`host/app:{version}-{goarch}`) or an arch namespace
//!   (`host/{docker_arch}/debian:bookworm`);
//! - an explicit reference per arch.
//!
//! Each image's platform is read from the registry (an index's platform
//! entries, an image's config), never from a name. The expected arches say
//! what should be there: one with no image is a failed arch, and the gate
//! decides as for a compose. A build id (given, or the latest `created` of
//! the images' configs) is the compose's place in the order.
//!
//! The reads go through [`Fetch`], which the runner implements with the
//! run's registry clients: this crate does no I/O but reading the digests
//! directory.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;

use archgate_core::{
    is_sha256_digest, Arch, ArchResult, Artifact, Compose, ComposeResults, ComposeStatus, Entry,
    ImageRef, Location, Outcome, Platform, Reference, Repository, SourceError,
};

/// The annotation buildx gives an attestation manifest's descriptor.
const REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// The annotation naming the image an attestation is of.
const REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";

/// Where the images are named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inputs {
    /// A directory of digest files, and the repository (`HOST/PATH`) the
    /// images were pushed to.
    Digests {
        /// The directory.
        dir: PathBuf,
        /// `HOST/PATH`.
        repository: String,
    },
    /// A reference per expected arch, from a template.
    Template(String),
    /// A reference per arch.
    References(BTreeMap<Arch, String>),
}

/// `[source]` of kind `registry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Where the images are named.
    pub inputs: Inputs,
    /// The arches that should be there (for a template, the arches it is
    /// rendered for); for references, empty means the listed ones.
    pub arches: Vec<Arch>,
    /// The build id; `None`: the latest `created` of the images.
    pub build: Option<String>,
    /// `{version}` in a template, and `{release}` in tags.
    pub version: Option<String>,
}

/// A manifest or an index as the registry holds it.
#[derive(Debug, Clone)]
pub struct Document {
    /// Its digest.
    pub digest: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// Registry reads, as the runner does them.
pub trait Fetch: Sync {
    /// The manifest or index at `reference` (a tag or a digest) in
    /// `host/repository`; `None` when there is none.
    fn manifest(
        &self,
        host: &str,
        repository: &str,
        reference: &str,
    ) -> impl Future<Output = anyhow::Result<Option<Document>>> + Send;
    /// A config blob, by digest.
    fn blob(
        &self,
        host: &str,
        repository: &str,
        digest: &str,
    ) -> impl Future<Output = anyhow::Result<Vec<u8>>> + Send;
}

/// One image named by the inputs, with the arch it is expected for (a
/// digest file says none).
#[derive(Debug, Clone)]
struct Named {
    slot: Option<Arch>,
    host: String,
    repository: String,
    reference: String,
    /// How the input names it, for messages (`DIR/HEX`, the rendered
    /// template).
    shown: String,
}

/// An image found, or why the arch it was expected for failed.
enum Found {
    Image {
        arch: Arch,
        image: ImageRef,
        created: Option<String>,
        shown: String,
    },
    Failed(Arch, String),
}

/// Reads the images the settings name: the results of one image, and the
/// compose (the build) they stand for. Every configured image gets these
/// results.
pub async fn load(settings: &Settings, fetch: &impl Fetch) -> Result<ComposeResults, SourceError> {
    let named = name_all(settings)?;
    let reads = named.iter().map(|n| read_one(n, fetch));
    let mut found = Vec::new();
    for got in futures_util::future::join_all(reads).await {
        found.extend(got?);
    }
    let mut by_arch: BTreeMap<Arch, Found> = BTreeMap::new();
    for f in found {
        let arch = match &f {
            Found::Image { arch, .. } | Found::Failed(arch, _) => *arch,
        };
        if let (Some(Found::Image { shown: a, .. }), Found::Image { shown: b, .. }) =
            (by_arch.get(&arch), &f)
        {
            return Err(SourceError(format!(
                "two images for {arch}: {a} and {b}; a build pushes one image per platform"
            )));
        }
        by_arch.insert(arch, f);
    }
    for arch in &settings.arches {
        by_arch.entry(*arch).or_insert_with(|| {
            let why = match &settings.inputs {
                Inputs::Digests { dir, .. } => format!(
                    "no image was pushed for {arch}: no digest file in {} names one",
                    dir.display()
                ),
                _ => format!("no image is named for {arch}"),
            };
            Found::Failed(*arch, why)
        });
    }
    let created = by_arch
        .values()
        .filter_map(|f| match f {
            Found::Image { created, .. } => created.clone(),
            Found::Failed(..) => None,
        })
        .max();
    let build = match (&settings.build, &created) {
        (Some(b), _) => b.clone(),
        (None, Some(c)) => c.chars().filter(char::is_ascii_digit).take(14).collect(),
        (None, None) => {
            return Err(SourceError(
                "no build id: set [source] build (or --build-id), or push images whose configs say when they were `created`".into(),
            ))
        }
    };
    let mut compose = Compose::from_id(&format!("build-{build}"), ComposeStatus::Finished);
    compose.build = Some(build);
    compose.release = settings.version.clone();
    compose.created_at = created;
    let results = by_arch
        .into_iter()
        .map(|(arch, f)| ArchResult {
            arch,
            outcome: match f {
                Found::Image { image, .. } => Outcome::Built(Artifact::at(Location::Image(image))),
                Found::Failed(_, reason) => Outcome::Failed { reason },
            },
        })
        .collect();
    Ok(ComposeResults {
        compose,
        images: BTreeMap::from([(String::new(), results)]),
    })
}

/// Every image the inputs name.
fn name_all(settings: &Settings) -> Result<Vec<Named>, SourceError> {
    let bad = |e: String| SourceError(e);
    match &settings.inputs {
        Inputs::Digests { dir, repository } => {
            let (host, path) = registry_repo(repository).map_err(bad)?;
            let entries = std::fs::read_dir(dir)
                .map_err(|e| bad(format!("{}: cannot read the digests: {e}", dir.display())))?;
            let mut named = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| bad(format!("{}: {e}", dir.display())))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let digest = format!("sha256:{name}");
                if !is_sha256_digest(&digest) {
                    return Err(bad(format!(
                        "{}: not a digest file (one is named by the 64 hex digits of an image's sha256 digest)",
                        entry.path().display()
                    )));
                }
                named.push(Named {
                    slot: None,
                    host: host.clone(),
                    repository: path.clone(),
                    reference: digest.clone(),
                    shown: format!("{repository}@{digest} ({})", entry.path().display()),
                });
            }
            named.sort_by(|a, b| a.reference.cmp(&b.reference));
            Ok(named)
        }
        Inputs::Template(template) => settings
            .arches
            .iter()
            .map(|arch| {
                let text = render(template, *arch, settings.version.as_deref()).map_err(bad)?;
                named_ref(Some(*arch), &text).map_err(bad)
            })
            .collect(),
        Inputs::References(refs) => refs
            .iter()
            .map(|(arch, text)| named_ref(Some(*arch), text).map_err(bad))
            .collect(),
    }
}

/// `template` for `arch`.
pub fn render(template: &str, arch: Arch, version: Option<&str>) -> Result<String, String> {
    let mut out = template
        .replace("{arch}", arch.as_str())
        .replace("{goarch}", arch.goarch())
        .replace("{docker_arch}", arch.docker_name());
    if out.contains("{version}") {
        let v = version.ok_or_else(|| {
            format!("`{template}` uses {{version}}, but [source] version is not set")
        })?;
        out = out.replace("{version}", v);
    }
    if let Some(i) = out.find('{') {
        return Err(format!(
            "`{template}`: unknown placeholder at `{}` (known: {{arch}}, {{goarch}}, {{docker_arch}}, {{version}})",
            &out[i..]
        ));
    }
    Ok(out)
}

fn registry_repo(text: &str) -> Result<(String, String), String> {
    match Repository::parse(text)? {
        Repository::Registry { host, path } => Ok((host, path)),
        Repository::Layout { .. } => Err(format!("`{text}` is not a registry repository")),
    }
}

fn named_ref(slot: Option<Arch>, text: &str) -> Result<Named, String> {
    let r = Reference::parse(text)?;
    let Repository::Registry { host, path } = r.repository else {
        return Err(format!("`{text}` is not an image in a registry"));
    };
    let reference = r
        .digest
        .or(r.tag)
        .ok_or_else(|| format!("`{text}` names no tag or digest"))?;
    Ok(Named {
        slot,
        host,
        repository: path,
        reference,
        shown: text.to_string(),
    })
}

/// What one named image gives: its image (or images, for an index of
/// several from a digest file), or why its arch failed.
async fn read_one(named: &Named, fetch: &impl Fetch) -> Result<Vec<Found>, SourceError> {
    let shown = &named.shown;
    let fault = |e: anyhow::Error| SourceError(format!("{shown}: {e:#}"));
    let doc = fetch
        .manifest(&named.host, &named.repository, &named.reference)
        .await
        .map_err(fault)?;
    let Some(doc) = doc else {
        return match named.slot {
            Some(arch) => Ok(vec![Found::Failed(arch, format!("no image at {shown}"))]),
            None => Err(SourceError(format!("{shown}: no such manifest"))),
        };
    };
    let json: serde_json::Value = serde_json::from_slice(&doc.bytes)
        .map_err(|e| SourceError(format!("{shown}: not a manifest: {e}")))?;
    let images = images_in(named, &doc, &json, fetch).await?;
    assign(named, json.get("manifests").is_some(), images)
}

/// The images a document holds, each with the attestations that name it:
/// an index's entries (platforms as it lists them), or one image (its
/// platform from its config).
async fn images_in(
    named: &Named,
    doc: &Document,
    json: &serde_json::Value,
    fetch: &impl Fetch,
) -> Result<Vec<(Entry, Vec<Entry>)>, SourceError> {
    let shown = &named.shown;
    let fault = |e: anyhow::Error| SourceError(format!("{shown}: {e:#}"));
    let mut images: Vec<(Entry, Vec<Entry>)> = Vec::new();
    if let Some(list) = json.get("manifests").and_then(|m| m.as_array()) {
        let entries: Vec<Entry> = list.iter().filter_map(entry_of).collect();
        for e in entries.iter().filter(|e| !is_attestation(e)) {
            let attached = entries
                .iter()
                .filter(|a| {
                    is_attestation(a) && a.annotations.get(REFERENCE_DIGEST) == Some(&e.digest)
                })
                .cloned()
                .collect();
            images.push((e.clone(), attached));
        }
    } else {
        let config = json["config"]["digest"]
            .as_str()
            .ok_or_else(|| SourceError(format!("{shown}: a manifest without a config")))?;
        let bytes = fetch
            .blob(&named.host, &named.repository, config)
            .await
            .map_err(fault)?;
        let cfg: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| SourceError(format!("{shown}: config {config} is not JSON: {e}")))?;
        let platform = Platform {
            os: cfg["os"].as_str().unwrap_or_default().to_string(),
            architecture: cfg["architecture"].as_str().unwrap_or_default().to_string(),
            variant: cfg["variant"].as_str().map(str::to_string),
        };
        let entry = Entry {
            platform,
            digest: doc.digest.clone(),
            size: doc.bytes.len() as u64,
            media_type: json["mediaType"].as_str().unwrap_or_default().to_string(),
            annotations: BTreeMap::new(),
            created: cfg["created"].as_str().map(str::to_string),
        };
        images.push((entry, Vec::new()));
    }
    Ok(images)
}

/// Which arch each image is for: its platform's; for a named slot, only
/// an image of that slot's arch (none: the slot failed, a mismatch).
fn assign(
    named: &Named,
    is_index: bool,
    images: Vec<(Entry, Vec<Entry>)>,
) -> Result<Vec<Found>, SourceError> {
    let shown = &named.shown;
    let have: Vec<String> = images.iter().map(|(e, _)| e.platform.to_string()).collect();
    let mut found = Vec::new();
    for (entry, attestations) in images {
        let arch = Arch::from_platform(&entry.platform);
        let image = ImageRef {
            host: named.host.clone(),
            repository: named.repository.clone(),
            digest: entry.digest.clone(),
            attestations,
        };
        match (named.slot, arch) {
            (Some(slot), Some(a)) if a == slot => found.push(Found::Image {
                arch: a,
                image,
                created: entry.created.clone(),
                shown: shown.clone(),
            }),
            (None, Some(a)) => found.push(Found::Image {
                arch: a,
                image,
                created: entry.created.clone(),
                shown: shown.clone(),
            }),
            (Some(_), _) => {}
            (None, None) => {
                return Err(SourceError(format!(
                    "{shown}: its platform {} is no arch archgate knows",
                    entry.platform
                )))
            }
        }
    }
    if let (Some(slot), true) = (named.slot, found.is_empty()) {
        let what = if is_index { "an index" } else { "an image" };
        return Ok(vec![Found::Failed(
            slot,
            format!(
                "{shown} is {what} of {}, not {slot} ({}): a platform mismatch",
                have.join(", "),
                slot.default_platform()
            ),
        )]);
    }
    Ok(found)
}

/// An index's descriptor as an [`Entry`].
fn entry_of(d: &serde_json::Value) -> Option<Entry> {
    let p = &d["platform"];
    let annotations = d["annotations"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Some(Entry {
        platform: Platform {
            os: p["os"].as_str().unwrap_or("unknown").to_string(),
            architecture: p["architecture"].as_str().unwrap_or("unknown").to_string(),
            variant: p["variant"].as_str().map(str::to_string),
        },
        digest: d["digest"].as_str()?.to_string(),
        size: d["size"].as_u64()?,
        media_type: d["mediaType"].as_str()?.to_string(),
        annotations,
        created: None,
    })
}

fn is_attestation(e: &Entry) -> bool {
    e.annotations.get(REFERENCE_TYPE).map(String::as_str) == Some("attestation-manifest")
        || (e.platform.os == "unknown" && e.platform.architecture == "unknown")
}
