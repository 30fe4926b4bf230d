//! One interface for every place a target lives (an OCI layout, a registry
//! repository), and the two things archgate does with it: read a tag's
//! current index, and carry a target plan out (docs/gate.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use archgate_core::{Arch, CurrentIndex, Decision, Entry, Platform, TargetPlan};
use futures_util::{StreamExt, TryStreamExt};

use crate::artifact::{BlobSource, ReadFailure, ResolvedArtifact};
use crate::oci::{
    is_index, is_manifest, render_index, Config, Descriptor, Index, Manifest, OCI_INDEX,
};
pub use crate::transport::Store;

/// How many blobs go up at once to one target.
pub const UPLOAD_CONCURRENCY: usize = 4;

/// Archive passes of one target at once: a pass that only finds or mounts
/// its blobs costs round trips, not CPU; one that streams costs a core.
const ARCHIVE_PASSES_AT_ONCE: usize = 4;

/// What [`read_current`] reads of each entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// The index only: an entry's config is read only when the index lists
    /// no platform for it.
    Index,
    /// Every entry's config too, for its `created` time (`max-carry-age`).
    Configs,
}

/// The current index of a tag; a single image manifest counts as an index
/// of one entry. `None` when the tag does not exist. One request for the
/// tag; entries' manifests and configs only as `depth` needs them.
pub async fn read_current<S: Store>(
    store: &S,
    tag: &str,
    depth: Depth,
) -> Result<Option<CurrentIndex>> {
    let Some((desc, bytes)) = store.read_tag(tag).await? else {
        return Ok(None);
    };
    if is_index(&desc.media_type) {
        let index: Index = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow!("index {} is not a valid index: {e}", desc.digest))?;
        let mut entries = Vec::new();
        for child in &index.manifests {
            child.check()?;
            let listed = child.platform.as_ref().map(Platform::from);
            // The config only where it is needed: for `created`, or for the
            // arch when the index lists no platform.
            let needs_config = listed.is_none() || depth == Depth::Configs;
            let (config_platform, created) = match needs_config {
                false => (None, None),
                true => match config_of(store, child).await {
                    Ok(config) => (config.platform(), config.created),
                    // Without a platform in the index, the config is the only
                    // place the entry's arch can come from: an entry whose arch
                    // cannot be established is never dropped, the target fails.
                    Err(e) if listed.is_none() => {
                        bail!(
                            "entry {} of the index under {tag} lists no platform, and its config cannot be read: {e:#}",
                            child.digest
                        )
                    }
                    Err(e) => {
                        tracing::debug!(digest = %child.digest, "cannot read the config of an index entry: {e:#}");
                        (None, None)
                    }
                },
            };
            let platform = listed.or(config_platform).unwrap_or_else(unknown_platform);
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
            annotations: index.annotations.unwrap_or_default(),
        }))
    } else if is_manifest(&desc.media_type) {
        let config = config_from(store, &desc, &bytes).await?;
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
            annotations: Default::default(),
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
    config_from(store, manifest, &bytes).await
}

