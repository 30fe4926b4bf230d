//! Reading a built artifact: which manifest it holds, for which platform,
//! and whether every blob is what its descriptor says.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use archgate_core::{Arch, Artifact, Entry, Location};

use crate::layout::OciLayout;
use crate::oci::{is_index, is_manifest, Config, Descriptor, Index, Manifest, OCI_MANIFEST};

/// A built artifact, read and checked: ready to publish.
#[derive(Debug, Clone)]
pub struct ResolvedArtifact {
    pub arch: Arch,
    /// The layout the blobs are read from.
    pub layout: OciLayout,
    /// The index entry it gets: platform from its config, manifest digest.
    pub entry: Entry,
    pub manifest: Vec<u8>,
    /// Config first, then the layers.
    pub blobs: Vec<Descriptor>,
}

/// Reads the artifact of one arch. An `Err` is the reason that arch counts
/// as failed (SPEC section 3): missing, unreadable, bad checksum, or built
/// for another arch.
pub fn resolve(arch: Arch, artifact: &Artifact) -> Result<ResolvedArtifact, String> {
    let path = match &artifact.location {
        Location::Path(p) => p,
        Location::Url(u) => {
            return Err(format!(
                "{u}: reading artifacts over HTTP is not supported yet"
            ))
        }
    };
    resolve_path(arch, path).map_err(|e| format!("{}: {e:#}", path.display()))
}

fn resolve_path(arch: Arch, path: &Path) -> Result<ResolvedArtifact> {
    let meta = std::fs::metadata(path).map_err(|e| anyhow!("cannot read artifact: {e}"))?;
    if !meta.is_dir() {
        bail!("archive artifacts (oci-archive, docker-archive) are not supported yet; give an OCI layout directory");
    }
    let layout = OciLayout::new(path);
    if !layout.exists() {
        bail!("not an OCI image layout (no index.json)");
    }
    let desc = pick_manifest(&layout, arch)?;
    let manifest_bytes = layout.read_blob(&desc)?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes).map_err(|e| {
        anyhow!(
            "manifest {} is not a valid image manifest: {e}",
            desc.digest
        )
    })?;
    let media_type = manifest
        .media_type
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| {
            if is_manifest(&desc.media_type) {
                desc.media_type.clone()
            } else {
                OCI_MANIFEST.to_string()
            }
        });
    manifest.config.check()?;
    let config_bytes = layout.read_blob(&manifest.config)?;
    let config: Config = serde_json::from_slice(&config_bytes).map_err(|e| {
        anyhow!(
            "config {} is not a valid image config: {e}",
            manifest.config.digest
        )
    })?;
    let platform = config.platform().unwrap_or_else(|| arch.default_platform());
    match Arch::from_platform(&platform) {
        Some(a) if a == arch => {}
        Some(other) => {
            bail!("its config says {platform} ({other}), but it was delivered as {arch}")
        }
        None => bail!(
            "its config says {platform}, which is no compose arch, but it was delivered as {arch}"
        ),
    }
    let mut blobs = vec![manifest.config.clone()];
    for layer in &manifest.layers {
        layer.check()?;
        layout.verify_blob(layer)?;
        blobs.push(layer.clone());
    }
    Ok(ResolvedArtifact {
        arch,
        layout,
        entry: Entry {
            platform,
            digest: desc.digest.clone(),
            size: desc.size,
            media_type,
            annotations: Default::default(),
            created: config.created,
        },
        manifest: manifest_bytes,
        blobs,
    })
}

/// The one image manifest of a layout, or the one for `arch` among several
/// (looking one level into a nested index).
fn pick_manifest(layout: &OciLayout, arch: Arch) -> Result<Descriptor> {
    let index = layout.read_index()?;
    let mut candidates = Vec::new();
    for desc in index.manifests {
        if is_index(&desc.media_type) {
            let nested: Index = serde_json::from_slice(&layout.read_blob(&desc)?)
                .map_err(|e| anyhow!("index {} is not a valid index: {e}", desc.digest))?;
            candidates.extend(
                nested
                    .manifests
                    .into_iter()
                    .filter(|d| is_manifest(&d.media_type)),
            );
        } else if is_manifest(&desc.media_type) {
            candidates.push(desc);
        }
    }
    for d in &candidates {
        d.check()?;
    }
    if candidates.len() > 1 {
        candidates.retain(|d| {
            d.platform
                .as_ref()
                .and_then(|p| Arch::from_platform(&p.into()))
                == Some(arch)
        });
    }
    let mut candidates = candidates.into_iter();
    match (candidates.next(), candidates.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => bail!("holds no image manifest for {arch}"),
        (Some(_), Some(_)) => bail!("holds several image manifests for {arch}; expected one"),
    }
}
