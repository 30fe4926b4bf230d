//! One interface for every place a target lives (an OCI layout, a registry
//! repository), and the two things archgate does with it: read a tag's
//! current index, and carry a target plan out (SPEC section 4).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use archgate_core::{Arch, CurrentIndex, Decision, Entry, Platform, TargetPlan};
use futures_util::{StreamExt, TryStreamExt};

use crate::artifact::ResolvedArtifact;
use crate::oci::{
    is_index, is_manifest, render_index, Config, Descriptor, Index, Manifest, OCI_INDEX,
};

/// How many blobs go up at once to one target.
pub const UPLOAD_CONCURRENCY: usize = 4;

/// A repository: an OCI layout directory or a registry repository.
#[allow(async_fn_in_trait)]
pub trait Store {
    /// `oci:DIR` or `HOST/PATH`, for messages.
    fn name(&self) -> String;
    /// Get ready to be written (a layout creates its directory).
    async fn prepare(&self) -> Result<()> {
        Ok(())
    }
    /// What a tag points to, or `None`.
    async fn resolve_tag(&self, tag: &str) -> Result<Option<Descriptor>>;
    /// A manifest or index by digest, checked against its descriptor.
    async fn fetch_manifest(&self, desc: &Descriptor) -> Result<Vec<u8>>;
    /// A small blob (a config) by digest, checked against its descriptor.
    async fn fetch_blob(&self, desc: &Descriptor) -> Result<Vec<u8>>;
    async fn has_blob(&self, desc: &Descriptor) -> Result<bool>;
    async fn has_manifest(&self, desc: &Descriptor) -> Result<bool>;
    /// Stores a blob read from a file, checked against its descriptor.
    async fn push_blob(&self, desc: &Descriptor, from: &Path) -> Result<()>;
    /// Stores a manifest or index by digest, and points `tag` at it if given.
    async fn push_manifest(&self, desc: &Descriptor, bytes: &[u8], tag: Option<&str>)
        -> Result<()>;
}

/// The current index of a tag; a single image manifest counts as an index
/// of one entry. `None` when the tag does not exist.
pub async fn read_current<S: Store>(store: &S, tag: &str) -> Result<Option<CurrentIndex>> {
    let Some(desc) = store.resolve_tag(tag).await? else {
        return Ok(None);
    };
    if is_index(&desc.media_type) {
        let bytes = store.fetch_manifest(&desc).await?;
        let index: Index = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow!("index {} is not a valid index: {e}", desc.digest))?;
        let mut entries = Vec::new();
        for child in &index.manifests {
            child.check()?;
            let (config_platform, created) = match config_of(store, child).await {
                Ok(config) => (config.platform(), config.created),
                Err(e) => {
                    tracing::debug!(digest = %child.digest, "cannot read the config of an index entry: {e:#}");
                    (None, None)
                }
            };
            let platform = child
                .platform
                .as_ref()
                .map(Platform::from)
                .or(config_platform)
                .unwrap_or_else(unknown_platform);
            entries.push(Entry {
                platform,
                digest: child.digest.clone(),
                size: child.size,
                media_type: child.media_type.clone(),
                annotations: child.annotations.clone().unwrap_or_default(),
                created,
            });
        }
        Ok(Some(CurrentIndex {
            digest: desc.digest,
            media_type: desc.media_type,
            entries,
        }))
    } else if is_manifest(&desc.media_type) {
        let config = config_of(store, &desc).await?;
        let entry = Entry {
            platform: config.platform().unwrap_or_else(unknown_platform),
            digest: desc.digest.clone(),
            size: desc.size,
            media_type: desc.media_type.clone(),
            annotations: Default::default(),
            created: config.created,
        };
        Ok(Some(CurrentIndex {
            digest: desc.digest,
            media_type: desc.media_type,
            entries: vec![entry],
        }))
    } else {
        bail!(
            "tag {tag} points to {} ({}), which is neither an index nor an image manifest",
            desc.digest,
            desc.media_type
        )
    }
}

async fn config_of<S: Store>(store: &S, manifest: &Descriptor) -> Result<Config> {
    let bytes = store.fetch_manifest(manifest).await?;
    let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
        anyhow!(
            "manifest {} is not a valid image manifest: {e}",
            manifest.digest
        )
    })?;
    m.config.check()?;
    let config = store.fetch_blob(&m.config).await?;
    serde_json::from_slice(&config).map_err(|e| {
        anyhow!(
            "config {} is not a valid image config: {e}",
            m.config.digest
        )
    })
}

fn unknown_platform() -> Platform {
    Platform {
        os: "unknown".into(),
        architecture: "unknown".into(),
        variant: None,
    }
}

/// One target: a tag in a store, and what it pointed to when planned.
pub struct Target<'a, S> {
    pub store: &'a S,
    pub tag: &'a str,
    pub planned_from: Option<&'a str>,
}

