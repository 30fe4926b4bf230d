//! One archgate run as an async library: read the compose, read every
//! target's current state, plan, publish, report. The CLI (`archgate plan`,
//! `publish`, `status`) and the service (`archgate consume`) both call it.
//!
//! A [`Runner`] is long-lived: it keeps one registry client per host
//! (connections, tokens) across runs. Each run gets its own view of each
//! registry (what is known to exist where, documents read), its own temp
//! dir (the HTTP spool, the tools' storage), removed when the run ends, and
//! nothing process-wide. Its futures are `Send`.
//!
//! Within a run, every target's current state is read concurrently
//! (bounded per registry by the client), and targets are published
//! concurrently: per image its first target alone (its blobs and manifests
//! go up once), then its other targets at once, which find them or mount
//! them; within a target the order of docs/gate.md holds (blobs, manifests
//! and arch tags, the index last).

pub mod spec;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use archgate_core::template::Vars;
use archgate_core::{
    decide, Arch, ArchInput, ArchReport, Compose, ComposeResults, ComposeSummary, CurrentIndex,
    Decision, ErrorKind, GateInput, GateSettings, ImageQuery, Outcome, Policy, Report, Repository,
    Source, TargetPlan, TargetReport,
};
use archgate_native::oci::{render_index, sha256_digest};
use archgate_native::registry::{Registry, RegistryRepo, RegistrySettings};
use archgate_native::{
    publish, read_current, resolve_and_push, resolve_in, AnyStore, Depth, OciLayout, ReadEnv,
    ReadFailure, ResolvedArtifact, Target as StoreTarget,
};
use futures_util::StreamExt;

pub use spec::{Engine, Env, GateSpec, ImageSpec, RegistrySpec, RepoSpec, RunSpec, SourceSpec};

/// Why a run stopped before it could report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunError {
    pub kind: ErrorKind,
    pub message: String,
}

impl RunError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> RunError {
        RunError {
            kind,
            message: message.into(),
        }
    }

    fn config(message: impl Into<String>) -> RunError {
        RunError::new(ErrorKind::Config, message)
    }

    fn input(message: impl Into<String>) -> RunError {
        RunError::new(ErrorKind::InvalidInput, message)
    }

    /// `2` for configuration and usage, `1` for everything else.
    pub fn exit_code(&self) -> u8 {
        match self.kind {
            ErrorKind::Config => 2,
            _ => 1,
        }
    }
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RunError {}

/// What identifies a registry client: the same settings reuse it.
#[derive(PartialEq)]
struct ClientKey {
    timeout: std::time::Duration,
    tls_verify: bool,
    credentials: Option<archgate_native::auth::Credentials>,
    cas: Vec<Vec<u8>>,
    identity: Option<Vec<u8>>,
}

impl ClientKey {
    fn of(spec: &RegistrySpec) -> ClientKey {
        ClientKey {
            timeout: spec.timeout,
            tls_verify: spec.tls_verify,
            credentials: spec.credentials.clone(),
            cas: spec.tls.cas.clone(),
            identity: spec.tls.identity.clone(),
        }
    }
}

