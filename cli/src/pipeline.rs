//! One run: source → artifacts → current indexes → gate → engine → report.
//!
//! Every target is planned before anything is written, so bad input found
//! anywhere stops the run with nothing written. Then each target is
//! published on its own: one failing does not stop the others.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use archgate_core::template::Vars;
use archgate_core::{
    decide, Arch, ArchInput, ArchReport, ComposeResults, ComposeSummary, CurrentIndex, Decision,
    GateInput, GateSettings, ImageQuery, Outcome, Policy, Report, Repository, Source, TargetPlan,
    TargetReport,
};
use archgate_native::oci::{render_index, sha256_digest};
use archgate_native::registry::{Registry, RegistryRepo, RegistrySettings};
use archgate_native::{
    publish, read_current, resolve_and_push, resolve_cached, AnyStore, OciLayout, ReadFailure,
    ResolvedArtifact, Target as StoreTarget,
};
use archgate_source_dir::DirSource;
use archgate_source_koji::KojiSource;
use archgate_source_plugin::PluginSource;
use archgate_source_pungi::{HttpCompose, PungiSource};
use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{EngineKind, ImageConfig, Loaded, SourceKind};

/// What the command line adds to the configuration.
#[derive(Debug, Default)]
pub struct Options {
    pub compose: Option<String>,
    pub policy: Option<Policy>,
    pub dry_run: bool,
    /// Where what archives hold is remembered between runs.
    pub cache: Option<PathBuf>,
}

/// Why a run stopped before it could report.
#[derive(Debug)]
pub enum RunError {
    /// Bad configuration or usage: exit 2.
    Config(String),
    /// Input that cannot be read at all: exit 1.
    Input(String),
}

impl RunError {
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Config(_) => 2,
            RunError::Input(_) => 1,
        }
    }
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Config(m) | RunError::Input(m) => f.write_str(m),
        }
    }
}

/// Where targets live, and the runtime that talks to them.
pub struct Stores {
    rt: tokio::runtime::Runtime,
    registries: HashMap<String, Arc<Registry>>,
    /// Per registry host: what the tools engines are handed too.
    access: HashMap<String, Access>,
}

/// How a registry is reached, beyond what its client holds: for the
/// skopeo and buildah engines.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The cert dir in force (configured or default), if any.
    pub cert_dir: Option<PathBuf>,
    /// Credentials from `username-env` / `password-env`.
    pub env_credentials: Option<archgate_native::auth::Credentials>,
}

impl Stores {
    /// A client for every registry host the configuration names (and `extra`).
    pub fn new(loaded: Option<&Loaded>, extra: &[&Repository]) -> Result<Stores, RunError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| RunError::Input(format!("cannot start the async runtime: {e}")))?;
        let mut registries = HashMap::new();
        let mut access = HashMap::new();
        let configured = loaded
            .map(|l| l.config.image.iter().flat_map(|i| i.repositories.iter()))
            .into_iter()
            .flatten();
        for repository in configured.chain(extra.iter().copied()) {
            if let Repository::Registry { host, .. } = repository {
                if !registries.contains_key(host) {
                    let (settings, how) = registry_settings(loaded, host)?;
                    let registry = Registry::new(host, settings)
                        .map_err(|e| RunError::Input(format!("{e:#}")))?;
                    registries.insert(host.clone(), Arc::new(registry));
                    access.insert(host.clone(), how);
                }
            }
        }
        Ok(Stores {
            rt,
            registries,
            access,
        })
    }

    /// How `host` is reached (cert dir, environment credentials).
    pub fn access(&self, host: &str) -> Access {
        self.access.get(host).cloned().unwrap_or_default()
    }

    pub fn store(&self, loaded: Option<&Loaded>, repository: &Repository) -> AnyStore {
        match repository {
            Repository::Layout { dir } => AnyStore::Layout(OciLayout::new(match loaded {
                Some(l) => l.resolve_path(dir),
                None => PathBuf::from(dir),
            })),
            Repository::Registry { host, path } => AnyStore::Registry(RegistryRepo {
                registry: self.registries[host].clone(),
                path: path.clone(),
            }),
        }
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}

