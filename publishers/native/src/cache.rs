//! A cache of what archive artifacts hold, so that a re-run does not read
//! (and decompress) them again. An entry is keyed by the file's path, size,
//! modification time and inode, the checksum the compose gives, and the
//! archgate version: a file that changed in any of these is read again.
//! Entries are only written after a full, checked pass. An entry records
//! what the archive holds, never what a registry holds; one that does not
//! parse or does not make sense is a miss, and the archive is read again.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use archgate_core::{Arch, Artifact, Entry, Location};
use serde::{Deserialize, Serialize};

use crate::archive::{Compression, LayerMap};
use crate::oci::{Descriptor, PlatformJson};
use crate::resolved::{BlobSource, ResolvedArtifact};

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
    config: Descriptor,
    config_json: String,
    layers: Vec<Descriptor>,
    compression: Compression,
    layer_map: LayerMap,
}

/// Bumped whenever [`Cached`] changes shape, so old entries are misses.
const FORMAT: &str = "2";

fn key(path: &Path, artifact: &Artifact) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let abs = std::fs::canonicalize(path).ok()?;
    let text = format!(
        "{}\0{}\0{}\0{}\0{}\0{}\0{}\0{FORMAT}",
        abs.display(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ino(),
        artifact
            .checksum
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
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

/// Whether the cache has an entry for this archive as it is now (without
/// reading the entry: [`load`] may still find it does not hold together).
pub fn holds(dir: &Path, artifact: &Artifact) -> bool {
    entry(dir, artifact).is_some_and(|(_, file)| file.is_file())
}

/// The archive and the cache file its entry is (or would be) in.
fn entry<'a>(dir: &Path, artifact: &'a Artifact) -> Option<(&'a Path, PathBuf)> {
    let path = archive_path(artifact)?;
    Some((path, dir.join(key(path, artifact)?)))
}

/// What an earlier run found in this archive, if nothing about it changed.
pub fn load(dir: &Path, arch: Arch, artifact: &Artifact) -> Option<ResolvedArtifact> {
    let (path, file) = entry(dir, artifact)?;
    let cached: Cached = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
    let platform = archgate_core::Platform::from(&cached.platform);
    // An entry that does not hold together is a miss, not a failure.
    let consistent = Arch::from_platform(&platform) == Some(arch)
        && crate::oci::sha256_digest(cached.manifest.as_bytes()) == cached.digest
        && cached.manifest.len() as u64 == cached.size
        && crate::oci::sha256_digest(cached.config_json.as_bytes()) == cached.config.digest
        && cached.config.check().is_ok()
        && cached.layers.iter().all(|l| l.check().is_ok());
    if !consistent {
        tracing::debug!(path = %path.display(), "cache entry does not hold together; reading the archive");
        return None;
    }
    tracing::debug!(path = %path.display(), "archive read from the cache");
    Some(ResolvedArtifact {
        arch,
        source: BlobSource::Archive {
            at: crate::resolved::ArchiveAt::File(path.to_path_buf()),
            compression: cached.compression,
            layers: cached.layer_map,
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
        config: cached.config,
        config_json: cached.config_json.into_bytes(),
        layers: cached.layers,
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
    let (Some(key), Ok(manifest), Ok(config_json)) = (
        key(path, artifact),
        String::from_utf8(resolved.manifest.clone()),
        String::from_utf8(resolved.config_json.clone()),
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
        config: resolved.config.clone(),
        config_json,
        layers: resolved.layers.clone(),
        compression: *compression,
        layer_map: layers.clone(),
    };
    let result = std::fs::create_dir_all(dir)
        .map_err(anyhow::Error::from)
        .and_then(|_| crate::layout::write_atomic(&dir.join(key), &serde_json::to_vec(&cached)?));
    if let Err(e) = result {
        tracing::warn!(dir = %dir.display(), "cannot write the artifact cache: {e:#}");
    }
}