/// Runs archgate, as often as asked.
pub struct Runner {
    env: Env,
    clients: Mutex<HashMap<String, (ClientKey, Arc<Registry>)>>,
    /// One publish per target at a time in this process (the service may
    /// run several messages at once).
    targets: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// The registries and layouts of one run.
pub struct RunStores {
    registries: HashMap<String, Arc<Registry>>,
    specs: BTreeMap<String, RegistrySpec>,
    targets: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl RunStores {
    /// Waits for, and holds, this process's one publish of `reference`.
    async fn target_lock(&self, reference: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .targets
            .lock()
            .expect("target locks")
            .entry(reference.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// The store of a repository.
    pub fn store(&self, repo: &RepoSpec) -> AnyStore {
        match &repo.repository {
            Repository::Layout { dir } => AnyStore::Layout(OciLayout::new(
                repo.layout_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(dir)),
            )),
            Repository::Registry { host, path } => AnyStore::Registry(RegistryRepo {
                registry: self.registries[host].clone(),
                path: path.clone(),
            }),
        }
    }
}

impl Runner {
    pub fn new(env: Env) -> Runner {
        Runner {
            env,
            clients: Mutex::new(HashMap::new()),
            targets: Default::default(),
        }
    }

    pub fn env(&self) -> &Env {
        &self.env
    }

    /// A fresh view of a client for every registry `registries` names (and
    /// `extra`), reusing the client (connections, tokens) of earlier runs
    /// where the settings are the same.
    pub fn stores(
        &self,
        registries: &BTreeMap<String, RegistrySpec>,
    ) -> Result<RunStores, RunError> {
        let mut clients = self.clients.lock().expect("clients");
        let mut views = HashMap::new();
        for (host, spec) in registries {
            let key = ClientKey::of(spec);
            let reuse = clients
                .get(host)
                .filter(|(k, _)| *k == key)
                .map(|(_, r)| r.clone());
            let client = match reuse {
                Some(c) => c,
                None => {
                    let settings = RegistrySettings {
                        tls_verify: spec.tls_verify,
                        credentials: spec.credentials.clone(),
                        tls: spec.tls.clone(),
                        retry: archgate_native::registry::RetryPolicy {
                            deadline: spec.timeout,
                            ..Default::default()
                        },
                    };
                    let client = Arc::new(
                        Registry::new(host, settings)
                            .map_err(|e| RunError::config(format!("{e:#}")))?,
                    );
                    clients.insert(host.clone(), (key, client.clone()));
                    client
                }
            };
            views.insert(host.clone(), Arc::new(client.view()));
        }
        Ok(RunStores {
            registries: views,
            specs: registries.clone(),
            targets: self.targets.clone(),
        })
    }

    /// Reads the compose: its results for every image of `spec`.
    pub async fn compose(&self, spec: &RunSpec) -> Result<ComposeResults, RunError> {
        let source = spec.source.clone();
        let queries: Vec<ImageQuery> = spec
            .images
            .iter()
            .map(|i| ImageQuery {
                name: i.name.clone(),
                matcher: i.matcher.clone(),
            })
            .collect();
        // Sources block (files, a blocking HTTP client, a plugin): they are
        // made, used and dropped on a blocking thread.
        tokio::task::spawn_blocking(move || {
            let source = make_source(&source)?;
            source
                .load(&queries)
                .map_err(|e| RunError::input(e.to_string()))
        })
        .await
        .map_err(|e| {
            RunError::new(
                ErrorKind::Internal,
                format!("internal error: the compose reader stopped: {e}"),
            )
        })?
    }

    /// Reads everything and decides every target; writes nothing but the
    /// blobs of a first publish's archives (invisible until a manifest
    /// names them), and those only when the plan is to be published.
    pub async fn plan(&self, spec: &RunSpec) -> Result<Plan, RunError> {
        let tool = match spec.engine {
            Engine::Native => None,
            Engine::Skopeo => Some(archgate_tools::Tool::Skopeo),
            Engine::Buildah => Some(archgate_tools::Tool::Buildah),
        };
        if let Some(tool) = tool {
            archgate_tools::check(tool)
                .map_err(|e| RunError::config(format!("[publisher] {}", e.0)))?;
        }
        let results = self.compose(spec).await?;
        tracing::info!(compose = %results.compose.id, status = %results.compose.status, "compose read");
        let stores = Arc::new(self.stores(&spec.registries)?);
        std::fs::create_dir_all(&self.env.temp_root).map_err(|e| {
            RunError::new(
                ErrorKind::Internal,
                format!("{}: cannot create: {e}", self.env.temp_root.display()),
            )
        })?;
        // Runs killed before they could clean up left their temp dirs.
        archgate_native::layout::remove_stale_temp(&self.env.temp_root, "archgate-run-");
        let dir = tempfile::Builder::new()
            .prefix(&format!("archgate-run-{}-", std::process::id()))
            .tempdir_in(&self.env.temp_root)
            .map_err(|e| {
                RunError::new(
                    ErrorKind::Internal,
                    format!(
                        "{}: cannot make the run's temp dir: {e}",
                        self.env.temp_root.display()
                    ),
                )
            })?;
        let read_env = ReadEnv {
            cache: self.env.cache_dir.clone(),
            spool: Some(dir.path().join("spool")),
        };
        let now = (self.env.clock)();

        // Every image's artifacts, read once, several at a time.
        let reads = read_all_artifacts(spec, &results, &stores, &read_env).await;

        // Every target, named.
        let mut targets = Vec::new();
        for (i, image) in spec.images.iter().enumerate() {
            let tags = image_tags(image, &results.compose, &spec.releases)?;
            let mut seen = BTreeSet::new();
            for (r, repo) in image.repositories.iter().enumerate() {
                for (tag, named) in &tags {
                    let annotations = match named {
                        true => index_annotations(image, &results.compose, &spec.releases, tag)?,
                        false => BTreeMap::new(),
                    };
                    let reference = repo.repository.tagged(tag);
                    if !seen.insert(reference.clone()) {
                        return Err(image_error(image, format!("{reference} is a target twice")));
                    }
                    targets.push(Target {
                        seq: targets.len(),
                        image: i,
                        repo: r,
                        named: *named,
                        tag: tag.clone(),
                        annotations,
                        reference,
                        policy: spec
                            .policy_override
                            .or(image.policy)
                            .unwrap_or(spec.gate.policy),
                        current: None,
                        plan: None,
                        arch_tags: Vec::new(),
                        decision: Decision::Error,
                        digest: None,
                        errors: Vec::new(),
                        error_kind: None,
                    });
                }
            }
        }

        // Every target's current state, at once (bounded per registry).
        // (Futures made before they are streamed: a closure in the stream
        // would keep this future from being `Send`.)
        let mut reads_current = Vec::new();
        for t in &targets {
            let store = stores.store(&spec.images[t.image].repositories[t.repo]);
            let depth = match (t.policy, spec.gate.max_carry_age) {
                (Policy::Hybrid, Some(_)) => Depth::Configs,
                _ => Depth::Index,
            };
            reads_current.push(current_of(store, t.named.then(|| t.tag.clone()), depth));
        }
        let currents: Vec<Result<Option<CurrentIndex>, anyhow::Error>> =
            futures_util::stream::iter(reads_current)
                .buffered(64)
                .collect()
                .await;

        // The gate, per target.
        for (target, current) in targets.iter_mut().zip(currents) {
            let image = &spec.images[target.image];
            let read = &reads[target.image];
            match current {
                Ok(c) => target.current = c,
                Err(e) => {
                    let msg = format!(
                        "cannot read the current index of {}: {e:#}",
                        target.reference
                    );
                    tracing::error!("{msg}");
                    target.fail(
                        msg,
                        archgate_native::error_kind(&e).unwrap_or(ErrorKind::Transient),
                    );
                    continue;
                }
            }
            if !read.internal.is_empty() {
                // archgate's own fault: nothing of this target is decided or pushed.
                for e in &read.internal {
                    tracing::error!(target = %target.reference, "{e}");
                    target.fail(e.clone(), ErrorKind::Internal);
                }
                continue;
            }
            let settings = GateSettings {
                policy: target.policy,
                required: spec.gate.required.clone(),
                retired: spec.gate.retired.clone(),
                expected: image.arches.clone().unwrap_or_default(),
                max_carry_age: spec.gate.max_carry_age,
            };
            let input = GateInput {
                status: &results.compose.status,
                results: &read.inputs,
                current: target.current.as_ref(),
                settings: &settings,
                annotations: &target.annotations,
                now,
            };
            let mut plan = match decide(&input) {
                Ok(plan) => plan,
                Err(e) => {
                    tracing::error!(target = %target.reference, "{e}");
                    target.fail(e.to_string(), ErrorKind::InvalidInput);
                    continue;
                }
            };
            // Built arches that are pushed but could not be checked against
            // the compose: the report says so.
            plan.reasons.extend(
                read.notes
                    .iter()
                    .filter(|(arch, _)| plan.arch_tags.contains(arch))
                    .map(|(_, note)| note.clone()),
            );
            for &arch in &plan.arch_tags {
                let vars = Vars {
                    compose: &results.compose,
                    releases: &spec.releases,
                    tag: Some(&target.tag),
                    arch: Some(arch),
                };
                let tag = image
                    .arch_tag
                    .render(&vars)
                    .map_err(|e| image_error(image, e))?;
                target.arch_tags.push((arch, tag));
            }
            target.decision = plan.decision;
            target.digest = match plan.decision {
                Decision::Published => {
                    Some(sha256_digest(&render_index(&plan.index, &plan.annotations)))
                }
                Decision::Unchanged => target.current.as_ref().map(|c| c.digest.clone()),
                Decision::Refused | Decision::Error => None,
            };
            tracing::info!(target = %target.reference, decision = plan.decision.as_str(), "planned");
            target.plan = Some(plan);
        }

        Ok(Plan {
            spec: Arc::new(spec.clone()),
            compose: results.compose,
            targets,
            artifacts: reads.into_iter().map(|r| Arc::new(r.resolved)).collect(),
            stores,
            dir,
        })
    }

    /// Carries a plan out and reports. A target that fails does not stop
    /// the others. The run's temp dir goes when this returns.
    pub async fn publish(&self, plan: Plan) -> Report {
        let Plan {
            spec,
            compose,
            mut targets,
            artifacts,
            stores,
            dir,
        } = plan;
        let tools = match spec.engine {
            Engine::Native => None,
            Engine::Skopeo => Some(archgate_tools::Tools::new_in(
                archgate_tools::Tool::Skopeo,
                dir.path(),
            )),
            Engine::Buildah => Some(archgate_tools::Tools::new_in(
                archgate_tools::Tool::Buildah,
                dir.path(),
            )),
        };
        let tools = match tools.transpose() {
            Ok(t) => t,
            Err(e) => {
                for t in &mut targets {
                    if t.plan.is_some() {
                        t.fail(
                            format!("publishing {} failed: {}", t.reference, e.0),
                            ErrorKind::Config,
                        );
                    }
                }
                None
            }
        };
        // One repository's targets in order (they share blobs and arch
        // tags); repositories at once.
        let total = targets.len() as u64;
        // Per image, its targets in order (the first repository's first).
        let mut groups: BTreeMap<usize, Vec<Target>> = BTreeMap::new();
        for t in targets {
            groups.entry(t.image).or_default().push(t);
        }
        let done = std::sync::atomic::AtomicU64::new(0);
        archgate_native::progress::targets(0, total);
        let (spec_ref, stores_ref, tools_ref, artifacts_ref, done_ref) =
            (&spec, &stores, tools.as_ref(), &artifacts, &done);
        let jobs: Vec<_> = groups
            .into_values()
            .map(|image_targets| {
                publish_image(
                    spec_ref,
                    stores_ref,
                    tools_ref,
                    artifacts_ref,
                    image_targets,
                    done_ref,
                    total,
                )
            })
            .collect();
        let published: Vec<Vec<Target>> = futures_util::stream::iter(jobs)
            .buffer_unordered(8)
            .collect()
            .await;
        let mut targets: Vec<Target> = published.into_iter().flatten().collect();
        targets.sort_by_key(|t| t.seq);
        let report = make_report(&spec, &compose, targets, false);
        drop(tools);
        drop(dir);
        report
    }

    /// Plans, then publishes unless the spec is a dry run.
    pub async fn run(&self, spec: &RunSpec) -> Result<Report, RunError> {
        let plan = self.plan(spec).await?;
        if spec.dry_run {
            return Ok(plan.into_report());
        }
        Ok(self.publish(plan).await)
    }
}

/// A run, planned: every target decided, ready to publish.
pub struct Plan {
    spec: Arc<RunSpec>,
    compose: Compose,
    targets: Vec<Target>,
    artifacts: Vec<Arc<BTreeMap<Arch, ResolvedArtifact>>>,
    stores: Arc<RunStores>,
    dir: tempfile::TempDir,
}

impl Plan {
    /// The report of the plan (a dry run): what publishing would give.
    pub fn into_report(self) -> Report {
        make_report(&self.spec, &self.compose, self.targets, true)
    }

    pub fn compose(&self) -> &Compose {
        &self.compose
    }
}

/// One (image, repository, tag), planned.
struct Target {
    /// Its place in the report.
    seq: usize,
    image: usize,
    repo: usize,
    /// False when the tag could not be rendered (an unfinished compose):
    /// `tag` is then the template, and nothing is read or written there.
    named: bool,
    tag: String,
    annotations: BTreeMap<String, String>,
    reference: String,
    policy: Policy,
    current: Option<CurrentIndex>,
    plan: Option<TargetPlan>,
    arch_tags: Vec<(Arch, String)>,
    decision: Decision,
    digest: Option<String>,
    errors: Vec<String>,
    error_kind: Option<ErrorKind>,
}

impl Target {
    fn fail(&mut self, message: String, kind: ErrorKind) {
        self.errors.push(message);
        self.error_kind.get_or_insert(kind);
    }
}

fn make_source(spec: &SourceSpec) -> Result<Box<dyn Source>, RunError> {
    use archgate_source_pungi::{HttpCompose, PungiSource};
    Ok(match spec {
        SourceSpec::Dir { location } => Box::new(archgate_source_dir::DirSource::new(location)),
        SourceSpec::Pungi { location } => {
            if location.starts_with("http://") || location.starts_with("https://") {
                let http =
                    HttpCompose::new(location).map_err(|e| RunError::input(e.to_string()))?;
                Box::new(PungiSource::new(http))
            } else {
                Box::new(PungiSource::local(location))
            }
        }
        SourceSpec::Koji { hub, topurl, task } => Box::new(
            archgate_source_koji::KojiSource::new(hub, topurl, task)
                .map_err(|e| RunError::config(e.to_string()))?,
        ),
        SourceSpec::Plugin {
            library,
            location,
            settings,
        } => Box::new(
            archgate_source_plugin::PluginSource::load(library, location.clone(), settings.clone())
                .map_err(|e| RunError::input(e.to_string()))?,
        ),
    })
}

fn image_error(image: &ImageSpec, msg: impl std::fmt::Display) -> RunError {
    RunError::config(format!("{}: image `{}`: {msg}", image.origin, image.name))
}

/// The tags an image gets from this compose: each rendered template whose
/// `when` holds, and whether it could be rendered at all. An unfinished
/// compose is refused whatever it holds, and may not yet give what a
/// template needs (a running Koji task has no version): such a tag is then
/// the template itself, marked unnamed, and nothing is read or written there.
pub fn image_tags(
    image: &ImageSpec,
    compose: &Compose,
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
            Err(e) => return Err(image_error(image, e)),
        }
    }
    Ok(out)
}

/// The annotations of an image's index under `tag`, rendered.
fn index_annotations(
    image: &ImageSpec,
    compose: &Compose,
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
                .map_err(|e| image_error(image, format!("annotation `{k}`: {e}")))
        })
        .collect()
}