/// `[registry."HOST"]` settings, the credentials for HOST (environment
/// variables first, then auth files) and its cert dir.
fn registry_settings(
    loaded: Option<&Loaded>,
    host: &str,
) -> Result<(RegistrySettings, Access), RunError> {
    let configured = loaded.and_then(|l| l.config.registry.get(host));
    let resolve = |f: &str| match loaded {
        Some(l) => l.resolve_path(f),
        None => PathBuf::from(f),
    };
    let config_error = |e: anyhow::Error| {
        let place = loaded
            .map(|l| format!("{}: ", l.path.display()))
            .unwrap_or_default();
        RunError::Config(format!("{place}[registry.\"{host}\"]: {e:#}"))
    };
    let auth_file = configured.and_then(|c| c.auth_file.as_deref()).map(resolve);
    let env_credentials =
        match configured.and_then(|c| c.username_env.as_deref().zip(c.password_env.as_deref())) {
            Some((user, pass)) => {
                Some(archgate_native::auth::from_env(user, pass).map_err(config_error)?)
            }
            None => None,
        };
    let credentials = match &env_credentials {
        Some(c) => Some(c.clone()),
        None => archgate_native::auth::lookup(host, auth_file.as_deref()).map_err(config_error)?,
    };
    let configured_dir = configured.and_then(|c| c.cert_dir.as_deref()).map(resolve);
    let cert_dir =
        archgate_native::tls::cert_dir(host, configured_dir.as_deref()).map_err(config_error)?;
    let tls = match &cert_dir {
        Some(dir) => archgate_native::tls::load(dir).map_err(config_error)?,
        None => Default::default(),
    };
    if let Some(dir) = &cert_dir {
        tracing::debug!(host, dir = %dir.display(), cas = tls.cas.len(), client_certificate = tls.identity.is_some(), "cert dir");
    }
    Ok((
        RegistrySettings {
            tls_verify: configured.is_none_or(|c| c.tls_verify),
            credentials,
            tls,
            retry: Default::default(),
        },
        Access {
            cert_dir,
            env_credentials,
        },
    ))
}

/// One (image, repository, tag), planned.
struct Target<'a> {
    image: &'a ImageConfig,
    repository: &'a Repository,
    /// False when the tag could not be rendered (an unfinished compose):
    /// `tag` is then the template, and nothing is read or written there.
    named: bool,
    tag: String,
    /// The annotations of the index written there.
    annotations: BTreeMap<String, String>,
    reference: String,
    policy: Policy,
    current: Option<CurrentIndex>,
    plan: Option<TargetPlan>,
    arch_tags: Vec<(Arch, String)>,
    decision: Decision,
    digest: Option<String>,
    errors: Vec<String>,
}

