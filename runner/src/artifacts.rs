//! Stage 2: read the artifacts (while stage 1 reads the current indexes).
//! Every built artifact is read once, several at a time, however many
//! images use it (hard links, one URL); with the native engine an
//! archive's blobs go, in the same pass, to the first repository on each
//! registry of each of those images (once the image is known not to be
//! stale), are mounted into their other repositories there, and its
//! manifest's signatures are prepared.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use archgate_core::{Arch, ArchInput, ComposeResults, ErrorKind, Outcome, Repository};
use archgate_native::{
    resolve_and_push_then, AnyStore, Destination, ReadEnv, ReadFailure, Reading, ResolvedArtifact,
    Store,
};
use futures_util::StreamExt;

use crate::spec::{Engine, ImageSpec, RunSpec};
use crate::stores::RunStores;
use crate::AbortOnDrop;

/// What reading an image's artifacts gave.
#[derive(Default)]
pub(crate) struct ImageInputs {
    /// One gate input per arch result.
    pub(crate) inputs: Vec<(Arch, ArchInput)>,
    pub(crate) resolved: BTreeMap<Arch, ResolvedArtifact>,
    /// Faults while reading that are not the artifact's (archgate's own,
    /// or a server's trouble now): every target of the image is an error
    /// of that kind, never a `failed` arch.
    pub(crate) errors: Vec<(archgate_core::ErrorKind, String)>,
    /// Sentences for the report: built arches whose file the compose gave no
    /// checksum for.
    pub(crate) notes: Vec<(Arch, String)>,
}

/// One read of an artifact: the results (image number, result number)
/// it stands for. Images built from one file (hard links, one URL) share
/// a read.
pub(crate) struct Read {
    arch: Arch,
    artifact: archgate_core::Artifact,
    members: Vec<(usize, usize)>,
}

/// Every built artifact of every image, one [`Read`] per file: results of
/// the same arch whose artifacts are one file (the same device and inode,
/// or the same URL) and that the compose vouches for alike (checksum,
/// size) are read once. Images already in a registry are read apart (a
/// read there costs no transfer).
pub(crate) fn reads(spec: &RunSpec, results: &ComposeResults) -> Vec<Read> {
    let mut reads: Vec<Read> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, image) in spec.images.iter().enumerate() {
        let list = results.images.get(&image.name).into_iter().flatten();
        for (k, r) in list.enumerate() {
            let Outcome::Built(artifact) = &r.outcome else {
                continue;
            };
            let key = same_file(r.arch, artifact);
            if let Some(&at) = key.as_ref().and_then(|key| seen.get(key)) {
                reads[at].members.push((i, k));
                continue;
            }
            if let Some(key) = key {
                seen.insert(key, reads.len());
            }
            reads.push(Read {
                arch: r.arch,
                artifact: artifact.clone(),
                members: vec![(i, k)],
            });
        }
    }
    reads
}

/// What makes two results one read: the arch, the file (device and inode,
/// or the URL), and what the compose says of it. None for what is not
/// shared (an image in a registry, a file that cannot be looked at: its
/// read says why).
fn same_file(arch: Arch, artifact: &archgate_core::Artifact) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let file = match &artifact.location {
        archgate_core::Location::Path(p) => {
            let meta = std::fs::metadata(p).ok()?;
            format!("file {}:{}", meta.dev(), meta.ino())
        }
        archgate_core::Location::Url(url) => format!("url {url}"),
        archgate_core::Location::Image(_) => return None,
    };
    let checksum = artifact.checksum.as_ref().map(ToString::to_string);
    Some(format!(
        "{arch} {file} {} {:?}",
        checksum.unwrap_or_default(),
        artifact.size
    ))
}