/// What reading an image's artifacts gave.
#[derive(Default)]
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

/// Reads every built artifact of every image once, as many at a time as
/// there are cores. One that cannot be used turns its arch into `failed`
/// with the reason; archgate's own failure while reading is kept apart. On
/// a first publish with the native engine, archive blobs go to the image's
/// first registry repository in the same pass.
async fn read_all_artifacts(
    spec: &RunSpec,
    results: &ComposeResults,
    stores: &RunStores,
    env: &ReadEnv,
) -> Vec<ImageInputs> {
    // Twice the cores: a first publish's readers also wait on the registry.
    let workers = 2 * std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut jobs = Vec::new();
    for (i, image) in spec.images.iter().enumerate() {
        let push_to = match spec.engine {
            Engine::Native => early_push_store(spec, stores, results, image),
            _ => None,
        };
        let list = results
            .images
            .get(&image.name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (k, r) in list.iter().enumerate() {
            if let Outcome::Built(artifact) = &r.outcome {
                jobs.push((i, k, r.arch, artifact.clone(), push_to.clone()));
            }
        }
    }
    let jobs: Vec<_> = jobs
        .into_iter()
        .map(|(i, k, arch, artifact, push_to)| {
            read_one((i, k), arch, artifact, push_to, env.clone())
        })
        .collect();
    let mut read: HashMap<(usize, usize), Result<ResolvedArtifact, ReadFailure>> =
        futures_util::stream::iter(jobs)
            .buffer_unordered(workers)
            .collect()
            .await;
    let mut out = Vec::new();
    for (i, image) in spec.images.iter().enumerate() {
        let name = &image.name;
        let mut inputs = ImageInputs::default();
        let list = results
            .images
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or_default();
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
                    tracing::error!(image = %name, %arch, "{e}");
                    inputs.internal.push(format!("{arch}: {e}"));
                    continue;
                }
                (Outcome::Built(_), None) => {
                    inputs
                        .internal
                        .push(format!("{arch}: internal error: the artifact was not read"));
                    continue;
                }
            };
            inputs.inputs.push((arch, input));
        }
        out.push(inputs);
    }
    out
}

