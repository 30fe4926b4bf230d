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
//! A run goes through the stages of ARCHITECTURE.md, one module each:
//! `compose` (load the compose), `artifacts` (read the artifacts),
//! `current` (read the current states), `decide` (the gate per
//! target), `publish` and `report`; `targets` names the targets and
//! `stores` gives the registries and layouts of a run.
#![warn(missing_docs)]

mod artifacts;
mod compose;
mod current;
mod decide;
mod publish;
mod report;
mod spec;
mod stores;
mod targets;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use archgate_core::{
    newer_compose_held, Arch, Compose, ComposeResults, ComposeStamp, ErrorKind, Report,
};
use archgate_native::{ReadEnv, ResolvedArtifact};

pub use spec::{
    DecryptKey, Engine, Env, GateSpec, ImageSpec, RegistrySpec, RepoSpec, RunSpec, SignSpec,
    SourceSpec,
};
pub use stores::RunStores;
pub use targets::image_tags;

/// A task aborted when this is dropped (its owner given up); awaited, its
/// end (`Err` when it panicked or was aborted).
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

/// Why a run stopped before it could report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunError {
    /// What kind of error (it picks the exit code, or retry or set-aside).
    pub kind: ErrorKind,
    /// What went wrong, for people.
    pub message: String,
}

impl RunError {
    /// An error of `kind`.
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

/// Runs archgate, as often as asked.
pub struct Runner {
    env: Env,
    clients: stores::Clients,
    /// One publish per target at a time in this process (the service may
    /// run several messages at once).
    targets: stores::TargetLocks,
}

impl Runner {
    /// A runner handed `env`; it keeps registry clients across runs.
    pub fn new(env: Env) -> Runner {
        Runner {
            env,
            clients: Default::default(),
            targets: Default::default(),
        }
    }

    /// What it was handed.
    pub fn env(&self) -> &Env {
        &self.env
    }

    /// A fresh view of a client for every registry `registries` names,
    /// reusing the client (connections, tokens) of earlier runs where the
    /// settings are the same.
    pub fn stores(
        &self,
        registries: &BTreeMap<String, RegistrySpec>,
    ) -> Result<RunStores, RunError> {
        self.clients.views(registries, &self.targets, None)
    }

    /// Reads the compose: its results for every image of `spec`.
    pub async fn compose(&self, spec: &RunSpec) -> Result<ComposeResults, RunError> {
        let stores = self.stores(&spec.registries)?;
        compose::load(spec, &stores).await
    }

    /// Reads everything and decides every target; writes nothing but the
    /// blobs of a first publish's archives (invisible until a manifest
    /// names them), and those only when the plan is to be published. Unless
    /// the spec is a dry run, each target is held (one run of this process
    /// at a time) from reading its current index until its read-back: plan
    /// and publish one run before planning another on the same targets.
    pub async fn plan(&self, spec: &RunSpec) -> Result<Plan, RunError> {
        let (setup, targets, decrypting) = self.set_up(spec).await?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        read_and_decide(spec, &setup, (targets, decrypting), tx).await?;
        let mut artifacts = vec![Arc::default(); spec.images.len()];
        let mut targets = Vec::new();
        while let Ok((i, decided, resolved)) = rx.try_recv() {
            artifacts[i] = resolved;
            targets.extend(decided);
        }
        targets.sort_by_key(|t| t.seq);
        let Setup {
            stores,
            results,
            dir,
            ..
        } = setup;
        Ok(Plan {
            spec: Arc::new(spec.clone()),
            compose: results.compose,
            targets,
            artifacts,
            stores,
            dir,
        })
    }

    /// What every run does before it reads: the registries' views, the
    /// compose, the run's temp dir, and its targets named (their arch tags
    /// too) and, unless a dry run, held; and the signing key the spec left
    /// to the run, being decrypted ([`read_and_decide`] waits for it).
    async fn set_up(
        &self,
        spec: &RunSpec,
    ) -> Result<(Setup, Vec<targets::Target>, Option<Decrypting>), RunError> {
        check_engine(spec)?;
        let decrypting = match (&spec.sign.key, &spec.sign.decrypt) {
            (None, Some(decrypt)) if decrypt.decrypted.get().is_none() => {
                let decrypt = decrypt.clone();
                Some(tokio::task::spawn_blocking(move || (decrypt.read)()))
            }
            _ => None,
        };
        let stores = Arc::new(self.clients.views(
            &spec.registries,
            &self.targets,
            spec.fence.as_ref(),
        )?);
        let results = compose::load(spec, &stores).await?;
        tracing::info!(compose = %results.compose.id, status = %results.compose.status, "compose read");
        let dir = run_dir(&self.env.temp_root)?;
        let read_env = ReadEnv {
            cache: self.env.cache_dir.clone(),
            spool: Some(dir.path().join("spool")),
            allowed: spec.allowed_locations.clone(),
            read_timeout: spec.read_timeout,
            spool_limit: spec.spool_limit,
            spool_used: Default::default(),
        };
        let now = (self.env.clock)();
        let mut targets = targets::name_all(spec, &results.compose)?;
        decide::name_arch_tags(spec, &results, &mut targets)?;
        if !spec.dry_run {
            current::hold_all(spec, &stores, &results, &mut targets).await;
        }
        let setup = Setup {
            stores,
            results,
            dir,
            read_env,
            now,
        };
        Ok((setup, targets, decrypting))
    }