/// Reads every artifact of `reads` once, as many at a time as there are
/// cores. One that cannot be used turns its arch into `failed` (in every
/// image it stands for) with the reason; archgate's own failure while
/// reading is kept apart. With the native engine, archive blobs go to the
/// first repository on each registry of every image the read stands for
/// in the same pass, once that image's `go` says it may be written (no
/// target of it holds a newer compose): the reads start while the current
/// indexes are still being read. Each image is handed to `ready` (with
/// its number) as soon as all of its own artifacts are read.
pub(crate) async fn read_all(
    spec: &RunSpec,
    results: &ComposeResults,
    reads: &[Read],
    stores: &RunStores,
    (env, go): (&ReadEnv, &[archgate_native::Go]),
    mut ready: impl FnMut(usize, ImageInputs) + Send,
) {
    let readers = readers();
    // Four times the readers may be alive, reading or sending what they
    // read (or waiting for another image's upload of the same blobs).
    let alive = 4 * readers;
    let reading = Reading::new(readers, alive);
    let early = early_all(spec, results, stores, go);
    let jobs: Vec<_> = reads
        .iter()
        .map(|read| {
            let in_registry = match &read.artifact.location {
                archgate_core::Location::Image(image) => {
                    Some((image.clone(), stores.registry(&image.host)))
                }
                _ => None,
            };
            let members = read
                .members
                .iter()
                .map(|&(i, k)| ((i, k), early[i].clone()))
                .collect();
            read_one(
                read.arch,
                read.artifact.clone(),
                members,
                in_registry,
                env.clone(),
                reading.clone(),
            )
        })
        .collect();
    // Per image, the reads it still waits for.
    let mut left = vec![0usize; spec.images.len()];
    for &(i, _) in reads.iter().flat_map(|r| &r.members) {
        left[i] += 1;
    }
    let mut read: HashMap<(usize, usize), Result<ResolvedArtifact, ReadFailure>> = HashMap::new();
    let mut done = |i: usize, read: &mut HashMap<_, _>| {
        let image = &spec.images[i];
        let list = results.images.get(&image.name).map(Vec::as_slice);
        ready(
            i,
            image_inputs(i, &image.name, list.unwrap_or_default(), read),
        );
    };
    for i in (0..left.len()).filter(|&i| left[i] == 0) {
        done(i, &mut read);
    }
    let mut answers = futures_util::stream::iter(jobs).buffer_unordered(alive);
    // Signatures still being made ready: an image is handed on without
    // waiting for them (publishing waits for each one's turn).
    let mut signing = futures_util::stream::FuturesUnordered::new();
    loop {
        tokio::select! {
            Some((answer, sign)) = answers.next() => {
                signing.extend(sign);
                for ((i, k), got) in answer {
                    read.insert((i, k), got);
                    left[i] -= 1;
                    if left[i] == 0 {
                        done(i, &mut read);
                    }
                }
            }
            Some(_) = signing.next(), if !signing.is_empty() => {}
            else => break,
        }
    }
}

/// Per image, where its blobs go while its artifacts are read (none when
/// nothing goes, see [`streams_to`]), each destination with the image's
/// `go`.
fn early_all(
    spec: &RunSpec,
    results: &ComposeResults,
    stores: &RunStores,
    go: &[archgate_native::Go],
) -> Vec<Option<Early>> {
    let early = |(i, image): (usize, &ImageSpec)| {
        let go = go.get(i).cloned().flatten();
        let dests: Vec<_> = early_push_stores(spec, stores, results, image)
            .into_iter()
            .map(|(store, also)| Destination {
                store,
                also,
                go: go.clone(),
            })
            .collect();
        let layouts = match may_stream(spec, results, image) {
            true => layout_stores(stores, image),
            false => Vec::new(),
        };
        (!dests.is_empty() || !layouts.is_empty()).then(|| Early {
            dests,
            layouts,
            sign: (spec.sign.signs() && image.sign).then(|| spec.sign.clone()),
            go,
        })
    };
    spec.images.iter().enumerate().map(early).collect()
}