/// Reads one artifact (pushing its blobs to `push_to` on the way).
async fn read_one(
    key: (usize, usize),
    arch: Arch,
    artifact: archgate_core::Artifact,
    push_to: Option<AnyStore>,
    env: ReadEnv,
) -> ((usize, usize), Result<ResolvedArtifact, ReadFailure>) {
    let got = match push_to {
        Some(store) => resolve_and_push(&store, arch, artifact, env).await,
        None => tokio::task::spawn_blocking(move || resolve_in(arch, &artifact, &env))
            .await
            .unwrap_or_else(|e| Err(ReadFailure::stopped(e))),
    };
    (key, got)
}

/// The current index under `tag`; none for an unnamed target.
async fn current_of(
    store: AnyStore,
    tag: Option<String>,
    depth: Depth,
) -> Result<Option<CurrentIndex>, anyhow::Error> {
    match tag {
        Some(tag) => read_current(&store, &tag, depth).await,
        None => Ok(None),
    }
}

/// Publishes one image: its first target alone (the image's blobs and
/// manifests go up once, to its first repository), then every other target
/// at once (they find what the first pushed, or mount it).
async fn publish_image(
    spec: &RunSpec,
    stores: &RunStores,
    tools: Option<&archgate_tools::Tools>,
    artifacts: &[Arc<BTreeMap<Arch, ResolvedArtifact>>],
    targets: Vec<Target>,
    done: &std::sync::atomic::AtomicU64,
    total: u64,
) -> Vec<Target> {
    let mut targets = targets.into_iter();
    let Some(first) = targets.next() else {
        return Vec::new();
    };
    let mut out = vec![publish_counted(spec, stores, tools, artifacts, first, done, total).await];
    let rest: Vec<_> = targets
        .map(|t| publish_counted(spec, stores, tools, artifacts, t, done, total))
        .collect();
    out.extend(futures_util::future::join_all(rest).await);
    out
}