pub fn run(loaded: &Loaded, opts: &Options) -> Result<Report, RunError> {
    let config = &loaded.config;
    let file = loaded.path.display();
    let tools = match config.publisher.engine {
        EngineKind::Native => None,
        EngineKind::Buildah => Some(archgate_tools::Tools::new(archgate_tools::Tool::Buildah)),
        EngineKind::Skopeo => Some(archgate_tools::Tools::new(archgate_tools::Tool::Skopeo)),
    }
    .transpose()
    .map_err(|e| RunError::Config(format!("{file}: [publisher] {}", e.0)))?;
    let source = make_source(loaded, opts)?;
    let queries: Vec<ImageQuery> = config
        .image
        .iter()
        .map(|i| ImageQuery {
            name: i.name.get_ref().clone(),
            matcher: i.matcher.clone(),
        })
        .collect();
    let results = source
        .load(&queries)
        .map_err(|e| RunError::Input(e.to_string()))?;
    tracing::info!(compose = %results.compose.id, status = %results.compose.status, "compose read");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);

    let stores = Stores::new(Some(loaded), &[])?;
    // Artifacts fetched over HTTP are kept for this run only.
    struct Spool;
    impl Drop for Spool {
        fn drop(&mut self) {
            archgate_native::artifact::clear_spool();
        }
    }
    let _spool = Spool;

    // Plan every target.
    let mut artifacts: Vec<BTreeMap<Arch, ResolvedArtifact>> = Vec::new();
    let mut targets = Vec::new();
    for (i, image) in config.image.iter().enumerate() {
        // The tools engines push with the tools; only the native engine pushes while reading.
        let push_to = match tools {
            None => early_push_store(
                &stores,
                loaded,
                opts,
                &results,
                image,
                &config.gate.required_arches,
            ),
            Some(_) => None,
        };
        let read = read_artifacts(
            &stores,
            &results,
            image,
            opts.cache.as_deref(),
            push_to.as_ref(),
        );
        let settings = GateSettings {
            policy: opts.policy.or(image.policy).unwrap_or(config.gate.policy),
            required: config.gate.required_arches.clone(),
            retired: config.gate.retired_arches.clone(),
            expected: image.arches.clone().unwrap_or_default(),
            max_carry_age: config.gate.max_carry_age,
        };
        let releases = config.release.releases();
        let tags = image_tags(loaded, image, &results.compose, &releases)?;
        let mut seen = BTreeSet::new();
        for repository in &image.repositories {
            for (tag, named) in &tags {
                let (tag, named) = (tag.clone(), *named);
                let annotations = match named {
                    true => index_annotations(loaded, image, &results.compose, &releases, &tag)?,
                    false => BTreeMap::new(),
                };
                let reference = repository.tagged(&tag);
                if !seen.insert(reference.clone()) {
                    return Err(image_error(
                        loaded,
                        image,
                        format!("{reference} is a target twice"),
                    ));
                }
                let mut target = Target {
                    image,
                    repository,
                    named,
                    tag,
                    annotations,
                    reference,
                    policy: settings.policy,
                    current: None,
                    plan: None,
                    arch_tags: Vec::new(),
                    decision: Decision::Error,
                    digest: None,
                    errors: Vec::new(),
                };
                plan_target(
                    loaded,
                    &stores,
                    &mut target,
                    &results,
                    &read,
                    &settings,
                    now,
                )?;
                targets.push((i, target));
            }
        }
        artifacts.push(read.resolved);
    }

    // Publish.
    let total = targets.len() as u64;
    if !opts.dry_run {
        archgate_native::progress::targets(0, total);
        for (done, (i, target)) in targets.iter_mut().enumerate() {
            publish_target(loaded, &stores, tools.as_ref(), target, &artifacts[*i]);
            archgate_native::progress::targets(done as u64 + 1, total);
        }
    }

    Ok(Report {
        compose: ComposeSummary {
            id: results.compose.id.clone(),
            status: results.compose.status.clone(),
        },
        dry_run: opts.dry_run,
        targets: targets.into_iter().map(|(_, t)| report(t)).collect(),
    })
}

pub fn make_source(loaded: &Loaded, opts: &Options) -> Result<Box<dyn Source>, RunError> {
    let config = &loaded.config;
    let file = loaded.path.display();
    if config.source.kind == SourceKind::Plugin {
        let library = config.source.library.as_deref().ok_or_else(|| {
            RunError::Config(format!("{file}: [source] kind \"plugin\" needs `library`"))
        })?;
        let location = match (&opts.compose, &config.source.location) {
            (Some(cli), _) => Some(cli.clone()),
            (None, Some(loc)) if loc.contains("://") => Some(loc.clone()),
            (None, Some(loc)) => Some(loaded.resolve_path(loc).to_string_lossy().into_owned()),
            (None, None) => None,
        };
        let settings = serde_json::to_value(config.source.settings.clone().unwrap_or_default())
            .map_err(|e| RunError::Config(format!("{file}: [source] settings: {e}")))?;
        let plugin = PluginSource::load(&loaded.resolve_path(library), location, settings)
            .map_err(|e| RunError::Input(e.to_string()))?;
        return Ok(Box::new(plugin));
    }
    if config.source.kind == SourceKind::Koji {
        let missing =
            |key: &str| RunError::Config(format!("{file}: [source] kind \"koji\" needs `{key}`"));
        let hub = config.source.hub.as_deref().ok_or_else(|| missing("hub"))?;
        let topurl = config
            .source
            .topurl
            .as_deref()
            .ok_or_else(|| missing("topurl"))?;
        let task = opts.compose.as_deref().or(config.source.location.as_deref()).ok_or_else(|| {
            RunError::Config(format!("{file}: [source] location (the Koji task id) is not set and --compose was not given"))
        })?;
        let source =
            KojiSource::new(hub, topurl, task).map_err(|e| RunError::Config(e.to_string()))?;
        return Ok(Box::new(source));
    }
    let location = match (&opts.compose, &config.source.location) {
        (Some(cli), _) => PathBuf::from(cli),
        (None, Some(loc)) if loc.contains("://") => PathBuf::from(loc),
        (None, Some(loc)) => loaded.resolve_path(loc),
        (None, None) => {
            return Err(RunError::Config(format!(
                "{file}: [source] location is not set and --compose was not given"
            )))
        }
    };
    match config.source.kind {
        SourceKind::Dir => Ok(Box::new(DirSource::new(location))),
        SourceKind::Pungi => {
            let text = location.to_string_lossy();
            if text.starts_with("http://") || text.starts_with("https://") {
                let http = HttpCompose::new(&text).map_err(|e| RunError::Input(e.to_string()))?;
                Ok(Box::new(PungiSource::new(http)))
            } else {
                Ok(Box::new(PungiSource::local(location)))
            }
        }
        other => Err(RunError::Config(format!(
            "{file}: [source] kind {other:?} is not available in this build yet; use \"dir\""
        ))),
    }
}

