//! Stage 5: publish. Each image as soon as it is decided, while other
//! images' artifacts are still read; images several at a time. Per image,
//! its targets on the registries its blobs went to while they were read
//! all at once (they find every blob there); of the others, the first
//! alone (the image's blobs and manifests go up once), then the rest at
//! once, which find them or mount them. Within a target the order of
//! docs/gate.md holds (blobs, manifests and arch tags, the index last),
//! written by the native engine or by the tools.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use archgate_core::{Arch, Decision, ErrorKind, Repository};
use archgate_native::{publish, AnyStore, ResolvedArtifact, Target as StoreTarget};
use futures_util::StreamExt;

use crate::spec::{RegistrySpec, RunSpec};
use crate::stores::{store_tag, RunStores};
use crate::targets::Target;

/// The tools of the run's engine (none for the native one), with their
/// storage in `dir`; why not, when a tool cannot be set up.
pub(crate) fn tools_for(
    spec: &RunSpec,
    dir: &Path,
) -> Result<Option<archgate_tools::Tools>, String> {
    match spec.engine.tool() {
        None => Ok(None),
        Some(tool) => archgate_tools::Tools::new_in(tool, dir)
            .map(Some)
            .map_err(|e| e.0),
    }
}

/// One image, decided: its number, its targets, and what its artifacts
/// gave.
pub(crate) type Decided = (usize, Vec<Target>, Arc<BTreeMap<Arch, ResolvedArtifact>>);

/// Publishes every image that comes on `decided`, as soon as it comes
/// (while other images' artifacts are still read), several at once; with
/// the tools that `tools` could not set up, every planned target fails
/// with the reason. Returns the targets in report order once `decided`
/// is closed and every image published.
pub(crate) async fn publish_as_decided(
    spec: &RunSpec,
    stores: &RunStores,
    tools: &Result<Option<archgate_tools::Tools>, String>,
    mut decided: tokio::sync::mpsc::UnboundedReceiver<Decided>,
    total: usize,
) -> Vec<Target> {
    let total = total as u64;
    let done = AtomicU64::new(0);
    archgate_native::progress::targets(0, total);
    let done = &done;
    let mut running = futures_util::stream::FuturesUnordered::new();
    let mut out: Vec<Target> = Vec::new();
    let mut open = true;
    loop {
        tokio::select! {
            image = decided.recv(), if open && running.len() < IMAGES_AT_ONCE => match image {
                Some((_, mut targets, artifacts)) => match tools {
                    Ok(tools) => running.push(publish_image(
                        spec,
                        stores,
                        tools.as_ref(),
                        artifacts,
                        targets,
                        (done, total),
                    )),
                    Err(why) => {
                        fail_planned(&mut targets, why);
                        out.extend(targets);
                    }
                },
                None => open = false,
            },
            Some(targets) = running.next(), if !running.is_empty() => out.extend(targets),
            else => break,
        }
    }
    out.sort_by_key(|t| t.seq);
    out
}

/// Images published at once.
const IMAGES_AT_ONCE: usize = 8;

/// Every planned target fails: the engine's tools could not be set up.
fn fail_planned(targets: &mut [Target], why: &str) {
    for t in targets.iter_mut().filter(|t| t.plan.is_some()) {
        t.fail(
            format!("publishing {} failed: {why}", t.reference),
            ErrorKind::Config,
        );
    }
}

/// Publishes one image. Its targets on the registries its blobs went to
/// while they were read (see `crate::artifacts`) all at once: they find
/// every blob there. Of the others, the first alone (the image's blobs go
/// up once to that registry or layout), then the rest at once (they find
/// what the first pushed, or mount it).
async fn publish_image(
    spec: &RunSpec,
    stores: &RunStores,
    tools: Option<&archgate_tools::Tools>,
    artifacts: Arc<BTreeMap<Arch, ResolvedArtifact>>,
    targets: Vec<Target>,
    done: (&AtomicU64, u64),
) -> Vec<Target> {
    let artifacts = &*artifacts;
    let early = match (tools, targets.first()) {
        (None, Some(t)) => streamed_to(spec, stores, artifacts, t.image),
        _ => Vec::new(),
    };
    let (ready, rest): (Vec<Target>, Vec<Target>) = targets.into_iter().partition(|t| {
        let repo = &spec.images[t.image].repositories[t.repo].repository;
        matches!(repo, Repository::Registry { host, .. } if early.contains(&host.as_str()))
    });
    let publish = |t| publish_counted(spec, stores, tools, artifacts, t, done);
    let ready = futures_util::future::join_all(ready.into_iter().map(publish));
    let rest = async {
        let mut rest = rest.into_iter();
        let Some(first) = rest.next() else {
            return Vec::new();
        };
        let mut out = vec![publish(first).await];
        out.extend(futures_util::future::join_all(rest.map(publish)).await);
        out
    };
    let (mut out, rest) = tokio::join!(ready, rest);
    out.extend(rest);
    out
}