/// Publishes one target and counts it done for the progress display.
async fn publish_counted(
    spec: &RunSpec,
    stores: &RunStores,
    tools: Option<&archgate_tools::Tools>,
    artifacts: &[Arc<BTreeMap<Arch, ResolvedArtifact>>],
    mut target: Target,
    done: &std::sync::atomic::AtomicU64,
    total: u64,
) -> Target {
    let image = target.image;
    publish_target(spec, stores, tools, &mut target, &artifacts[image]).await;
    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    archgate_native::progress::targets(n, total);
    target
}

/// Where an image's archive blobs go while they are read: its first
/// registry repository, unless nothing may be pushed for it (a dry run, or
/// a hard refusal that the source's results already show).
fn early_push_store(
    spec: &RunSpec,
    stores: &RunStores,
    results: &ComposeResults,
    image: &ImageSpec,
) -> Option<AnyStore> {
    if spec.dry_run || !results.compose.status.is_finished() {
        return None;
    }
    let built: Vec<Arch> = results
        .images
        .get(&image.name)?
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Built(_)))
        .map(|r| r.arch)
        .collect();
    if built.is_empty() || spec.gate.required.iter().any(|a| !built.contains(a)) {
        return None;
    }
    // Registries only: a layout is written only once publishing checks it.
    let repo = image
        .repositories
        .iter()
        .find(|r| matches!(r.repository, Repository::Registry { .. }))?;
    Some(stores.store(repo))
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
    let _one_at_a_time = stores.target_lock(&target.reference).await;
    let t = StoreTarget {
        store: &store,
        tag: &target.tag,
        planned_from: target.current.as_ref().map(|c| c.digest.as_str()),
    };
    let result = match (tools, &store, &repo.repository) {
        (Some(tools), AnyStore::Registry(registry_repo), Repository::Registry { host, path }) => {
            let access = stores.specs.get(host);
            let auth_file = match access {
                Some(RegistrySpec {
                    env_credentials: true,
                    credentials:
                        Some(archgate_native::auth::Credentials::Basic { username, password }),
                    ..
                }) => match tools.auth_file(host, username, password.expose()) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        target.fail(
                            format!("publishing {} failed: {e:#}", target.reference),
                            ErrorKind::Internal,
                        );
                        return;
                    }
                },
                _ => access.and_then(|a| a.auth_file.clone()),
            };
            let tt = archgate_tools::ToolTarget {
                repo: registry_repo,
                host,
                path,
                tag: &target.tag,
                planned_from: t.planned_from,
                tls_verify: access.is_none_or(|a| a.tls_verify),
                auth_file: auth_file.as_deref(),
                cert_dir: access.and_then(|a| a.cert_dir.as_deref()),
            };
            archgate_tools::publish(tools, &tt, plan, artifacts, &target.arch_tags).await
        }
        _ => publish(&t, plan, artifacts, &target.arch_tags).await,
    };
    match result {
        Ok(digest) => {
            if plan.decision == Decision::Published {
                target.digest = digest;
            }
        }
        Err(e) => {
            tracing::error!(target = %target.reference, "publishing failed: {e:#}");
            let kind = archgate_native::error_kind(&e).unwrap_or(ErrorKind::Internal);
            target.fail(
                format!("publishing {} failed: {e:#}", target.reference),
                kind,
            );
        }
    }
}