/// How many artifacts are read at once: twice the cores (a read waits on
/// the disk too).
fn readers() -> usize {
    2 * std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The blob uploads that reading will start at once on each registry: one
/// per archive read at a time whose blobs go there while it is read (none
/// for what the cache holds: it is not read again).
pub(crate) fn uploads_at_once<'a>(
    spec: &'a RunSpec,
    results: &ComposeResults,
    reads: &[Read],
    env: &ReadEnv,
) -> HashMap<&'a str, usize> {
    let mut uploads: HashMap<&str, usize> = HashMap::new();
    for read in reads {
        let a = &read.artifact;
        if !archgate_native::is_archive(a)
            || env
                .cache
                .as_deref()
                .is_some_and(|dir| archgate_native::cache_holds(dir, a))
        {
            continue;
        }
        let mut hosts: Vec<&str> = Vec::new();
        for &(i, _) in &read.members {
            for host in streams_to(spec, results, &spec.images[i]) {
                if !hosts.contains(&host) {
                    hosts.push(host);
                }
            }
        }
        for host in hosts {
            *uploads.entry(host).or_default() += 1;
        }
    }
    let readers = readers();
    uploads.values_mut().for_each(|n| *n = (*n).min(readers));
    uploads
}

/// What reading gave for image number `i`: one gate input per result, the
/// resolved artifacts, archgate's own faults apart, and the notes.
fn image_inputs(
    i: usize,
    name: &str,
    list: &[archgate_core::ArchResult],
    read: &mut HashMap<(usize, usize), Result<ResolvedArtifact, ReadFailure>>,
) -> ImageInputs {
    let mut inputs = ImageInputs::default();
    for (k, result) in list.iter().enumerate() {
        let arch = result.arch;
        let input = match (&result.outcome, read.remove(&(i, k))) {
            (Outcome::Failed { reason }, _) => ArchInput::Failed(reason.clone()),
            (Outcome::Built(artifact), Some(Ok(art))) => {
                tracing::info!(image = %name, %arch, digest = %art.entry.digest, "artifact read");
                if let Some(why) = &artifact.unverified {
                    inputs.notes.push((arch, format!("{arch}: {why}; the file was not checked against a checksum (its blobs were checked against their digests)")));
                }
                let entry = art.entry.clone();
                inputs.resolved.insert(arch, art);
                ArchInput::Built(entry)
            }
            (Outcome::Built(_), Some(Err(ReadFailure::Unusable(reason)))) => {
                tracing::warn!(image = %name, %arch, "artifact unusable: {reason}");
                ArchInput::Failed(reason)
            }
            (Outcome::Built(_), Some(Err(ReadFailure::Internal(e)))) => {
                tracing::warn!(image = %name, %arch, "{e}");
                inputs
                    .errors
                    .push((ErrorKind::Internal, format!("{arch}: {e}")));
                continue;
            }
            (Outcome::Built(_), Some(Err(ReadFailure::Later(kind, e)))) => {
                tracing::warn!(image = %name, %arch, "{e}");
                inputs.errors.push((kind, format!("{arch}: {e}")));
                continue;
            }
            (Outcome::Built(_), None) => {
                let why = format!("{arch}: internal error: the artifact was not read");
                inputs.errors.push((ErrorKind::Internal, why));
                continue;
            }
        };
        inputs.inputs.push((arch, input));
    }
    inputs
}

/// Where an image's blobs go while its artifacts are read, and the key
/// its manifests will be signed with.
#[derive(Clone)]
struct Early {
    /// Per registry: the image's first repository there (blobs streamed)
    /// and its other repositories there (blobs mounted).
    dests: Vec<Destination<AnyStore>>,
    /// The image's layouts: an archive fetched over HTTP goes there in
    /// the same pass too (nothing of it is kept to be read again).
    layouts: Vec<AnyStore>,
    /// How the image's manifests are signed (the key may still be being
    /// decrypted: it is there once `go` says yes).
    sign: Option<crate::spec::SignSpec>,
    /// Whether the image may be written, once known.
    go: archgate_native::Go,
}

/// What one read gave each result it stands for, and the tasks still
/// making its manifests' signatures ready (their turns already held).
type ReadOne = (
    Vec<((usize, usize), Result<ResolvedArtifact, ReadFailure>)>,
    Vec<AbortOnDrop<()>>,
);

