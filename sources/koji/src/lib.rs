//! The `koji` source: a Koji image build. The parent task (`image` or
//! `kiwiBuild`) has one child per arch (`createImage` or `createKiwiImage`):
//! a CLOSED child is built, a FAILED or CANCELED one failed, and any task
//! still running makes the compose unfinished.
//!
//! Where a built arch's archive is read from: for a completed build (found
//! with `getBuild(NAME-VERSION-RELEASE)`), the build's images directory,
//! `TOPURL[/vol/VOLUME]/packages/NAME/VERSION/RELEASE/images/FILE`, with the
//! checksum of Koji's archive record (`listArchives(build_id)`: `checksum`,
//! `checksum_type`). A scratch build has no build record: its file is read
//! from the task's output, `TOPURL/work/tasks/ID%10000/ID/FILE`, and the
//! report says it has no checksum to check.
#![warn(missing_docs)]

pub mod xmlrpc;

use std::collections::BTreeMap;

use archgate_core::{
    Arch, ArchResult, Artifact, Checksum, Compose, ComposeResults, ComposeStatus, ImageQuery,
    Location, Outcome, Source, SourceError,
};
use xmlrpc::{Param, Value};

/// Koji task states.
const FREE: i64 = 0;
const OPEN: i64 = 1;
const CLOSED: i64 = 2;
const CANCELED: i64 = 3;
const ASSIGNED: i64 = 4;
const FAILED: i64 = 5;

/// The largest hub answer read.
const MAX_ANSWER: u64 = 64 << 20;

/// Koji build state COMPLETE.
const BUILD_COMPLETE: i64 = 1;

fn state_name(s: i64) -> &'static str {
    match s {
        FREE => "FREE",
        OPEN => "OPEN",
        CLOSED => "CLOSED",
        CANCELED => "CANCELED",
        ASSIGNED => "ASSIGNED",
        FAILED => "FAILED",
        _ => "UNKNOWN",
    }
}

/// Reads one Koji parent task.
pub struct KojiSource {
    hub: String,
    topurl: String,
    task: i64,
    client: reqwest::blocking::Client,
}

