//! A cache of what archive artifacts hold, so that a re-run does not read
//! (and decompress) them again. An entry is keyed by the file's path, size,
//! modification time and inode, the checksum the compose gives, and the
//! archgate version: a file that changed in any of these is read again.
//! Entries are only written after a full, checked pass.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use archgate_core::{Arch, Artifact, Entry, Location};
use serde::{Deserialize, Serialize};

use crate::archive::{Compression, LayerMap};
use crate::artifact::{BlobSource, ResolvedArtifact};
use crate::oci::{Descriptor, PlatformJson};

/// `ARCHGATE_CACHE_DIR`, else `$XDG_CACHE_HOME/archgate`, else `~/.cache/archgate`.
pub fn default_dir() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("ARCHGATE_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("archgate")))
        .or_else(|| env("HOME").map(|h| h.join(".cache/archgate")))
}

#[derive(Serialize, Deserialize)]
struct Cached {
    digest: String,
    size: u64,
    media_type: String,
    platform: PlatformJson,
    created: Option<String>,
    manifest: String,
    config: String,
    blobs: Vec<Descriptor>,
    compression: Compression,
    layers: LayerMap,
}

fn key(path: &Path, artifact: &Artifact) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let abs = std::fs::canonicalize(path).ok()?;
    let text = format!(
        "{}\0{}\0{}\0{}\0{}\0{}\0{}",
        abs.display(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ino(),
        artifact.sha256.as_deref().unwrap_or(""),
        env!("CARGO_PKG_VERSION")
    );
    Some(crate::oci::sha256_digest(text.as_bytes())["sha256:".len()..].to_string())
}

fn archive_path(artifact: &Artifact) -> Option<&Path> {
    match &artifact.location {
        Location::Path(p) if p.is_file() => Some(p),
        _ => None,
    }
}

/// What an earlier run found in this archive, if nothing about it changed.
pub fn load(dir: &Path, arch: Arch, artifact: &Artifact) -> Option<ResolvedArtifact> {
    let path = archive_path(artifact)?;
    let file = dir.join(key(path, artifact)?);
    let cached: Cached = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
    let platform = archgate_core::Platform::from(&cached.platform);
    if Arch::from_platform(&platform) != Some(arch) {
        return None;
    }
    tracing::debug!(path = %path.display(), "archive read from the cache");
    Some(ResolvedArtifact {
        arch,
        source: BlobSource::Archive {
            path: path.to_path_buf(),
            compression: cached.compression,
            layers: cached.layers,
        },
        entry: Entry {
            platform,
            digest: cached.digest,
            size: cached.size,
            media_type: cached.media_type,
            annotations: Default::default(),
            created: cached.created,
        },
        manifest: cached.manifest.into_bytes(),
        small: [(
            cached.blobs[0].digest.clone(),
            cached.config.clone().into_bytes(),
        )]
        .into(),
        blobs: cached.blobs,
    })
}

/// Remembers a checked archive. Failing to write the cache is only logged.
pub fn store(dir: &Path, artifact: &Artifact, resolved: &ResolvedArtifact) {
    let (
        Some(path),
        BlobSource::Archive {
            compression,
            layers,
            ..
        },
    ) = (archive_path(artifact), &resolved.source)
    else {
        return;
    };
    let (Some(key), Ok(manifest), Some(Ok(config))) = (
        key(path, artifact),
        String::from_utf8(resolved.manifest.clone()),
        resolved
            .small
            .get(&resolved.blobs[0].digest)
            .map(|c| String::from_utf8(c.clone())),
    ) else {
        return;
    };
    let cached = Cached {
        digest: resolved.entry.digest.clone(),
        size: resolved.entry.size,
        media_type: resolved.entry.media_type.clone(),
        platform: PlatformJson::from(&resolved.entry.platform),
        created: resolved.entry.created.clone(),
        manifest,
        config,
        blobs: resolved.blobs.clone(),
        compression: *compression,
        layers: layers.clone(),
    };
    let result = std::fs::create_dir_all(dir)
        .map_err(anyhow::Error::from)
        .and_then(|_| crate::layout::write_atomic(&dir.join(key), &serde_json::to_vec(&cached)?));
    if let Err(e) = result {
        tracing::warn!(dir = %dir.display(), "cannot write the artifact cache: {e:#}");
    }
}