/// Reads one artifact for every result it stands for (`members`, with
/// where each one's image wants its blobs): pushes its blobs on the way to
/// every image's stores, mounts them into their other repositories, and
/// starts getting the signatures of its manifest ready there. Each member
/// gets the same answer, without waiting for the signatures.
async fn read_one(
    arch: Arch,
    artifact: archgate_core::Artifact,
    members: Vec<((usize, usize), Option<Early>)>,
    in_registry: Option<(
        archgate_core::ImageRef,
        Option<Arc<archgate_native::Registry>>,
    )>,
    env: ReadEnv,
    reading: Reading,
) -> ReadOne {
    let (got, signing) = match in_registry {
        // An image already in a registry: read there; its blobs stay there
        // until publishing mounts (or streams) them.
        Some((image, registry)) => match registry {
            Some(registry) => (
                archgate_native::resolve_image(registry, arch, &image).await,
                Vec::new(),
            ),
            None => (
                Err(ReadFailure::Internal(format!(
                    "{image}: internal error: no client for the registry {}",
                    image.host
                ))),
                Vec::new(),
            ),
        },
        None => read_and_push(arch, artifact, &members, env, reading).await,
    };
    let answers = members
        .into_iter()
        .map(|(key, _)| (key, got.clone()))
        .collect();
    (answers, signing)
}

/// Reads an artifact from the compose, sending its blobs to where the
/// images of `members` want them (see [`read_one`]).
async fn read_and_push(
    arch: Arch,
    artifact: archgate_core::Artifact,
    members: &[((usize, usize), Option<Early>)],
    env: ReadEnv,
    reading: Reading,
) -> (Result<ResolvedArtifact, ReadFailure>, Vec<AbortOnDrop<()>>) {
    let early: Vec<&Early> = members.iter().filter_map(|(_, e)| e.as_ref()).collect();
    if early.is_empty() {
        return (
            archgate_native::read_only(&reading, arch, artifact, env).await,
            Vec::new(),
        );
    }
    let mut dests = Vec::new();
    for e in &early {
        dests.extend(e.dests.iter().cloned());
        if matches!(artifact.location, archgate_core::Location::Url(_))
            && archgate_native::may_send(&e.go).await
        {
            for layout in &e.layouts {
                match layout.prepare().await {
                    Ok(()) => dests.push(Destination {
                        go: e.go.clone(),
                        ..Destination::to(layout.clone())
                    }),
                    Err(e) => {
                        tracing::debug!(store = %layout.name(), "not written while reading (publishing meets it): {e:#}")
                    }
                }
            }
        }
    }
    // As soon as the pass meets an image manifest (its digest known; the
    // arch manifest at the latest once the archive is read), that
    // manifest's signatures are made ready in each image's registry
    // repositories, while the pass goes on. Not for what the cache
    // answered for: a re-run asks nothing it need not.
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let got = resolve_and_push_then(&dests, &reading, (arch, artifact), env, move |digest| {
        let _ = seen_tx.send(digest.to_string());
    });
    let signing = async {
        let mut signing = Vec::new();
        let mut met: Vec<String> = Vec::new();
        while let Some(digest) = seen_rx.recv().await {
            if met.contains(&digest) {
                continue;
            }
            for e in &early {
                let Some(sign) = &e.sign else { continue };
                let dests: Vec<&Destination<AnyStore>> = e.dests.iter().collect();
                if !dests.is_empty() && archgate_native::may_send(&e.go).await {
                    if let Some(key) = sign.signing_key() {
                        signing.push(sign_ahead(&dests, key, &digest).await);
                    }
                }
            }
            met.push(digest);
        }
        signing
    };
    tokio::join!(got, signing)
}