/// The tags an image gets from this compose: each rendered template whose
/// `when` holds, and whether it could be rendered at all. An unfinished
/// compose is refused whatever it holds, and may not yet give what a
/// template needs (a running Koji task has no version): such a tag is then
/// the template itself, marked unnamed, and nothing is read or written there.
pub fn image_tags(
    loaded: &Loaded,
    image: &ImageConfig,
    compose: &archgate_core::Compose,
    releases: &archgate_core::Releases,
) -> Result<Vec<(String, bool)>, RunError> {
    let vars = Vars {
        compose,
        releases,
        tag: None,
        arch: None,
    };
    let mut out = Vec::new();
    for rule in &image.tags {
        match rule.render(&vars) {
            Ok(Some(tag)) => out.push((tag, true)),
            Ok(None) => {}
            Err(_) if !compose.status.is_finished() => {
                out.push((rule.template.as_str().to_string(), false))
            }
            Err(e) => return Err(image_error(loaded, image, e)),
        }
    }
    Ok(out)
}

/// The annotations of an image's index under `tag`, rendered.
fn index_annotations(
    loaded: &Loaded,
    image: &ImageConfig,
    compose: &archgate_core::Compose,
    releases: &archgate_core::Releases,
    tag: &str,
) -> Result<BTreeMap<String, String>, RunError> {
    let vars = Vars {
        compose,
        releases,
        tag: Some(tag),
        arch: None,
    };
    image
        .annotations
        .iter()
        .map(|(k, t)| {
            t.render_text(&vars)
                .map(|v| (k.clone(), v))
                .map_err(|e| image_error(loaded, image, format!("annotation `{k}`: {e}")))
        })
        .collect()
}

fn image_error(loaded: &Loaded, image: &ImageConfig, msg: impl std::fmt::Display) -> RunError {
    RunError::Config(
        loaded
            .error_at(
                image.name.span().start,
                format!("image `{}`: {msg}", image.name.get_ref()),
            )
            .0,
    )
}

/// What reading an image's artifacts gave.
struct ImageInputs {
    /// One gate input per arch result.
    inputs: Vec<(Arch, ArchInput)>,
    resolved: BTreeMap<Arch, ResolvedArtifact>,
    /// archgate's own faults while reading: every target of the image is an
    /// error, never a `failed` arch.
    internal: Vec<String>,
    /// Sentences for the report: built arches whose file the compose gave no
    /// checksum for.
    notes: Vec<(Arch, String)>,
}