/// The config of a manifest already read.
async fn config_from<S: Store>(store: &S, manifest: &Descriptor, bytes: &[u8]) -> Result<Config> {
    let m: Manifest = serde_json::from_slice(bytes).map_err(|e| {
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

enum Source<'a> {
    File(PathBuf),
    Memory(&'a [u8]),
    /// In a registry's repository (mounted there, else sent from memory
    /// when this run holds it, else streamed from there).
    Registry(&'a crate::Registry, &'a str, Option<&'a [u8]>),
}

/// How many passes over an archive may be needed to get its blobs up when
/// uploads fail on the way (a streamed upload cannot be retried alone).
const ARCHIVE_PASSES: u32 = 3;

/// Streams an archive artifact once, pushing the blobs the store lacks as
/// they come by; again (up to [`ARCHIVE_PASSES`]) if an upload failed.
async fn push_from_archive<S: Store>(
    store: &S,
    art: &ResolvedArtifact,
    blobs: Vec<&Descriptor>,
) -> Result<()> {
    let BlobSource::Archive {
        at,
        compression,
        layers,
    } = &art.source
    else {
        bail!("internal: not an archive artifact");
    };
    let _flight = store.guard(&at.name()).await;
    let mut pass = 1;
    loop {
        // Every blob checked (and mounted where it is known) at once: over
        // a network each check is a round trip.
        let checks: Vec<_> = blobs
            .iter()
            .map(|blob| async move {
                let _mounting = crate::stream::mount_turn(store, &blob.digest).await;
                let there = store.has_blob(blob).await? || store.mount_blob(blob).await?;
                anyhow::Ok((!there).then(|| (blob.digest.clone(), (*blob).clone())))
            })
            .collect();
        let needed: BTreeMap<String, Descriptor> = futures_util::future::try_join_all(checks)
            .await?
            .into_iter()
            .flatten()
            .collect();
        if needed.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        match stream_pass(store, at.clone(), *compression, layers.clone(), needed).await {
            Ok(n) => {
                tracing::info!(store = %store.name(), arch = %art.arch, blobs = n, secs = started.elapsed().as_secs_f32(), "archive streamed");
            }
            Err(e) if pass < ARCHIVE_PASSES => {
                tracing::warn!(store = %store.name(), arch = %art.arch, "streaming {} failed: {e:#}; reading it again", at.name());
            }
            Err(e) => return Err(e.context(format!("{} (after {pass} passes)", at.name()))),
        }
        pass += 1;
    }
}

/// One pass pushing the `needed` blobs of an archive already read once.
async fn stream_pass<S: Store>(
    store: &S,
    at: crate::resolved::ArchiveAt,
    compression: crate::archive::Compression,
    layers: crate::archive::LayerMap,
    needed: BTreeMap<String, Descriptor>,
) -> Result<usize> {
    let work = move |sink: &mut dyn crate::archive::BlobSink| -> Result<()> {
        let stream = crate::archive::decompress(at.open()?, compression)?;
        crate::archive::scan(stream, sink, &layers).with_context(|| at.name())?;
        Ok(())
    };
    let dests = [(store, &[][..], &None)];
    let streamed =
        crate::stream::stream_archive(&dests, Some(needed), crate::stream::AHEAD, work).await?;
    match streamed.failed.into_iter().next() {
        Some((_, e)) => Err(e),
        None => Ok(streamed.pushed),
    }
}

/// Reads a built artifact (nothing pushed) on a blocking thread, holding a
/// permit of `reading` meanwhile.
pub async fn read_only(
    reading: &crate::stream::Reading,
    arch: Arch,
    artifact: archgate_core::Artifact,
    env: crate::artifact::ReadEnv,
) -> Result<ResolvedArtifact, ReadFailure> {
    let permit = reading.permit().await?;
    let blocking = tokio::task::spawn_blocking(move || {
        let _reading = permit;
        crate::artifact::resolve_in(arch, &artifact, &env)
    });
    blocking.await.map_err(ReadFailure::stopped)?
}

/// Where a read sends an archive's blobs ([`resolve_and_push`]).
#[derive(Clone)]
pub struct Destination<S> {
    /// The store the blobs are sent to (a registry repository, a layout).
    pub store: S,
    /// Other repositories of the same registry: each blob is mounted into
    /// them from `store`.
    pub also: Vec<S>,
    /// Whether anything may be written there, once known (`None`: yes).
    pub go: crate::stream::Go,
}

impl<S> Destination<S> {
    /// A destination that may always be written, with nothing mounted.
    pub fn to(store: S) -> Destination<S> {
        Destination {
            store,
            also: Vec::new(),
            go: None,
        }
    }
}

/// Reads a built artifact, and when it is an archive pushes its blobs to
/// each destination's store in the same pass (and mounts them into its
/// `also`), so that a first publish reads each archive once, whatever the
/// registries and images. Blobs are content-addressed and invisible until
/// a manifest names them; the gate still decides about every manifest and
/// tag. The reading holds a permit of `reading` (a decoder's memory and a
/// core); the uploads after it do not. Nothing is sent to (or mounted in) a
/// destination before its `go` says yes; when every `go` says no, the
/// artifact is only read. A destination whose upload fails does not stop
/// the read: publishing sends it what it lacks.
pub async fn resolve_and_push<S: Store>(
    dests: &[Destination<S>],
    reading: &crate::stream::Reading,
    arch: Arch,
    artifact: archgate_core::Artifact,
    env: crate::artifact::ReadEnv,
) -> Result<ResolvedArtifact, ReadFailure> {
    resolve_and_push_then(dests, reading, (arch, artifact), env, |_| ()).await
}

/// [`resolve_and_push`], calling `seen` with the digest of each image
/// manifest an archive's pass meets, as soon as it has met it (its bytes
/// checked), and with the digest of the arch manifest it read once it has
/// read the archive, while its blobs may still be going up: what needs
/// only a manifest's digest (its signature) can be made ready meanwhile.
/// A digest may come twice; one that is not the arch manifest's (an
/// archive of several images) is met but not what the pass gives. Not
/// called for what the cache answered, nor for what is not an archive
/// (nothing is sent while those are read).
pub async fn resolve_and_push_then<S: Store>(
    dests: &[Destination<S>],
    reading: &crate::stream::Reading,
    (arch, artifact): (Arch, archgate_core::Artifact),
    env: crate::artifact::ReadEnv,
    mut seen: impl FnMut(&str) + Send + 'static,
) -> Result<ResolvedArtifact, ReadFailure> {
    let cache = env.cache.clone();
    if let Some(hit) = cache
        .as_deref()
        .and_then(|dir| crate::cache::load(dir, arch, &artifact))
    {
        return Ok(hit);
    }
    if !crate::artifact::is_archive(&artifact) {
        return read_only(reading, arch, artifact, env).await;
    }
    let permit = reading.permit().await?;
    let started = std::time::Instant::now();
    let for_pass = artifact.clone();
    let env_again = env.clone();
    let work = move |sink: &mut dyn crate::archive::BlobSink| {
        let _reading = permit;
        let mut meeting = Meeting {
            inner: sink,
            seen: &mut seen,
        };
        let got = crate::artifact::resolve_archive_with(arch, &for_pass, &env, &mut meeting);
        if let Ok(art) = &got {
            seen(&art.entry.digest);
        }
        Ok(got)
    };
    let dests: Vec<_> = dests
        .iter()
        .map(|d| (&d.store, d.also.as_slice(), &d.go))
        .collect();
    let streamed = crate::stream::stream_archive(&dests, None, reading.ahead, work)
        .await
        .map_err(|e| ReadFailure::stopped(format!("{e:#}")))?;
    let mut resolved = streamed.value?;
    let names: Vec<String> = dests.iter().map(|(s, _, _)| s.name()).collect();
    tracing::info!(stores = ?names, %arch, blobs = streamed.pushed, failed = streamed.failed.len(), secs = started.elapsed().as_secs_f32(), "archive read and streamed");
    // Its layers were left to the destinations to check, and one of them
    // failed: that may have been the artifact's fault (a layer that is not
    // what its name says), which makes the arch `failed`. Unless the
    // compose's checksum vouched for the file, it is read again, checking
    // every blob here.
    if !streamed.failed.is_empty() && streamed.checked && artifact.checksum.is_none() {
        tracing::info!(%arch, "reading the artifact again to check every blob (a destination failed)");
        resolved = read_only(reading, arch, artifact.clone(), env_again).await?;
    }
    if let Some(dir) = &cache {
        crate::cache::store(dir, &artifact, &resolved);
    }
    Ok(resolved)
}

/// A pass's sink that also tells `seen` of each image manifest the pass
/// meets ([`resolve_and_push_then`]).
struct Meeting<'a> {
    inner: &'a mut dyn crate::archive::BlobSink,
    seen: &'a mut (dyn FnMut(&str) + Send),
}

impl crate::archive::BlobSink for Meeting<'_> {
    fn open(&mut self, digest: &str, size: u64) -> Result<Option<Box<dyn std::io::Write + '_>>> {
        self.inner.open(digest, size)
    }
    fn checked_downstream(&self) -> bool {
        self.inner.checked_downstream()
    }
    fn document(&mut self, digest: &str, bytes: &[u8]) {
        self.inner.document(digest, bytes);
        if is_image_manifest(bytes) {
            (self.seen)(digest);
        }
    }
}

/// Whether `bytes` are an image manifest (OCI or Docker): what
/// [`crate::oci::Manifest`] reads (a config descriptor, layers).
fn is_image_manifest(bytes: &[u8]) -> bool {
    serde_json::from_slice::<crate::oci::Manifest>(bytes).is_ok()
}

/// Whether this run knows that `store` has every blob of `art` (its config
/// and layers), without asking.
pub fn knows_all_blobs<S: Store>(store: &S, art: &ResolvedArtifact) -> bool {
    store.knows_blob(&art.config) && art.layers.iter().all(|l| store.knows_blob(l))
}

/// Whether `tag` already points at `desc`.
async fn tag_points_to<S: Store>(store: &S, tag: &str, desc: Descriptor) -> Result<bool> {
    Ok(store
        .resolve_tag(tag)
        .await?
        .is_some_and(|d| d.digest == desc.digest))
}

async fn push_arch_manifest<S: Store>(
    store: &S,
    arch_tag: &str,
    desc: &Descriptor,
    art: &ResolvedArtifact,
) -> Result<()> {
    store
        .push_manifest(desc, &art.manifest, Some(arch_tag))
        .await
        .with_context(|| format!("manifest {} of {}", desc.digest, art.arch))?;
    tracing::info!(store = %store.name(), tag = %arch_tag, digest = %desc.digest, "arch tag set");
    Ok(())
}

/// An index entry must be in the store before the index names it.
async fn entry_present<S: Store>(store: &S, entry: &Entry) -> Result<()> {
    if !store.has_manifest(&Descriptor::of_entry(entry)).await? {
        bail!(
            "index entry {} ({}) is not in {}",
            entry.digest,
            entry.platform,
            store.name()
        );
    }
    Ok(())
}

/// Pushes one blob from a file or memory, unless the store has it.
async fn push_one<S: Store>(store: &S, desc: &Descriptor, source: Source<'_>) -> Result<()> {
    let _flight = store.guard(&desc.digest).await;
    if let Source::Registry(..) = source {
        // Mounted once (a second mount of a blob the repository has would
        // rewrite its link under another target's manifest PUT, which
        // docker-registry then refuses); within the registry the image is
        // in, no bytes move.
        if store.knows_blob(desc) || store.mount_blob(desc).await? {
            return Ok(());
        }
    }
    if store.has_blob(desc).await? {
        return Ok(());
    }
    let started = std::time::Instant::now();
    match source {
        Source::File(path) => store.push_blob(desc, &path).await,
        Source::Memory(bytes) => store.push_blob_bytes(desc, bytes).await,
        Source::Registry(_, _, Some(bytes)) => store.push_blob_bytes(desc, bytes).await,
        Source::Registry(registry, repo, None) => {
            let chunks = registry.blob_chunks(repo, desc).await?;
            store.push_blob_stream(desc, chunks).await
        }
    }
    .with_context(|| format!("blob {}", desc.digest))?;
    tracing::info!(store = %store.name(), digest = %desc.digest, size = desc.size, secs = started.elapsed().as_secs_f32(), "blob pushed");
    crate::progress::pushed(&format!("push {}", store.name()), desc.size);
    Ok(())
}

/// One target: a tag in a store, and what it pointed to when planned.
pub struct Target<'a, S> {
    /// Where the target lives.
    pub store: &'a S,
    /// Its tag.
    pub tag: &'a str,
    /// The digest it held when planned (none: the tag did not exist).
    pub planned_from: Option<&'a str>,
    /// The key that signs what is written (registry targets only: a layout
    /// signs nothing).
    pub sign: Option<&'a archgate_sign::SigningKey>,
}

