//! Reading a built artifact: which manifest it holds, for which platform,
//! and whether every blob is what its descriptor says. Artifacts are OCI
//! layout directories, or archives (see [`crate::archive`]).

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use archgate_core::{Arch, Artifact, Entry, Location, Platform};
use serde::Serialize;

use crate::archive::{self, NoSink, Scan};
use crate::layout::OciLayout;
use crate::oci::{
    is_index, is_manifest, Config, Descriptor, Index, Manifest, OCI_CONFIG, OCI_LAYER_GZIP,
    OCI_MANIFEST,
};
pub use crate::resolved::{BlobSource, ReadEnv, ReadFailure, ResolvedArtifact};

/// A fault a test can ask a debug build for: `ARCHGATE_TEST_PANIC_READER=ARCH`
/// makes the reader of that arch panic, as a bug in it would. Release builds
/// have no such switch.
fn injected_fault(arch: Arch) {
    #[cfg(debug_assertions)]
    if std::env::var("ARCHGATE_TEST_PANIC_READER").is_ok_and(|a| a == arch.as_str()) {
        panic!("injected fault: the {arch} reader panics (ARCHGATE_TEST_PANIC_READER)");
    }
    let _ = arch;
}

/// Reads the artifact of one arch. [`ReadFailure::Unusable`] is the reason
/// that arch counts as failed (docs/gate.md).
pub fn resolve(arch: Arch, artifact: &Artifact) -> Result<ResolvedArtifact, ReadFailure> {
    resolve_cached(arch, artifact, None)
}

/// [`resolve`], looking in and filling an archive cache directory.
pub fn resolve_cached(
    arch: Arch,
    artifact: &Artifact,
    cache: Option<&Path>,
) -> Result<ResolvedArtifact, ReadFailure> {
    let env = ReadEnv {
        cache: cache.map(Path::to_path_buf),
        ..Default::default()
    };
    resolve_in(arch, artifact, &env)
}

/// [`resolve`] with a run's cache and spool.
pub fn resolve_in(
    arch: Arch,
    artifact: &Artifact,
    env: &ReadEnv,
) -> Result<ResolvedArtifact, ReadFailure> {
    injected_fault(arch);
    let cache = env.cache.as_deref();
    let path = match &artifact.location {
        Location::Path(p) => p,
        Location::Url(url) => return resolve_url(arch, url, artifact, env, &mut NoSink),
        Location::Image(image) => return Err(in_registry(image)),
    };
    if let Some(hit) = cache.and_then(|dir| crate::cache::load(dir, arch, artifact)) {
        return Ok(hit);
    }
    let resolved = resolve_path(arch, path, artifact)
        .map_err(|e| ReadFailure::Unusable(format!("{}: {e:#}", path.display())))?;
    if let Some(dir) = cache {
        crate::cache::store(dir, artifact, &resolved);
    }
    Ok(resolved)
}

fn resolve_path(arch: Arch, path: &Path, artifact: &Artifact) -> Result<ResolvedArtifact> {
    let meta = std::fs::metadata(path).map_err(|e| anyhow!("cannot read artifact: {e}"))?;
    if meta.is_dir() {
        let layout = OciLayout::new(path);
        if !layout.exists() {
            bail!("not an OCI image layout (no index.json)");
        }
        let index = layout.read_index()?;
        let image = read_oci_image(arch, &index, |d| layout.read_blob(d))?;
        for layer in &image.layers {
            layout.verify_blob(layer)?;
        }
        return Ok(image.into_resolved(arch, BlobSource::Layout(layout)));
    }
    resolve_archive(arch, path, artifact, &mut NoSink)
}

/// Reads an archive artifact in one pass, handing its blobs to `sink` as
/// they stream by. An `Err` is the reason the arch counts as failed.
pub fn resolve_archive_with(
    arch: Arch,
    artifact: &Artifact,
    env: &ReadEnv,
    sink: &mut dyn archive::BlobSink,
) -> Result<ResolvedArtifact, ReadFailure> {
    injected_fault(arch);
    match &artifact.location {
        Location::Path(path) => resolve_archive(arch, path, artifact, sink)
            .map_err(|e| ReadFailure::Unusable(format!("{}: {e:#}", path.display()))),
        Location::Url(url) => resolve_url(arch, url, artifact, env, sink),
        Location::Image(image) => Err(in_registry(image)),
    }
}