/// Reads every built artifact of an image once, several at a time. One that
/// cannot be used turns its arch into `failed` with the reason; archgate's
/// own failure while reading is kept apart, in `internal`. With `push_to`,
/// archive blobs go to that store in the same pass.
fn read_artifacts(
    stores: &Stores,
    results: &ComposeResults,
    image: &ImageConfig,
    cache: Option<&std::path::Path>,
    push_to: Option<&AnyStore>,
) -> ImageInputs {
    use futures_util::StreamExt;
    let name = image.name.get_ref();
    let list = results
        .images
        .get(name)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let read = |arch: Arch, artifact: archgate_core::Artifact| {
        let cache = cache.map(std::path::Path::to_path_buf);
        async move {
            match push_to {
                Some(store) => resolve_and_push(store, arch, artifact, cache).await,
                None => tokio::task::spawn_blocking(move || {
                    resolve_cached(arch, &artifact, cache.as_deref())
                })
                .await
                .unwrap_or_else(|e| Err(ReadFailure::stopped(e))),
            }
        }
    };
    let mut read: BTreeMap<usize, Result<ResolvedArtifact, ReadFailure>> =
        stores.block_on(
            futures_util::stream::iter(list.iter().enumerate().filter_map(
                |(i, r)| match &r.outcome {
                    Outcome::Built(a) => Some((i, r.arch, a.clone())),
                    Outcome::Failed { .. } => None,
                },
            ))
            .map(|(i, arch, artifact)| {
                let fut = read(arch, artifact);
                async move { (i, fut.await) }
            })
            .buffer_unordered(workers)
            .collect(),
        );
    let mut out = ImageInputs {
        inputs: Vec::new(),
        resolved: BTreeMap::new(),
        internal: Vec::new(),
        notes: Vec::new(),
    };
    for (i, result) in list.iter().enumerate() {
        let arch = result.arch;
        let input = match (&result.outcome, read.remove(&i)) {
            (Outcome::Failed { reason }, _) => ArchInput::Failed(reason.clone()),
            (Outcome::Built(artifact), Some(Ok(art))) => {
                tracing::info!(image = %name, %arch, digest = %art.entry.digest, "artifact read");
                if let Some(why) = &artifact.unverified {
                    out.notes.push((arch, format!("{arch}: {why}; the file was not checked against a checksum (its blobs were checked against their digests)")));
                }
                let entry = art.entry.clone();
                out.resolved.insert(arch, art);
                ArchInput::Built(entry)
            }
            (Outcome::Built(_), Some(Err(ReadFailure::Unusable(reason)))) => {
                tracing::warn!(image = %name, %arch, "artifact unusable: {reason}");
                ArchInput::Failed(reason)
            }
            (Outcome::Built(_), Some(Err(ReadFailure::Internal(e)))) => {
                tracing::error!(image = %name, %arch, "{e}");
                out.internal.push(format!("{arch}: {e}"));
                continue;
            }
            (Outcome::Built(_), None) => {
                out.internal
                    .push(format!("{arch}: internal error: the artifact was not read"));
                continue;
            }
        };
        out.inputs.push((arch, input));
    }
    out
}

/// Where an image's archive blobs go while they are read: its first
/// registry repository, unless nothing may be pushed for it (a dry run, or a hard
/// refusal that the source's results already show).
fn early_push_store(
    stores: &Stores,
    loaded: &Loaded,
    opts: &Options,
    results: &ComposeResults,
    image: &ImageConfig,
    required: &[Arch],
) -> Option<AnyStore> {
    if opts.dry_run || !results.compose.status.is_finished() {
        return None;
    }
    let built: Vec<Arch> = results
        .images
        .get(image.name.get_ref())?
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Built(_)))
        .map(|r| r.arch)
        .collect();
    if built.is_empty() || required.iter().any(|a| !built.contains(a)) {
        return None;
    }
    // Registries only: a layout is written only once publishing checks it.
    let registry = image
        .repositories
        .iter()
        .find(|r| matches!(r, Repository::Registry { .. }))?;
    Some(stores.store(Some(loaded), registry))
}

fn plan_target(
    loaded: &Loaded,
    stores: &Stores,
    target: &mut Target<'_>,
    results: &ComposeResults,
    read: &ImageInputs,
    settings: &GateSettings,
    now: i64,
) -> Result<(), RunError> {
    let store = stores.store(Some(loaded), target.repository);
    let current = match target.named {
        true => stores.block_on(read_current(&store, &target.tag)),
        false => Ok(None),
    };
    target.current = match current {
        Ok(current) => current,
        Err(e) => {
            let msg = format!(
                "cannot read the current index of {}: {e:#}",
                target.reference
            );
            tracing::error!("{msg}");
            target.errors.push(msg);
            return Ok(());
        }
    };
    if !read.internal.is_empty() {
        // archgate's own fault: nothing of this target is decided or pushed.
        for e in &read.internal {
            tracing::error!(target = %target.reference, "{e}");
            target.errors.push(e.clone());
        }
        return Ok(());
    }
    let input = GateInput {
        status: &results.compose.status,
        results: &read.inputs,
        current: target.current.as_ref(),
        settings,
        annotations: &target.annotations,
        now,
    };
    let mut plan = match decide(&input) {
        Ok(plan) => plan,
        Err(e) => {
            tracing::error!(target = %target.reference, "{e}");
            target.errors.push(e.to_string());
            return Ok(());
        }
    };
    // Built arches that are pushed (none on a hard refusal) but could not
    // be checked against the compose: the report says so.
    plan.reasons.extend(
        read.notes
            .iter()
            .filter(|(arch, _)| plan.arch_tags.contains(arch))
            .map(|(_, note)| note.clone()),
    );
    for &arch in &plan.arch_tags {
        let releases = loaded.config.release.releases();
        let vars = Vars {
            compose: &results.compose,
            releases: &releases,
            tag: Some(&target.tag),
            arch: Some(arch),
        };
        let tag = target
            .image
            .arch_tag
            .render(&vars)
            .map_err(|e| image_error(loaded, target.image, e))?;
        target.arch_tags.push((arch, tag));
    }
    target.decision = plan.decision;
    target.digest = match plan.decision {
        Decision::Published => Some(sha256_digest(&render_index(&plan.index, &plan.annotations))),
        Decision::Unchanged => target.current.as_ref().map(|c| c.digest.clone()),
        Decision::Refused | Decision::Error => None,
    };
    tracing::info!(target = %target.reference, decision = plan.decision.as_str(), "planned");
    target.plan = Some(plan);
    Ok(())
}