/// What publishing a target did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// The index digest the tag holds afterwards (none when refused).
    pub digest: Option<String>,
    /// The digests that carry archgate's signature because of this target
    /// (arch manifests and the index written), sorted.
    pub signed: Vec<String>,
}

/// Carries a plan out (docs/gate.md, "Publishing order and guarantees"):
/// blobs; the signatures of every manifest and index to be written (before
/// any tag points at them); each built arch's manifest under its arch tag;
/// then (when publishing) the index, after checking that the tag has not
/// moved since it was planned, and reading it back after.
pub async fn publish<S: Store>(
    target: &Target<'_, S>,
    plan: &TargetPlan,
    artifacts: &BTreeMap<Arch, ResolvedArtifact>,
    arch_tags: &[(Arch, String)],
) -> Result<Published> {
    if let Some(done) = nothing_to_write(plan, target.planned_from) {
        return Ok(done);
    }
    let store = target.store;
    // The lock first: the store is made ready (a layout created) under it.
    let _lock = store.lock().await?;
    store.prepare().await?;
    let work = ArchWork::gather(store, artifacts, arch_tags).await?;
    let index = (plan.decision == Decision::Published).then(|| {
        let bytes = render_index(&plan.index, &plan.annotations);
        (Descriptor::new(OCI_INDEX, &bytes), bytes)
    });
    let arch_digests: Vec<&str> = work
        .to_tag
        .iter()
        .map(|(_, d, _)| d.digest.as_str())
        .collect();
    // The arch manifests' signatures are made ready while the blobs go up
    // (they need only the digests; most were made ready while the artifacts
    // were read); each is then one manifest PUT, before its arch tag. The
    // moved-tag check goes with the signatures and arch manifests (it needs
    // nothing of theirs, and the index waits for all three).
    let arches = async {
        let (blobs, prepared) = tokio::join!(
            work.push_blobs(store),
            prepare_signatures(store, target.sign, &arch_digests)
        );
        blobs?;
        let prepared = prepared?;
        let manifests = async {
            let signed = finish_signatures(store, prepared).await?;
            work.push_manifests(store).await?;
            // Carried entries must be there already (what was just pushed
            // is known).
            let present: Vec<_> = plan
                .index
                .iter()
                .map(|entry| entry_present(store, entry))
                .collect();
            futures_util::future::try_join_all(present).await?;
            anyhow::Ok(signed)
        };
        let unmoved = async {
            match index {
                Some(_) => check_not_moved(store, target.tag, target.planned_from).await,
                None => Ok(()),
            }
        };
        let (signed, unmoved) = tokio::join!(manifests, unmoved);
        unmoved?;
        signed
    };
    // The index's signature needs nothing of the arches': it is made ready
    // and put in place from the start, and the index (its tag) waits for it.
    let index_signed = async {
        match &index {
            Some((desc, _)) => sign_all(store, target.sign, &[desc.digest.as_str()]).await,
            None => Ok(Vec::new()),
        }
    };
    let (signed, index_signed) = tokio::join!(arches, index_signed);
    let mut signed = signed?;
    signed.extend(index_signed?);
    signed.sort();
    let digest = match index {
        Some((desc, bytes)) => Some(write_index(target, &desc, &bytes).await?),
        None => None,
    };
    Ok(Published { digest, signed })
}