/// Carries a plan out: blobs, then each built arch's manifest under its arch
/// tag, then (when publishing) the index, after checking that the tag has
/// not moved since it was planned, and reading it back after. Returns the
/// index digest the tag holds afterwards.
pub async fn publish<S: Store>(
    target: &Target<'_, S>,
    plan: &TargetPlan,
    artifacts: &BTreeMap<Arch, ResolvedArtifact>,
    arch_tags: &[(Arch, String)],
) -> Result<Option<String>> {
    if plan.hard_refusal {
        return Ok(None);
    }
    let store = target.store;
    store.prepare().await?;

    // Which built arches need what: nothing when the arch tag already points
    // at the manifest; only the tag when the manifest is already there.
    let mut to_tag = Vec::new();
    let mut blobs: BTreeMap<&str, (&Descriptor, PathBuf)> = BTreeMap::new();
    for (arch, arch_tag) in arch_tags {
        let art = artifacts
            .get(arch)
            .ok_or_else(|| anyhow!("internal: no artifact read for built arch {arch}"))?;
        let desc = Descriptor::of_entry(&art.entry);
        if store
            .resolve_tag(arch_tag)
            .await?
            .is_some_and(|d| d.digest == desc.digest)
        {
            continue;
        }
        if !store.has_manifest(&desc).await? {
            for blob in &art.blobs {
                let path = art.layout.blob_path(&blob.digest)?;
                blobs.entry(blob.digest.as_str()).or_insert((blob, path));
            }
        }
        to_tag.push((arch_tag.as_str(), desc, art));
    }

    // Blobs, several at once.
    futures_util::stream::iter(blobs.into_values())
        .map(|(desc, path)| async move {
            if store.has_blob(desc).await? {
                return Ok(());
            }
            let started = std::time::Instant::now();
            store.push_blob(desc, &path).await.with_context(|| format!("blob {}", desc.digest))?;
            tracing::info!(store = %store.name(), digest = %desc.digest, size = desc.size, secs = started.elapsed().as_secs_f32(), "blob pushed");
            anyhow::Ok(())
        })
        .buffer_unordered(UPLOAD_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;

    // Each arch's manifest, by digest and under its arch tag.
    for (arch_tag, desc, art) in &to_tag {
        store
            .push_manifest(desc, &art.manifest, Some(arch_tag))
            .await
            .with_context(|| format!("manifest {} of {}", desc.digest, art.arch))?;
        tracing::info!(store = %store.name(), tag = %arch_tag, digest = %desc.digest, "arch tag set");
    }

    // Carried entries must be there already.
    for entry in &plan.index {
        let desc = Descriptor::of_entry(entry);
        if !store.has_manifest(&desc).await? {
            bail!(
                "index entry {} ({}) is not in {}",
                entry.digest,
                entry.platform,
                store.name()
            );
        }
    }

    match plan.decision {
        Decision::Published => {
            let bytes = render_index(&plan.index);
            let desc = Descriptor::new(OCI_INDEX, &bytes);
            let tag = target.tag;
            let now = store.resolve_tag(tag).await?.map(|d| d.digest);
            if now.as_deref() != target.planned_from {
                bail!(
                    "tag {tag} moved while archgate was publishing: it was planned against {} and now points to {}; not written",
                    target.planned_from.unwrap_or("no index"),
                    now.as_deref().unwrap_or("nothing")
                );
            }
            store
                .push_manifest(&desc, &bytes, Some(tag))
                .await
                .with_context(|| format!("index {}", desc.digest))?;
            let back = store
                .resolve_tag(tag)
                .await?
                .ok_or_else(|| anyhow!("read-back: tag {tag} is missing after the write"))?;
            if back.digest != desc.digest {
                bail!(
                    "read-back: tag {tag} points to {}, expected {}",
                    back.digest,
                    desc.digest
                );
            }
            store.fetch_manifest(&back).await.context("read-back")?;
            tracing::info!(store = %store.name(), tag = %tag, digest = %desc.digest, "index written");
            Ok(Some(desc.digest))
        }
        Decision::Unchanged => Ok(target.planned_from.map(str::to_string)),
        Decision::Refused | Decision::Error => Ok(None),
    }
}

/// Any store, so that callers need not be generic.
pub enum AnyStore {
    Layout(crate::layout::OciLayout),
    Registry(crate::registry::RegistryRepo),
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStore::Layout($s) => $e,
            AnyStore::Registry($s) => $e,
        }
    };
}

impl Store for AnyStore {
    fn name(&self) -> String {
        delegate!(self, s => s.name())
    }
    async fn prepare(&self) -> Result<()> {
        delegate!(self, s => Store::prepare(s).await)
    }
    async fn resolve_tag(&self, tag: &str) -> Result<Option<Descriptor>> {
        delegate!(self, s => Store::resolve_tag(s, tag).await)
    }
    async fn fetch_manifest(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        delegate!(self, s => Store::fetch_manifest(s, desc).await)
    }
    async fn fetch_blob(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        delegate!(self, s => Store::fetch_blob(s, desc).await)
    }
    async fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        delegate!(self, s => Store::has_blob(s, desc).await)
    }
    async fn has_manifest(&self, desc: &Descriptor) -> Result<bool> {
        delegate!(self, s => Store::has_manifest(s, desc).await)
    }
    async fn push_blob(&self, desc: &Descriptor, from: &Path) -> Result<()> {
        delegate!(self, s => Store::push_blob(s, desc, from).await)
    }
    async fn push_manifest(
        &self,
        desc: &Descriptor,
        bytes: &[u8],
        tag: Option<&str>,
    ) -> Result<()> {
        delegate!(self, s => Store::push_manifest(s, desc, bytes, tag).await)
    }
}