fn make_report(spec: &RunSpec, compose: &Compose, targets: Vec<Target>, dry_run: bool) -> Report {
    Report {
        compose: ComposeSummary {
            id: compose.id.clone(),
            status: compose.status.clone(),
            version: archgate_core::Template::parse("{version}")
                .ok()
                .and_then(|t| {
                    t.render_text(&Vars {
                        compose,
                        releases: &spec.releases,
                        tag: None,
                        arch: None,
                    })
                    .ok()
                }),
        },
        dry_run,
        targets: targets
            .into_iter()
            .map(|t| target_report(spec, t))
            .collect(),
    }
}

fn target_report(spec: &RunSpec, t: Target) -> TargetReport {
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
    let repository = &spec.images[t.image].repositories[t.repo].repository;
    TargetReport {
        image: spec.images[t.image].name.clone(),
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
                .map(|(_, tag)| repository.tagged(tag))
                .collect()
        },
        reasons,
        error_kind: t.error_kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The service runs these on a multi-threaded runtime: they must be `Send`.
    #[allow(dead_code)]
    fn futures_are_send(runner: &Runner, spec: &RunSpec, plan: Plan) {
        fn send<T: Send>(_: T) {}
        send(runner.run(spec));
        send(runner.plan(spec));
        send(runner.publish(plan));
    }
}