/// What publishing gives for a plan that writes nothing, without asking
/// the store anything: a hard refusal (nothing at all), or an unchanged
/// target (the tag holds these very entries, and the arch tags were
/// written before that index was). `None` when there is work.
pub fn nothing_to_write(plan: &TargetPlan, planned_from: Option<&str>) -> Option<Published> {
    if plan.hard_refusal {
        return Some(Published::default());
    }
    (plan.decision == Decision::Unchanged).then(|| Published {
        digest: planned_from.map(str::to_string),
        signed: Vec::new(),
    })
}

/// A blob in a registry's repository, and its bytes when this run holds
/// them.
type InRegistry<'a> = (
    &'a Descriptor,
    &'a crate::Registry,
    &'a str,
    Option<&'a [u8]>,
);

/// What a target's built arches need: the arch manifests to put under their
/// arch tags, and the blobs of those (by file, from memory, from archives,
/// in a registry).
struct ArchWork<'a> {
    to_tag: Vec<(&'a str, Descriptor, &'a ResolvedArtifact)>,
    from_files: BTreeMap<&'a str, (&'a Descriptor, PathBuf)>,
    from_memory: BTreeMap<&'a str, (&'a Descriptor, &'a [u8])>,
    from_archives: Vec<(&'a ResolvedArtifact, Vec<&'a Descriptor>)>,
    /// Blobs of images in a registry: (that registry, its repository).
    from_registries: BTreeMap<&'a str, InRegistry<'a>>,
    /// Attestation manifests that go with the arch manifests.
    attached: Vec<&'a crate::resolved::Attached>,
}