/// The attestation manifests that came with an image in a registry: each
/// read, its blobs known to be there.
async fn read_attestations(
    registry: &crate::Registry,
    image: &archgate_core::ImageRef,
) -> Result<Vec<crate::resolved::Attached>, ReadFailure> {
    let repo = image.repository.as_str();
    let mut attestations = Vec::new();
    for entry in &image.attestations {
        let desc = Descriptor::of_entry(entry);
        let manifest = registry
            .get_manifest(repo, &desc)
            .await
            .map_err(|e| later(image, e))?;
        let parsed: Manifest = serde_json::from_slice(&manifest).map_err(|e| {
            ReadFailure::Unusable(format!("{image}: attestation {}: {e}", entry.digest))
        })?;
        let mut blobs = parsed.layers.clone();
        blobs.push(parsed.config.clone());
        for b in &blobs {
            registry.note_present(repo, &b.digest);
        }
        attestations.push(crate::resolved::Attached {
            entry: entry.clone(),
            manifest,
            blobs,
        });
    }
    Ok(attestations)
}

/// A registry's failure to answer about an image: tried again later, of
/// the kind the failure says (transient when it says none).
fn later(image: &archgate_core::ImageRef, e: anyhow::Error) -> ReadFailure {
    let kind = crate::error_kind(&e).unwrap_or(archgate_core::ErrorKind::Transient);
    ReadFailure::Later(kind, format!("{image}: {e:#}"))
}

fn in_registry(image: &archgate_core::ImageRef) -> ReadFailure {
    ReadFailure::Internal(format!(
        "{image}: internal error: an image in a registry is read with the run's registry client (resolve_image)"
    ))
}

/// Reads an image already in a registry (the `registry` source): its
/// manifest and config (once per run: the view keeps them), checked as an
/// artifact's are, its platform against `arch`. Its blobs stay there: a
/// repository of the same registry mounts them, another registry gets
/// them streamed.
pub async fn resolve_image(
    registry: std::sync::Arc<crate::Registry>,
    arch: Arch,
    image: &archgate_core::ImageRef,
) -> Result<ResolvedArtifact, ReadFailure> {
    let repo = image.repository.as_str();
    let later = |e: anyhow::Error| later(image, e);
    let wanted = Descriptor::of_digest(&image.digest);
    let manifest = registry.get_manifest(repo, &wanted).await.map_err(later)?;
    let parsed: Manifest = serde_json::from_slice(&manifest)
        .map_err(|e| ReadFailure::Unusable(format!("{image}: not a valid image manifest: {e}")))?;
    let config = registry
        .get_blob(repo, &parsed.config)
        .await
        .map_err(later)?;
    let desc = Descriptor {
        media_type: parsed
            .media_type
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| OCI_MANIFEST.to_string()),
        size: manifest.len() as u64,
        ..wanted
    };
    let index = Index {
        manifests: vec![desc.clone()],
        ..Index::empty()
    };
    let docs = BTreeMap::from([
        (desc.digest.clone(), manifest),
        (parsed.config.digest.clone(), config),
    ]);
    let read = read_oci_image(arch, &index, |d| {
        docs.get(&d.digest)
            .cloned()
            .ok_or_else(|| anyhow!("{} is not read", d.digest))
    })
    .map_err(|e| ReadFailure::Unusable(format!("{image}: {e:#}")))?;
    for layer in &read.layers {
        registry.note_present(repo, &layer.digest);
    }
    registry.note_present(repo, &read.config.digest);
    let attestations = read_attestations(&registry, image).await?;
    let source = BlobSource::Registry {
        registry: registry.clone(),
        repository: repo.to_string(),
        attestations,
    };
    Ok(read.into_resolved(arch, source))
}