    /// Carries a plan out and reports. A target that fails does not stop
    /// the others. The run's temp dir goes when this returns.
    pub async fn publish(&self, plan: Plan) -> Report {
        let Plan {
            spec,
            compose,
            targets,
            artifacts,
            stores,
            dir,
        } = plan;
        let tools = publish::tools_for(&spec, dir.path());
        let total = targets.len();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut images: BTreeMap<usize, Vec<targets::Target>> = BTreeMap::new();
        for t in targets {
            images.entry(t.image).or_default().push(t);
        }
        for (i, image_targets) in images {
            let _ = tx.send((i, image_targets, artifacts[i].clone()));
        }
        drop(tx);
        let targets = publish::publish_as_decided(&spec, &stores, &tools, rx, total).await;
        stores.give_up_sessions_ahead().await;
        let report = report::make_report(&spec, &compose, targets, false);
        drop(tools);
        drop(dir);
        report
    }

    /// Plans, then publishes unless the spec is a dry run: each image as
    /// soon as its own artifacts are read and its targets decided, while
    /// other images' artifacts are still read.
    pub async fn run(&self, spec: &RunSpec) -> Result<Report, RunError> {
        if spec.dry_run {
            return Ok(self.plan(spec).await?.into_report());
        }
        let (setup, targets, decrypting) = self.set_up(spec).await?;
        let tools = publish::tools_for(spec, setup.dir.path());
        let total = targets.len();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let deciding = read_and_decide(spec, &setup, (targets, decrypting), tx);
        let publishing = publish::publish_as_decided(spec, &setup.stores, &tools, rx, total);
        let (decided, targets) = tokio::join!(deciding, publishing);
        setup.stores.give_up_sessions_ahead().await;
        decided?;
        let report = report::make_report(spec, &setup.results.compose, targets, false);
        drop(tools);
        drop(setup);
        Ok(report)
    }
}

/// What a run has set up before it reads ([`Runner::set_up`]).
struct Setup {
    stores: Arc<RunStores>,
    results: ComposeResults,
    /// The run's temp dir (the HTTP spool, the tools' storage).
    dir: tempfile::TempDir,
    read_env: ReadEnv,
    /// The run's clock, read once.
    now: i64,
}

/// The signing key being decrypted on a blocking thread.
type Decrypting = tokio::task::JoinHandle<Result<archgate_sign::SigningKey, String>>;

/// Waits for the signing key being decrypted, and keeps it in the spec
/// (`SignSpec::signing_key`): a key that cannot be decrypted is a
/// configuration error.
async fn decrypted(spec: &RunSpec, decrypting: Option<Decrypting>) -> Result<(), RunError> {
    let (Some(task), Some(decrypt)) = (decrypting, &spec.sign.decrypt) else {
        return Ok(());
    };
    let key = task.await.map_err(|e| {
        RunError::new(
            ErrorKind::Internal,
            format!("decrypting the signing key stopped: {e}"),
        )
    })?;
    let _ = decrypt
        .decrypted
        .set(Arc::new(key.map_err(RunError::config)?));
    Ok(())
}

/// Reads every artifact and every target's current state, and decides:
/// each image goes to `decided` (its targets, decided, and what its
/// artifacts gave) as soon as its own artifacts are read and every current
/// state is known. The artifacts are read while the current indexes are:
/// an image's blobs go up once it is known that no target of it holds a
/// newer compose (nothing of a stale image is sent), and that the signing
/// key being decrypted meanwhile could be: nothing is written before.
async fn read_and_decide(
    spec: &RunSpec,
    setup: &Setup,
    (targets, decrypting): (Vec<targets::Target>, Option<Decrypting>),
    decided: tokio::sync::mpsc::UnboundedSender<publish::Decided>,
) -> Result<(), RunError> {
    let Setup {
        stores,
        results,
        read_env,
        now,
        ..
    } = setup;
    let (go, gates): (Vec<_>, Vec<_>) = spec
        .images
        .iter()
        .map(|_| {
            let (tx, rx) = tokio::sync::watch::channel(None);
            (Some(rx), tx)
        })
        .unzip();
    let reads = artifacts::reads(spec, results);
    stores.expect(
        &current::reads_at_once(spec, &targets),
        &artifacts::uploads_at_once(spec, results, &reads, read_env),
    );
    let (read_tx, mut read_rx) = tokio::sync::mpsc::unbounded_channel();
    let reading = artifacts::read_all(spec, results, &reads, stores, (read_env, &go), {
        move |i, inputs| {
            let _ = read_tx.send((i, inputs));
        }
    });
    let deciding = async {
        let currents = current::read_all(spec, stores, &targets).await;
        decrypted(spec, decrypting).await?;
        let stale = stale_images(spec, &results.compose, &targets, &currents);
        for (i, gate) in gates.iter().enumerate() {
            let _ = gate.send(Some(!stale.contains(&i)));
        }
        let mut per_image: Vec<Vec<_>> = spec.images.iter().map(|_| Vec::new()).collect();
        for (t, current) in targets.into_iter().zip(currents) {
            per_image[t.image].push((t, current));
        }
        while let Some((i, read)) = read_rx.recv().await {
            let (mut image_targets, currents): (Vec<_>, Vec<_>) =
                std::mem::take(&mut per_image[i]).into_iter().unzip();
            decide::decide_image(
                spec,
                &results.compose,
                &read,
                &mut image_targets,
                currents,
                *now,
            )?;
            let _ = decided.send((i, image_targets, Arc::new(read.resolved)));
        }
        Ok(())
    };
    // A failure to decide (the signing key) stops the reading too.
    let reading = async {
        reading.await;
        Ok(())
    };
    tokio::try_join!(reading, deciding).map(|_| ())
}

/// The images some target of which holds a newer compose than this one
/// (unless `--allow-older`): their blobs are not pushed while they are
/// read, since nothing of theirs will be published there.
fn stale_images(
    spec: &RunSpec,
    compose: &Compose,
    targets: &[targets::Target],
    currents: &[Result<Option<archgate_core::CurrentIndex>, anyhow::Error>],
) -> BTreeSet<usize> {
    let mine = ComposeStamp::of(compose);
    targets
        .iter()
        .zip(currents)
        .filter(|(_, c)| {
            let held = c.as_ref().ok().and_then(Option::as_ref);
            newer_compose_held(held, &mine, spec.allow_older).is_some()
        })
        .map(|(t, _)| t.image)
        .collect()
}

/// The tools a tools engine runs must be installed (a usage error if not).
fn check_engine(spec: &RunSpec) -> Result<(), RunError> {
    match spec.engine.tool() {
        Some(tool) => archgate_tools::check(tool)
            .map_err(|e| RunError::config(format!("[publisher] {}", e.0))),
        None => Ok(()),
    }
}

/// The run's own temp dir under `root` (after removing what runs killed
/// before they could clean up left there).
fn run_dir(root: &Path) -> Result<tempfile::TempDir, RunError> {
    // A disk (or quota) full is mended as it empties: `external`.
    let failed = |what: &str, e: std::io::Error| {
        let kind = match archgate_native::io_disk_full(&e) {
            true => ErrorKind::External,
            false => ErrorKind::Internal,
        };
        RunError::new(kind, format!("{}: {what}: {e}", root.display()))
    };
    std::fs::create_dir_all(root).map_err(|e| failed("cannot create", e))?;
    archgate_native::remove_stale_temp(root, "archgate-run-");
    tempfile::Builder::new()
        .prefix(&format!("archgate-run-{}-", std::process::id()))
        .tempdir_in(root)
        .map_err(|e| failed("cannot make the run's temp dir", e))
}

/// A run, planned: every target decided, ready to publish.
pub struct Plan {
    spec: Arc<RunSpec>,
    compose: Compose,
    targets: Vec<targets::Target>,
    artifacts: Vec<Arc<BTreeMap<Arch, ResolvedArtifact>>>,
    stores: Arc<RunStores>,
    dir: tempfile::TempDir,
}

impl Plan {
    /// The report of the plan (a dry run): what publishing would give.
    pub fn into_report(self) -> Report {
        report::make_report(&self.spec, &self.compose, self.targets, true)
    }

    /// The compose the plan is of.
    pub fn compose(&self) -> &Compose {
        &self.compose
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