impl<'a> ArchWork<'a> {
    /// Nothing for an arch whose tag already points at its manifest.
    /// Otherwise every blob of its manifest is checked (what this run pushed
    /// or saw is known without asking) and pushed where missing: never
    /// inferred from the manifest being there. All arches are asked at once;
    /// an arch whose blobs this run knows are in the store is not asked
    /// about (its manifest goes up under its tag, one request either way).
    async fn gather<S: Store>(
        store: &S,
        artifacts: &'a BTreeMap<Arch, ResolvedArtifact>,
        arch_tags: &'a [(Arch, String)],
    ) -> Result<ArchWork<'a>> {
        let mut checks = Vec::new();
        for (arch, arch_tag) in arch_tags {
            let art = artifacts
                .get(arch)
                .ok_or_else(|| anyhow!("internal: no artifact read for built arch {arch}"))?;
            let known = knows_all_blobs(store, art);
            checks.push(async move {
                match known {
                    true => Ok(false),
                    false => tag_points_to(store, arch_tag, Descriptor::of_entry(&art.entry)).await,
                }
            });
        }
        let tagged = futures_util::future::try_join_all(checks).await?;
        let mut work = ArchWork {
            to_tag: Vec::new(),
            from_files: BTreeMap::new(),
            from_memory: BTreeMap::new(),
            from_archives: Vec::new(),
            from_registries: BTreeMap::new(),
            attached: Vec::new(),
        };
        for ((arch, arch_tag), already) in arch_tags.iter().zip(tagged) {
            if !already {
                work.add(arch_tag, &artifacts[arch])?;
            }
        }
        Ok(work)
    }

    fn add(&mut self, arch_tag: &'a str, art: &'a ResolvedArtifact) -> Result<()> {
        if let BlobSource::Registry {
            registry,
            repository,
            ..
        } = &art.source
        {
            // The config too is mounted from where the image is (or sent
            // from memory to another registry).
            self.from_registries.insert(
                &art.config.digest,
                (&art.config, registry, repository, Some(&art.config_json)),
            );
        } else {
            self.from_memory
                .insert(&art.config.digest, (&art.config, &art.config_json));
        }
        let mut streamed = Vec::new();
        for blob in &art.layers {
            match &art.source {
                BlobSource::Layout(layout) => {
                    self.from_files
                        .insert(&blob.digest, (blob, layout.blob_path(&blob.digest)?));
                }
                BlobSource::Archive { .. } => streamed.push(blob),
                BlobSource::Registry {
                    registry,
                    repository,
                    ..
                } => {
                    self.from_registries
                        .insert(&blob.digest, (blob, registry, repository, None));
                }
            }
        }
        if let BlobSource::Registry {
            registry,
            repository,
            attestations,
        } = &art.source
        {
            for attached in attestations {
                for blob in &attached.blobs {
                    self.from_registries
                        .insert(&blob.digest, (blob, registry, repository, None));
                }
                self.attached.push(attached);
            }
        }
        if !streamed.is_empty() {
            self.from_archives.push((art, streamed));
        }
        self.to_tag
            .push((arch_tag, Descriptor::of_entry(&art.entry), art));
        Ok(())
    }

    /// Blobs from files and memory, several at once; then from archives,
    /// one streaming pass per artifact, two artifacts at once.
    async fn push_blobs<S: Store>(&self, store: &S) -> Result<()> {
        // (The futures are made before they are streamed: a closure in the
        // stream would keep this future from being `Send`.)
        let mut uploads = Vec::new();
        for (desc, bytes) in self.from_memory.values() {
            uploads.push(push_one(store, desc, Source::Memory(bytes)));
        }
        for (desc, path) in self.from_files.values() {
            uploads.push(push_one(store, desc, Source::File(path.clone())));
        }
        for (desc, registry, repo, held) in self.from_registries.values() {
            uploads.push(push_one(
                store,
                desc,
                Source::Registry(registry, repo, *held),
            ));
        }
        futures_util::stream::iter(uploads)
            .buffer_unordered(UPLOAD_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        let passes: Vec<_> = self
            .from_archives
            .iter()
            .map(|(art, blobs)| push_from_archive(store, art, blobs.clone()))
            .collect();
        futures_util::stream::iter(passes)
            .buffer_unordered(ARCHIVE_PASSES_AT_ONCE)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Each arch's manifest under its arch tag (which stores it by digest
    /// too), all at once.
    async fn push_manifests<S: Store>(&self, store: &S) -> Result<()> {
        let pushes: Vec<_> = self
            .to_tag
            .iter()
            .map(|(arch_tag, desc, art)| push_arch_manifest(store, arch_tag, desc, art))
            .collect();
        futures_util::future::try_join_all(pushes).await?;
        let attached = self.attached.iter().map(|a| async move {
            let desc = Descriptor::of_entry(&a.entry);
            store
                .push_manifest(&desc, &a.manifest, None)
                .await
                .with_context(|| format!("attestation manifest {}", desc.digest))
        });
        futures_util::future::try_join_all(attached).await?;
        Ok(())
    }
}

/// Signatures being made for one target: each digest's guard (one
/// signature of a digest in the making at a time in this run) and what is
/// prepared.
pub struct Signing {
    _guards: Vec<tokio::sync::OwnedMutexGuard<()>>,
    prepared: Vec<crate::signatures::Prepared>,
}

/// Gets every digest's signature ready with `key` (when the store signs),
/// nothing visible yet. The digests' guards are taken one after another in
/// digest order (so that targets sharing digests never wait on each other
/// in a circle) and held until [`finish_signatures`]: a second target of
/// the same digests then finds them signed and asks nothing.
pub async fn prepare_signatures<S: Store>(
    store: &S,
    key: Option<&archgate_sign::SigningKey>,
    digests: &[&str],
) -> Result<Signing> {
    let mut signing = Signing {
        _guards: Vec::new(),
        prepared: Vec::new(),
    };
    let Some(key) = key else {
        return Ok(signing);
    };
    let mut sorted: Vec<&str> = digests.to_vec();
    sorted.sort();
    sorted.dedup();
    for d in &sorted {
        signing
            ._guards
            .extend(store.guard(&crate::transport::signing_turn(d)).await);
    }
    let preparing: Vec<_> = sorted
        .iter()
        .map(|d| store.prepare_signature(key, d))
        .collect();
    let prepared = futures_util::future::try_join_all(preparing).await?;
    signing.prepared = prepared.into_iter().flatten().collect();
    Ok(signing)
}

/// Puts prepared signatures in place, all at once (one request each, none
/// for what was signed already): the digests signed.
pub async fn finish_signatures<S: Store>(store: &S, signing: Signing) -> Result<Vec<String>> {
    let digests: Vec<String> = signing
        .prepared
        .iter()
        .map(|p| p.digest().to_string())
        .collect();
    let finishing: Vec<_> = signing
        .prepared
        .into_iter()
        .map(|p| store.finish_signature(p))
        .collect();
    futures_util::future::try_join_all(finishing).await?;
    Ok(digests)
}

/// Signs every digest at once with `key` (when the store signs): prepared,
/// then put in place. The digests signed.
pub async fn sign_all<S: Store>(
    store: &S,
    key: Option<&archgate_sign::SigningKey>,
    digests: &[&str],
) -> Result<Vec<String>> {
    let prepared = prepare_signatures(store, key, digests).await?;
    finish_signatures(store, prepared).await
}

/// The index under its tag (once the moved-tag check passed); then read back.
async fn write_index<S: Store>(
    target: &Target<'_, S>,
    desc: &Descriptor,
    bytes: &[u8],
) -> Result<String> {
    let (store, tag) = (target.store, target.tag);
    store
        .push_manifest(desc, bytes, Some(tag))
        .await
        .with_context(|| format!("index {}", desc.digest))?;
    read_back(store, tag, &desc.digest)
        .await
        .with_context(|| format!("the index {} was written under {tag}, but", desc.digest))?;
    tracing::info!(store = %store.name(), tag = %tag, digest = %desc.digest, "index written");
    Ok(desc.digest.clone())
}

/// Fails when the tag no longer points where it did when the target was
/// planned (docs/gate.md): both digests are named, nothing is written.
pub async fn check_not_moved<S: Store>(
    store: &S,
    tag: &str,
    planned_from: Option<&str>,
) -> Result<()> {
    let now = store.resolve_tag(tag).await?.map(|d| d.digest);
    if now.as_deref() != planned_from {
        return Err(crate::kinded(
            archgate_core::ErrorKind::MovedTag,
            format!(
                "tag {tag} moved while archgate was publishing: it was planned against {} and now points to {}; not written",
                planned_from.unwrap_or("no index"),
                now.as_deref().unwrap_or("nothing")
            ),
        ));
    }
    Ok(())
}

/// Reads the tag back after the write: it must point to `digest`, and the
/// index must be readable and match it.
pub async fn read_back<S: Store>(store: &S, tag: &str, digest: &str) -> Result<()> {
    // One read of the tag: what it points to, and the bytes, hashed.
    let (back, _) = store
        .read_tag(tag)
        .await
        .context("read-back")?
        .ok_or_else(|| anyhow!("read-back: tag {tag} is missing after the write"))?;
    if back.digest != digest {
        bail!(
            "read-back: tag {tag} points to {}, expected {digest}",
            back.digest
        );
    }
    Ok(())
}

/// Any store, so that callers need not be generic.
#[derive(Clone)]
pub enum AnyStore {
    /// An OCI layout.
    Layout(crate::layout::OciLayout),
    /// A registry repository.
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
    async fn guard(&self, key: &str) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        delegate!(self, s => Store::guard(s, key).await)
    }
    fn try_guard(&self, key: &str) -> Option<Option<tokio::sync::OwnedMutexGuard<()>>> {
        delegate!(self, s => Store::try_guard(s, key))
    }
    async fn lock(&self) -> Result<Option<Box<dyn std::any::Any + Send>>> {
        delegate!(self, s => Store::lock(s).await)
    }
    async fn resolve_tag(&self, tag: &str) -> Result<Option<Descriptor>> {
        delegate!(self, s => Store::resolve_tag(s, tag).await)
    }
    async fn read_tag(&self, tag: &str) -> Result<Option<(Descriptor, Vec<u8>)>> {
        delegate!(self, s => Store::read_tag(s, tag).await)
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
    async fn mount_blob(&self, desc: &Descriptor) -> Result<bool> {
        delegate!(self, s => Store::mount_blob(s, desc).await)
    }
    async fn push_blob_bytes(&self, desc: &Descriptor, bytes: &[u8]) -> Result<()> {
        delegate!(self, s => Store::push_blob_bytes(s, desc, bytes).await)
    }
    async fn push_blob_stream<C>(&self, desc: &Descriptor, chunks: C) -> Result<()>
    where
        C: futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Sync + 'static,
    {
        delegate!(self, s => Store::push_blob_stream(s, desc, chunks).await)
    }
    fn knows_blob(&self, desc: &Descriptor) -> bool {
        delegate!(self, s => Store::knows_blob(s, desc))
    }
    fn checks_digests(&self) -> bool {
        delegate!(self, s => Store::checks_digests(s))
    }
    async fn intake(&self, desc: &Descriptor) -> Result<Option<crate::transport::Intake>> {
        delegate!(self, s => Store::intake(s, desc).await)
    }
    async fn settle(
        &self,
        desc: &Descriptor,
        intake: crate::transport::Intake,
    ) -> Result<Option<crate::transport::Intake>> {
        delegate!(self, s => Store::settle(s, desc, intake).await)
    }
    async fn push_stream_into<C>(
        &self,
        desc: &Descriptor,
        intake: crate::transport::Intake,
        chunks: C,
    ) -> Result<()>
    where
        C: futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Sync + 'static,
    {
        delegate!(self, s => Store::push_stream_into(s, desc, intake, chunks).await)
    }
    async fn push_manifest(
        &self,
        desc: &Descriptor,
        bytes: &[u8],
        tag: Option<&str>,
    ) -> Result<()> {
        delegate!(self, s => Store::push_manifest(s, desc, bytes, tag).await)
    }
    async fn prepare_signature(
        &self,
        key: &archgate_sign::SigningKey,
        digest: &str,
    ) -> Result<Option<crate::signatures::Prepared>> {
        delegate!(self, s => Store::prepare_signature(s, key, digest).await)
    }
    async fn prepare_signature_ahead(
        &self,
        key: &archgate_sign::SigningKey,
        digest: &str,
    ) -> Result<()> {
        delegate!(self, s => Store::prepare_signature_ahead(s, key, digest).await)
    }
    async fn finish_signature(&self, prepared: crate::signatures::Prepared) -> Result<()> {
        delegate!(self, s => Store::finish_signature(s, prepared).await)
    }
    fn sign_soon(&self) {
        delegate!(self, s => Store::sign_soon(s))
    }
}
