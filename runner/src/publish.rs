//! Stage 5: publish. Per image, its targets on the registries its blobs
//! went to while they were read all at once (they find every blob there);
//! of the others, the first alone (the image's blobs and manifests go up
//! once), then the rest at once, which find them or mount them; images
//! several at a time. Within a target the order of docs/gate.md holds
//! (blobs, manifests and arch tags, the index last), written by the native
//! engine or by the tools.

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

/// The tools of the run's engine, with their storage in `dir`; for a tool
/// that cannot be set up, every planned target fails with the reason.
pub(crate) fn tools_for(
    spec: &RunSpec,
    dir: &Path,
    targets: &mut [Target],
) -> Option<archgate_tools::Tools> {
    match archgate_tools::Tools::new_in(spec.engine.tool()?, dir) {
        Ok(t) => Some(t),
        Err(e) => {
            for t in targets.iter_mut().filter(|t| t.plan.is_some()) {
                t.fail(
                    format!("publishing {} failed: {}", t.reference, e.0),
                    ErrorKind::Config,
                );
            }
            None
        }
    }
}

/// Publishes every target: per image in order, images at once. Returns
/// the targets in report order.
pub(crate) async fn publish_all(
    spec: &RunSpec,
    stores: &RunStores,
    tools: Option<&archgate_tools::Tools>,
    artifacts: &[Arc<BTreeMap<Arch, ResolvedArtifact>>],
    targets: Vec<Target>,
) -> Vec<Target> {
    let total = targets.len() as u64;
    // Per image, its targets in order (the first repository's first).
    let mut groups: BTreeMap<usize, Vec<Target>> = BTreeMap::new();
    for t in targets {
        groups.entry(t.image).or_default().push(t);
    }
    let done = AtomicU64::new(0);
    archgate_native::progress::targets(0, total);
    let done = &done;
    let jobs: Vec<_> = groups
        .into_values()
        .map(|image_targets| {
            publish_image(spec, stores, tools, artifacts, image_targets, done, total)
        })
        .collect();
    let published: Vec<Vec<Target>> = futures_util::stream::iter(jobs)
        .buffer_unordered(8)
        .collect()
        .await;
    let mut targets: Vec<Target> = published.into_iter().flatten().collect();
    targets.sort_by_key(|t| t.seq);
    targets
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
    artifacts: &[Arc<BTreeMap<Arch, ResolvedArtifact>>],
    targets: Vec<Target>,
    done: &AtomicU64,
    total: u64,
) -> Vec<Target> {
    let early = match (tools, targets.first()) {
        (None, Some(t)) => streamed_to(spec, stores, &artifacts[t.image], t.image),
        _ => Vec::new(),
    };
    let (ready, rest): (Vec<Target>, Vec<Target>) = targets.into_iter().partition(|t| {
        let repo = &spec.images[t.image].repositories[t.repo].repository;
        matches!(repo, Repository::Registry { host, .. } if early.contains(&host.as_str()))
    });
    let publish = |t| publish_counted(spec, stores, tools, artifacts, t, done, total);
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
    artifacts: &[Arc<BTreeMap<Arch, ResolvedArtifact>>],
    mut target: Target,
    done: &AtomicU64,
    total: u64,
) -> Target {
    let image = target.image;
    publish_target(spec, stores, tools, &mut target, &artifacts[image]).await;
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
        Repository::Registry { .. } if image.sign => spec.sign.key.as_deref(),
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