/// Gets the signatures of a manifest ready in every repository its blobs
/// go to, while its artifact (and others) are read: publishing then only
/// puts them in place. Returns once each repository's signing turn for
/// the digest is held, the work going on in a task of its own: the image
/// need not wait for it to be decided and published, since publishing
/// takes the same turn, and then the signature made ready. A failure is
/// left for publishing to meet.
async fn sign_ahead(
    dests: &[&Destination<AnyStore>],
    key: &Arc<archgate_sign::SigningKey>,
    digest: &str,
) -> AbortOnDrop<()> {
    // (Collected: an iterator of closures held across an await would keep
    // the run's future from being `Send`.)
    let mut stores: Vec<&AnyStore> = Vec::new();
    for d in dests {
        stores.push(&d.store);
        stores.extend(&d.also);
    }
    let mut work = Vec::new();
    for store in stores {
        // The image's index will be signed there too, once known.
        store.sign_soon();
        let turn = store.guard(&archgate_native::signing_turn(digest)).await;
        let (store, key, digest) = (store.clone(), key.clone(), digest.to_string());
        work.push(async move {
            let _turn = turn;
            if let Err(e) = store.prepare_signature_ahead(&key, &digest).await {
                tracing::debug!(store = %store.name(), %digest, "signature not prepared ahead (done when publishing): {e:#}");
            }
        });
    }
    AbortOnDrop(tokio::spawn(async move {
        futures_util::future::join_all(work).await;
    }))
}

/// Where an image's archive blobs go while they are read: per registry,
/// its first repository there, and (by mounts) its other repositories
/// there; none when nothing goes while reading ([`streams_to`]).
fn early_push_stores(
    spec: &RunSpec,
    stores: &RunStores,
    results: &ComposeResults,
    image: &ImageSpec,
) -> Vec<(AnyStore, Vec<AnyStore>)> {
    let hosts = streams_to(spec, results, image);
    hosts
        .into_iter()
        .filter_map(|host| {
            let mut repos = repos_on(image, host);
            let first = repos.next()?;
            Some((
                stores.store(first),
                repos.map(|r| stores.store(r)).collect(),
            ))
        })
        .collect()
}

/// The image's repositories on the registry `host`, in order.
pub(crate) fn repos_on<'a>(
    image: &'a ImageSpec,
    host: &'a str,
) -> impl Iterator<Item = &'a crate::spec::RepoSpec> {
    image
        .repositories
        .iter()
        .filter(move |r| registry_host(r) == Some(host))
}

/// The image's layout repositories (`oci:`).
fn layout_stores(stores: &RunStores, image: &ImageSpec) -> Vec<AnyStore> {
    let layouts = image
        .repositories
        .iter()
        .filter(|r| registry_host(r).is_none());
    layouts.map(|r| stores.store(r)).collect()
}

/// The registries an image's archive blobs go to while they are read:
/// none with another engine than the native one, in a dry run, or when
/// nothing may be pushed for the image (a hard refusal that the source's
/// results already show).
fn streams_to<'a>(spec: &RunSpec, results: &ComposeResults, image: &'a ImageSpec) -> Vec<&'a str> {
    match may_stream(spec, results, image) {
        true => early_push_hosts(image),
        false => Vec::new(),
    }
}

/// Whether anything of an image may go out while it is read: the native
/// engine, not a dry run, and no hard refusal that the source's results
/// already show.
fn may_stream(spec: &RunSpec, results: &ComposeResults, image: &ImageSpec) -> bool {
    spec.engine == Engine::Native
        && !spec.dry_run
        && crate::compose::may_write(spec, results, image)
}

/// The registries an image's archive blobs go to while they are read (the
/// native engine only): those of its registry repositories, in order, each
/// once. Registries only: a layout is written only once publishing checks
/// it.
pub(crate) fn early_push_hosts(image: &ImageSpec) -> Vec<&str> {
    let mut hosts: Vec<&str> = Vec::new();
    for host in image.repositories.iter().filter_map(registry_host) {
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    hosts
}

pub(crate) fn registry_host(r: &crate::spec::RepoSpec) -> Option<&str> {
    match &r.repository {
        Repository::Registry { host, .. } => Some(host),
        _ => None,
    }
}