impl KojiSource {
    /// A source for task `task` of the hub at `hub`, its files under `topurl`.
    pub fn new(hub: &str, topurl: &str, task: &str) -> Result<KojiSource, SourceError> {
        let task = task.trim().parse().map_err(|_| {
            SourceError(format!(
                "koji: `{task}` is not a task id (the parent image task, a number)"
            ))
        })?;
        let client = reqwest::blocking::Client::builder()
            .user_agent(concat!("archgate/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(30))
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .map_err(|e| SourceError(format!("{hub}: cannot set up an HTTP client: {e}")))?;
        Ok(KojiSource {
            hub: hub.to_string(),
            topurl: topurl.trim_end_matches('/').to_string(),
            task,
            client,
        })
    }

    fn call(
        &self,
        method: &str,
        params: &[Param<'_>],
    ) -> Result<Result<Value, xmlrpc::Fault>, SourceError> {
        let what = format!("{} {method}", self.hub);
        let resp = self
            .client
            .post(&self.hub)
            .header("content-type", "text/xml")
            .body(xmlrpc::call(method, params))
            .send()
            .map_err(|e| {
                let cause = std::error::Error::source(&e)
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default();
                SourceError(format!("{what}: cannot reach the hub: {e}{cause}"))
            })?;
        if !resp.status().is_success() {
            return Err(SourceError(format!("{what}: HTTP {}", resp.status())));
        }
        // Bounded: a hub's answer is a few MB at most.
        let mut body = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(resp, MAX_ANSWER + 1), &mut body)
            .map_err(|e| SourceError(format!("{what}: cannot read the answer: {e}")))?;
        if body.len() as u64 > MAX_ANSWER {
            return Err(SourceError(format!(
                "{what}: the answer is larger than {MAX_ANSWER} bytes; refused"
            )));
        }
        xmlrpc::response(&body)
            .map_err(|e| SourceError(format!("{what}: not an XML-RPC answer: {e}")))
    }

    /// A call whose fault is an error.
    fn value(&self, method: &str, params: &[Param<'_>]) -> Result<Value, SourceError> {
        self.call(method, params)?.map_err(|f| {
            SourceError(format!(
                "{} {method}: Koji fault {}: {}",
                self.hub,
                f.code,
                archgate_core::untrusted(&f.message)
            ))
        })
    }

    /// `work/tasks/<id % 10000>/<id>/<file>` under topurl.
    fn task_file(&self, id: i64, file: &str) -> String {
        format!("{}/work/tasks/{}/{id}/{file}", self.topurl, id % 10000)
    }

    /// A completed build's images directory under topurl (koji's
    /// `pathinfo.imagebuild`).
    fn images_dir(&self, build: &Value) -> Option<String> {
        let part = |k: &str| build.get(k).and_then(Value::as_str);
        let volume = match part("volume_name") {
            None | Some("DEFAULT") => String::new(),
            Some(v) => format!("/vol/{v}"),
        };
        Some(format!(
            "{}{volume}/packages/{}/{}/{}/images",
            self.topurl,
            part("name")?,
            part("version")?,
            part("release")?
        ))
    }

    /// Where a closed child's `file` is read from, and its checksum.
    /// `builds` remembers each N-V-R's build and archives for the run.
    fn built_artifact(
        &self,
        task: i64,
        nvr: Option<&str>,
        file: &str,
        builds: &mut Builds,
    ) -> Result<Artifact, SourceError> {
        let scratch = |why: String| Artifact {
            location: Location::Url(self.task_file(task, file)),
            checksum: None,
            size: None,
            unverified: Some(why),
        };
        let Some(nvr) = nvr else {
            return Ok(scratch(format!(
                "Koji task {task} names no build, so Koji keeps no checksum for {file}"
            )));
        };
        if !builds.contains_key(nvr) {
            let build = self.value("getBuild", &[Param::Str(nvr)])?;
            let found = match build.get("id").and_then(Value::as_int) {
                Some(id) if build.get("state").and_then(Value::as_int) == Some(BUILD_COMPLETE) => {
                    let archives = self.value("listArchives", &[Param::Int(id)])?;
                    Some((build, archives.as_array().unwrap_or_default().to_vec()))
                }
                _ => None,
            };
            builds.insert(nvr.to_string(), found);
        }
        let Some((build, archives)) = &builds[nvr] else {
            return Ok(scratch(format!(
                "Koji has no completed build {nvr} (a scratch build), so no checksum for {file}"
            )));
        };
        let dir = self.images_dir(build).ok_or_else(|| {
            SourceError(format!(
                "{}: build {nvr} lacks name, version or release",
                self.hub
            ))
        })?;
        let record = archives
            .iter()
            .find(|a| a.get("filename").and_then(Value::as_str) == Some(file));
        let checksum = match record {
            Some(a) => {
                let kind = a.get("checksum_type").and_then(Value::as_int);
                let algo = match kind {
                    Some(0) => "md5",
                    Some(1) => "sha1",
                    Some(2) => "sha256",
                    _ => "",
                };
                match (a.get("checksum").and_then(Value::as_str), algo) {
                    (Some(value), algo) if !algo.is_empty() => Some(
                        Checksum::new(algo, value)
                            .expect("a known algorithm")
                            .map_err(|e| {
                                SourceError(format!("{}: build {nvr}, {file}: {e}", self.hub))
                            })?,
                    ),
                    _ => None,
                }
            }
            None => None,
        };
        let unverified = checksum.is_none().then(|| {
            format!(
                "Koji's archive records of build {nvr} give no checksum archgate knows for {file}"
            )
        });
        Ok(Artifact {
            location: Location::Url(format!("{dir}/{file}")),
            checksum,
            size: record
                .and_then(|a| a.get("size"))
                .and_then(Value::as_int)
                .map(|n| n as u64),
            unverified,
        })
    }
}

fn is_container_file(name: &str) -> bool {
    [".tar.xz", ".tar.gz", ".tar.zst", ".tar", ".ociarchive"]
        .iter()
        .any(|s| name.ends_with(s))
        && !name.ends_with(".log")
}

/// Koji's `2024-11-01 10:00:00.000000+00:00` (its hub's time, UTC in
/// Fedora's) as RFC 3339: `2024-11-01T10:00:00Z`.
fn koji_time(text: &str) -> Option<String> {
    let (date, time) = text.split_once(' ')?;
    let time = time.get(..8)?;
    let ok = date.len() == 10 && date.as_bytes()[4] == b'-' && time.as_bytes()[2] == b':';
    ok.then(|| format!("{date}T{time}Z"))
}

impl Source for KojiSource {
    fn load(&self, images: &[ImageQuery]) -> Result<ComposeResults, SourceError> {
        let parent = self.value("getTaskInfo", &[Param::Int(self.task), Param::Bool(true)])?;
        if parent == Value::Nil {
            return Err(SourceError(format!(
                "{}: task {} does not exist",
                self.hub, self.task
            )));
        }
        let tree = self.walk(&parent)?;
        let compose = self.compose(&parent, &tree);
        let mut out = BTreeMap::new();
        for query in images {
            out.insert(query.name.clone(), image_results(query, &tree.results)?);
        }
        Ok(ComposeResults {
            compose,
            images: out,
        })
    }
}

/// Build records already read, by NVR: the build and its archives.
type Builds = BTreeMap<String, Option<(Value, Vec<Value>)>>;

/// Whether a Koji task state means it has not ended.
fn running(state: i64) -> bool {
    matches!(state, FREE | OPEN | ASSIGNED)
}

/// What the parent task's children say.
struct TaskTree {
    /// Per arch, its result and the image name the task built (if built).
    results: BTreeMap<Arch, (ArchResult, Option<String>)>,
    release: Option<String>,
    any_failed: bool,
    any_running: bool,
}

/// What one child task gives: a result (and the name it built), or nothing
/// yet (it runs).
enum ChildOutcome {
    Done(Outcome, Option<String>),
    Running,
}

impl KojiSource {
    /// The image children of the parent task: per arch, built (CLOSED) or
    /// failed (FAILED, CANCELED); running ones make the compose STARTED.
    fn walk(&self, parent: &Value) -> Result<TaskTree, SourceError> {
        let parent_state = parent.get("state").and_then(Value::as_int).unwrap_or(-1);
        let children = self.value(
            "getTaskChildren",
            &[Param::Int(self.task), Param::Bool(false)],
        )?;
        // An `image` task's request is [name, version, target, arches, ...].
        let release = match (
            parent.get("method").and_then(Value::as_str),
            parent.get("request").and_then(Value::as_array),
        ) {
            (Some("image"), Some(req)) => req.get(1).and_then(Value::as_str).map(str::to_lowercase),
            _ => None,
        };
        let mut tree = TaskTree {
            results: BTreeMap::new(),
            release,
            any_failed: false,
            any_running: running(parent_state),
        };
        let mut builds = BTreeMap::new();
        for child in children.as_array().unwrap_or_default() {
            let method = child.get("method").and_then(Value::as_str).unwrap_or("");
            if !matches!(
                method,
                "createImage" | "createKiwiImage" | "createContainer"
            ) {
                continue;
            }
            let id = child.get("id").and_then(Value::as_int).unwrap_or(0);
            let arch = self.child_arch(id, child)?;
            let (outcome, name) =
                match self.child(id, arch, method, child, &mut tree, &mut builds)? {
                    ChildOutcome::Done(outcome, name) => (outcome, name),
                    ChildOutcome::Running => continue,
                };
            let result = ArchResult { arch, outcome };
            if tree.results.insert(arch, (result, name)).is_some() {
                return Err(SourceError(format!(
                    "{}: task {} has more than one child for {arch}",
                    self.hub, self.task
                )));
            }
        }
        Ok(tree)
    }

    /// A child's arch: its `arch`, else its `label`.
    fn child_arch(&self, id: i64, child: &Value) -> Result<Arch, SourceError> {
        child
            .get("arch")
            .and_then(Value::as_str)
            .or_else(|| child.get("label").and_then(Value::as_str))
            .unwrap_or("")
            .parse()
            .map_err(|e| SourceError(format!("{}: task {id}: {e}", self.hub)))
    }

    /// One child task's outcome, by its state.
    fn child(
        &self,
        id: i64,
        arch: Arch,
        method: &str,
        child: &Value,
        tree: &mut TaskTree,
        builds: &mut Builds,
    ) -> Result<ChildOutcome, SourceError> {
        let state = child.get("state").and_then(Value::as_int).unwrap_or(-1);
        match state {
            CLOSED => {
                let result = self.value("getTaskResult", &[Param::Int(id)])?;
                if let Some(v) = result.get("version").and_then(Value::as_str) {
                    tree.release.get_or_insert_with(|| v.to_lowercase());
                }
                let (artifact, name) = self.closed_child(id, arch, &result, builds)?;
                Ok(ChildOutcome::Done(Outcome::Built(artifact), name))
            }
            FAILED | CANCELED => {
                tree.any_failed = true;
                let why = match self.call("getTaskResult", &[Param::Int(id)])? {
                    Err(fault) => format!(
                        ": {}",
                        archgate_core::untrusted(fault.message.lines().next().unwrap_or(""))
                    ),
                    Ok(_) => String::new(),
                };
                let reason = format!(
                    "Koji task {id} ({method}, {arch}) is {}{why}",
                    state_name(state)
                );
                Ok(ChildOutcome::Done(Outcome::Failed { reason }, None))
            }
            s if running(s) => {
                tree.any_running = true;
                Ok(ChildOutcome::Running)
            }
            s => Err(SourceError(format!(
                "{}: task {id} has an unknown state {s}",
                self.hub
            ))),
        }
    }

    /// A closed child's artifact (its container archive among its files)
    /// and the name of what it built.
    fn closed_child(
        &self,
        id: i64,
        arch: Arch,
        result: &Value,
        builds: &mut Builds,
    ) -> Result<(Artifact, Option<String>), SourceError> {
        let name = result
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string);
        let files: Vec<&str> = result
            .get("files")
            .and_then(Value::as_array)
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let file = files.iter().find(|f| is_container_file(f)).ok_or_else(|| {
            SourceError(format!(
                "{}: task {id} ({arch}) lists no container archive among its files {files:?}",
                self.hub
            ))
        })?;
        let nvr = match (
            name.as_deref(),
            result.get("version").and_then(Value::as_str),
            result.get("release").and_then(Value::as_str),
        ) {
            (Some(n), Some(v), Some(r)) => Some(format!("{n}-{v}-{r}")),
            _ => None,
        };
        let artifact = self.built_artifact(id, nvr.as_deref(), file, builds)?;
        Ok((artifact, name))
    }

    /// The compose the task tree stands for: its status, release, and the
    /// task's id and creation time (the compose order).
    fn compose(&self, parent: &Value, tree: &TaskTree) -> Compose {
        let parent_state = parent.get("state").and_then(Value::as_int).unwrap_or(-1);
        let status = if tree.any_running {
            ComposeStatus::Started
        } else if parent_state == CANCELED {
            ComposeStatus::Terminated
        } else if tree.any_failed || parent_state == FAILED {
            ComposeStatus::FinishedIncomplete
        } else {
            ComposeStatus::Finished
        };
        let mut compose = Compose::from_id(&format!("koji-task-{}", self.task), status);
        compose.release = tree.release.clone();
        // Ordered by the task id (from the id); dated by the task's creation.
        if let Some(created) = parent.get("create_time").and_then(Value::as_str) {
            compose.created_at = koji_time(created);
            compose.date = compose
                .created_at
                .as_ref()
                .map(|t| t[..10].replace('-', ""));
        }
        compose
    }
}

/// An image's results: the tasks that built its `name` (all of them
/// without a `match`), and the failed ones.
fn image_results(
    query: &ImageQuery,
    results: &BTreeMap<Arch, (ArchResult, Option<String>)>,
) -> Result<Vec<ArchResult>, SourceError> {
    let mut wanted = None;
    for (k, v) in &query.matcher {
        match k.as_str() {
            "name" => wanted = Some(v.as_str()),
            other => {
                return Err(SourceError(format!(
                    "image {}: the koji source has no match key `{other}` (it knows `name`)",
                    query.name
                )))
            }
        }
    }
    Ok(results
        .values()
        .filter(|(_, name)| match (wanted, name) {
            (Some(w), Some(n)) => w == n,
            _ => true,
        })
        .map(|(r, _)| r.clone())
        .collect())
}