/// Reads an archive served over HTTP as it downloads: nothing of it is
/// written to disk when the server offers Range requests (a broken
/// transfer resumes where it stopped; a pass done again fetches it again).
/// From a server without them, a copy is kept in the run's spool while
/// `[source] spool-limit` has room for it (a pass done again reads it
/// there), and the run says so.
fn resolve_url(
    arch: Arch,
    url: &str,
    artifact: &Artifact,
    env: &ReadEnv,
    sink: &mut dyn archive::BlobSink,
) -> Result<ResolvedArtifact, ReadFailure> {
    let unusable = |e: anyhow::Error| ReadFailure::Unusable(format!("{url}: {e:#}"));
    let started = std::time::Instant::now();
    let body = crate::http::Body::get(url, env)?;
    let fetch_failed = body.failed.clone();
    let total = artifact.size.or(body.length);
    let name = url.rsplit('/').next().unwrap_or(url).to_string();
    let spooled = spool_for(url, env, &body)?;
    let copy_failed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut at = crate::resolved::HttpArtifact {
        url: url.to_string(),
        env: env.clone(),
        spooled: None,
    };
    let resolved = match &spooled {
        None => resolve_stream(arch, body, &name, total, artifact, sink),
        Some((part, _)) => {
            let copy = std::fs::File::create(part).map_err(|e| {
                spool_failure(part, &format!("cannot write: {e}"), crate::io_disk_full(&e))
            })?;
            let tee = Tee {
                inner: body,
                copy,
                failed: copy_failed.clone(),
            };
            resolve_stream(arch, tee, &name, total, artifact, sink)
        }
    };
    let resolved = match (resolved, spooled) {
        (Ok(r), None) => Ok(r),
        (Ok(r), Some((part, path))) => {
            std::fs::rename(&part, &path).map_err(|e| {
                ReadFailure::Internal(format!("{}: {e} (archgate's spool)", path.display()))
            })?;
            at.spooled = Some(path);
            Ok(r)
        }
        (Err(e), spooled) => {
            let part = spooled.map(|(part, _)| part);
            if let Some(part) = &part {
                let _ = std::fs::remove_file(part);
            }
            Err(if copy_failed.load(std::sync::atomic::Ordering::Relaxed) {
                let why = format!("cannot keep a copy of {url}: {e:#}");
                let path = part.as_deref().unwrap_or(Path::new(url));
                spool_failure(path, &why, crate::disk_full(&e))
            } else if fetch_failed.load(std::sync::atomic::Ordering::Relaxed) {
                let secs = env.stall_limit().as_secs();
                crate::http::transient(format!(
                    "{url}: the transfer broke or stalled (more than {secs} s without bytes): {e:#}"
                ))
            } else {
                unusable(e)
            })
        }
    };
    tracing::info!(
        url,
        secs = started.elapsed().as_secs_f32(),
        "artifact streamed from HTTP"
    );
    resolved.map(|mut r| {
        if let BlobSource::Archive { at: where_, .. } = &mut r.source {
            *where_ = crate::resolved::ArchiveAt::Http(std::sync::Arc::new(at));
        }
        r
    })
}

/// Where a copy of an artifact from a server without Range requests is
/// kept while it is read (`.part`) and once read: none when the server
/// offers ranges, or when the spool has no room (then a pass done again
/// fetches it whole again).
fn spool_for(
    url: &str,
    env: &ReadEnv,
    body: &crate::http::Body,
) -> Result<Option<(std::path::PathBuf, std::path::PathBuf)>, ReadFailure> {
    if body.ranges {
        return Ok(None);
    }
    let Some(dir) = env.spool.clone() else {
        return Ok(None);
    };
    let limit = env
        .spool_limit
        .unwrap_or(crate::resolved::DEFAULT_SPOOL_LIMIT);
    let room = body.length.is_some_and(|n| env.spool_room(n));
    if !room {
        tracing::warn!(url, length = ?body.length, spool_limit = limit, "the server offers no Range requests and the spool has no room for this artifact: it is not kept, and a pass done again fetches it whole");
        return Ok(None);
    }
    tracing::warn!(url, length = ?body.length, spool_limit = limit, "the server offers no Range requests: a copy is kept in the run's spool");
    std::fs::create_dir_all(&dir)
        .map_err(|e| ReadFailure::Internal(format!("{}: {e} (archgate's spool)", dir.display())))?;
    let path = dir.join(&crate::oci::sha256_digest(url.as_bytes())["sha256:".len()..]);
    Ok(Some((path.with_extension("part"), path)))
}

/// The spool could not be written: this machine's disk `full` (mended as
/// it empties: `external`), or archgate's own fault.
fn spool_failure(path: &Path, why: &str, full: bool) -> ReadFailure {
    let why = format!("{}: {why} (archgate's spool)", path.display());
    match full {
        true => ReadFailure::Later(archgate_core::ErrorKind::External, why),
        false => ReadFailure::Internal(why),
    }
}

/// Reads through, writing a copy of everything read; `failed` tells a
/// failure to write the copy (archgate's own file) from what the bytes are
/// worth.
struct Tee<R> {
    inner: R,
    copy: std::fs::File,
    failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<R: io::Read> io::Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        io::Write::write_all(&mut self.copy, &buf[..n]).inspect_err(|_| {
            self.failed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        })?;
        Ok(n)
    }
}

