//! The targets of a run: every (image, repository, tag) the configuration
//! and the compose name, with the tags and annotations rendered.

use std::collections::BTreeMap;

use archgate_core::Vars;
use archgate_core::{
    Arch, Compose, ComposeStamp, CurrentIndex, Decision, ErrorKind, Policy, TargetPlan,
};

use crate::spec::{ImageSpec, RunSpec};
use crate::RunError;

/// One (image, repository, tag), planned.
pub(crate) struct Target {
    /// Its place in the report.
    pub(crate) seq: usize,
    pub(crate) image: usize,
    pub(crate) repo: usize,
    /// False when the tag could not be rendered (an unfinished compose):
    /// `tag` is then the template, and nothing is read or written there.
    pub(crate) named: bool,
    pub(crate) tag: String,
    pub(crate) annotations: BTreeMap<String, String>,
    pub(crate) reference: String,
    pub(crate) policy: Policy,
    pub(crate) current: Option<CurrentIndex>,
    pub(crate) plan: Option<TargetPlan>,
    pub(crate) arch_tags: Vec<(Arch, String)>,
    /// Its arch tag for each arch of its image's results, rendered before
    /// anything is read ([`crate::decide::name_arch_tags`]).
    pub(crate) arch_tag_names: BTreeMap<Arch, String>,
    pub(crate) decision: Decision,
    pub(crate) digest: Option<String>,
    /// Digests this target's publish signed.
    pub(crate) signed: Vec<String>,
    pub(crate) errors: Vec<String>,
    pub(crate) error_kind: Option<ErrorKind>,
    /// This process's lock on the target and the lease on it, held from
    /// reading its current index until its read-back (docs/gate.md, "One
    /// writer per target"); none in a dry run.
    pub(crate) hold: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Target {
    pub(crate) fn fail(&mut self, message: String, kind: ErrorKind) {
        self.errors.push(message);
        self.error_kind.get_or_insert(kind);
    }
}

/// Every target of the run, in report order: per image, per repository,
/// per tag. A reference named twice is a configuration error. Every index
/// archgate writes names the compose it came from (its stamp annotations,
/// beside the image's own).
pub(crate) fn name_all(spec: &RunSpec, compose: &Compose) -> Result<Vec<Target>, RunError> {
    let stamp = ComposeStamp::of(compose).annotations();
    let mut targets: Vec<Target> = Vec::new();
    // Each reference, and the image that named it first.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, image) in spec.images.iter().enumerate() {
        let tags = image_tags(image, compose, &spec.releases)?;
        for (r, repo) in image.repositories.iter().enumerate() {
            for (tag, named) in &tags {
                let annotations = match named {
                    true => {
                        let mut a = index_annotations(image, compose, &spec.releases, tag)?;
                        a.extend(stamp.clone());
                        a
                    }
                    false => BTreeMap::new(),
                };
                let reference = repo.repository.tagged(tag);
                if let Some(first) = seen.insert(reference.clone(), i) {
                    let why = match first == i {
                        true => format!("{reference} is a target twice"),
                        false => format!(
                            "{reference} is also a target of image `{}`: one target, one image",
                            spec.images[first].name
                        ),
                    };
                    return Err(image_error(image, why));
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
                    arch_tag_names: BTreeMap::new(),
                    decision: Decision::Error,
                    digest: None,
                    signed: Vec::new(),
                    errors: Vec::new(),
                    error_kind: None,
                    hold: None,
                });
            }
        }
    }
    Ok(targets)
}

pub(crate) fn image_error(image: &ImageSpec, msg: impl std::fmt::Display) -> RunError {
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