/// The registries whose repositories of image `image` got every blob of
/// its artifacts while they were read (streamed into the first there,
/// mounted into the others): none when the read sent nothing (layouts,
/// what the cache answered, a stale image, an upload that failed).
fn streamed_to<'a>(
    spec: &'a RunSpec,
    stores: &RunStores,
    artifacts: &BTreeMap<Arch, ResolvedArtifact>,
    image: usize,
) -> Vec<&'a str> {
    let image = &spec.images[image];
    let got_all = |host: &&str| {
        let Some(first) = crate::artifacts::repos_on(image, host).next() else {
            return false;
        };
        let store = stores.store(first);
        let known = |art: &ResolvedArtifact| archgate_native::knows_all_blobs(&store, art);
        !artifacts.is_empty() && artifacts.values().all(known)
    };
    let mut hosts = crate::artifacts::early_push_hosts(image);
    hosts.retain(got_all);
    hosts
}

/// Publishes one target and counts it done for the progress display.
async fn publish_counted(
    spec: &RunSpec,
    stores: &RunStores,
    tools: Option<&archgate_tools::Tools>,
    artifacts: &BTreeMap<Arch, ResolvedArtifact>,
    mut target: Target,
    (done, total): (&AtomicU64, u64),
) -> Target {
    publish_target(spec, stores, tools, &mut target, artifacts).await;
    // Read back (or failed): another writer may have the target now.
    drop(target.hold.take());
    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
    archgate_native::progress::targets(n, total);
    target
}

async fn publish_target(
    spec: &RunSpec,
    stores: &RunStores,
    tools: Option<&archgate_tools::Tools>,
    target: &mut Target,
    artifacts: &BTreeMap<Arch, ResolvedArtifact>,
) {
    let Some(plan) = &target.plan else { return };
    if !target.errors.is_empty() || plan.hard_refusal {
        return;
    }
    let repo = &spec.images[target.image].repositories[target.repo];
    let store = stores.store(repo);
    // Held since its current index was read (`current::hold_all`); taken
    // here only by a caller that planned a dry run and publishes it anyway.
    let _one_at_a_time = match target.hold {
        Some(_) => None,
        None => Some(stores.target_lock(&store_tag(&store, &target.tag)).await),
    };
    let image = &spec.images[target.image];
    let sign = match &repo.repository {
        Repository::Registry { .. } if image.sign => spec.sign.signing_key().map(|k| &**k),
        _ => None,
    };
    let t = StoreTarget {
        store: &store,
        tag: &target.tag,
        planned_from: target.current.as_ref().map(|c| c.digest.as_str()),
        sign,
    };
    let result = match (tools, &store, &repo.repository) {
        (Some(tools), AnyStore::Registry(registry_repo), Repository::Registry { host, path }) => {
            let place = ToolPlace {
                host,
                path,
                repo: registry_repo,
                access: stores.specs.get(host),
            };
            with_tools(tools, &place, target, artifacts, sign).await
        }
        _ => publish(&t, plan, artifacts, &target.arch_tags).await,
    };
    match result {
        Ok(done) => {
            if plan.decision == Decision::Published {
                target.digest = done.digest;
            }
            target.signed = done.signed;
        }
        Err(e) => {
            tracing::warn!(target = %target.reference, "publishing failed: {e:#}");
            let kind = archgate_native::error_kind(&e).unwrap_or(ErrorKind::Internal);
            target.fail(
                format!("publishing {} failed: {e:#}", target.reference),
                kind,
            );
        }
    }
}

/// Where the tools write one target, and how they reach it.
struct ToolPlace<'a> {
    host: &'a str,
    path: &'a str,
    repo: &'a archgate_native::RegistryRepo,
    access: Option<&'a RegistrySpec>,
}

/// Publishes a registry target with the tools, giving them its settings
/// and credentials (an auth file written for the run when they came from
/// environment variables).
async fn with_tools(
    tools: &archgate_tools::Tools,
    place: &ToolPlace<'_>,
    target: &Target,
    artifacts: &BTreeMap<Arch, ResolvedArtifact>,
    sign: Option<&archgate_sign::SigningKey>,
) -> anyhow::Result<archgate_native::Published> {
    let Some(plan) = &target.plan else {
        return Ok(Default::default());
    };
    let access = place.access;
    let auth_file = match access {
        Some(RegistrySpec {
            env_credentials: true,
            credentials: Some(archgate_native::Credentials::Basic { username, password }),
            ..
        }) => Some(tools.auth_file(place.host, username, password.expose())?),
        _ => access.and_then(|a| a.auth_file.clone()),
    };
    let tt = archgate_tools::ToolTarget {
        repo: place.repo,
        host: place.host,
        path: place.path,
        tag: &target.tag,
        planned_from: target.current.as_ref().map(|c| c.digest.as_str()),
        tls_verify: access.is_none_or(|a| a.tls_verify),
        auth_file: auth_file.as_deref(),
        cert_dir: access.and_then(|a| a.cert_dir.as_deref()),
        sign,
    };
    archgate_tools::publish(tools, &tt, plan, artifacts, &target.arch_tags).await
}