/// Whether the artifact is an archive file (rather than a layout directory).
pub fn is_archive(artifact: &Artifact) -> bool {
    match &artifact.location {
        Location::Path(p) => p.is_file(),
        Location::Url(_) => true,
        Location::Image(_) => false,
    }
}

fn resolve_archive(
    arch: Arch,
    path: &Path,
    artifact: &Artifact,
    sink: &mut dyn archive::BlobSink,
) -> Result<ResolvedArtifact> {
    // Only regular files (a directory is a layout, read elsewhere): a FIFO
    // would block the open forever, a device (/dev/zero) be read forever.
    let meta = std::fs::metadata(path).map_err(|e| anyhow!("cannot read artifact: {e}"))?;
    if !meta.is_file() {
        bail!("not a regular file; refused");
    }
    let file = std::fs::File::open(path).map_err(|e| anyhow!("cannot read artifact: {e}"))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let total = artifact.size.or(Some(meta.len()));
    let mut resolved = resolve_stream(arch, file, &name, total, artifact, sink)?;
    if let BlobSource::Archive { at, .. } = &mut resolved.source {
        *at = crate::resolved::ArchiveAt::File(path.to_path_buf());
    }
    Ok(resolved)
}

/// One pass over an archive's bytes as they arrive (from a file, or from
/// HTTP): the compression is found from the first bytes, the whole is
/// hashed for the compose checksum. `name` and `total` are for progress.
/// The resolved artifact's [`BlobSource::Archive`] is the caller's to
/// point at where the bytes came from.
fn resolve_stream(
    arch: Arch,
    raw: impl io::Read,
    name: &str,
    total: Option<u64>,
    artifact: &Artifact,
    sink: &mut dyn archive::BlobSink,
) -> Result<ResolvedArtifact> {
    use std::io::Read as _;
    // Never more than the compose says the file holds (plus one byte, to
    // tell a longer file from one of the right size).
    let raw = raw.take(artifact.size.map_or(u64::MAX, |n| n.saturating_add(1)));
    let checksum = artifact.checksum.as_ref();
    let meter = crate::progress::ReadMeter::new(format!("read {arch} {name}"), total);
    let mut hashing = archive::HashingReader::new(raw, checksum.map(|c| c.algo)).with_meter(meter);
    let (scan, compression) = {
        // The magic bytes whole, however few each read gives (a slow
        // transfer may give one at a time).
        let mut magic = [0u8; 6];
        let got = archive::read_up_to(&mut hashing, &mut magic)?;
        let compression = archive::detect_bytes(&magic[..got]);
        let head = io::Cursor::new(magic[..got].to_vec());
        let mut buffered = io::BufReader::with_capacity(64 << 10, head.chain(&mut hashing));
        let scan = {
            let stream = archive::decompress(&mut buffered, compression)?;
            archive::scan(stream, sink, &BTreeMap::new())?
        };
        io::copy(&mut buffered, &mut io::sink())?;
        (scan, compression)
    };
    let (file_digest, file_size) = hashing.finish();
    if let (Some(want), Some(got)) = (checksum, file_digest) {
        if want.hex != got {
            bail!(
                "checksum mismatch: the file's {} is {got}, the compose says {}",
                want.algo,
                want.hex
            );
        }
    }
    if let Some(want) = artifact.size {
        if want != file_size {
            bail!("size mismatch: the file has {file_size} bytes, the compose says {want}");
        }
    }
    let (image, layers) = if let Some(index) = scan.files.get("index.json") {
        let index: Index = serde_json::from_slice(index)
            .map_err(|e| anyhow!("index.json in the archive is not a valid OCI index: {e}"))?;
        let image = read_oci_image(arch, &index, |d| small_blob(&scan, d))?;
        for layer in &image.layers {
            match scan.blobs.get(&layer.digest) {
                Some(&size) if size == layer.size => {}
                Some(&size) => bail!(
                    "layer {} has {size} bytes in the archive, {} in its descriptor",
                    layer.digest,
                    layer.size
                ),
                None => bail!("layer {} is not in the archive", layer.digest),
            }
        }
        (image, BTreeMap::new())
    } else if scan.files.contains_key("manifest.json") {
        read_docker_image(arch, &scan)?
    } else {
        bail!("neither an oci-archive (no index.json) nor a docker-archive (no manifest.json)");
    };
    let source = BlobSource::Archive {
        at: crate::resolved::ArchiveAt::File(std::path::PathBuf::new()),
        compression,
        layers,
    };
    Ok(image.into_resolved(arch, source))
}