fn publish_target(
    loaded: &Loaded,
    stores: &Stores,
    tools: Option<&archgate_tools::Tools>,
    target: &mut Target<'_>,
    artifacts: &BTreeMap<Arch, ResolvedArtifact>,
) {
    let Some(plan) = &target.plan else { return };
    if !target.errors.is_empty() || plan.hard_refusal {
        return;
    }
    let store = stores.store(Some(loaded), target.repository);
    let t = StoreTarget {
        store: &store,
        tag: &target.tag,
        planned_from: target.current.as_ref().map(|c| c.digest.as_str()),
    };
    let result = match (tools, &store, target.repository) {
        (Some(tools), AnyStore::Registry(repo), Repository::Registry { host, path }) => {
            let configured = loaded.config.registry.get(host);
            let access = stores.access(host);
            let auth_file = match &access.env_credentials {
                Some(archgate_native::auth::Credentials::Basic { username, password }) => {
                    match tools.auth_file(host, username, password.expose()) {
                        Ok(f) => Some(f),
                        Err(e) => {
                            target
                                .errors
                                .push(format!("publishing {} failed: {e:#}", target.reference));
                            return;
                        }
                    }
                }
                _ => configured
                    .and_then(|c| c.auth_file.as_deref())
                    .map(|f| loaded.resolve_path(f)),
            };
            let tt = archgate_tools::ToolTarget {
                repo,
                host,
                path,
                tag: &target.tag,
                planned_from: t.planned_from,
                tls_verify: configured.is_none_or(|c| c.tls_verify),
                auth_file: auth_file.as_deref(),
                cert_dir: access.cert_dir.as_deref(),
            };
            stores.block_on(archgate_tools::publish(
                tools,
                &tt,
                plan,
                artifacts,
                &target.arch_tags,
            ))
        }
        _ => stores.block_on(publish(&t, plan, artifacts, &target.arch_tags)),
    };
    match result {
        Ok(digest) => {
            if plan.decision == Decision::Published {
                target.digest = digest;
            }
        }
        Err(e) => {
            tracing::error!(target = %target.reference, "publishing failed: {e:#}");
            target
                .errors
                .push(format!("publishing {} failed: {e:#}", target.reference));
        }
    }
}

fn report(t: Target<'_>) -> TargetReport {
    let failed = !t.errors.is_empty();
    let (arches, mut reasons) = match &t.plan {
        Some(plan) => (
            plan.arches.iter().map(ArchReport::from).collect(),
            plan.reasons.clone(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    reasons.extend(t.errors);
    let refused_hard = t.plan.as_ref().is_some_and(|p| p.hard_refusal);
    TargetReport {
        image: t.image.name.get_ref().clone(),
        reference: t.reference,
        policy: t.policy,
        decision: if failed { Decision::Error } else { t.decision },
        previous_digest: t.current.map(|c| c.digest),
        digest: if failed { None } else { t.digest },
        arches,
        arch_tags: if failed || refused_hard {
            Vec::new()
        } else {
            t.arch_tags
                .iter()
                .map(|(_, tag)| t.repository.tagged(tag))
                .collect()
        },
        reasons,
    }
}