fn small_blob(scan: &Scan, desc: &Descriptor) -> Result<Vec<u8>> {
    desc.check()?;
    let path = format!("blobs/sha256/{}", &desc.digest["sha256:".len()..]);
    match (scan.files.get(&path), scan.blobs.get(&desc.digest)) {
        (Some(bytes), _) if bytes.len() as u64 == desc.size => Ok(bytes.clone()),
        (Some(bytes), _) => bail!(
            "{path} has {} bytes, its descriptor says {}",
            bytes.len(),
            desc.size
        ),
        (None, Some(_)) => bail!("{path} is too large for a manifest or config"),
        (None, None) => bail!("{} is not in the archive", desc.digest),
    }
}

/// An image read from its manifest and config.
struct Image {
    desc: Descriptor,
    media_type: String,
    manifest: Vec<u8>,
    platform: Platform,
    created: Option<String>,
    config: Descriptor,
    config_json: Vec<u8>,
    layers: Vec<Descriptor>,
}

impl Image {
    fn into_resolved(self, arch: Arch, source: BlobSource) -> ResolvedArtifact {
        ResolvedArtifact {
            arch,
            source,
            entry: Entry {
                platform: self.platform,
                digest: self.desc.digest,
                size: self.desc.size,
                media_type: self.media_type,
                annotations: Default::default(),
                created: self.created,
            },
            manifest: self.manifest,
            config: self.config,
            config_json: self.config_json,
            layers: self.layers,
        }
    }
}

/// The platform of a config, checked against the arch it was delivered as.
/// A config that gives the arch's architecture without a variant gets the
/// arch's default variant (`arm` is `linux/arm/v7`, docs/gate.md), so an
/// old armhfp image keeps its platform.
fn check_platform(arch: Arch, config: &Config) -> Result<Platform> {
    let default = arch.default_platform();
    let mut platform = config.platform().unwrap_or_else(|| default.clone());
    if platform.variant.is_none() && platform.architecture == default.architecture {
        platform.variant = default.variant;
    }
    match Arch::from_platform(&platform) {
        Some(a) if a == arch => Ok(platform),
        Some(other) => {
            bail!("its config says {platform} ({other}), but it was delivered as {arch}")
        }
        None => bail!(
            "its config says {platform}, which is no compose arch, but it was delivered as {arch}"
        ),
    }
}

fn read_oci_image(
    arch: Arch,
    index: &Index,
    get: impl Fn(&Descriptor) -> Result<Vec<u8>>,
) -> Result<Image> {
    let desc = pick_manifest(arch, index, &get)?;
    let manifest_bytes = get(&desc)?;
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
    let config_bytes = get(&manifest.config)?;
    let config: Config = serde_json::from_slice(&config_bytes).map_err(|e| {
        anyhow!(
            "config {} is not a valid image config: {e}",
            manifest.config.digest
        )
    })?;
    let platform = check_platform(arch, &config)?;
    for layer in &manifest.layers {
        layer.check()?;
    }
    Ok(Image {
        desc,
        media_type,
        manifest: manifest_bytes,
        platform,
        created: config.created,
        config: manifest.config.clone(),
        config_json: config_bytes,
        layers: manifest.layers.clone(),
    })
}

/// The one image manifest of an index, or the one for `arch` among several
/// (looking one level into a nested index).
fn pick_manifest(
    arch: Arch,
    index: &Index,
    get: &impl Fn(&Descriptor) -> Result<Vec<u8>>,
) -> Result<Descriptor> {
    let mut candidates = Vec::new();
    for desc in &index.manifests {
        desc.check()?;
        if is_index(&desc.media_type) {
            let nested: Index = serde_json::from_slice(&get(desc)?)
                .map_err(|e| anyhow!("index {} is not a valid index: {e}", desc.digest))?;
            candidates.extend(
                nested
                    .manifests
                    .into_iter()
                    .filter(|d| is_manifest(&d.media_type)),
            );
        } else if is_manifest(&desc.media_type) {
            candidates.push(desc.clone());
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

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    layers: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestOut<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: DescOut<'a>,
    layers: Vec<DescOut<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DescOut<'a> {
    media_type: &'a str,
    digest: &'a str,
    size: u64,
}

/// The image of a docker-archive's manifest.json that is `arch`'s (the one
/// there is, or among several the one whose config says `arch`): its entry,
/// its config's bytes, and the config.
fn docker_image_for<'a>(
    arch: Arch,
    scan: &'a Scan,
    entries: &'a [DockerManifestEntry],
) -> Result<(&'a DockerManifestEntry, &'a Vec<u8>, Config)> {
    let mut found = Vec::new();
    for e in entries {
        let bytes = scan.files.get(&e.config).ok_or_else(|| {
            anyhow!(
                "config {} named in manifest.json is not in the archive",
                e.config
            )
        })?;
        let config: Config = serde_json::from_slice(bytes)
            .map_err(|err| anyhow!("config {} is not a valid image config: {err}", e.config))?;
        found.push((e, bytes, config));
    }
    if found.len() > 1 {
        found.retain(|(_, _, c)| c.platform().and_then(|p| Arch::from_platform(&p)) == Some(arch));
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!("manifest.json names no image for {arch}"),
        n => bail!("manifest.json names {n} images for {arch}; expected one"),
    }
}

/// A docker-archive as an OCI image: its config as is, its layers as gzip
/// layers, and a manifest written for them.
fn read_docker_image(arch: Arch, scan: &Scan) -> Result<(Image, crate::archive::LayerMap)> {
    let entries: Vec<DockerManifestEntry> = serde_json::from_slice(&scan.files["manifest.json"])
        .map_err(|e| anyhow!("manifest.json in the archive is not valid: {e}"))?;
    let (entry, config_bytes, config) = docker_image_for(arch, scan, &entries)?;
    let platform = check_platform(arch, &config)?;
    let diff_ids = config
        .rootfs
        .as_ref()
        .map(|r| r.diff_ids.clone())
        .unwrap_or_default();
    if diff_ids.len() != entry.layers.len() {
        bail!(
            "its config lists {} layers, manifest.json {}",
            diff_ids.len(),
            entry.layers.len()
        );
    }
    let config_digest = crate::oci::sha256_digest(config_bytes);
    let mut layers = BTreeMap::new();
    let mut descs = Vec::new();
    for (path, diff_id) in entry.layers.iter().zip(&diff_ids) {
        let layer = scan
            .layers
            .get(path)
            .ok_or_else(|| anyhow!("layer {path} named in manifest.json is not in the archive"))?;
        if !layer.passthrough && &layer.diff_id != diff_id {
            bail!(
                "layer {path} is {}, but its config says {diff_id}",
                layer.diff_id
            );
        }
        layers.insert(path.clone(), (layer.digest.clone(), layer.size));
        descs.push(layer);
    }
    let manifest = serde_json::to_vec(&ManifestOut {
        schema_version: 2,
        media_type: OCI_MANIFEST,
        config: DescOut {
            media_type: OCI_CONFIG,
            digest: &config_digest,
            size: config_bytes.len() as u64,
        },
        layers: descs
            .iter()
            .map(|l| DescOut {
                media_type: OCI_LAYER_GZIP,
                digest: &l.digest,
                size: l.size,
            })
            .collect(),
    })?;
    let desc = Descriptor::new(OCI_MANIFEST, &manifest);
    let layer_descs = descs
        .iter()
        .map(|l| {
            let mut d = Descriptor::new(OCI_LAYER_GZIP, b"");
            d.digest = l.digest.clone();
            d.size = l.size;
            d
        })
        .collect();
    let image = Image {
        desc,
        media_type: OCI_MANIFEST.to_string(),
        manifest,
        platform,
        created: config.created.clone(),
        config: Descriptor::new(OCI_CONFIG, config_bytes),
        config_json: config_bytes.clone(),
        layers: layer_descs,
    };
    Ok((image, layers))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gives one byte per read, as a slow transfer may.
    struct OneByte(std::fs::File);

    impl io::Read for OneByte {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(1);
            self.0.read(&mut buf[..n])
        }
    }

    /// The compression is found from the whole magic, not from what the
    /// first read happened to give.
    #[test]
    fn an_archive_read_a_byte_at_a_time_is_read_whole() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "../../fixtures/real/data/pungi/f41-incomplete/compose/Container/x86_64/images/Fedora-Container-Base-Generic-41-20241101.n.0.x86_64.oci.tar.xz",
        );
        let artifact = Artifact::at(Location::Path(path.clone()));
        let raw = OneByte(std::fs::File::open(&path).unwrap());
        let resolved =
            resolve_stream(Arch::X86_64, raw, "a.tar.xz", None, &artifact, &mut NoSink).unwrap();
        let whole = resolve_archive(Arch::X86_64, &path, &artifact, &mut NoSink).unwrap();
        assert_eq!(resolved.manifest, whole.manifest);
    }
}
